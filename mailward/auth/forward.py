"""The SMTP-forwarding authentication profile: ask another SMTP server whether a login is good.

Owns the client side of forwarded AUTH: servers tried in order (failover), the TLS policy
per server (off / STARTTLS / implicit TLS, certificates verified by default), exactly one
AUTH mechanism per attempt, the mapping of the server's reply to a verdict, and a small pool
of warm (connected, EHLO'd, TLS'd, not yet authenticated) connections per server.

Two aiosmtplib traps are avoided on purpose:
- with ``start_tls=None`` it would log in over cleartext when the server offers AUTH but no
  STARTTLS; here ``tls="starttls"`` makes STARTTLS mandatory (``start_tls=True``), and only
  ``tls="off"``, set explicitly by the operator, sends credentials in clear;
- ``login()`` tries the next mechanism after a wrong password, so one guess would count two
  or three times at the server: ``auth_plain``/``auth_login`` are called directly, once.

Verdicts: 235 -> OK; 535 and other 5xx -> FAIL (the server's words in ``detail``); 4xx ->
TEMPFAIL; connection, TLS or timeout trouble -> next server, and when none answers TEMPFAIL
with one ``SmtpAuthForwardUnreachable`` per server; a server that offers none of the
configured mechanisms (or no STARTTLS when required) is unusable -> next server, and when
none is usable MISCONFIGURED.

A connection whose AUTH succeeded is closed (the session is now authenticated and cannot
AUTH again) and a fresh warm one is opened in the background; after a failure it goes back
to the pool for a few more uses, fewer than Postfix's ``smtpd_soft_error_limit`` so the
server never starts its error sleeps. A pooled connection idle for more than a few seconds
is checked with NOOP before use; one that died is replaced once, transparently.
Must not know the SMTP server side of mailward or the log format.
"""
from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiosmtplib

from .base import PASSWORD_MECHANISMS, AuthOutcome, Credentials, Verdict, password_of
from .cache import CredentialCache, verify_with_cache
from ..maillog.events import Event, SmtpAuthForwardUnreachable, SmtpAuthMisconfigured

TLS_POLICIES = ("off", "starttls", "implicit")
_MAX_FAILURES_PER_CONNECTION = 5     # Postfix starts sleeping after 10 errors per session
# Replies that say "this server cannot check logins set up like this", not "wrong password":
# 504 mechanism not supported, 530/538 encryption required, 534 mechanism too weak.
_CANNOT_CHECK = {504, 530, 534, 538}
_NOOP_AFTER_IDLE = 5.0               # seconds idle before a pooled connection is checked first


@dataclass(frozen=True)
class ForwardServer:
    host: str
    port: int = 25
    tls: str = "starttls"
    tls_verify: bool = True
    ca_file: Path | str | None = None
    mechanisms: tuple[str, ...] = ("PLAIN",)

    def __post_init__(self) -> None:
        if self.tls not in TLS_POLICIES:
            raise ValueError(f"forward server {self.host}: tls must be one of {TLS_POLICIES}")
        bad = [m for m in self.mechanisms if m.upper() not in PASSWORD_MECHANISMS]
        if bad or not self.mechanisms:
            raise ValueError(f"forward server {self.host}: mechanisms must be from {PASSWORD_MECHANISMS}")

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}"


class _Unreachable(Exception):
    pass


class _Unusable(Exception):
    """The server answers but cannot check this login (no such mechanism, no STARTTLS)."""


@dataclass
class _Conn:
    smtp: aiosmtplib.SMTP
    loop: asyncio.AbstractEventLoop
    failures: int = 0
    idle_since: float = field(default_factory=time.monotonic)


