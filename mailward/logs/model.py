"""What the correlator knows: connections, deliveries, messages, recipients, auth attempts.

Owns the shapes of correlated facts and their plain-dict form for reports. ``Connection``,
``Delivery``, ``Message`` and ``Recipient`` are mutable while the correlator fills them (one
object per id, ``__slots__`` to keep the per-line path and memory small); once a message is
handed out as a finished story nothing writes to it again. ``AuthAttempt`` is a frozen value.
This module does not read lines and does not decide when a story ends.
"""
from __future__ import annotations

from dataclasses import dataclass

from .times import iso


class Connection:
    """Facts of one inbound SMTP connection (ICID)."""

    __slots__ = ("appliance", "icid", "peer_ip", "rdns", "verified", "interface", "interface_ip",
                 "policy", "sender_group", "match", "sbrs", "country", "tls_protocol", "tls_cipher",
                 "tls_failed", "auth_user", "auth_mechanism", "auth_profile", "auth_failures",
                 "opened", "closed", "last_seen", "lines")

    def __init__(self, appliance: str, icid: int, ts: float | None) -> None:
        self.appliance = appliance
        self.icid = icid
        self.peer_ip: str | None = None
        self.rdns: str | None = None
        self.verified: bool | None = None
        self.interface: str | None = None
        self.interface_ip: str | None = None
        self.policy: str | None = None
        self.sender_group: str | None = None
        self.match: str | None = None
        self.sbrs: str | None = None
        self.country: str | None = None
        self.tls_protocol: str | None = None
        self.tls_cipher: str | None = None
        self.tls_failed: bool = False
        self.auth_user: str | None = None
        self.auth_mechanism: str | None = None
        self.auth_profile: str | None = None
        self.auth_failures: list[str] = []      # user names that failed on this connection
        self.opened = ts
        self.closed: float | None = None
        self.last_seen = ts
        self.lines: list[tuple[int, str]] | None = None

    def as_dict(self) -> dict:
        return {
            "icid": self.icid, "peer_ip": self.peer_ip, "rdns": self.rdns, "verified": self.verified,
            "interface": self.interface, "interface_ip": self.interface_ip, "policy": self.policy,
            "sender_group": self.sender_group, "match": self.match, "sbrs": self.sbrs,
            "country": self.country, "tls_protocol": self.tls_protocol, "tls_cipher": self.tls_cipher,
            "auth_user": self.auth_user, "auth_mechanism": self.auth_mechanism,
            "auth_profile": self.auth_profile, "auth_failures": list(self.auth_failures),
            "opened": iso(self.opened), "closed": iso(self.closed),
        }


class Delivery:
    """Facts of one outbound delivery connection (DCID)."""

    __slots__ = ("appliance", "dcid", "interface", "address", "port", "tls_protocol", "tls_cipher",
                 "tls_failed", "auth_profile", "auth_succeeded", "auth_response", "opened", "closed",
                 "last_seen", "lines", "error")

    def __init__(self, appliance: str, dcid: int, ts: float | None) -> None:
        self.appliance = appliance
        self.dcid = dcid
        self.interface: str | None = None
        self.address: str | None = None
        self.port: int | None = None
        self.tls_protocol: str | None = None
        self.tls_cipher: str | None = None
        self.tls_failed: bool = False
        self.auth_profile: str | None = None
        self.auth_succeeded: bool | None = None
        self.auth_response: str | None = None
        self.opened = ts
        self.closed: float | None = None
        self.last_seen = ts
        self.lines: list[tuple[int, str]] | None = None
        self.error: str | None = None

    def as_dict(self) -> dict:
        return {
            "dcid": self.dcid, "interface": self.interface, "address": self.address, "port": self.port,
            "tls_protocol": self.tls_protocol, "tls_cipher": self.tls_cipher,
            "auth_profile": self.auth_profile, "auth_succeeded": self.auth_succeeded,
            "auth_response": self.auth_response, "error": self.error,
            "opened": iso(self.opened), "closed": iso(self.closed),
        }


# Recipient outcomes, in the order a later one overrides an earlier one for the same attempt.
PENDING = "pending"
DELAYED = "delayed"
DELIVERED = "delivered"
BOUNCED = "bounced"
QUARANTINED = "quarantined"
DROPPED = "dropped"          # the message was aborted (dropped by a filter/engine) before delivery
SPLIT = "split"              # handed to a split child MID, which carries the outcome


class Recipient:
    __slots__ = ("rid", "address", "outcome", "delivery", "response", "status", "description",
                 "attempts", "last_seen", "pending_till")

    def __init__(self, rid: int, address: str | None) -> None:
        self.rid = rid
        self.address = address
        self.outcome = PENDING
        self.delivery: Delivery | None = None
        self.response: str | None = None
        self.status: str | None = None
        self.description: str | None = None
        self.attempts = 0
        self.last_seen: float | None = None
        self.pending_till: str | None = None

    def as_dict(self) -> dict:
        d = self.delivery
        return {
            "rid": self.rid, "address": self.address, "outcome": self.outcome,
            "response": self.response, "status": self.status, "description": self.description,
            "attempts": self.attempts, "pending_till": self.pending_till, "at": iso(self.last_seen),
            "dcid": d.dcid if d else None,
            "delivery": d.as_dict() if d else None,
        }


