"""The SMTP AUTH report: every attempt, and successes/failures per user, client IP, mechanism
and profile with first/last seen.

Owns the aggregation only. Attempts arrive already joined (client IP from the ICID, destination
from the DCID) from ``correlate``; this module does not read lines or print.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .model import AuthAttempt
from .times import iso


@dataclass(slots=True)
class Tally:
    """Successes and failures for one key, with the first and last time seen."""

    successes: int = 0
    failures: int = 0
    first: float | None = None
    last: float | None = None
    # the other side, for context: users seen with an IP, IPs seen with a user (capped)
    related: set[str] = field(default_factory=set)

    def add(self, a: AuthAttempt, related: str | None) -> None:
        if a.succeeded:
            self.successes += 1
        else:
            self.failures += 1
        if a.ts is not None:
            if self.first is None or a.ts < self.first:
                self.first = a.ts
            if self.last is None or a.ts > self.last:
                self.last = a.ts
        if related and len(self.related) < 50:
            self.related.add(related)

    def as_dict(self) -> dict:
        return {"successes": self.successes, "failures": self.failures,
                "first_seen": iso(self.first), "last_seen": iso(self.last),
                "related": sorted(self.related)}


DIMENSIONS = ("user", "client_ip", "mechanism", "profile")


class AuthReport:
    """Accumulates attempts (``add`` is the ``on_auth`` callback of the correlator)."""

    def __init__(self, keep_attempts: bool = True, since: float | None = None,
                 until: float | None = None) -> None:
        self.attempts: list[AuthAttempt] = []
        self.keep_attempts = keep_attempts
        self.since = since
        self.until = until
        self.by: dict[str, dict[str, Tally]] = {d: {} for d in DIMENSIONS}
        self.inbound = Tally()
        self.outbound = Tally()
        self.other: dict[str, int] = {}     # rejected / lockout / error events

    def add(self, a: AuthAttempt) -> None:
        if a.ts is not None:
            if self.since is not None and a.ts < self.since:
                return
            if self.until is not None and a.ts > self.until:
                return
        if self.keep_attempts:
            self.attempts.append(a)
        if a.kind != "verdict":
            # listed, and counted apart: a rejection or lockout is not a password verdict
            self.other[a.kind] = self.other.get(a.kind, 0) + 1
            if a.kind != "rejected" or a.client_ip is None:
                return
            self._tally(self.by["client_ip"], a.client_ip, a, None)
            return
        (self.inbound if a.direction == "inbound" else self.outbound).add(a, None)
        by = self.by
        if a.user is not None:
            self._tally(by["user"], a.user, a, a.client_ip)
        if a.client_ip is not None and a.direction == "inbound":
            self._tally(by["client_ip"], a.client_ip, a, a.user)
        if a.mechanism is not None:
            self._tally(by["mechanism"], a.mechanism, a, None)
        self._tally(by["profile"], a.profile, a,
                    a.server_ip if a.direction == "outbound" else a.user)

    __call__ = add

    @staticmethod
    def _tally(table: dict[str, Tally], key: str, a: AuthAttempt, related: str | None) -> None:
        t = table.get(key)
        if t is None:
            t = table[key] = Tally()
        t.add(a, related)

    def summary(self) -> dict:
        return {
            "inbound": self.inbound.as_dict() | {"related": []},
            "outbound": self.outbound.as_dict() | {"related": []},
            "other_events": dict(sorted(self.other.items())),
            **{f"by_{dim}": {k: t.as_dict() for k, t in sorted(table.items())}
               for dim, table in self.by.items()},
        }

    def summary_rows(self) -> list[dict]:
        """Flat rows (dimension, key, successes, failures, first, last) for tables and CSV."""
        rows = []
        for dim, table in self.by.items():
            for key, t in sorted(table.items()):
                rows.append({"dimension": dim, "key": key, "successes": t.successes,
                             "failures": t.failures, "first_seen": iso(t.first),
                             "last_seen": iso(t.last)})
        return rows
