"""The LDAP authentication profile: search-then-bind or direct bind, with failover.

Owns talking to directory servers through ldap3: server failover in configured order, TLS
(``ldaps://`` or StartTLS, certificate verification on by default), timeouts, a small pool
of bound search connections, escaping the user name (RFC 4515 in filters, RFC 4514 in DNs)
and mapping LDAP results to verdicts:

- the user's bind succeeds -> OK;
- invalidCredentials on the user's bind -> FAIL;
- the search finds no entry (or several) -> FAIL + ``SmtpAuthLdapLookupFailed``;
- the search account cannot bind, or the base does not exist -> MISCONFIGURED
  + ``SmtpAuthMisconfigured``;
- every server unreachable, TLS failing, busy/unavailable -> TEMPFAIL (454, the client
  retries) + the appliance's ``SMTP Auth LDAP query failed, ...`` system line.

An empty password is refused before any network traffic: LDAP treats a simple bind with a
DN and no password as an *unauthenticated* bind that succeeds (RFC 4513 5.1.2).

ldap3's synchronous strategy runs in this profile's own thread pool, so the event loop never
waits on a directory. Must not know SMTP or the log format.
"""
from __future__ import annotations

import asyncio
import math
import secrets
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import ldap3
from ldap3.core import exceptions as lexc
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn

from .base import PASSWORD_MECHANISMS, AuthOutcome, Credentials, Verdict, password_of
from .cache import CredentialCache, verify_with_cache
from ..maillog.events import Event, SmtpAuthLdapLookupFailed, SmtpAuthMisconfigured, SystemNote

LDAP_QUERY_FAILED = "SMTP Auth LDAP query failed, possible LDAP misconfiguration or unreachable server."

# LDAP result codes (RFC 4511 4.1.9) that mean "the server cannot serve now": try the next one.
_TRANSIENT = {3, 11, 51, 52, 80}    # timeLimitExceeded, adminLimitExceeded, busy, unavailable, other
_INVALID_CREDENTIALS = 49


class _Unreachable(Exception):
    """This server cannot be used right now (network, TLS, busy): try the next one."""


class _Misconfigured(Exception):
    """The profile's own settings are wrong (service bind refused, no such base)."""


@dataclass(frozen=True)
class _Result:
    verdict: Verdict
    detail: str | None = None
    lookup_failed: bool = False


