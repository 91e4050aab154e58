"""The delivery agent: opens a delivery connection (a DCID) to a destination and runs mail
transactions over it (the role of Postfix's smtp(8) beside the queue manager).

Owns: walking the next hops in order until one works, applying the route's TLS policy
(off / preferred / required / required-verify) and its outgoing AUTH profile (one
mechanism per attempt, never a password in clear unless the route says ``tls = "off"``),
logging each connection's own lines (New SMTP DCID, TLS, outbound AUTH, Connection Error,
DCID close), and turning a transaction's replies into per-recipient results with the
policy of ``trouble.py``.

Must not know the spool or the retry schedule: per-recipient results go back to the queue
manager, which records them durably and only then logs them.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Mapping, Protocol, Sequence

from ..maillog.events import (DcidClose, DcidTlsFailed, DcidTlsRequired, DcidTlsSuccess,
                              DeliveryConnectionError, NewDcid, OutboundAuthResult, SmtpResponse)
from ..maillog.sink import EventSink
from .client import (REVEALING, ConnectionStale, DeliveryFailure, Reply, SmtpConnection, choose_mechanism,
                     local_address_for, tls_context)
from .routes import NextHop, Route
from .trouble import (Kind, Outcome, Stage, Status, after_last_host, as_temporary, decide, kind_of_code,
                      status_for)


class Credentials(Protocol):
    name: str
    username: str

    def password(self) -> str: ...


class Counter(Protocol):
    def next(self) -> int: ...


@dataclass(frozen=True)
class AgentSettings:
    helo: str                                   # our name in EHLO
    connect_timeout: float = 30.0
    command_timeout: float = 300.0
    source_address: str | None = None
    tls_cafile: str | None = None               # trust anchors for required-verify


@dataclass
class Session:
    """An open, ready delivery connection."""

    dcid: int
    domain: str
    hop: NextHop
    route: Route
    conn: SmtpConnection
    messages: int = 0

    @property
    def alive(self) -> bool:
        return self.conn.alive


class HostsExhausted(Exception):
    """No host of the destination could take mail; ``outcome`` is DEFER_DESTINATION or
    BOUNCE_MESSAGE, ``failure`` the last host's failure (its reply is what gets logged)."""

    def __init__(self, failure: DeliveryFailure, outcome: Outcome, dcid: int = 0):
        super().__init__(str(failure))
        self.failure = failure
        self.outcome = outcome
        self.dcid = dcid

    @property
    def status(self) -> Status:
        f = self.failure
        status = status_for(f.stage, f.kind, f.reply.code if f.reply else None)
        return status if self.outcome is Outcome.BOUNCE_MESSAGE else as_temporary(status)


@dataclass(frozen=True)
class RcptOutcome:
    rid: int
    outcome: Outcome                 # DELIVERED is expressed by ``delivered`` below
    status: Status | None = None
    response: SmtpResponse | None = None
    by_destination: bool = False


@dataclass
class TransactionOutcome:
    delivered: list[int] = field(default_factory=list)
    reply: Reply | None = None       # the reply after the final dot (for the Response line)
    bounced: list[RcptOutcome] = field(default_factory=list)
    deferred: list[RcptOutcome] = field(default_factory=list)


BAD_SENDER_SYNTAX = Status("5.1.7", "Bad sender mailbox address syntax")
BAD_RCPT_SYNTAX = Status("5.1.3", "Bad destination mailbox address syntax")


_CONTROL = re.compile("[\x00-\x1f\x7f]")


def _unsafe(address: str) -> bool:
    # A control character would end or split the command line it goes into.
    return _CONTROL.search(address) is not None


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def _details(f: DeliveryFailure) -> tuple[str, str]:
    """Connection Error ``details`` and ``reason`` as the appliance writes them."""
    if f.reply is not None:
        return f"{f.reply.code}-{f.reply.text!r}", "unexpected SMTP response"
    return f.detail, "network error"


