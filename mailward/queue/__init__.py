"""The durable queue: segment log with group commit, per-recipient state, id counters.

Public names: ``Spool``, ``MessageWriter``, ``Envelope``, ``QueuedMessage``, ``RcptState``,
``SpoolError`` (``spool.py``) and ``IdCounter`` (``counters.py``)."""
from .counters import IdCounter
from .model import Envelope, QueuedMessage, RcptState, SpoolError
from .spool import MessageWriter, Spool

__all__ = ["Envelope", "IdCounter", "MessageWriter", "QueuedMessage", "RcptState", "Spool", "SpoolError"]
