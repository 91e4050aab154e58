"""Join rules for inbound connections (ICID) and inbound SMTP AUTH.

Owns what each ICID line adds to its ``Connection`` (peer, rDNS, HAT decision, SBRS, TLS,
authenticated user, failures) and the ``AuthAttempt`` every AUTH line produces. A mixin of
``Correlator``: it uses the engine's lookups (``_conn``, ``_msg``, ``_line``) and knows nothing
of files, MIDs' delivery or reports.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from mailward.maillog import events as E

if TYPE_CHECKING:
    from .correlate import _State

from .model import AuthAttempt, Connection


class InboundRules:
    def _on_NewIcid(self, st: _State, ev: E.NewIcid, ts, raw) -> None:
        c = st.icids[ev.icid] = Connection(self._last_app or "", ev.icid, ts)
        self.counters.connections += 1
        c.peer_ip = ev.address
        c.rdns = ev.rdns
        c.verified = ev.verified
        c.interface = ev.interface
        c.interface_ip = ev.interface_ip
        if self.keep_lines:
            self._line(c, raw)

    def _on_HatDecision(self, st: _State, ev: E.HatDecision, ts, raw) -> None:
        c = self._conn(st, ev.icid, ts)
        c.policy = ev.policy or c.policy
        c.sender_group = ev.sender_group
        c.match = ev.match
        c.sbrs = ev.sbrs
        c.country = ev.country
        if self.keep_lines:
            self._line(c, raw)

    def _on_IcidTlsSuccess(self, st: _State, ev: E.IcidTlsSuccess, ts, raw) -> None:
        c = self._conn(st, ev.icid, ts)
        c.tls_protocol = ev.protocol or "TLS"
        c.tls_cipher = ev.cipher
        if self.keep_lines:
            self._line(c, raw)

    def _on_IcidTlsFailed(self, st: _State, ev, ts, raw) -> None:
        c = self._conn(st, ev.icid, ts)
        c.tls_failed = True
        if self.keep_lines:
            self._line(c, raw)

    _on_IcidTlsRequired = _on_IcidTlsFailed

    def _on_IcidClose(self, st: _State, ev, ts, raw) -> None:
        c = st.icids.pop(ev.icid, None)
        if c is not None:
            c.closed = ts
            if self.keep_lines:
                self._line(c, raw)

    _on_IcidLost = _on_IcidClose

    def _on_IcidNote(self, st: _State, ev, ts, raw) -> None:
        if self.keep_lines:
            self._line(self._conn(st, ev.icid, ts), raw)

    _on_ReceivingFailed = _on_IcidNote

    def _auth_other(self, st: _State, ev, ts, raw, kind: str, user: str | None, mechanism: str | None,
                    profile: str, detail: str) -> None:
        c = self._conn(st, ev.icid, ts)
        if self.keep_lines:
            self._line(c, raw)
        self.counters.auth += 1
        if self.on_auth is not None:
            self.on_auth(AuthAttempt(c.appliance, ts, "inbound", False, user, mechanism, profile,
                                     c.peer_ip, c.interface_ip, ev.icid, detail, raw.rstrip("\r\n"), kind))

    def _on_SmtpAuthRejected(self, st: _State, ev: E.SmtpAuthRejected, ts, raw) -> None:
        self._auth_other(st, ev, ts, raw, "rejected", None, ev.mechanism, "", ev.reason)

    def _on_SmtpAuthLockout(self, st: _State, ev: E.SmtpAuthLockout, ts, raw) -> None:
        self._auth_other(st, ev, ts, raw, "lockout", ev.key if ev.scope == "user" else None, None, "",
                         f"{ev.scope} {ev.key} locked out for {ev.seconds} s after {ev.failures} failures")

    def _on_SmtpAuthMisconfigured(self, st: _State, ev: E.SmtpAuthMisconfigured, ts, raw) -> None:
        self._auth_other(st, ev, ts, raw, "error", None, None, ev.profile, "profile misconfigured or missing")

    def _on_SmtpAuthForwardUnreachable(self, st: _State, ev: E.SmtpAuthForwardUnreachable, ts, raw) -> None:
        self._auth_other(st, ev, ts, raw, "error", None, None, "",
                         f"forwarding server {ev.server} unreachable" + (f": {ev.reason}" if ev.reason else ""))

    def _on_SmtpAuthLdapLookupFailed(self, st: _State, ev: E.SmtpAuthLdapLookupFailed, ts, raw) -> None:
        self._auth_other(st, ev, ts, raw, "error", ev.user, None, "", "LDAP query/user lookup failed")

    def _on_SmtpAuthRequiredNotInitiated(self, st: _State, ev, ts, raw) -> None:
        self._auth_other(st, ev, ts, raw, "error", None, None, "", "AUTH required but not initiated")

    def _on_InvalidAddress(self, st: _State, ev: E.InvalidAddress, ts, raw) -> None:
        if self.keep_lines:
            self._line(self._conn(st, ev.icid, ts), raw)
        if ev.mid is not None:
            if self.keep_lines:
                self._line(self._msg(st, ev.mid, ts), raw)

    def _on_SmtpAuthResult(self, st: _State, ev: E.SmtpAuthResult, ts, raw) -> None:
        c = self._conn(st, ev.icid, ts)
        if ev.succeeded:
            c.auth_user = ev.user
            c.auth_mechanism = ev.mechanism
            c.auth_profile = ev.profile
        else:
            c.auth_failures.append(ev.user)
        if self.keep_lines:
            self._line(c, raw)
        self.counters.auth += 1
        if self.on_auth is not None:
            self.on_auth(AuthAttempt(c.appliance, ts, "inbound", ev.succeeded, ev.user, ev.mechanism,
                                     ev.profile, c.peer_ip, c.interface_ip, ev.icid, None,
                                     raw.rstrip("\r\n")))

