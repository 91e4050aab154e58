"""The asyncio shell around the sans-IO SMTP core: listeners, connections, TLS, timeouts,
limits, flow control and shutdown. All network I/O of the SMTP server lives here.

Owns sockets and time. It drives one `smtp.server.ServerConnection` per connection and
asks an application `SessionHandler` (one per connection, made by a factory) for every
decision; it never decides policy, never parses SMTP itself and never logs mail events
(the handler does, and hears about every refusal the shell makes through ``on_limit``).

Interface with the application (``SessionHandler``; every method is required except
``cram_challenge``)::

    async on_connect(conn: ConnInfo) -> ConnectDecision   # accept(banner) | reject(Reply) | refuse()
    ehlo_keywords() -> list[str]                         # the core adds PIPELINING 8BITMIME
                                                         # ENHANCEDSTATUSCODES SMTPUTF8 (and SIZE)
    async on_helo(name, esmtp) -> Reply | None           # None = 250 / the EHLO keyword list
    async on_starttls() -> Reply | None                  # None = 220, then the handshake
    async on_tls(ok, protocol, cipher, error) -> None    # after the STARTTLS handshake
    async on_auth_start(mechanism) -> Reply | None       # None = go on with the SASL exchange
    async on_auth(creds: smtp.sasl.Credentials) -> Reply # 235 / 535 / 454
    async on_mail(address: Address, params) -> Reply
    async on_rcpt(address: Address, params) -> Reply
    async on_data() -> Reply                             # 354 or a refusal
    on_data_chunk(chunk: bytes) -> None                  # sync, streaming, dot-unstuffed
    async on_data_end(error: Reply | None) -> Reply      # error: size / bare LF / long line
    async on_rset() -> None
    async on_close(reason) -> None    # "quit" | "lost" | "timeout" | "error" | "limit"
                                      # | "rejected" (connect refused by the handler) | "shutdown"
    cram_challenge() -> str           # optional: the CRAM-MD5 challenge text
    auth_start_now(mechanism) -> Reply | None   # optional, both or neither: on_auth_start and
    auth_now(creds) -> Reply | None             # on_auth answered without awaiting (None from
                                                # auth_now = not known yet: on_auth is awaited)

Flow control: reading pauses while unprocessed input exceeds a bound (the handler is slow)
and while the transport's write buffer is above its high-water mark (the peer reads
slowly); replies to a pipelined batch are written in one ``write()``.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from ..smtp import events as ev
from ..smtp.address import Address
from ..smtp.reply import Reply
from ..smtp.sasl import Credentials
from ..smtp.server import NEED_DATA, PAUSED, ServerConfig, ServerConnection
from .tls import describe

__all__ = ["ListenerSpec", "ConnInfo", "ConnectDecision", "SessionHandler", "ListenerServer", "serve_listener"]

log = logging.getLogger(__name__)

READ_HIGH_WATER = 256 * 1024     # unprocessed input above this pauses reading
# A timer may fire this much before its time (event loops round to milliseconds): a wait is
# only over when less than this is left of it.
TIMER_SLACK = 0.002


@dataclass(frozen=True)
class ListenerSpec:
    """What the shell needs to run one listener. ``tls_mode``: "none" | "starttls" | "implicit"."""

    name: str
    host: str = "127.0.0.1"
    port: int = 0
    tls_mode: str = "none"
    command_timeout: float = 300.0          # RFC 5321 §4.5.3.2
    data_timeout: float = 600.0             # RFC 5321 §4.5.3.2 (per block of data)
    tls_handshake_timeout: float = 30.0
    max_connections: int = 300
    max_connections_per_ip: int = 25
    max_messages_per_connection: int | None = 10
    max_message_size: int = 10 * 1024 * 1024
    bare_newline: str = "reject"
    max_errors: int = 20
    shutdown_grace: float = 5.0             # how long close() lets sessions finish

    def __post_init__(self) -> None:
        if self.tls_mode not in ("none", "starttls", "implicit"):
            raise ValueError(f"tls_mode must be none|starttls|implicit, not {self.tls_mode!r}")

    @classmethod
    def from_config(cls, lst: Any) -> "ListenerSpec":
        """From a config ``Listener`` (any object with its attribute names)."""
        if getattr(lst, "implicit_tls", False):
            mode = "implicit"
        elif getattr(lst, "starttls", "off") != "off":
            mode = "starttls"
        else:
            mode = "none"
        g = lambda key, default: getattr(lst, key, default)  # noqa: E731
        return cls(name=lst.name, host=g("address", "127.0.0.1"), port=g("port", 0), tls_mode=mode,
                   command_timeout=g("command_timeout", 300.0), data_timeout=g("data_timeout", 600.0),
                   max_connections=g("max_connections", 300),
                   max_connections_per_ip=g("max_connections_per_ip", 25),
                   max_messages_per_connection=g("max_messages_per_connection", 10),
                   max_message_size=g("max_message_size", 10 * 1024 * 1024),
                   bare_newline=g("bare_newline", "reject"))


@dataclass(frozen=True)
class ConnInfo:
    listener: str
    peer_ip: str
    peer_port: int
    local_ip: str
    local_port: int
    tls_protocol: str | None = None      # set when TLS came first (implicit TLS)
    tls_cipher: str | None = None


@dataclass(frozen=True)
class ConnectDecision:
    action: str                          # accept | reject | refuse
    banner: str = ""
    reply: Reply | None = None

    @classmethod
    def accept(cls, banner: str) -> "ConnectDecision":
        return cls("accept", banner=banner)

    @classmethod
    def reject(cls, reply: Reply) -> "ConnectDecision":
        return cls("reject", reply=reply)

    @classmethod
    def refuse(cls) -> "ConnectDecision":
        return cls("refuse")


class SessionHandler(Protocol):
    async def on_connect(self, conn: ConnInfo) -> ConnectDecision: ...
    def ehlo_keywords(self) -> list[str]: ...
    async def on_helo(self, name: str, esmtp: bool) -> Reply | None: ...
    async def on_starttls(self) -> Reply | None: ...
    async def on_tls(self, ok: bool, protocol: str | None, cipher: str | None, error: str | None) -> None: ...
    async def on_auth_start(self, mechanism: str) -> Reply | None: ...
    async def on_auth(self, creds: Credentials) -> Reply: ...
    async def on_mail(self, address: Address, params: dict[str, str]) -> Reply: ...
    async def on_rcpt(self, address: Address, params: dict[str, str]) -> Reply: ...
    async def on_data(self) -> Reply: ...
    def on_data_chunk(self, chunk: bytes) -> None: ...
    async def on_data_end(self, error: Reply | None) -> Reply: ...
    async def on_rset(self) -> None: ...
    async def on_close(self, reason: str) -> None: ...


LimitCallback = Callable[[ConnInfo, str], None]     # (connection, "total" | "per_ip")


class _WriteTimeout(Exception):
    """The peer stopped reading our replies for longer than the command timeout."""


class _Session(asyncio.Protocol):
    """One connection: feeds the core, runs the driver task, owns the transport."""

    def __init__(self, server: "ListenerServer") -> None:
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.core: ServerConnection | None = None
        self.handler: Any = None
        self.info: ConnInfo | None = None
        self.task: asyncio.Task | None = None
        self._waiter: asyncio.Future | None = None
        # The timeout of the waits for input: one timer kept across waits (see _wait_input).
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0            # loop time the timer fires
        self._wait_until = 0.0          # loop time the current wait for input ends
        self._deadline = 0.0            # loop time by which the next command must be complete
        self._fast = False              # the handler answers AUTH without awaiting (see _answer_now)
        self._held: ev.Event | None = None   # taken out of the core by _answer_now, for the task
        self._drain: asyncio.Future | None = None
        self._lost = False
        self._read_paused = False
        self._write_paused = False
        self._stopping = False
        # Between loop.start_tls() and the core's tls_started(), bytes can only come from the
        # new TLS transport (start_tls stops reading the raw socket first): a client that
        # sends EHLO right after the handshake may beat our resumption. Hold them here.
        self._tls_early: list[bytes] | None = None

    # --- asyncio.Protocol callbacks ------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername") or ("", 0)
        sock = transport.get_extra_info("sockname") or ("", 0)
        proto, cipher = describe(transport.get_extra_info("ssl_object"))
        self.info = ConnInfo(self.server.spec.name, peer[0], peer[1], sock[0], sock[1], proto, cipher)
        refused = self.server._admit(self)
        if refused is not None:
            transport.write(Reply(421, f"4.7.0 {self.server.hostname} Error: too many connections").to_bytes())
            transport.close()
            self._lost = True
            if self.server.on_limit is not None:
                try:
                    self.server.on_limit(self.info, refused)
                except Exception:       # the callback is logging; it must not kill the listener
                    log.exception("on_limit callback failed")
            return
        self.core = ServerConnection(self.server.core_config)
        self.task = self.loop.create_task(self._run())

    def data_received(self, data: bytes) -> None:
        core = self.core
        if core is None:
            return
        if self._tls_early is not None:
            self._tls_early.append(data)
            return
        core.receive_data(data)
        if core.buffered > READ_HIGH_WATER and not self._read_paused:
            self._pause_reading()
        w = self._waiter
        if (self._fast and w is not None and not w.done() and self._held is None and not core.in_data
                and not self._stopping and not self._read_paused and not self._write_paused
                and self._answer_now()):
            return                      # answered here; the task keeps waiting for input
        self._wake()

    def eof_received(self) -> bool:
        if self.core is not None:
            self.core.receive_data(b"")
            self._wake()
        # Plain TCP: keep the half-open transport so the last replies (221 after a pipelined
        # QUIT) still go out; the driver closes it. TLS cannot half-close (asyncio warns).
        return not self.core.tls if self.core is not None else False

    def connection_lost(self, exc) -> None:
        self._lost = True
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        self._wake()

    def pause_writing(self) -> None:
        self._write_paused = True
        self._drain = self.loop.create_future()
        if not self._read_paused:
            self._pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # --- helpers ---------------------------------------------------------------------------

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _pause_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            try:
                self.transport.pause_reading()
                self._read_paused = True
            except RuntimeError:
                pass

    def _resume_reading(self) -> None:
        if self._read_paused and not self._write_paused and self.transport is not None \
                and not self.transport.is_closing():
            self._read_paused = False
            try:
                self.transport.resume_reading()
            except RuntimeError:
                pass

    async def _flush(self) -> None:
        data = self.core.data_to_send()
        if data and not self._lost:
            self.transport.write(data)
        if self._write_paused and not self._lost:
            await self._drain_or_abort()

    async def _drain_or_abort(self) -> None:
        # A peer that sends but never reads must not hold the session forever.
        try:
            async with asyncio.timeout(self.server.spec.command_timeout):
                await self._drain
        except TimeoutError:
            self.transport.abort()
            raise _WriteTimeout() from None

    async def _wait_input(self, timeout: float) -> bool:
        """Wait for bytes (or EOF / loss). False on timeout.

        One future per wait, not ``asyncio.timeout()``: this runs once per command round
        trip, and the context manager's bookkeeping (current task, reschedule, uncancel) cost
        more than the rest of the wait. And one timer for many waits: deadlines mostly move
        later, so a timer armed for an earlier wait is left running and, when it fires before
        the current wait's end, re-armed once (``_on_timer``) instead of a timer made and
        cancelled per command. ``_answer_now`` moves the current wait's end the same way.
        """
        if self._stopping and not self.core.in_data:
            return True
        loop = self.loop
        self._wait_until = until = loop.time() + timeout
        if self._timer is None or self._timer_at > until:
            self._arm(until)
        self._waiter = waiter = loop.create_future()
        try:
            return await waiter is not False
        finally:
            self._waiter = None

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_at(when, self._on_timer)
        self._timer_at = when

    def _on_timer(self) -> None:
        """The kept timer fired: the current wait for input ran out of time (its result
        False; input sets None), or its end moved later (armed again for it), or no wait is
        in progress (the next one arms a timer)."""
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self.loop.time() < self._wait_until - TIMER_SLACK:
            self._arm(self._wait_until)
        else:
            waiter.set_result(False)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _answer_now(self) -> bool:
        """Answer AUTH right here, in the read callback, when the reply is known without
        waiting: the handler's ``auth_start_now`` always, ``auth_now`` for a credential it
        can decide at once (a cache hit). No task wake-up and no extra loop pass for the
        round trip a client spends on AUTH (RFC 4954: it waits for the 235).

        True: everything received was answered and written, the task keeps waiting (with a
        new command deadline). False: the task must take over; an event already taken out of
        the core is left in ``_held`` for it, in order, before any other input.
        """
        core, handler = self.core, self.handler
        answered = False
        try:
            while True:
                event = core.next_event()
                if event is NEED_DATA:
                    break
                kind = type(event)
                if kind is ev.AuthStart and event.mechanism != "CRAM-MD5":   # CRAM: cram_challenge
                    core.respond(handler.auth_start_now(event.mechanism))
                elif kind is ev.AuthCredentials:
                    reply = handler.auth_now(event.credentials)
                    if reply is None:
                        self._held = event
                        return False
                    core.respond(reply)
                else:
                    if event is not PAUSED:
                        self._held = event
                    return False
                answered = True
        except Exception:
            log.exception("SMTP session on %s failed", self.server.spec.name)
            self.transport.write(Reply(421, f"4.3.0 {self.server.hostname} Error: internal error").to_bytes())
            self.transport.close()
            return False
        if not answered:
            return False
        data = core.data_to_send()
        if data:
            self.transport.write(data)
        # The next command's deadline starts now; the kept timer catches up when it fires.
        self._deadline = self._wait_until = self.loop.time() + self.server.spec.command_timeout
        return True

    def request_stop(self) -> None:
        """Listener shutdown: end the session at its next idle point."""
        self._stopping = True
        self._wake()

    # --- the driver ----------------------------------------------------------------------------

    async def _run(self) -> None:
        reason = "error"
        try:
            self.handler = self.server.factory()
            self._fast = hasattr(self.handler, "auth_now") and hasattr(self.handler, "auth_start_now")
            reason = await self._converse()
        except asyncio.CancelledError:
            reason = "shutdown"
        except _WriteTimeout:
            reason = "timeout"
        except Exception:
            log.exception("SMTP session on %s failed", self.server.spec.name)
            if not self._lost:
                self.transport.write(Reply(421, f"4.3.0 {self.server.hostname} Error: internal error").to_bytes())
            reason = "error"
        finally:
            self._disarm()          # a kept timer would hold the ended session until it fires
            if self.transport is not None:
                self.transport.close()
            self.server._release(self)
            if self.handler is not None:
                try:
                    await self.handler.on_close(reason)
                except Exception:
                    log.exception("on_close failed")

    async def _converse(self) -> str:
        core, handler, spec = self.core, self.handler, self.server.spec
        decision = await handler.on_connect(self.info)
        if decision.action == "refuse":
            return "rejected"
        if decision.action == "reject":
            core.refuse(decision.reply or Reply(554, "5.7.1 Access denied"))
            await self._flush()
            return "rejected"
        core.greet(decision.banner)
        # A command must be complete within command_timeout of the previous one: a client
        # trickling a byte at a time cannot hold the connection by resetting a per-read timer.
        # The clock starts when we begin waiting after the last command was handled, be it
        # one the core answers itself (NOOP, an error) or one handed to us as an event.
        self._deadline = self.loop.time() + spec.command_timeout
        progressed = False
        lines = core.lines
        while True:
            event = self._held
            if event is not None:
                self._held = None
            else:
                event = core.next_event()
            if event is not NEED_DATA and event is not PAUSED:
                progressed = True
            elif progressed or core.lines != lines:
                progressed = False
                lines = core.lines
                self._deadline = self.loop.time() + spec.command_timeout
            if event is NEED_DATA or event is PAUSED:
                if core.tls_pending:
                    ok = await self._starttls()
                    if not ok:
                        return "error"
                    continue
                data = core.data_to_send()      # _flush() inline: no coroutine per round trip
                if data and not self._lost:
                    self.transport.write(data)
                if self._write_paused and not self._lost:
                    await self._drain_or_abort()
                if self._lost:
                    return "lost"
                if self._stopping and not core.in_data:
                    core.refuse(Reply(421, f"4.3.2 {self.server.hostname} Service shutting down"))
                    await self._flush()
                    return "shutdown"
                self._resume_reading()
                if core.in_data:
                    timeout = spec.data_timeout
                else:
                    timeout = max(0.0, self._deadline - self.loop.time())
                if not await self._wait_input(timeout):
                    core.refuse(Reply(421, f"4.4.2 {self.server.hostname} Error: timeout exceeded"))
                    await self._flush()
                    return "timeout"
                continue
            kind = type(event)
            if kind is ev.DataChunk:
                handler.on_data_chunk(event.data)
            elif kind is ev.MailFrom:
                core.respond(await handler.on_mail(event.address, event.params))
            elif kind is ev.RcptTo:
                core.respond(await handler.on_rcpt(event.address, event.params))
            elif kind is ev.DataStart:
                core.respond(await handler.on_data())
            elif kind is ev.DataEnd:
                core.respond(await handler.on_data_end(event.error))
            elif kind is ev.Helo:
                reply = await handler.on_helo(event.name, event.esmtp)
                core.respond(reply, keywords=handler.ehlo_keywords() if reply is None and event.esmtp else None)
            elif kind is ev.Rset:
                await handler.on_rset()
                core.respond(None)
            elif kind is ev.AuthStart:
                reply = await handler.on_auth_start(event.mechanism)
                challenge = None
                if reply is None and event.mechanism == "CRAM-MD5" and hasattr(handler, "cram_challenge"):
                    challenge = handler.cram_challenge()
                core.respond(reply, challenge=challenge)
            elif kind is ev.AuthCredentials:
                core.respond(await handler.on_auth(event.credentials))
            elif kind is ev.StartTls:
                if self.server.ssl_context is None:
                    core.respond(Reply(454, "4.7.0 TLS not available due to local problem"))
                else:
                    core.respond(await handler.on_starttls())
            elif kind is ev.Closed:
                await self._flush()
                return {"quit": "quit", "eof": "lost", "limit": "limit"}.get(event.reason, "error")

    async def _starttls(self) -> bool:
        await self._flush()                     # the 220 goes out in clear text
        if self._lost:
            return False
        self._read_paused = False               # start_tls manages reading on the raw transport
        # Plaintext pipelined after STARTTLS was already dropped by the core (injection defence);
        # from here on only decrypted bytes can arrive.
        self._tls_early = []
        try:
            transport = await self.loop.start_tls(
                self.transport, self, self.server.ssl_context, server_side=True,
                ssl_handshake_timeout=self.server.spec.tls_handshake_timeout)
        except (OSError, asyncio.TimeoutError, ConnectionError, Exception) as exc:  # noqa: B014
            self._tls_early = None
            self._lost = True
            await self.handler.on_tls(False, None, None, str(exc) or type(exc).__name__)
            return False
        self.transport = transport
        proto, cipher = describe(transport.get_extra_info("ssl_object"))
        self.core.tls_started()
        early, self._tls_early = self._tls_early, None
        for chunk in early:
            self.core.receive_data(chunk)
        await self.handler.on_tls(True, proto, cipher, None)
        return True


class ListenerServer:
    """A bound listener. ``port`` is the real port (useful with port 0)."""

    def __init__(self, spec: ListenerSpec, ssl_context, factory: Callable[[], Any], hostname: str,
                 on_limit: LimitCallback | None) -> None:
        self.spec = spec
        self.ssl_context = ssl_context
        self.factory = factory
        self.hostname = hostname
        self.on_limit = on_limit
        self.loop = asyncio.get_running_loop()
        self.sessions: set[_Session] = set()
        self._per_ip: dict[str, int] = {}
        self._server: asyncio.base_events.Server | None = None
        starttls = spec.tls_mode == "starttls" and ssl_context is not None
        self.core_config = ServerConfig(
            hostname=hostname, max_message_size=spec.max_message_size, bare_newline=spec.bare_newline,
            max_errors=spec.max_errors, max_messages=spec.max_messages_per_connection,
            tls_available=starttls, implicit_tls=spec.tls_mode == "implicit")

    @property
    def port(self) -> int:
        return self._server.sockets[0].getsockname()[1]

    @property
    def active(self) -> int:
        return len(self.sessions)

    async def start(self) -> None:
        implicit = self.spec.tls_mode == "implicit"
        if implicit and self.ssl_context is None:
            raise ValueError(f"listener {self.spec.name}: implicit TLS needs a TLS context")
        self._server = await self.loop.create_server(
            lambda: _Session(self), self.spec.host, self.spec.port,
            ssl=self.ssl_context if implicit else None,
            ssl_handshake_timeout=self.spec.tls_handshake_timeout if implicit else None,
            reuse_address=True, backlog=1024)

    def _admit(self, session: _Session) -> str | None:
        ip = session.info.peer_ip
        if len(self.sessions) >= self.spec.max_connections:
            return "total"
        if self._per_ip.get(ip, 0) >= self.spec.max_connections_per_ip:
            return "per_ip"
        self.sessions.add(session)
        self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
        return None

    def _release(self, session: _Session) -> None:
        if session in self.sessions:
            self.sessions.discard(session)
            ip = session.info.peer_ip
            left = self._per_ip.get(ip, 1) - 1
            if left:
                self._per_ip[ip] = left
            else:
                self._per_ip.pop(ip, None)

    async def close(self, grace: float | None = None) -> None:
        """Stop accepting; idle sessions get 421 at once, busy ones may finish their
        current command within ``grace`` seconds; what is left is cut off."""
        grace = self.spec.shutdown_grace if grace is None else grace
        if self._server is not None:
            self._server.close()
        tasks = [s.task for s in self.sessions if s.task is not None]
        for s in list(self.sessions):
            s.request_stop()
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=grace)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        for s in list(self.sessions):
            if s.transport is not None:
                s.transport.abort()


async def serve_listener(spec: ListenerSpec | Any, ssl_context, factory: Callable[[], Any], *,
                         hostname: str, on_limit: LimitCallback | None = None) -> ListenerServer:
    """Bind and start one listener. ``spec`` is a `ListenerSpec` or a config ``Listener``."""
    if not isinstance(spec, ListenerSpec):
        spec = ListenerSpec.from_config(spec)
    server = ListenerServer(spec, ssl_context, factory, hostname, on_limit)
    await server.start()
    return server
