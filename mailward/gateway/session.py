"""One inbound SMTP session: the gateway's policy for a connection, phase by phase.

Owns the decisions of reception — host access table, AUTH (through the listener's profile
and the shared brute-force guard), relay control, limits, streaming the body to the spool
and acknowledging only what the spool made durable — and the mail_logs events that tell
that story (ICID, MID, RID). It does no I/O of its own: the asyncio shell
(`net/server.py`) drives it through the `SessionHandler` interface, the spool writes, the
profiles verify, the sink logs.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from ..auth.base import Credentials, Verdict
from ..auth.service import Authenticator
from ..maillog import events as ev
from ..maillog.sink import EventSink
from ..net.dns import Resolver, reverse_name
from ..net.server import ConnectDecision
from ..policy.dnsbl import listed_in
from ..policy.hat import HostAccessTable
from ..policy.relay import check_recipient
from ..queue.spool import Envelope, Spool, SpoolError
from ..smtp.reply import Reply
from .headers import HeaderScanner, received_header


@dataclass
class ListenerContext:
    """Everything a session of one listener needs, built once by the app from the config."""

    name: str
    hostname: str
    hat: HostAccessTable
    accepted_domains: tuple[str, ...]
    starttls: str                 # off | preferred | required
    auth: str                     # off | preferred | required
    auth_requires_tls: bool
    profile_name: str | None
    authenticator: Authenticator  # guard + profiles + AUTH log lines, shared by all listeners
    spool: Spool
    sink: EventSink
    icids: object                 # IdCounter
    mids: object                  # IdCounter
    resolver: Resolver | None     # for the client's reverse name (None: lookups off)
    max_message_size: int
    max_recipients: int
    dns_timeout: float = 5.0
    dnsbl_resolver: Resolver | None = None   # for the HAT's dnslist[...] entries (None: it has none)


def R(code: int, text: str) -> Reply:
    return Reply(code, text)


_AUTH_OK = R(235, "2.7.0 Authentication successful")
_AUTH_FAILED = R(535, "5.7.8 Authentication credentials invalid")
_AUTH_LOCKED = R(454, "4.7.0 Too many authentication failures, try again later")
_AUTH_TEMPFAIL = R(454, "4.7.0 Temporary authentication failure")


class InboundSession:
    """The SessionHandler for one connection."""

    def __init__(self, ctx: ListenerContext):
        self.ctx = ctx
        self.icid = 0
        self.peer_ip = ""
        self.rdns: str | None = None
        self.policy = "ACCEPT"
        self.helo = ""
        self.esmtp = False
        self.tls: tuple[str, str] | None = None
        self.auth_user: str | None = None
        self.auth_required_logged = False
        self.tls_required_logged = False
        self._reset_transaction()

    # --- transaction state -------------------------------------------------------------

    def _reset_transaction(self) -> None:
        self.mid: int | None = None
        self.sender = ""
        self.mail_params: dict[str, str] = {}
        self.rcpts: list[str] = []
        self.writer = None
        self.scanner: HeaderScanner | None = None
        self.write_error: str | None = None

    def _abort_transaction(self, reason: str = "Receiving aborted") -> None:
        if self.writer is not None:
            self.writer.abort()
        if self.mid is not None:
            self.ctx.sink.emit(ev.MessageAborted(self.mid, reason))
            self.ctx.sink.emit(ev.MessageFinished(self.mid, "aborted"))
        self._reset_transaction()

    @property
    def may_relay(self) -> bool:
        return self.auth_user is not None or self.policy == "RELAY"

    # --- connection --------------------------------------------------------------------

    async def on_connect(self, conn):
        ctx = self.ctx
        self.icid = ctx.icids.next()
        self.peer_ip = conn.peer_ip
        verified = False
        listed: frozenset[str] = frozenset()
        zones = ctx.hat.dnslists() if ctx.dnsbl_resolver is not None else ()
        if ctx.resolver is not None and zones:      # both at once: the client waits for the banner
            (self.rdns, verified), listed = await asyncio.gather(
                reverse_name(ctx.resolver, conn.peer_ip, ctx.dns_timeout),
                listed_in(ctx.dnsbl_resolver, conn.peer_ip, zones, ctx.dns_timeout))
        elif ctx.resolver is not None:
            self.rdns, verified = await reverse_name(ctx.resolver, conn.peer_ip, ctx.dns_timeout)
        elif zones:
            listed = await listed_in(ctx.dnsbl_resolver, conn.peer_ip, zones, ctx.dns_timeout)
        if conn.tls_protocol:           # implicit TLS: the handshake came before the banner
            self.tls = (conn.tls_protocol, conn.tls_cipher or "")
        ctx.sink.emit(ev.NewIcid(self.icid, ctx.name, conn.local_ip, conn.peer_ip, self.rdns, verified))
        decision = ctx.hat.decide(conn.peer_ip, self.rdns, verified, listed)
        self.policy = decision.policy
        ctx.sink.emit(ev.HatDecision(self.icid, decision.policy, decision.group, decision.match, "None"))
        if self.tls:
            ctx.sink.emit(ev.IcidTlsSuccess(self.icid, self.tls[0], self.tls[1]))
        if decision.policy == "TCPREFUSE":
            return ConnectDecision.refuse()
        if decision.policy == "REJECT":
            return ConnectDecision.reject(R(554, f"5.7.1 {ctx.hostname} Access denied"))
        return ConnectDecision.accept(f"{ctx.hostname} ESMTP mailward")

    def _auth_offered(self) -> bool:
        ctx = self.ctx
        if ctx.auth == "off" or ctx.profile_name is None or self.auth_user is not None:
            return False
        return self.tls is not None or not ctx.auth_requires_tls

    def ehlo_keywords(self) -> list[str]:
        kw = [f"SIZE {self.ctx.max_message_size}"]
        if self.ctx.starttls != "off" and self.tls is None:
            kw.append("STARTTLS")
        if self._auth_offered():
            mechs = self.ctx.authenticator.mechanisms(self.ctx.profile_name)
            if mechs:
                kw.append("AUTH " + " ".join(mechs))
        return kw

    async def on_helo(self, name: str, esmtp: bool):
        self.helo, self.esmtp = name, esmtp
        self._abort_transaction()
        return None

    async def on_starttls(self):
        if self.ctx.starttls == "off" or self.tls is not None:
            return R(502, "5.5.1 STARTTLS not available")
        return None

    async def on_tls(self, ok: bool, protocol: str | None, cipher: str | None, error: str | None) -> None:
        if ok:
            self.tls = (protocol or "", cipher or "")
            self.helo, self.esmtp = "", False
            self.ctx.sink.emit(ev.IcidTlsSuccess(self.icid, protocol, cipher))
        else:
            self.ctx.sink.emit(ev.IcidTlsFailed(self.icid, error))

    # --- AUTH ----------------------------------------------------------------------------

    def auth_start_now(self, mechanism: str):
        """``on_auth_start`` without a coroutine: the shell answers it in its read callback."""
        ctx = self.ctx
        if ctx.auth == "off" or ctx.profile_name is None:
            return R(502, "5.5.1 AUTH not available")
        if self.tls is None and ctx.auth_requires_tls:
            return R(538, "5.7.11 Encryption required for requested authentication mechanism")
        if mechanism not in ctx.authenticator.mechanisms(ctx.profile_name):
            return R(504, "5.5.4 Unrecognized authentication type")
        return None

    async def on_auth_start(self, mechanism: str):
        return self.auth_start_now(mechanism)

    def auth_now(self, creds: Credentials):
        """The reply to AUTH when it is known without waiting (a cached credential of a client
        the guard lets through at once), else None and the shell awaits ``on_auth``."""
        ctx = self.ctx
        outcome = ctx.authenticator.authenticate_now(ctx.profile_name, creds, icid=self.icid,
                                                     client_ip=self.peer_ip)
        return None if outcome is None else self._auth_reply(creds, outcome)

    async def on_auth(self, creds: Credentials):
        ctx = self.ctx
        outcome = await ctx.authenticator.authenticate(ctx.profile_name, creds, icid=self.icid,
                                                       client_ip=self.peer_ip)
        return self._auth_reply(creds, outcome)

    def _auth_reply(self, creds: Credentials, outcome) -> Reply:
        if outcome.verdict is Verdict.OK:
            self.auth_user = creds.username
            return _AUTH_OK
        if outcome.verdict is Verdict.FAIL:
            return _AUTH_FAILED
        if outcome.verdict is Verdict.LOCKED:
            return _AUTH_LOCKED
        return _AUTH_TEMPFAIL

    # --- envelope ------------------------------------------------------------------------

    async def on_mail(self, address, params: dict[str, str]):
        ctx = self.ctx
        if ctx.starttls == "required" and self.tls is None:
            if not self.tls_required_logged:
                self.tls_required_logged = True
                ctx.sink.emit(ev.IcidTlsRequired(self.icid))
            return R(530, "5.7.0 Must issue a STARTTLS command first")
        if ctx.auth == "required" and self.auth_user is None:
            if not self.auth_required_logged:
                self.auth_required_logged = True
                ctx.sink.emit(ev.SmtpAuthRequiredNotInitiated(self.icid))
            return R(530, "5.7.0 Authentication required")
        size = params.get("SIZE")
        if size is not None and size.isdigit() and int(size) > ctx.max_message_size:
            ctx.sink.emit(ev.ReceivingFailed(self.icid, "Message size exceeds limit"))
            return R(552, "5.3.4 Message size exceeds fixed limit")
        self.mid = ctx.mids.next()
        self.sender = address.text
        self.mail_params = dict(params)
        ctx.sink.emit(ev.StartMid(self.mid, self.icid))
        ctx.sink.emit(ev.MailFrom(self.mid, self.icid, self.sender))
        return R(250, "2.1.0 Ok")

    async def on_rcpt(self, address, params: dict[str, str]):
        ctx = self.ctx
        rcpt = address.text
        if len(self.rcpts) >= ctx.max_recipients:
            ctx.sink.emit(ev.ReceivingFailed(self.icid, "Too Many Recipients"))
            return R(452, "4.5.3 Too many recipients")
        verdict = check_recipient(address.local_part, address.domain, accepted_domains=ctx.accepted_domains,
                                  may_relay=self.may_relay,
                                  had_source_route=getattr(address, "had_source_route", False))
        if not verdict.allowed:
            ctx.sink.emit(ev.RcptRejected(self.mid, self.icid, rcpt, "RAT"))
            return R(554, f"5.7.1 <{rcpt}>: Relay access denied")
        rid = len(self.rcpts)
        self.rcpts.append(rcpt)
        ctx.sink.emit(ev.RcptTo(self.mid, self.icid, rid, rcpt))
        return R(250, "2.1.5 Ok")

    # --- data ----------------------------------------------------------------------------

    async def on_data(self):
        if not self.rcpts:
            return R(554, "5.5.1 No valid recipients")
        try:
            self.writer = self.ctx.spool.writer()
            self.writer.write(received_header(
                helo=self.helo, rdns=self.rdns, ip=self.peer_ip, hostname=self.ctx.hostname, mid=self.mid,
                esmtp=self.esmtp, tls=self.tls, auth_user=self.auth_user,
                rcpt=self.rcpts[0] if len(self.rcpts) == 1 else None))
        except SpoolError as exc:
            self.writer = None
            self.ctx.sink.emit(ev.ReceivingFailed(self.icid, f"Spool error: {exc}"))
            return R(452, "4.3.1 Insufficient system storage")
        self.scanner = HeaderScanner()
        return R(354, "End data with <CR><LF>.<CR><LF>")

    def on_data_chunk(self, chunk: bytes) -> None:
        if self.write_error is not None or self.writer is None:
            return
        self.scanner.feed(chunk)
        try:
            self.writer.write(chunk)
        except SpoolError as exc:
            self.write_error = str(exc)

    async def on_data_end(self, error):
        ctx = self.ctx
        mid = self.mid
        if error is not None:
            reason = "Message size exceeds limit" if error.code == 552 else error.text
            ctx.sink.emit(ev.ReceivingFailed(self.icid, reason))
            self._abort_transaction()
            return error
        if self.write_error is not None:
            ctx.sink.emit(ev.ReceivingFailed(self.icid, f"Spool error: {self.write_error}"))
            self._abort_transaction()
            return R(452, "4.3.1 Insufficient system storage")
        self.scanner.finish()
        if self.scanner.message_id is not None:
            ctx.sink.emit(ev.MessageIdHeader(mid, self.scanner.message_id))
        if self.scanner.subject is not None:
            ctx.sink.emit(ev.SubjectHeader(mid, self.scanner.subject))
        env = Envelope(mid=mid, icid=self.icid, sender=self.sender, recipients=tuple(self.rcpts),
                       received_at=time.time(), listener=ctx.name, client_ip=self.peer_ip, helo=self.helo,
                       auth_user=self.auth_user, params=tuple(sorted(self.mail_params.items())))
        try:
            queued = await self.writer.commit(env)
        except SpoolError as exc:
            ctx.sink.emit(ev.ReceivingFailed(self.icid, f"Spool error: {exc}"))
            self._abort_transaction()
            return R(452, "4.3.1 Insufficient system storage")
        self.writer = None
        ctx.sink.emit(ev.MessageReady(mid, queued.size, self.sender))
        direction = "outbound" if self.may_relay else "inbound"
        ctx.sink.emit(ev.PolicyMatch(mid, "DEFAULT", direction))
        ctx.sink.emit(ev.QueuedForDelivery(mid))
        self._reset_transaction()
        return R(250, f"2.0.0 Ok: queued as {mid}")

    async def on_rset(self) -> None:
        self._abort_transaction()

    async def on_close(self, reason: str) -> None:
        self._abort_transaction()
        if reason in ("lost", "timeout", "error"):
            self.ctx.sink.emit(ev.IcidLost(self.icid))
        if self.icid:
            self.ctx.sink.emit(ev.IcidClose(self.icid))


def connection_limit_logger(ctx: ListenerContext):
    """The shell refused a connection over a limit: give it an ICID and say why in the log."""

    def on_limit(conn, which: str) -> None:
        icid = ctx.icids.next()
        ctx.sink.emit(ev.NewIcid(icid, ctx.name, conn.local_ip, conn.peer_ip, None, False))
        ctx.sink.emit(ev.ReceivingFailed(icid, "Connection limit exceeded"))
        ctx.sink.emit(ev.IcidClose(icid))

    return on_limit
