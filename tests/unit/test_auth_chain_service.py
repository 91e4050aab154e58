"""Chains pick the deciding member; the Authenticator runs guard -> profile -> log lines."""
from __future__ import annotations

import asyncio

from mailward.auth.base import AuthOutcome, Credentials, Verdict
from mailward.auth.chain import ChainProfile
from mailward.auth.guard import AuthGuard, GuardSettings
from mailward.auth.service import Authenticator
from mailward.maillog.events import (SmtpAuthForwardUnreachable, SmtpAuthLockout, SmtpAuthMisconfigured,
                                     SmtpAuthRejected, SmtpAuthResult)
from mailward.maillog.sink import ListSink


class Fixed:
    """A profile that answers from a table: user -> verdict (missing users FAIL)."""

    def __init__(self, name, table, mechanisms=("PLAIN", "LOGIN"), events=()):
        self.name = name
        self.table = table
        self.mechanisms = mechanisms
        self.events = events
        self.calls = 0

    async def verify(self, creds, *, icid, client_ip):
        self.calls += 1
        v = self.table.get(creds.username, Verdict.FAIL)
        return AuthOutcome(v, self.name, events=tuple(self.events) if v is Verdict.TEMPFAIL else ())


def run(coro):
    return asyncio.run(coro)


def creds(user, pw="pw", mech="PLAIN"):
    return Credentials(mech, user, pw)


def test_chain_first_ok_or_fail_decides():
    ldap = Fixed("Directory", {"alice": Verdict.OK, "bob": Verdict.FAIL})
    local = Fixed("Local", {"bob": Verdict.OK, "carol": Verdict.OK})
    chain = ChainProfile("Everyone", [ldap, local])
    out = run(chain.verify(creds("alice"), icid=1, client_ip="127.0.0.1"))
    assert (out.verdict, out.profile) == (Verdict.OK, "Directory")
    out = run(chain.verify(creds("bob"), icid=1, client_ip="127.0.0.1"))
    assert (out.verdict, out.profile) == (Verdict.FAIL, "Directory")   # FAIL decides: no fallthrough
    assert local.calls == 0


def test_chain_tempfail_falls_through_and_keeps_events():
    ev = SmtpAuthForwardUnreachable(3, "10.0.0.5:587", "connection refused")
    fwd = Fixed("Forward", {"carol": Verdict.TEMPFAIL, "dave": Verdict.TEMPFAIL}, events=[ev])
    local = Fixed("Local", {"carol": Verdict.OK})
    chain = ChainProfile("Everyone", [fwd, local])
    out = run(chain.verify(creds("carol"), icid=3, client_ip="127.0.0.1"))
    assert (out.verdict, out.profile, out.events) == (Verdict.OK, "Local", (ev,))
    down = ChainProfile("Down", [fwd, Fixed("Also", {"dave": Verdict.MISCONFIGURED})])
    out = run(down.verify(creds("dave"), icid=3, client_ip="127.0.0.1"))
    assert out.verdict is Verdict.TEMPFAIL and "Forward" in out.detail and "Also" in out.detail


def test_chain_mechanisms_are_the_common_ones():
    a = Fixed("A", {}, mechanisms=("CRAM-MD5", "PLAIN", "LOGIN"))
    b = Fixed("B", {}, mechanisms=("PLAIN", "LOGIN"))
    assert ChainProfile("C", [a, b]).mechanisms == ("PLAIN", "LOGIN")
    assert ChainProfile("C", [a]).mechanisms == ("CRAM-MD5", "PLAIN", "LOGIN")


def test_authenticator_logs_success_and_failure_lines():
    sink = ListSink()
    auth = Authenticator({"IncomingAuthentication": Fixed("IncomingAuthentication", {"ironport": Verdict.OK})},
                         sink)
    assert run(auth.authenticate("IncomingAuthentication", creds("ironport", mech="plain"), icid=450,
                                 client_ip="172.16.155.102")).ok
    run(auth.authenticate("IncomingAuthentication", creds("ironport2"), icid=451, client_ip="172.16.155.102"))
    assert sink.events == [
        SmtpAuthResult(450, True, "ironport", "PLAIN", "IncomingAuthentication"),
        SmtpAuthResult(451, False, "ironport2", "PLAIN", "IncomingAuthentication"),
    ]


