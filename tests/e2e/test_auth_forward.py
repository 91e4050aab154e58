"""The SMTP-forwarding profile against a real Postfix with Cyrus SASL (private instance)."""
from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

import pytest

from mailward.auth.base import Credentials, Verdict
from mailward.auth.cache import CredentialCache
from mailward.auth.forward import ForwardServer, SmtpForwardProfile
from mailward.maillog.events import SmtpAuthForwardUnreachable, SmtpAuthMisconfigured
from tests.peers.postfix import PostfixInstance, SmtpSink, free_port, postfix_available
from tests.peers.slapd import make_self_signed

pytestmark = pytest.mark.e2e

POSTFIX_535 = "535 5.7.8 Error: authentication failed: authentication failure"


class TlsPostfix(PostfixInstance):
    """The shared fixture's instance plus the tlsmgr service its master.cf lacks (without it
    Postfix answers STARTTLS with "454 4.7.0 TLS not available due to local problem")."""

    def _write_config(self) -> None:
        super()._write_config()
        with open(self.config_dir / "master.cf", "a") as f:
            f.write("tlsmgr    unix  -       -       n       1000?   1       tlsmgr\n")


@pytest.fixture(scope="module")
def pf():
    """Postfix offering AUTH PLAIN LOGIN, with STARTTLS on a self-signed certificate."""
    assert postfix_available(), "postfix / saslpasswd2 missing: install postfix and sasl2-bin"
    root = Path(tempfile.mkdtemp(prefix="mwfwd-"))
    root.chmod(0o755)
    make_self_signed(root / "tls.crt", root / "tls.key")
    inst = TlsPostfix(root / "pf", extra_main_cf={
        "smtpd_tls_security_level": "may",
        "smtpd_tls_cert_file": str(root / "tls.crt"),
        "smtpd_tls_key_file": str(root / "tls.key"),
    })
    inst.ca_file = root / "tls.crt"
    try:
        inst.start()
        inst.add_user("alice", "wonderland")
        inst.add_user("bob", "builder-42")
        yield inst
    finally:
        inst.stop()
        shutil.rmtree(root, ignore_errors=True)


def profile(pf, tls="off", mechanisms=("PLAIN",), extra_servers=(), **kw) -> SmtpForwardProfile:
    server = ForwardServer("127.0.0.1", pf.port, tls=tls, mechanisms=mechanisms,
                           ca_file=kw.pop("ca_file", None), tls_verify=kw.pop("tls_verify", True))
    return SmtpForwardProfile("Forward", [*extra_servers, server], timeout=5.0,
                              local_hostname="gw.test", **kw)


async def check(p, user, password, icid=60):
    return await p.verify(Credentials("PLAIN", user, password), icid=icid, client_ip="127.0.0.1")


def run_all(p, *steps):
    """Run several verifications on one event loop (so the pool is exercised) and close."""
    async def main():
        try:
            return [await check(p, *s) for s in steps]
        finally:
            await p.close()
    return asyncio.run(main())


def test_success_and_exact_postfix_535(pf):
    ok, bad, unknown = run_all(profile(pf), ("alice", "wonderland"), ("alice", "nope"), ("ghost", "x"))
    assert (ok.verdict, ok.profile, ok.events) == (Verdict.OK, "Forward", ())
    assert (bad.verdict, bad.detail) == (Verdict.FAIL, POSTFIX_535)
    assert (unknown.verdict, unknown.detail) == (Verdict.FAIL, POSTFIX_535)


def test_login_mechanism(pf):
    ok, bad = run_all(profile(pf, mechanisms=("LOGIN",)), ("bob", "builder-42"), ("bob", "x"))
    assert ok.verdict is Verdict.OK
    assert (bad.verdict, bad.detail) == (Verdict.FAIL, POSTFIX_535)


