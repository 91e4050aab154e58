"""Open-relay battery and brute-force defence over real sockets.

Every classic relay trick is tried without AUTH (none may be accepted for a foreign
destination) and with AUTH (relayed as configured). The brute-force test shows a flood of
wrong passwords from one address slowed, then refused, while a legitimate user elsewhere
still gets in at once.
"""
from __future__ import annotations

import base64
import smtplib
import time

import pytest

from mailward.auth.users import UserStore
from tests.support.gateway import config_text, start_gateway

ACCEPT_ALL = """
[[listener.hat]]
group = "None"
match = ["ALL"]
policy = "ACCEPT"
"""

# Recipients that some MTA downstream could route to a foreign domain. The listener accepts
# only example.test; none of these may pass RCPT without AUTH.
RELAY_ATTEMPTS = [
    "victim@elsewhere.test",
    "victim@ELSEWHERE.TEST",
    "victim@elsewhere.test.",
    "victim%elsewhere.test@example.test",
    "victim%elsewhere.test@EXAMPLE.TEST",
    "victim%elsewhere.test%example.test@example.test",
    "elsewhere.test!victim@example.test",
    "elsewhere.test!victim",
    "victim@elsewhere.test@example.test",
    '"victim@elsewhere.test"@example.test',
    '"victim%elsewhere.test"@example.test',
    '"elsewhere.test!victim"@example.test',
    "@example.test:victim@elsewhere.test",
    "@example.test,@other.test:victim@elsewhere.test",
    "victim@[127.0.0.1]",
    "victim@[IPv6:::1]",
    "victim@[192.0.2.1]",
    "victim@example.test.elsewhere.test",
    "victim@elsewhere.test\\@example.test",
    "victim@example.test..",
    "victim@.example.test",
    "victim@sub.example.test",
    "victim@notexample.test",
    "victim@example.test.",       # trailing dot of the local domain itself: allowed (local), checked below
    "postmaster@elsewhere.test",
    "Postmaster@elsewhere.test",
    "victim@elsewhere.test%example.test",
    "victim@xn--elsewhre-b1a.test",
    "victim@ｅxample.test",        # full-width e: not example.test
    "victim@example.test\x00.elsewhere.test",
    "victim@example.test elsewhere.test",
    "victim@elsewhere.test (example.test)",
    "victim@elsewhere.test>,<user@example.test",
]
LOCAL_OK = {"victim@example.test."}


@pytest.fixture
def gw(tmp_path):
    UserStore(tmp_path / "users.db", create=True).add("ironport", "s3cret-pass")
    g = start_gateway(config_text(tmp_path, ACCEPT_ALL), tmp_path)
    yield g
    g.stop()


def rcpt_code(s: smtplib.SMTP, rcpt: str) -> int:
    # raw bytes: smtplib would refuse non-ASCII and NUL, an attacker does not
    s.send(b"RCPT TO:<" + rcpt.encode("utf-8") + b">\r\n")
    return s.getreply()[0]


def test_battery_has_30_attempts():
    assert len(RELAY_ATTEMPTS) >= 30


def test_no_relay_without_auth(gw):
    relayed = []
    for sender in ("", "attacker@outside.test", "postmaster@example.test"):
        for rcpt in RELAY_ATTEMPTS:
            # one connection per attempt: the server rightly drops a client after many errors
            with smtplib.SMTP("127.0.0.1", gw.port) as s:
                s.ehlo("attacker.test")
                assert s.docmd("MAIL", f"FROM:<{sender}>")[0] == 250
                code = rcpt_code(s, rcpt)
                if code < 400 and rcpt not in LOCAL_OK:
                    relayed.append((sender, rcpt, code))
    assert relayed == []
    # and nothing reached the queue
    assert list(gw.gateway.spool.messages()) == []


def test_relay_with_auth_as_configured(gw):
    with smtplib.SMTP("127.0.0.1", gw.port) as s:
        s.ehlo("client.test")
        s.login("ironport", "s3cret-pass")
        s.mail("ironport@example.test")
        assert s.rcpt("victim@elsewhere.test")[0] == 250
        assert s.rcpt("victim%elsewhere.test@example.test")[0] == 250  # authenticated: the user's business
        assert rcpt_code(s, "victim@[127.0.0.1]") == 250


def test_brute_force_slowed_then_refused_legit_user_unaffected(tmp_path):
    UserStore(tmp_path / "users.db", create=True).add("ironport", "s3cret-pass")
    guard = """
[auth_guard]
free_failures = 3
base_delay = 0.02
max_delay = 0.2
lockout_failures = 10
lockout_seconds = 600
window_seconds = 900
"""
    cfg = config_text(tmp_path, ACCEPT_ALL).replace(
        "[auth_guard]\nfree_failures = 100\nlockout_failures = 1000\n", guard).replace(
        'address = "127.0.0.1"', 'address = "0.0.0.0"')
    g = start_gateway(cfg, tmp_path)
    try:
        codes = []
        t0 = time.monotonic()
        s = smtplib.SMTP(timeout=30)
        s.source_address = ("127.0.0.9", 0)
        s.connect("127.0.0.1", g.port)
        s.ehlo()
        for i in range(1000):
            if i and i % 20 == 0:            # a new connection now and then, as scripts do
                s.close()
                s = smtplib.SMTP(timeout=30)
                s.source_address = ("127.0.0.9", 0)
                s.connect("127.0.0.1", g.port)
                s.ehlo()
            code, _ = s.docmd("AUTH", "PLAIN " + base64.b64encode(f"\0user{i % 50}\0guess{i}".encode()).decode())
            codes.append(code)
        s.close()
        attack_seconds = time.monotonic() - t0
        assert codes[:3] == [535, 535, 535]
        assert 454 in codes and codes[-1] == 454             # locked out
        assert codes.count(235) == 0
        # a legitimate user from another address gets in at once
        t1 = time.monotonic()
        with smtplib.SMTP(timeout=30) as ok:
            ok.source_address = ("127.0.0.10", 0)
            ok.connect("127.0.0.1", g.port)
            ok.ehlo()
            ok.login("ironport", "s3cret-pass")
        assert time.monotonic() - t1 < 2.0
        # and the right password from the locked address is refused too (no oracle)
        with smtplib.SMTP(timeout=30) as bad:
            bad.source_address = ("127.0.0.9", 0)
            bad.connect("127.0.0.1", g.port)
            bad.ehlo()
            assert bad.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0ironport\0s3cret-pass").decode())[0] == 454
    finally:
        g.stop()
    bodies = g.log_bodies()
    assert any("SMTP Auth: (ICID" in b and "lockout of address 127.0.0.9" in b for b in bodies), \
        [b for b in bodies if "lock" in b][:5]
    assert attack_seconds < 120