def test_authenticator_missing_profile_is_misconfigured():
    sink = ListSink()
    out = run(Authenticator({}, sink).authenticate("Nope", creds("u"), icid=9, client_ip="127.0.0.1"))
    assert out.verdict is Verdict.MISCONFIGURED
    assert sink.events[0] == SmtpAuthMisconfigured(9, "Nope")
    assert sink.events[1] == SmtpAuthResult(9, False, "u", "PLAIN", "Nope")


def test_authenticator_emits_profile_events_before_result():
    ev = SmtpAuthForwardUnreachable(5, "mx:25", "timeout")
    sink = ListSink()
    auth = Authenticator({"F": Fixed("F", {"u": Verdict.TEMPFAIL}, events=[ev])}, sink)
    out = run(auth.authenticate("F", creds("u"), icid=5, client_ip="127.0.0.1"))
    assert out.verdict is Verdict.TEMPFAIL
    assert sink.events == [ev, SmtpAuthResult(5, False, "u", "PLAIN", "F")]


def test_authenticator_guard_tarpit_lockout_and_isolation():
    slept = []

    async def sleep(d):
        slept.append(d)

    sink = ListSink()
    guard = AuthGuard(GuardSettings(free_failures=2, base_delay=0.5, lockout_failures=6), sink, sleep=sleep)
    prof = Fixed("P", {"legit": Verdict.OK})
    auth = Authenticator({"P": prof}, sink, guard)

    async def attack():
        verdicts = []
        for i in range(1000):
            out = await auth.authenticate("P", creds(f"guess{i}"), icid=i, client_ip="10.6.6.6")
            verdicts.append(out.verdict)
        return verdicts

    verdicts = run(attack())
    assert verdicts[:6] == [Verdict.FAIL] * 6
    assert set(verdicts[6:]) == {Verdict.LOCKED}
    assert prof.calls == 6              # locked attempts never reach the profile
    assert slept == [0.5, 1.0, 2.0, 4.0]  # tarpit before failures 3..6
    assert len(sink.of_type(SmtpAuthLockout)) == 1
    assert len(sink.of_type(SmtpAuthRejected)) == 994
    # A legitimate user from elsewhere is unaffected: no delay, OK.
    n = len(slept)
    out = run(auth.authenticate("P", creds("legit"), icid=2000, client_ip="10.1.1.1"))
    assert out.verdict is Verdict.OK and len(slept) == n


def test_tempfail_does_not_count_as_guess():
    guard = AuthGuard(GuardSettings(free_failures=0, base_delay=1, lockout_failures=2), ListSink())
    auth = Authenticator({"F": Fixed("F", {"u": Verdict.TEMPFAIL})}, ListSink(), guard)
    for _ in range(5):
        assert run(auth.authenticate("F", creds("u"), icid=1, client_ip="10.0.0.1")).verdict is Verdict.TEMPFAIL
    assert guard.check("10.0.0.1", "u") is None


def test_profile_exception_becomes_tempfail():
    class Broken:
        name = "B"
        mechanisms = ("PLAIN",)

        async def verify(self, creds, *, icid, client_ip):
            raise RuntimeError("boom")

    out = run(Authenticator({"B": Broken()}, ListSink()).authenticate("B", creds("u"), icid=1,
                                                                      client_ip="127.0.0.1"))
    assert out.verdict is Verdict.TEMPFAIL


def test_credentials_repr_hides_secrets():
    c = Credentials("PLAIN", "alice", "hunter2", digest="deadbeef")
    assert "hunter2" not in repr(c) and "deadbeef" not in repr(c) and "alice" in repr(c)