class SmtpForwardProfile:
    mechanisms: tuple[str, ...] = PASSWORD_MECHANISMS

    def __init__(self, name: str, servers: Sequence[ForwardServer], *, timeout: float = 10.0,
                 pool_size: int = 4, local_hostname: str | None = None,
                 cache: CredentialCache | None = None):
        if not servers:
            raise ValueError(f"smtp_forward profile {name!r}: no servers")
        self.name = name
        self.servers = tuple(servers)
        self.timeout = timeout
        self.pool_size = pool_size
        # Never socket.getfqdn(): that may ask DNS on every connection.
        self.local_hostname = local_hostname or socket.gethostname() or "localhost"
        self.cache = cache
        self._idle: dict[int, list[_Conn]] = {i: [] for i in range(len(self.servers))}
        self._refills: set[asyncio.Task] = set()
        self._tls: dict[int, ssl.SSLContext] = {}

    def __repr__(self) -> str:
        return f"SmtpForwardProfile({self.name!r}, {[s.label for s in self.servers]!r})"

    @classmethod
    def from_config(cls, name: str, cfg: object, *, cache: CredentialCache | None = None) -> "SmtpForwardProfile":
        """From ``config.SmtpForwardProfile``."""
        servers = [ForwardServer(s.host, s.port, s.tls, s.tls_verify, getattr(s, "ca_file", None),
                                 tuple(s.mechanisms)) for s in getattr(cfg, "servers")]
        return cls(name, servers, timeout=getattr(cfg, "timeout", 10.0),
                   pool_size=getattr(cfg, "pool_size", 4), cache=cache)

    # -- the profile interface --

    async def verify(self, creds: Credentials, *, icid: int, client_ip: str) -> AuthOutcome:
        password = password_of(creds)
        if password is None:
            return AuthOutcome(Verdict.FAIL, self.name, detail=f"mechanism {creds.mechanism} or authorization identity not supported")
        if not creds.username or not password:
            return AuthOutcome(Verdict.FAIL, self.name, detail="empty user or password")
        return await verify_with_cache(self.cache, self.name, creds,
                                       lambda: self._verify(creds.username, password, icid))

    async def _verify(self, user: str, password: str, icid: int) -> AuthOutcome:
        events: list[Event] = []
        unusable: list[str] = []
        for i, server in enumerate(self.servers):
            try:
                verdict, detail = await self._try_server(i, user, password)
            except _Unreachable as exc:
                events.append(SmtpAuthForwardUnreachable(icid, server.label, str(exc)))
                continue
            except _Unusable as exc:
                unusable.append(f"{server.label}: {exc}")
                continue
            return AuthOutcome(verdict, self.name, detail, tuple(events))
        if unusable and len(unusable) == len(self.servers):
            events.append(SmtpAuthMisconfigured(icid, self.name))
            return AuthOutcome(Verdict.MISCONFIGURED, self.name, "; ".join(unusable), tuple(events))
        details = [f"{e.server}: {e.reason}" for e in events if isinstance(e, SmtpAuthForwardUnreachable)]
        return AuthOutcome(Verdict.TEMPFAIL, self.name, "; ".join(details + unusable), tuple(events))

    async def close(self) -> None:
        for t in list(self._refills):
            t.cancel()
        for idle in self._idle.values():
            conns, idle[:] = list(idle), []
            for c in conns:
                await self._discard(c, polite=True)

    # -- one server --

    async def _try_server(self, i: int, user: str, password: str) -> tuple[Verdict, str | None]:
        server = self.servers[i]
        # A pooled connection may have been closed by the server since: one fresh retry.
        for attempt in range(2):
            conn, pooled = await self._take(i)
            mech = self._mechanism(server, conn)
            try:
                if mech == "PLAIN":
                    await conn.smtp.auth_plain(user, password, timeout=self.timeout)
                else:
                    await conn.smtp.auth_login(user, password, timeout=self.timeout)
            except aiosmtplib.SMTPAuthenticationError as exc:
                return self._after_refusal(i, conn, exc.code, exc.message)
            except aiosmtplib.SMTPResponseException as exc:   # e.g. 454 from the server's backend
                return self._after_refusal(i, conn, exc.code, exc.message)
            except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as exc:
                await self._discard(conn)
                if pooled and attempt == 0:
                    continue
                raise _Unreachable(_reason(exc)) from None
            # 235: this session is authenticated now and cannot serve another login.
            await self._discard(conn, polite=True)
            self._schedule_refill(i)
            return Verdict.OK, None
        raise _Unreachable("connection lost")   # pragma: no cover - the loop always returns

    def _after_refusal(self, i: int, conn: _Conn, code: int, message: str) -> tuple[Verdict, str]:
        detail = f"{code} {message}".strip()
        if code in _CANNOT_CHECK:
            self._schedule_discard(conn)
            raise _Unusable(detail)
        verdict = Verdict.TEMPFAIL if 400 <= code < 500 else Verdict.FAIL
        conn.failures += 1
        if conn.failures >= _MAX_FAILURES_PER_CONNECTION:
            asyncio.get_running_loop().create_task(self._discard(conn, polite=True))
        else:
            self._give_back(i, conn)
        return verdict, detail

    def _mechanism(self, server: ForwardServer, conn: _Conn) -> str:
        offered = {m.upper() for m in conn.smtp.server_auth_methods}
        for m in server.mechanisms:
            if m.upper() in offered:
                return m.upper()
        self._schedule_discard(conn)
        raise _Unusable(f"offers AUTH {' '.join(sorted(offered)) or '(none)'}, "
                        f"configured {' '.join(server.mechanisms)}")

    # -- the pool --

    async def _take(self, i: int) -> tuple[_Conn, bool]:
        loop = asyncio.get_running_loop()
        idle = self._idle[i]
        while idle:
            conn = idle.pop()
            if conn.loop is not loop or not conn.smtp.is_connected:
                await self._discard(conn)
                continue
            if time.monotonic() - conn.idle_since > _NOOP_AFTER_IDLE:
                try:
                    await conn.smtp.noop(timeout=self.timeout)
                except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
                    await self._discard(conn)
                    continue
            return conn, True
        return await self._open(i), False

    def _give_back(self, i: int, conn: _Conn) -> None:
        # A refused AUTH leaves no transaction behind, so no RSET is needed before reuse; a
        # connection idle for a while is checked with NOOP when it is taken again.
        self._park(i, conn)

    def _park(self, i: int, conn: _Conn) -> None:
        idle = self._idle[i]
        if len(idle) < self.pool_size and conn.smtp.is_connected:
            conn.idle_since = time.monotonic()
            idle.append(conn)
        else:
            self._schedule_discard(conn)

    def _schedule_refill(self, i: int) -> None:
        """Open one warm connection in the background so the next login skips the handshake."""
        if len(self._idle[i]) >= min(1, self.pool_size):
            return

        async def refill() -> None:
            try:
                conn = await self._open(i)
            except (_Unreachable, _Unusable):
                return
            self._park(i, conn)

        self._track(asyncio.get_running_loop().create_task(refill()))

    def _schedule_discard(self, conn: _Conn) -> None:
        self._track(asyncio.get_running_loop().create_task(self._discard(conn, polite=True)))

    def _track(self, task: asyncio.Task) -> None:
        self._refills.add(task)
        task.add_done_callback(self._refills.discard)

    async def _discard(self, conn: _Conn, polite: bool = False) -> None:
        try:
            if polite and conn.smtp.is_connected and conn.loop is asyncio.get_running_loop():
                await conn.smtp.quit(timeout=min(2.0, self.timeout))
        except Exception:  # the server may be gone; closing must not fail
            pass
        finally:
            try:
                conn.smtp.close()
            except Exception:
                pass

    async def _open(self, i: int) -> _Conn:
        server = self.servers[i]
        smtp = aiosmtplib.SMTP(hostname=server.host, port=server.port, timeout=self.timeout,
                               local_hostname=self.local_hostname,
                               use_tls=server.tls == "implicit",
                               # True = STARTTLS or fail; False only when the operator said "off".
                               start_tls=server.tls == "starttls",
                               tls_context=self._tls_context(i) if server.tls != "off" else None)
        try:
            await smtp.connect()
            if smtp.last_ehlo_response is None:
                await smtp.ehlo()
        except aiosmtplib.SMTPException as exc:
            smtp.close()
            if "STARTTLS extension not supported" in str(exc):
                raise _Unusable("STARTTLS required but not offered") from None
            raise _Unreachable(_reason(exc)) from None
        except (OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
            smtp.close()
            raise _Unreachable(_reason(exc)) from None
        return _Conn(smtp, asyncio.get_running_loop())

    def _tls_context(self, i: int) -> ssl.SSLContext:
        ctx = self._tls.get(i)
        if ctx is None:
            server = self.servers[i]
            ctx = ssl.create_default_context(cafile=str(server.ca_file) if server.ca_file else None)
            if not server.tls_verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            self._tls[i] = ctx
        return ctx


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, (asyncio.TimeoutError, aiosmtplib.SMTPTimeoutError)):
        text = f"timeout: {text}" if text != type(exc).__name__ else "timeout"
    return text.replace("\r", " ").replace("\n", " ")[:300]
