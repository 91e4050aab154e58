"""One AUTH attempt from start to log line: guard, profile, log events.

Owns the order of an attempt: lockout check -> tarpit delay -> profile verification ->
counting the result -> emitting the mail_logs events. The SMTP core calls
``Authenticator.authenticate`` and maps the verdict to a reply; it never talks to the guard or
the profiles itself. Must not know SMTP replies or SASL encoding.

Lines emitted (through the sink, icid filled in):
- OK: ``SMTP Auth: (ICID i) succeeded for user: U using AUTH mechanism: M with profile: P``
- FAIL, TEMPFAIL, MISCONFIGURED: the ``failed for user`` line, after the profile's own events
  (``could not reach forwarding server``, ``LDAP query/user lookup failed``, ``is misconfigured``);
- LOCKED: ``SMTP Auth: (ICID i) rejected using AUTH mechanism: M reason: ...`` (no verification
  ran, so no succeeded/failed line); ``SmtpAuthLockout`` is emitted by the guard when a
  lockout starts.
Only FAIL counts as a failure for the guard: a backend outage is not the client's guess.
"""
from __future__ import annotations

from collections.abc import Mapping

from .base import AuthOutcome, AuthProfile, Credentials, Verdict
from .guard import AuthGuard
from ..maillog.events import SmtpAuthMisconfigured, SmtpAuthRejected, SmtpAuthResult
from ..maillog.sink import EventSink


class Authenticator:
    def __init__(self, profiles: Mapping[str, AuthProfile], sink: EventSink,
                 guard: AuthGuard | None = None):
        self.profiles = profiles
        self.sink = sink
        self.guard = guard

    async def aclose(self) -> None:
        """Release the profiles' pooled connections and threads (gateway shutdown)."""
        for profile in self.profiles.values():
            close = getattr(profile, "close", None)
            if close is None:
                continue
            result = close()
            if hasattr(result, "__await__"):
                await result

    def mechanisms(self, profile_name: str) -> tuple[str, ...]:
        """What a listener using ``profile_name`` may advertise (empty if the profile is missing)."""
        p = self.profiles.get(profile_name)
        return p.mechanisms if p is not None else ()

    def authenticate_now(self, profile_name: str, creds: Credentials, *, icid: int,
                         client_ip: str) -> AuthOutcome | None:
        """The outcome of an attempt that needs no waiting, or None: then ``authenticate``.

        Only a success can come from here: credentials the profile verified within its cache
        TTL (``verify_cached``), from a client the guard neither locks out nor tarpits. The
        attempt is then counted and logged exactly as ``authenticate`` would. Anything else (a
        wrong or new password, a cold cache, a delayed or locked-out client, a profile without
        a cache) leaves no trace here and takes the full path: guard, delay, verifier.
        """
        profile = self.profiles.get(profile_name)
        verify_cached = getattr(profile, "verify_cached", None)
        if verify_cached is None:
            return None
        guard = self.guard
        # Nothing awaits between the guard's test and the answer: the attempt is never in
        # flight alongside another, so admit + end reduce to passes_now (see there).
        if guard is not None and not guard.passes_now(client_ip, creds.username):
            return None                      # locked out or tarpitted: the full path
        try:
            outcome = verify_cached(creds)
        except Exception:  # the full path reports a profile bug
            return None
        if outcome is None:
            return None
        if guard is not None:
            guard.record_success(client_ip, creds.username)
        self._log(outcome, creds, icid, creds.mechanism.upper())
        return outcome

    async def authenticate(self, profile_name: str, creds: Credentials, *, icid: int,
                           client_ip: str) -> AuthOutcome:
        mech = creds.mechanism.upper()
        profile = self.profiles.get(profile_name)
        if profile is None:
            outcome = AuthOutcome(Verdict.MISCONFIGURED, profile_name, "no such profile",
                                  (SmtpAuthMisconfigured(icid, profile_name),))
            self._log(outcome, creds, icid, mech)
            return outcome
        guard = self.guard
        if guard is None:
            try:
                outcome = await profile.verify(creds, icid=icid, client_ip=client_ip)
            except Exception as exc:  # a profile bug must cost one 454, not the connection
                outcome = AuthOutcome(Verdict.TEMPFAIL, profile_name, f"internal error: {type(exc).__name__}")
            self._log(outcome, creds, icid, mech)
            return outcome
        lock, delay = guard.admit(client_ip, creds.username)    # lockout check + in flight
        if lock is not None:
            outcome = AuthOutcome(Verdict.LOCKED, profile_name,
                                  f"{lock.scope} {lock.key} locked out after {lock.failures} failures")
            self.sink.emit(SmtpAuthRejected(icid, mech, f"too many failures from this {lock.scope}"))
            return outcome
        try:
            if delay > 0:
                await guard.sleep(delay)
            try:
                outcome = await profile.verify(creds, icid=icid, client_ip=client_ip)
            except Exception as exc:  # a profile bug must cost one 454, not the connection
                outcome = AuthOutcome(Verdict.TEMPFAIL, profile_name, f"internal error: {type(exc).__name__}")
            if outcome.verdict is Verdict.OK:
                guard.record_success(client_ip, creds.username)
            elif outcome.verdict is Verdict.FAIL:
                guard.record_failure(client_ip, creds.username, icid=icid)
        finally:
            guard.end(client_ip, creds.username)
        self._log(outcome, creds, icid, mech)
        return outcome

    def _log(self, outcome: AuthOutcome, creds: Credentials, icid: int, mech: str) -> None:
        for ev in outcome.events:
            self.sink.emit(ev)
        self.sink.emit(SmtpAuthResult(icid, outcome.verdict is Verdict.OK, creds.username, mech,
                                      outcome.profile))