class Agent:
    def __init__(self, settings: AgentSettings, sink: EventSink, dcids: Counter,
                 credentials: Mapping[str, Credentials] | None = None):
        self.settings = settings
        self.sink = sink
        self.dcids = dcids
        self.credentials = dict(credentials or {})

    async def connect(self, domain: str, route: Route, hops: Sequence[NextHop]) -> Session:
        """The first host that takes us through greeting, EHLO, TLS and AUTH.
        Raises HostsExhausted when none does (or when AUTH failed with on_auth_failure=defer)."""
        last: DeliveryFailure | None = None
        last_dcid = 0
        s = self.settings
        for hop in hops:
            dcid = self.dcids.next()
            last_dcid = dcid
            try:
                conn = await SmtpConnection.open(hop.address, hop.port, helo=s.helo,
                                                 connect_timeout=s.connect_timeout,
                                                 command_timeout=s.command_timeout,
                                                 source_address=s.source_address)
            except DeliveryFailure as f:
                details, reason = _details(f)
                self.sink.emit(DeliveryConnectionError(
                    dcid, domain, hop.address, hop.port, details,
                    local_address_for(hop.address, hop.port, s.source_address), reason))
                last = f
                continue
            self.sink.emit(NewDcid(dcid, conn.local_address, hop.address, hop.port))
            try:
                await self._tls(dcid, hop, route, conn)
                await self._auth(dcid, hop, route, conn)
            except DeliveryFailure as f:
                await conn.quit()
                self.sink.emit(DcidClose(dcid))
                last = f
                if decide(f.stage, f.kind, on_auth_failure=route.on_auth_failure) is Outcome.DEFER_DESTINATION:
                    raise HostsExhausted(f, Outcome.DEFER_DESTINATION, dcid) from None
                continue
            return Session(dcid, domain, hop, route, conn)
        if last is None:
            last = DeliveryFailure(Stage.CONNECT, Kind.NETWORK, f"no host for {domain}")
        raise HostsExhausted(last, after_last_host(last.stage, last.kind), last_dcid)

    async def _tls(self, dcid: int, hop: NextHop, route: Route, conn: SmtpConnection) -> None:
        if route.tls == "off":
            return
        if not conn.offers("STARTTLS"):
            if route.tls in ("required", "required-verify"):
                self.sink.emit(DcidTlsRequired(dcid, hop.address))
                raise DeliveryFailure(Stage.STARTTLS, Kind.TLS,
                                      "TLS was required but the server did not offer STARTTLS")
            return
        ctx = tls_context(route.tls, self.settings.tls_cafile)
        try:
            info = await conn.starttls(ctx, None if _is_ip(hop.name) and route.tls != "required-verify"
                                       else hop.name)
        except DeliveryFailure as f:
            self.sink.emit(DcidTlsFailed(dcid, f.detail))
            if route.tls in ("required", "required-verify"):
                self.sink.emit(DcidTlsRequired(dcid, hop.address))
            raise
        self.sink.emit(DcidTlsSuccess(dcid, info.protocol, info.cipher))

    async def _auth(self, dcid: int, hop: NextHop, route: Route, conn: SmtpConnection) -> None:
        profile = route.auth_profile
        if not profile:
            return
        offered = conn.auth_mechanisms
        if not offered:
            # Nothing to authenticate to; the destination's replies decide (as Postfix does).
            return
        cred = self.credentials.get(profile)
        encrypted = conn.tls is not None
        mech = choose_mechanism(offered, tls=encrypted)
        if mech in REVEALING and not encrypted and route.tls != "off":
            # Never show a password to the wire unless the operator turned TLS off for
            # this route explicitly (aiosmtplib's cleartext-login trap).
            mech = choose_mechanism(offered - REVEALING, tls=False)
            if mech is None:
                raise DeliveryFailure(Stage.AUTH, Kind.TLS,
                                      "no TLS to protect the password (set tls = \"off\" on the route to allow)")
        failure: SmtpResponse | None = None
        reply: Reply | None = None
        if cred is None:
            failure = SmtpResponse("000", (f"no outgoing authentication profile {profile}",))
        elif mech is None:
            failure = SmtpResponse("000", (f"no common AUTH mechanism (server offers {' '.join(sorted(offered))})",))
        else:
            try:
                password = cred.password()
            except Exception as exc:     # SecretError and friends: say why, never the secret
                failure = SmtpResponse("000", (str(exc),))
            else:
                reply = await conn.authenticate(mech, cred.username, password)
        if reply is not None and reply.code == 235:
            self.sink.emit(OutboundAuthResult(dcid, hop.address, profile, True))
            return
        response = reply.response if reply is not None else failure
        self.sink.emit(OutboundAuthResult(dcid, hop.address, profile, False, response))
        kind = kind_of_code(reply.code) if reply is not None else Kind.TEMP
        outcome = decide(Stage.AUTH, kind, on_auth_failure=route.on_auth_failure)
        if outcome is Outcome.CONTINUE:
            return
        raise DeliveryFailure(Stage.AUTH, kind, str(reply) if reply else response.lines[0], reply)

    async def transaction(self, session: Session, sender: str, rcpts: Sequence[tuple[int, str]],
                          body: bytes | BinaryIO, *, size: int | None = None,
                          params: tuple[tuple[str, str], ...] = (),
                          started: Callable[[], None] | None = None) -> TransactionOutcome:
        """One message over ``session``: per-recipient results (delivered, bounced, deferred).

        On a kept connection (not its first message) the transaction opens with RSET; when
        that fails the session is closed and ``ConnectionStale`` raised: the caller delivers
        the message over a new connection. ``started`` is called when the message's delivery
        begins: on the wire after that RSET, or here for a message refused before the wire."""
        out = TransactionOutcome()
        # Never put control characters on the wire (command injection); the spool should not
        # hold such an address, so this is a permanent condition of the message.
        if _unsafe(sender):
            out.bounced = [RcptOutcome(rid, Outcome.BOUNCE_RECIPIENT, BAD_SENDER_SYNTAX) for rid, _ in rcpts]
            rcpts = []
        else:
            out.bounced = [RcptOutcome(rid, Outcome.BOUNCE_RECIPIENT, BAD_RCPT_SYNTAX)
                           for rid, addr in rcpts if _unsafe(addr)]
            rcpts = [(rid, addr) for rid, addr in rcpts if not _unsafe(addr)]
        if not rcpts:
            if started is not None:
                started()
            return out
        rids = [rid for rid, _ in rcpts]
        kept = session.messages > 0
        session.messages += 1
        try:
            result = await session.conn.transaction(sender, [a for _, a in rcpts], body, size=size, params=params,
                                                    reset_first=kept, started=started)
        except ConnectionStale:
            await self.close(session)
            raise
        except DeliveryFailure as f:
            self._whole(out, rids, f)
            return out
        accepted = []
        for (rid, _), reply in zip(rcpts, result.rcpts):
            if reply.ok:
                accepted.append(rid)
                continue
            kind = kind_of_code(reply.code)
            outcome = decide(Stage.RCPT, kind)
            item = RcptOutcome(rid, outcome, status_for(Stage.RCPT, kind, reply.code), reply.response, True)
            (out.bounced if outcome is Outcome.BOUNCE_RECIPIENT else out.deferred).append(item)
        if result.data is not None:
            out.delivered = accepted
            out.reply = result.data
        return out

    def _whole(self, out: TransactionOutcome, rids: list[int], f: DeliveryFailure) -> None:
        outcome = decide(f.stage, f.kind)
        status = status_for(f.stage, f.kind, f.reply.code if f.reply else None)
        item_kind = Outcome.BOUNCE_RECIPIENT if outcome is Outcome.BOUNCE_MESSAGE else Outcome.DEFER_RECIPIENT
        target = out.bounced if outcome is Outcome.BOUNCE_MESSAGE else out.deferred
        for rid in rids:
            target.append(RcptOutcome(rid, item_kind, status, f.response, f.reply is not None))

    async def reusable(self, session: Session) -> bool:
        """Before the next message on a kept connection: is it still open? A closed one is
        closed here (and logged closed). The RSET that proves the peer still there opens the
        next transaction (see ``transaction``)."""
        if session.alive:
            return True
        await self.close(session)
        return False

    async def close(self, session: Session) -> None:
        await session.conn.quit()
        self.sink.emit(DcidClose(session.dcid))
