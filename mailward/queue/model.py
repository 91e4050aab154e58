"""The values of the queue: envelope, per-recipient state, a queued message, the spool error.

Owns: these types and their (de)serialisation to the small JSON objects stored in spool
records. It must not know about files, segments or the committer.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field


class SpoolError(Exception):
    """The spool could not make something durable (disk full, unwritable, I/O error).
    The gateway answers 452 4.3.1; nothing already acknowledged is affected."""


class RcptState(enum.IntEnum):
    # DEFERRED is PENDING with attempts > 0 and a next_attempt: it still has to be delivered.
    PENDING = 0
    DELIVERED = 1
    BOUNCED = 2


@dataclass(frozen=True, slots=True)
class Envelope:
    mid: int
    icid: int
    sender: str                  # "" = null sender
    recipients: tuple[str, ...]  # index = RID
    received_at: float           # epoch seconds
    listener: str = ""
    client_ip: str = ""
    helo: str = ""
    auth_user: str | None = None
    params: tuple[tuple[str, str], ...] = ()   # e.g. (("SMTPUTF8",""),("BODY","8BITMIME"))
    origin_mid: int | None = None              # set for bounces: the MID this bounce is for

    def to_json(self) -> dict:
        d = {"mid": self.mid, "icid": self.icid, "from": self.sender, "rcpt": list(self.recipients),
             "at": self.received_at}
        # Optional fields are stored only when set: records stay small at high commit rates.
        if self.listener:
            d["l"] = self.listener
        if self.client_ip:
            d["ip"] = self.client_ip
        if self.helo:
            d["helo"] = self.helo
        if self.auth_user is not None:
            d["au"] = self.auth_user
        if self.params:
            d["p"] = [list(p) for p in self.params]
        if self.origin_mid is not None:
            d["om"] = self.origin_mid
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Envelope":
        return cls(mid=d["mid"], icid=d["icid"], sender=d["from"], recipients=tuple(d["rcpt"]),
                   received_at=d["at"], listener=d.get("l", ""), client_ip=d.get("ip", ""),
                   helo=d.get("helo", ""), auth_user=d.get("au"),
                   params=tuple((str(k), str(v)) for k, v in d.get("p", ())),
                   origin_mid=d.get("om"))


@dataclass(slots=True)
class QueuedMessage:
    """A live message as the queue knows it. Mutated only by the Spool, after (or in the
    same order as) the records that make each change durable."""

    envelope: Envelope
    size: int
    states: list[RcptState] = field(default_factory=list)
    attempts: int = 0
    next_attempt: float = 0.0
    first_attempt_at: float | None = None
    last_error: str | None = None
    rcpt_errors: dict[int, str] = field(default_factory=dict)   # last error per RID, if any

    @property
    def mid(self) -> int:
        return self.envelope.mid

    @property
    def finished(self) -> bool:
        """All recipients delivered or bounced: the message's space can be reclaimed."""
        return all(s != RcptState.PENDING for s in self.states)

    def pending_rids(self) -> list[int]:
        return [i for i, s in enumerate(self.states) if s == RcptState.PENDING]

    def state_json(self) -> dict:
        d = {"s": [int(s) for s in self.states], "n": self.attempts, "na": self.next_attempt}
        if self.first_attempt_at is not None:
            d["fa"] = self.first_attempt_at
        if self.last_error is not None:
            d["e"] = self.last_error
        if self.rcpt_errors:
            d["re"] = {str(k): v for k, v in self.rcpt_errors.items()}
        return d

    def apply_state_json(self, d: dict) -> None:
        self.states = [RcptState(s) for s in d["s"]]
        self.attempts = d.get("n", 0)
        self.next_attempt = d.get("na", 0.0)
        self.first_attempt_at = d.get("fa")
        self.last_error = d.get("e")
        self.rcpt_errors = {int(k): v for k, v in d.get("re", {}).items()}
