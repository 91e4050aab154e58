"""The events the SMTP server core hands to the application, one frozen dataclass each.

Owns only the vocabulary between `ServerConnection` and whatever drives it. Events marked
*answer* stop the core until the driver calls ``ServerConnection.respond()``; the others
are information. Knows nothing of sockets, policy or logging.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .address import Address
from .reply import Reply
from .sasl import Credentials
from ..values import fast_init_all


class Event:
    """Base class; ``needs_answer`` says whether the core waits for ``respond()``."""

    needs_answer = True


@dataclass(frozen=True, slots=True)
class Helo(Event):
    """HELO/EHLO (answer: None for the default 250, with ``keywords=`` for EHLO, or a Reply)."""

    name: str
    esmtp: bool


@dataclass(frozen=True, slots=True)
class StartTls(Event):
    """STARTTLS asked for (answer: None = 220 and the core waits for ``tls_started()``)."""


@dataclass(frozen=True, slots=True)
class AuthStart(Event):
    """AUTH asked for (answer: None to proceed, with an optional ``challenge=`` for CRAM-MD5;
    or a Reply such as 538 5.7.11)."""

    mechanism: str


@dataclass(frozen=True, slots=True)
class AuthCredentials(Event):
    """A SASL exchange finished (answer: 235 marks the session authenticated; 535/454 not)."""

    credentials: Credentials


@dataclass(frozen=True, slots=True)
class MailFrom(Event):
    """MAIL FROM (answer: a 2xx Reply opens the transaction)."""

    address: Address
    params: dict[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class RcptTo(Event):
    """RCPT TO (answer: a 2xx Reply counts the recipient as accepted)."""

    address: Address
    params: dict[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class DataStart(Event):
    """DATA with at least one accepted recipient (answer: 354 starts the body, else a refusal)."""


@dataclass(frozen=True, slots=True)
class DataChunk(Event):
    """Unstuffed message content, in arrival order. No answer."""

    data: bytes
    needs_answer = False


@dataclass(frozen=True, slots=True)
class DataEnd(Event):
    """The end of DATA. ``error`` is the core's suggested refusal (size exceeded, bare
    newline, line too long) or None. Answer: the final reply (2xx counts as a message)."""

    error: Reply | None


@dataclass(frozen=True, slots=True)
class Rset(Event):
    """RSET (answer: None for 250). HELO/EHLO also end a transaction: the app sees that as
    the `Helo` event itself."""


@dataclass(frozen=True, slots=True)
class Closed(Event):
    """The core has ended the session (its last reply is queued). No answer.
    ``reason``: "quit" | "limit" (too many errors or messages, or a 421 refusal) | "eof"
    (the peer closed) | "error" (a non-SMTP client) | "refused" (``refuse()`` with a non-421)."""

    reason: str
    needs_answer = False


# Built some thirty times per relayed message: slot-filling __init__s (see values.py).
fast_init_all(globals())