class Message:
    """One message (MID) and, through ``connection``, the ICID it arrived on."""

    __slots__ = ("appliance", "mid", "icid", "connection", "sender", "recipients", "message_id",
                 "subject", "size", "policy", "direction", "verdicts", "started", "finished",
                 "status", "abort_reason", "parent", "relation", "children", "last_seen", "lines",
                 "partial", "rejected", "expired")

    def __init__(self, appliance: str, mid: int, ts: float | None) -> None:
        self.appliance = appliance
        self.mid = mid
        self.icid: int | None = None
        self.connection: Connection | None = None
        self.sender: str | None = None
        self.recipients: dict[int, Recipient] = {}
        self.message_id: str | None = None
        self.subject: str | None = None
        self.size: int | None = None
        self.policy: str | None = None
        self.direction: str | None = None
        self.verdicts: list[str] = []
        self.started = ts
        self.finished: float | None = None
        self.status: str | None = None          # done | aborted | expired (no end line seen)
        self.abort_reason: str | None = None
        self.parent: int | None = None          # MID this one derives from
        self.relation: str | None = None        # split | rewritten | bcc | bounce | reinjected
        self.children: list[tuple[int, str]] = []
        self.last_seen = ts
        self.lines: list[tuple[int, str]] | None = None   # (arrival order, raw line)
        self.partial = True                     # no Start MID line seen (log began mid-story)
        self.rejected: list[str] = []           # recipients refused at RCPT time
        self.expired = False

    def recipient(self, rid: int) -> Recipient:
        r = self.recipients.get(rid)
        if r is None:
            r = self.recipients[rid] = Recipient(rid, None)
        return r

    def evidence(self) -> list[str]:
        """Every kept raw line of the story in log order: the ICID's own lines (connection,
        HAT, TLS, AUTH, close), this MID's lines, and the own lines of each DCID it was
        delivered on (connection, TLS, outbound AUTH, close)."""
        merged = list(self.lines or ())
        c = self.connection
        if c is not None and c.lines:
            merged += c.lines
        seen: set[int] = set()
        for r in self.recipients.values():
            d = r.delivery
            if d is not None and d.lines and id(d) not in seen:
                seen.add(id(d))
                merged += d.lines
        merged.sort()
        return [text for _, text in merged]

    @property
    def auth_user(self) -> str | None:
        c = self.connection
        return c.auth_user if c is not None else None

    def as_dict(self, with_lines: bool = True) -> dict:
        c = self.connection
        d = {
            "appliance": self.appliance or None, "mid": self.mid, "icid": self.icid,
            "sender": self.sender, "message_id": self.message_id, "subject": self.subject,
            "size": self.size, "policy": self.policy, "direction": self.direction,
            "started": iso(self.started), "finished": iso(self.finished), "status": self.status,
            "abort_reason": self.abort_reason, "partial": self.partial, "expired": self.expired,
            "parent_mid": self.parent, "relation": self.relation,
            "children": [{"mid": m, "relation": r} for m, r in self.children],
            "connection": c.as_dict() if c is not None else None,
            "recipients": [r.as_dict() for _, r in sorted(self.recipients.items())],
            "rejected_recipients": list(self.rejected),
            "verdicts": list(self.verdicts),
        }
        if with_lines:
            d["lines"] = self.evidence()
        return d


@dataclass(frozen=True, slots=True)
class AuthAttempt:
    """One SMTP AUTH event, inbound (on an ICID) or outbound (on a DCID), with joined facts.

    ``kind``: ``verdict`` (succeeded/failed: the lines the tallies and detection count),
    ``rejected`` (refused before a verdict: bad encoding, cancelled; a failure without a user),
    ``lockout`` (mailward's tarpit lockout), ``error`` (profile misconfigured, forwarding
    server or LDAP unreachable, AUTH required but not offered). ``response`` carries the detail.
    """

    appliance: str
    ts: float | None
    direction: str              # inbound | outbound
    succeeded: bool
    user: str | None            # inbound only
    mechanism: str | None       # inbound only
    profile: str
    client_ip: str | None       # inbound: the peer; outbound: our interface
    server_ip: str | None       # inbound: our listener IP; outbound: the destination
    conn_id: int                # ICID or DCID
    response: str | None        # outbound failure: the server's reply; other kinds: the detail
    raw: str
    kind: str = "verdict"

    @property
    def result(self) -> str:
        if self.kind != "verdict":
            return self.kind
        return "success" if self.succeeded else "failure"

    def as_dict(self) -> dict:
        return {
            "time": iso(self.ts), "appliance": self.appliance or None, "direction": self.direction,
            "result": self.result, "user": self.user,
            "mechanism": self.mechanism, "profile": self.profile, "client_ip": self.client_ip,
            "server_ip": self.server_ip,
            ("icid" if self.direction == "inbound" else "dcid"): self.conn_id,
            "response": self.response,
        }