def test_one_wrong_password_is_one_failure_at_the_server(pf):
    # aiosmtplib's login() would retry with the next mechanism; we must not.
    before = pf.log_text().count("authentication failed")
    (out,) = run_all(profile(pf, mechanisms=("PLAIN", "LOGIN")), ("alice", "one-guess"))
    assert out.verdict is Verdict.FAIL
    pf.wait_for_log(r"(?s)" + r"authentication failed.*" * (before + 1))
    asyncio.run(asyncio.sleep(0.5))      # give a second (wrong) failure time to show up
    assert pf.log_text().count("authentication failed") == before + 1


def test_starttls_with_verified_certificate(pf):
    ok, bad = run_all(profile(pf, tls="starttls", ca_file=pf.ca_file), ("alice", "wonderland"), ("alice", "x"))
    assert ok.verdict is Verdict.OK
    assert (bad.verdict, bad.detail) == (Verdict.FAIL, POSTFIX_535)
    pf.wait_for_log(r"starttls=1 auth=1 ")        # Postfix saw STARTTLS before the good login


def test_untrusted_certificate_sends_no_password(pf):
    (out,) = run_all(profile(pf, tls="starttls"), ("alice", "wonderland"))
    assert out.verdict is Verdict.TEMPFAIL
    (ev,) = out.events
    assert isinstance(ev, SmtpAuthForwardUnreachable) and "certificate" in ev.reason.lower()


def test_server_down_tempfail_with_event_and_failover(pf):
    dead = free_port()
    p = SmtpForwardProfile("Forward", [ForwardServer("127.0.0.1", dead, tls="off")], timeout=3.0,
                           local_hostname="gw.test")
    (out,) = run_all(p, ("alice", "wonderland"))
    assert out.verdict is Verdict.TEMPFAIL
    (ev,) = out.events
    assert (ev.icid, ev.server) == (60, f"127.0.0.1:{dead}") and ev.reason
    # With a second server that answers, the first one's outage is logged and the login works.
    p2 = profile(pf, extra_servers=[ForwardServer("127.0.0.1", dead, tls="off")])
    (out,) = run_all(p2, ("alice", "wonderland"))
    assert out.verdict is Verdict.OK
    assert [type(e) for e in out.events] == [SmtpAuthForwardUnreachable]


def test_server_without_starttls_or_auth_is_misconfigured():
    sink = SmtpSink().start()       # a plain SMTP server: no STARTTLS, no AUTH
    try:
        for tls in ("starttls", "off"):
            p = SmtpForwardProfile("Forward", [ForwardServer(sink.host, sink.port, tls=tls)], timeout=3.0,
                                   local_hostname="gw.test")
            (out,) = run_all(p, ("alice", "wonderland"))
            assert out.verdict is Verdict.MISCONFIGURED, (tls, out)
            assert out.events == (SmtpAuthMisconfigured(60, "Forward"),)
    finally:
        sink.stop()


def test_pool_reuses_connection_after_failure(pf):
    p = profile(pf)
    opened = []
    real_open = p._open

    async def counting_open(i):
        opened.append(i)
        return await real_open(i)

    p._open = counting_open

    async def main():
        try:
            outs = [await check(p, "alice", f"guess{n}") for n in range(3)]
            parked, opened_for_failures = len(p._idle[0]), len(opened)
            outs.append(await check(p, "alice", "wonderland"))
            return outs, parked, opened_for_failures
        finally:
            await p.close()

    outs, parked, opened_for_failures = asyncio.run(main())
    assert [o.verdict for o in outs] == [Verdict.FAIL] * 3 + [Verdict.OK]
    assert parked == 1                   # the connection went back to the pool after each failure
    assert opened_for_failures == 1      # three refused logins, one connection
    assert len(opened) <= 2              # the success reused it too (plus the background refill)


def test_cache_for_forward_and_invalidation_on_failure(pf):
    cache = CredentialCache()
    p = profile(pf, cache=cache)
    outs = run_all(p, ("alice", "wonderland"), ("alice", "wonderland"), ("alice", "bad"),
                   ("alice", "wonderland"))
    assert [o.verdict for o in outs] == [Verdict.OK, Verdict.OK, Verdict.FAIL, Verdict.OK]
    assert [o.detail for o in outs][:2] == [None, "cached"]
    assert outs[3].detail is None        # the failure cleared alice: asked the server again
