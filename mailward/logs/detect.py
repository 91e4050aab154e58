"""Attack detection over correlated AUTH attempts and message stories.

Owns the rules and their thresholds, in log time (never the wall clock):
- brute_force: at least ``brute_failures`` failed logins from one client IP within ``window``;
- password_spray: one client IP failing for at least ``spray_users`` distinct users within ``window``;
- distributed_attack: one user failing from at least ``distributed_ips`` distinct IPs within ``window``;
- success_after_failures: a successful login for a user after at least ``compromise_failures``
  failures for that user within ``window`` (a likely compromised password);
- new_ip: a successful login for a user from an IP never seen for that user, once the
  ``learn_seconds`` learning period (from the first attempt seen) is over;
- recipient_burst: one authenticated user sending to at least ``burst_recipients`` recipients
  within ``burst_window``.

A finding is an *episode*: it opens when the threshold is crossed and grows while more matching
events come within ``window``; it is reported once, when it opens (``live``, for ``follow``) or
when it ends (batch, so the counts are final). Evidence keeps the raw lines (capped).
This module does not read files or print.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from .model import AuthAttempt, Message
from .times import iso

MAX_EVIDENCE = 25


@dataclass(frozen=True, slots=True)
class Thresholds:
    window: float = 600.0
    brute_failures: int = 10
    spray_users: int = 5
    distributed_ips: int = 5
    compromise_failures: int = 5
    learn_seconds: float = 86400.0
    burst_recipients: int = 100
    burst_window: float = 3600.0


SEVERITY = {
    "brute_force": "high",
    "password_spray": "high",
    "distributed_attack": "high",
    "success_after_failures": "critical",
    "new_ip": "medium",
    "recipient_burst": "high",
}


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    severity: str
    appliance: str
    key: str                    # the IP or user the finding is about
    first: float | None
    last: float | None
    count: int                  # events in the episode (failures, recipients, ...)
    summary: str
    users: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    evidence: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        return {"kind": self.kind, "severity": self.severity, "appliance": self.appliance or None,
                "key": self.key, "first": iso(self.first), "last": iso(self.last),
                "count": self.count, "summary": self.summary, "users": list(self.users),
                "ips": list(self.ips), "evidence": list(self.evidence)}


@dataclass(slots=True)
class _Episode:
    kind: str
    appliance: str
    key: str
    first: float | None
    last: float | None
    count: int = 0
    users: set[str] = field(default_factory=set)
    ips: set[str] = field(default_factory=set)
    evidence: list[str] = field(default_factory=list)
    reported: bool = False

    def add_lines(self, lines) -> None:
        for ln in lines:
            if len(self.evidence) >= MAX_EVIDENCE:
                return
            if ln not in self.evidence:
                self.evidence.append(ln)


def _summary(ep: _Episode, t: Thresholds) -> str:
    users = ", ".join(sorted(ep.users)[:5])
    ips = ", ".join(sorted(ep.ips)[:5])
    if ep.kind == "brute_force":
        return f"{ep.count} failed logins from {ep.key} (users: {users})"
    if ep.kind == "password_spray":
        return f"{ep.key} failed logins for {len(ep.users)} distinct users ({users})"
    if ep.kind == "distributed_attack":
        return f"user {ep.key} failed from {len(ep.ips)} distinct IPs ({ips})"
    if ep.kind == "success_after_failures":
        return f"user {ep.key} logged in from {ips} after {ep.count} failures within {int(t.window)} s"
    if ep.kind == "new_ip":
        return f"user {ep.key} logged in from a new IP {ips}"
    if ep.kind == "recipient_burst":
        return f"authenticated user {ep.key} sent to {ep.count} recipients within {int(t.burst_window)} s"
    return ep.kind


class Detector:
    """Feed ``on_auth`` and ``on_story``; findings come out through ``on_finding``."""

    def __init__(self, on_finding: Callable[[Finding], None], thresholds: Thresholds | None = None,
                 live: bool = False) -> None:
        self.t = thresholds or Thresholds()
        self.on_finding = on_finding
        self.live = live
        self._ip_fail: dict[tuple[str, str], deque] = {}     # (app, ip) -> (ts, user, raw)
        self._user_fail: dict[tuple[str, str], deque] = {}   # (app, user) -> (ts, ip, raw)
        self._known_ips: dict[tuple[str, str], set[str]] = {}
        self._first_ts: float | None = None
        self._sent: dict[tuple[str, str], deque] = {}        # (app, user) -> (ts, n, lines)
        self._open: dict[tuple[str, str, str], _Episode] = {}
        self.now: float = 0.0
        self._purged: float = 0.0

    # --- episodes -----------------------------------------------------------------------

    def _episode(self, kind: str, app: str, key: str, ts: float | None) -> tuple[_Episode, bool]:
        k = (kind, app, key)
        ep = self._open.get(k)
        window = self.t.burst_window if kind == "recipient_burst" else self.t.window
        if ep is not None and ts is not None and ep.last is not None and ts - ep.last > window:
            self._close(k)
            ep = None
        if ep is None:
            ep = self._open[k] = _Episode(kind, app, key, ts, ts)
            return ep, True
        if ts is not None:
            ep.last = ts if ep.last is None or ts > ep.last else ep.last
        return ep, False

    def _finding(self, ep: _Episode) -> Finding:
        return Finding(ep.kind, SEVERITY[ep.kind], ep.appliance, ep.key, ep.first, ep.last, ep.count,
                       _summary(ep, self.t), tuple(sorted(ep.users)), tuple(sorted(ep.ips)),
                       tuple(ep.evidence))

    def _opened(self, ep: _Episode) -> None:
        if self.live and not ep.reported:
            ep.reported = True
            self.on_finding(self._finding(ep))

    def _close(self, k) -> None:
        ep = self._open.pop(k)
        if not ep.reported:
            ep.reported = True
            self.on_finding(self._finding(ep))

    def _expire(self, now: float) -> None:
        if now - self._purged > self.t.window:
            # Windows of keys not seen again would otherwise stay forever: drop the stale ones.
            self._purged = now
            for table, window in ((self._ip_fail, self.t.window), (self._user_fail, self.t.window),
                                  (self._sent, self.t.burst_window)):
                stale = [k for k, q in table.items() if not q or (q[-1][0] is not None and q[-1][0] < now - window)]
                for k in stale:
                    del table[k]
        for k, ep in list(self._open.items()):
            window = self.t.burst_window if ep.kind == "recipient_burst" else self.t.window
            if ep.last is not None and now - ep.last > window:
                self._close(k)

    def flush(self) -> None:
        for k in sorted(self._open, key=lambda k: (self._open[k].first or 0.0, k)):
            self._close(k)

    # --- inputs -------------------------------------------------------------------------

    @staticmethod
    def _trim(q: deque, ts: float | None, window: float) -> None:
        if ts is None:
            return
        limit = ts - window
        while q and q[0][0] is not None and q[0][0] < limit:
            q.popleft()

    def on_auth(self, a: AuthAttempt) -> None:
        if a.direction != "inbound" or a.user is None or a.kind != "verdict":
            return          # outbound AUTH is our own login to a next hop: not an attack surface
        t = self.t
        ts = a.ts
        app = a.appliance
        ip = a.client_ip or "unknown"
        if ts is not None:
            if self._first_ts is None or ts < self._first_ts:
                self._first_ts = ts
            if ts > self.now:
                self.now = ts
                self._expire(ts)
        if not a.succeeded:
            qi = self._ip_fail.setdefault((app, ip), deque())
            qi.append((ts, a.user, a.raw))
            self._trim(qi, ts, t.window)
            qu = self._user_fail.setdefault((app, a.user), deque())
            qu.append((ts, ip, a.raw))
            self._trim(qu, ts, t.window)
            self._check_ip(app, ip, qi, a)
            self._check_user(app, a.user, qu, a)
            return
        # success
        qu = self._user_fail.get((app, a.user))
        if qu:
            self._trim(qu, ts, t.window)
            if len(qu) >= t.compromise_failures:
                ep, new = self._episode("success_after_failures", app, a.user, ts)
                ep.count = len(qu)
                ep.first = qu[0][0] if qu[0][0] is not None else ep.first
                ep.ips.add(ip)
                ep.users.add(a.user)
                ep.ips.update(x[1] for x in qu)
                ep.add_lines(x[2] for x in list(qu)[-(MAX_EVIDENCE - 1):])
                ep.add_lines([a.raw])
                self._close(("success_after_failures", app, a.user))
            qu.clear()
        known = self._known_ips.setdefault((app, a.user), set())
        learning = (ts is None or self._first_ts is None or ts - self._first_ts < t.learn_seconds)
        if ip not in known:
            if not learning and known:
                ep, _ = self._episode("new_ip", app, f"{a.user}@{ip}", ts)
                ep.count += 1
                ep.users.add(a.user)
                ep.ips.add(ip)
                ep.add_lines([a.raw])
                self._close(("new_ip", app, f"{a.user}@{ip}"))
            if len(known) < 1000:
                known.add(ip)

    def _check_ip(self, app: str, ip: str, q: deque, a: AuthAttempt) -> None:
        t = self.t
        k = ("brute_force", app, ip)
        if len(q) >= t.brute_failures or k in self._open:
            ep, new = self._episode("brute_force", app, ip, a.ts)
            self._grow(ep, new, q, a, ep.users, (x[1] for x in q), a.user)
        users = {x[1] for x in q}
        k = ("password_spray", app, ip)
        if len(users) >= t.spray_users or k in self._open:
            ep, new = self._episode("password_spray", app, ip, a.ts)
            self._grow(ep, new, q, a, ep.users, users, a.user)

    def _check_user(self, app: str, user: str, q: deque, a: AuthAttempt) -> None:
        ips = {x[1] for x in q}
        k = ("distributed_attack", app, user)
        if len(ips) >= self.t.distributed_ips or k in self._open:
            ep, new = self._episode("distributed_attack", app, user, a.ts)
            ep.users.add(user)
            self._grow(ep, new, q, a, ep.ips, ips, a.client_ip or "unknown")

    def _grow(self, ep, new: bool, q: deque, a: AuthAttempt, facet: set, seen, one) -> None:
        """A windowed finding either opens (with the whole window of failures as its evidence)
        or grows by the attempt that just arrived."""
        if new:
            ep.count = len(q)
            ep.first = q[0][0]
            facet.update(seen)
            ep.add_lines(x[2] for x in q)
            self._opened(ep)
        else:
            ep.count += 1
            facet.add(one)
            ep.add_lines([a.raw])

    def on_story(self, m: Message) -> None:
        user = m.auth_user
        if user is None or m.relation in ("split", "rewritten", "reinjected"):
            return      # derived copies of one mail would count its recipients twice
        ts = m.started if m.started is not None else m.last_seen
        n = len(m.recipients)
        if n == 0:
            return
        t = self.t
        app = m.appliance
        if ts is not None and ts > self.now:
            self.now = ts
            self._expire(ts)
        q = self._sent.setdefault((app, user), deque())
        lines = tuple(m.evidence()[:6]) or (f"MID {m.mid} from <{m.sender}> to {n} recipient(s)",)
        q.append((ts, n, lines))
        self._trim(q, ts, t.burst_window)
        total = sum(x[1] for x in q)
        k = ("recipient_burst", app, user)
        if total >= t.burst_recipients or k in self._open:
            ep, new = self._episode("recipient_burst", app, user, ts)
            ep.users.add(user)
            c = m.connection
            if c is not None and c.peer_ip:
                ep.ips.add(c.peer_ip)
            if new:
                ep.count = total
                ep.first = q[0][0]
                for x in q:
                    ep.add_lines(x[2])
                self._opened(ep)
            else:
                ep.count += n
                ep.add_lines(lines)
