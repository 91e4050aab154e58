"""The in-memory index of live messages and the meaning of each state record.

Owns: which messages are live, where each one's body is (segment + offset, or its own
large file), which segment holds each live message's current MSG record, and how STATE /
DEFER / DELETE records change a message. Recovery (replaying the log) and the running spool
(applying a record it is about to write) both go through ``apply`` so a restart rebuilds
exactly the state the running process had. It must not do any I/O.
"""
from __future__ import annotations

from dataclasses import dataclass

from .model import Envelope, QueuedMessage, RcptState
from .records import T_DEFER, T_DELETE, T_STATE


@dataclass(slots=True)
class Location:
    seg: int
    body_offset: int      # inline: offset of the body in the segment file
    body_len: int
    large: bool           # body in large/<mid> instead


class Index:
    def __init__(self) -> None:
        self.messages: dict[int, QueuedMessage] = {}
        self.loc: dict[int, Location] = {}
        self.seg_live: dict[int, set[int]] = {}   # segment -> live MIDs whose MSG record is there
        # Estimated bytes a compaction copy would rewrite, per segment and in total (kept
        # incrementally: the spool asks after every batch, the queue may be large).
        self.seg_live_bytes: dict[int, int] = {}
        self.live_bytes = 0

    def put(self, msg: QueuedMessage, loc: Location) -> None:
        """Add a message, or move it (a compaction copy) to a new record location."""
        mid = msg.mid
        old = self.loc.get(mid)
        if old is not None:
            self._unaccount(mid, old)
        self.messages[mid] = msg
        self.loc[mid] = loc
        self.seg_live.setdefault(loc.seg, set()).add(mid)
        cost = record_cost(loc)
        self.seg_live_bytes[loc.seg] = self.seg_live_bytes.get(loc.seg, 0) + cost
        self.live_bytes += cost
        if msg.finished:
            self._remove(mid)

    def msg_from_meta(self, meta: dict) -> QueuedMessage:
        env = Envelope.from_json(meta["env"])
        msg = QueuedMessage(env, meta["size"], [RcptState.PENDING] * len(env.recipients))
        if "st" in meta:
            msg.apply_state_json(meta["st"])
        return msg

    def apply(self, rtype: int, d: dict) -> QueuedMessage | None:
        """Apply a STATE/DEFER/DELETE record. Returns the message if it left the queue
        (finished or deleted), else None. Records for unknown MIDs are ignored: their
        message finished and its segment was reclaimed."""
        msg = self.messages.get(d["m"])
        if msg is None:
            return None
        at = d.get("t")
        if rtype == T_DELETE:
            self._remove(msg.mid)
            return msg
        if at is not None and msg.first_attempt_at is None:
            msg.first_attempt_at = at
        err = d.get("e")
        if rtype == T_STATE:
            rid = d["r"]
            if 0 <= rid < len(msg.states):
                msg.states[rid] = RcptState(d["s"])
            if d.get("na") is not None:
                msg.next_attempt = d["na"]
            if err is not None:
                msg.rcpt_errors[rid] = err
                msg.last_error = err
        elif rtype == T_DEFER:
            msg.attempts += 1
            msg.next_attempt = d["na"]
            if err is not None:
                msg.last_error = err
                for rid in d["r"]:
                    msg.rcpt_errors[rid] = err
        if msg.finished:
            self._remove(msg.mid)
            return msg
        return None

    def _remove(self, mid: int) -> None:
        self.messages.pop(mid, None)
        loc = self.loc.pop(mid, None)
        if loc is not None:
            self._unaccount(mid, loc)

    def _unaccount(self, mid: int, loc: Location) -> None:
        live = self.seg_live.get(loc.seg)
        if live is not None and mid in live:
            live.discard(mid)
            cost = record_cost(loc)
            self.seg_live_bytes[loc.seg] -= cost
            self.live_bytes -= cost

    def forget_segment(self, seg: int) -> None:
        """A reclaimed segment (it held no live message)."""
        self.seg_live.pop(seg, None)
        self.seg_live_bytes.pop(seg, None)


def record_cost(loc: Location) -> int:
    # Inline body plus a typical header + envelope; a large body's file is never copied.
    return (0 if loc.large else loc.body_len) + 256