class LdapProfile:
    mechanisms: tuple[str, ...] = PASSWORD_MECHANISMS

    def __init__(self, name: str, urls: list[str], *, search_base: str | None = None,
                 search_filter: str = "(uid={user})", dn_template: str | None = None,
                 bind_dn: str | None = None, bind_password: str | Callable[[], str] | None = None,
                 starttls: bool = False, tls_verify: bool = True, ca_file: Path | str | None = None,
                 timeout: float = 5.0, pool_size: int = 4, retry_down_after: float = 30.0,
                 cache: CredentialCache | None = None):
        if not urls:
            raise ValueError(f"ldap profile {name!r}: no server URLs")
        if dn_template is None and not search_base:
            raise ValueError(f"ldap profile {name!r}: set search_base (search then bind) or dn_template")
        if dn_template is not None and "{user}" not in dn_template:
            raise ValueError(f"ldap profile {name!r}: dn_template must contain {{user}}")
        if dn_template is None and "{user}" not in search_filter:
            raise ValueError(f"ldap profile {name!r}: search_filter must contain {{user}}")
        self.name = name
        self.search_base = search_base
        self.search_filter = search_filter
        self.dn_template = dn_template
        self.bind_dn = bind_dn
        self._bind_password = bind_password
        self.starttls = starttls
        self.timeout = timeout
        self.cache = cache
        self.retry_down_after = retry_down_after
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED if tls_verify else ssl.CERT_NONE,
                        ca_certs_file=str(ca_file) if ca_file else None)
        self._servers = [_server(u, tls, timeout) for u in urls]
        self._urls = list(urls)
        self._down_until: dict[int, float] = {}
        self._idle: dict[int, list[ldap3.Connection]] = {i: [] for i in range(len(urls))}
        self._lock = threading.Lock()
        self._pool_size = pool_size
        self._executor = ThreadPoolExecutor(max_workers=max(1, pool_size), thread_name_prefix=f"ldap-{name}")

    def __repr__(self) -> str:
        return f"LdapProfile({self.name!r}, {self._urls!r})"

    @classmethod
    def from_config(cls, name: str, cfg: object, *, cache: CredentialCache | None = None) -> "LdapProfile":
        """From ``config.LdapProfile``; the bind password file is read when first needed."""
        from .outgoing import read_secret_file

        pw_file = getattr(cfg, "bind_password_file", None)
        bind_password = (lambda: read_secret_file(Path(pw_file))) if pw_file else None
        return cls(name, list(getattr(cfg, "urls")), search_base=getattr(cfg, "search_base", None),
                   search_filter=getattr(cfg, "search_filter", "(uid={user})"),
                   dn_template=getattr(cfg, "dn_template", None), bind_dn=getattr(cfg, "bind_dn", None),
                   bind_password=bind_password, starttls=getattr(cfg, "starttls", False),
                   tls_verify=getattr(cfg, "tls_verify", True), ca_file=getattr(cfg, "ca_file", None),
                   timeout=getattr(cfg, "timeout", 5.0), pool_size=getattr(cfg, "pool_size", 4), cache=cache)

    # -- the profile interface --

    async def verify(self, creds: Credentials, *, icid: int, client_ip: str) -> AuthOutcome:
        password = password_of(creds)
        if password is None:
            return AuthOutcome(Verdict.FAIL, self.name, detail=f"mechanism {creds.mechanism} or authorization identity not supported")
        if password == "" or not creds.username:
            return AuthOutcome(Verdict.FAIL, self.name, detail="empty user or password")

        async def check() -> AuthOutcome:
            loop = asyncio.get_running_loop()
            res = await loop.run_in_executor(self._executor, self._verify_sync, creds.username, password)
            events: tuple[Event, ...] = ()
            if res.lookup_failed:
                events = (SmtpAuthLdapLookupFailed(icid, creds.username),)
            elif res.verdict is Verdict.MISCONFIGURED:
                events = (SmtpAuthMisconfigured(icid, self.name),)
            elif res.verdict is Verdict.TEMPFAIL:
                events = (SystemNote(LDAP_QUERY_FAILED),)
            return AuthOutcome(res.verdict, self.name, res.detail, events)

        return await verify_with_cache(self.cache, self.name, creds, check)

    def close(self) -> None:
        with self._lock:
            conns = [c for idle in self._idle.values() for c in idle]
            for idle in self._idle.values():
                idle.clear()
        for c in conns:
            _unbind_quietly(c)
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- the blocking part (executor threads) --

    def _order(self) -> list[int]:
        """Servers in configured order, those recently found down moved to the end."""
        now = time.monotonic()
        with self._lock:
            up = [i for i in range(len(self._servers)) if self._down_until.get(i, 0) <= now]
            down = [i for i in range(len(self._servers)) if i not in up]
        return up + down

    def _verify_sync(self, user: str, password: str) -> _Result:
        problems: list[str] = []
        for i in self._order():
            try:
                res = self._verify_on(i, user, password)
            except _Unreachable as exc:
                with self._lock:
                    self._down_until[i] = time.monotonic() + self.retry_down_after
                problems.append(f"{self._urls[i]}: {exc}")
                continue
            except _Misconfigured as exc:
                return _Result(Verdict.MISCONFIGURED, f"{self._urls[i]}: {exc}")
            with self._lock:
                self._down_until.pop(i, None)
            return res
        return _Result(Verdict.TEMPFAIL, "; ".join(problems) or "no LDAP server")

    def _verify_on(self, i: int, user: str, password: str) -> _Result:
        if self.dn_template is not None:
            dn = self.dn_template.replace("{user}", escape_rdn(user))
        else:
            dns = self._search(i, user)
            if len(dns) != 1:
                # Spend the bind a real user would cost, so the reply time does not tell an
                # unknown name from a wrong password (the SMTP reply is the same too).
                self._dummy_bind(i, password)
                return _Result(Verdict.FAIL, "no such user" if not dns else "user name is ambiguous",
                               lookup_failed=True)
            dn = dns[0]
        return self._user_bind(i, dn, password)

    def _open(self, i: int, user: str | None, password: str | None) -> ldap3.Connection:
        """A connected, TLS-upgraded (if configured), bound connection to server ``i``."""
        conn = ldap3.Connection(self._servers[i], user=user, password=password,
                                authentication=ldap3.SIMPLE if user else ldap3.ANONYMOUS,
                                auto_bind=ldap3.AUTO_BIND_NONE,
                                # ldap3 packs this into SO_RCVTIMEO as whole seconds on Linux.
                                receive_timeout=max(1, math.ceil(self.timeout)),
                                raise_exceptions=False, read_only=True, auto_referrals=False)
        # ldap3 remembers a failed address for a while and then refuses to try it at all;
        # this profile does its own down-marking and failover, so start each attempt clean.
        self._servers[i].reset_availability()
        try:
            conn.open(read_server_info=False)
            if self.starttls and not self._servers[i].ssl:
                if not conn.start_tls(read_server_info=False):
                    raise _Unreachable(f"StartTLS refused: {_describe(conn)}")
            conn.bind(read_server_info=False)
        except (lexc.LDAPCommunicationError, lexc.LDAPStartTLSError, lexc.LDAPSSLConfigurationError,
                ssl.SSLError, OSError) as exc:
            _unbind_quietly(conn)
            raise _Unreachable(_exc_text(exc)) from None
        except lexc.LDAPExceptionError as exc:   # e.g. certificate name mismatch
            _unbind_quietly(conn)
            raise _Unreachable(_exc_text(exc)) from None
        return conn

    def _service_password(self) -> str | None:
        p = self._bind_password
        return p() if callable(p) else p

    def _search_conn(self, i: int) -> tuple[ldap3.Connection, bool]:
        """(connection, from_pool): a pooled bound search connection, or a fresh one."""
        with self._lock:
            if self._idle[i]:
                return self._idle[i].pop(), True
        try:
            password = self._service_password() if self.bind_dn else None
        except Exception as exc:
            raise _Misconfigured(f"bind password: {exc}") from None
        conn = self._open(i, self.bind_dn, password)
        if not conn.bound:
            code = conn.result.get("result") if conn.result else None
            _unbind_quietly(conn)
            if code in _TRANSIENT:
                raise _Unreachable(f"search bind: {_describe(conn)}")
            raise _Misconfigured(f"search bind as {self.bind_dn or 'anonymous'} refused: {_describe(conn)}")
        return conn, False

    def _release(self, i: int, conn: ldap3.Connection) -> None:
        with self._lock:
            if len(self._idle[i]) < self._pool_size:
                self._idle[i].append(conn)
                return
        _unbind_quietly(conn)

    def _search(self, i: int, user: str) -> list[str]:
        flt = self.search_filter.replace("{user}", escape_filter_chars(user))
        # A pooled connection may have died with its server since: one fresh retry.
        for attempt in range(2):
            conn, pooled = self._search_conn(i)
            try:
                conn.search(self.search_base, flt, search_scope=ldap3.SUBTREE, attributes=["1.1"],
                            size_limit=2, time_limit=max(1, int(self.timeout)))
            except (lexc.LDAPCommunicationError, ssl.SSLError, OSError) as exc:
                _unbind_quietly(conn)
                if pooled and attempt == 0:
                    continue
                raise _Unreachable(_exc_text(exc)) from None
            except lexc.LDAPExceptionError as exc:   # e.g. the filter template is not a filter
                self._release(i, conn)
                raise _Misconfigured(f"search filter {self.search_filter!r}: {_exc_text(exc)}") from None
            code = conn.result.get("result") if conn.result else None
            if code in (0, 4):          # success, sizeLimitExceeded (>1 entry: ambiguous)
                dns = [e["dn"] for e in conn.response or () if e.get("type") == "searchResEntry"]
                self._release(i, conn)
                return dns
            _unbind_quietly(conn)
            if code in _TRANSIENT:
                raise _Unreachable(f"search: {_describe(conn)}")
            if code == 32:              # noSuchObject: the base is wrong
                raise _Misconfigured(f"search base {self.search_base!r} does not exist")
            raise _Misconfigured(f"search failed: {_describe(conn)}")
        raise _Unreachable("search connection lost")   # pragma: no cover - loop always returns

    def _dummy_bind(self, i: int, password: str) -> None:
        dn = f"uid={secrets.token_hex(12)},{self.search_base}"
        try:
            self._user_bind(i, dn, password)
        except _Unreachable:
            pass

    def _user_bind(self, i: int, dn: str, password: str) -> _Result:
        conn = self._open(i, dn, password)
        try:
            if conn.bound:
                return _Result(Verdict.OK)
            code = conn.result.get("result") if conn.result else None
            if code == _INVALID_CREDENTIALS:
                return _Result(Verdict.FAIL, "invalid credentials")
            if code in _TRANSIENT:
                raise _Unreachable(f"bind: {_describe(conn)}")
            # e.g. inappropriateAuthentication, confidentialityRequired: refuse, and say why.
            return _Result(Verdict.FAIL, f"bind refused: {_describe(conn)}")
        finally:
            _unbind_quietly(conn)


def _server(url: str, tls: ldap3.Tls, timeout: float) -> ldap3.Server:
    parts = urlsplit(url)
    if parts.scheme not in ("ldap", "ldaps") or not parts.hostname:
        raise ValueError(f"LDAP URL {url!r}: expected ldap://host[:port] or ldaps://host[:port]")
    use_ssl = parts.scheme == "ldaps"
    port = parts.port or (636 if use_ssl else 389)
    return ldap3.Server(parts.hostname, port=port, use_ssl=use_ssl, tls=tls, get_info=ldap3.NONE,
                        connect_timeout=timeout)


def _describe(conn: ldap3.Connection) -> str:
    r = conn.result or {}
    text = r.get("message") or ""
    return f"{r.get('description', 'unknown')}{' - ' + text if text else ''}"


def _exc_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


def _unbind_quietly(conn: ldap3.Connection) -> None:
    try:
        conn.unbind()
    except Exception:  # closing a dead socket must not mask the real outcome
        pass
