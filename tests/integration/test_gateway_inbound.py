"""The inbound gateway over real loopback sockets, driven by Python's smtplib.

Each test starts a real gateway (real spool, real mail_logs file) and checks the replies and
the exact log lines of the seed, modulo ids and times.
"""
from __future__ import annotations

import base64
import re
import smtplib
import socket
import ssl

import pytest

from mailward.auth.users import UserStore
from mailward.net.dns import StaticResolver
from mailward.net.tls import selfsigned
from tests.support.gateway import config_text, start_gateway

ACCEPT_ALL = """
[[listener.hat]]
group = "None"
match = ["ALL"]
policy = "ACCEPT"
"""

MSG = "From: a@example.test\r\nSubject: hello\r\nMessage-ID: <m1@example.test>\r\n\r\nbody\r\n"


@pytest.fixture
def users(tmp_path):
    store = UserStore(tmp_path / "users.db", create=True)
    store.add("ironport", "s3cret-pass")
    return store


@pytest.fixture
def gw(tmp_path, users):
    g = start_gateway(config_text(tmp_path, ACCEPT_ALL), tmp_path)
    yield g
    g.stop()


def lines_matching(bodies: list[str], pattern: str) -> list[str]:
    rx = re.compile(pattern)
    return [b for b in bodies if rx.fullmatch(b)]


def test_auth_plain_success_seed_lines(gw):
    with smtplib.SMTP("127.0.0.1", gw.port) as s:
        s.ehlo("client.test")
        code, _ = s.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0ironport\0s3cret-pass").decode())
        assert code == 235
    bodies = gw.log_bodies()
    assert lines_matching(bodies, r"Info: New SMTP ICID (\d+) interface IncomingMail \(127\.0\.0\.1\) address "
                                  r"127\.0\.0\.1 reverse dns host unknown verified no")
    assert lines_matching(bodies, r"Info: ICID \d+ ACCEPT SG None match ALL SBRS None")
    assert lines_matching(bodies, r"Info: SMTP Auth: \(ICID \d+\) succeeded for user: ironport using AUTH "
                                  r"mechanism: PLAIN with profile: IncomingAuthentication")
    assert lines_matching(bodies, r"Info: ICID \d+ close")
    # the order of the seed: New SMTP ICID, ACCEPT, SMTP Auth, close
    kinds = [b.split(" ")[1] for b in bodies if b.startswith("Info: ") and not b.startswith(
        ("Info: Begin", "Info: Version", "Info: Time offset"))]
    assert kinds == ["New", "ICID", "SMTP", "ICID"]


def test_auth_plain_failure_seed_line_and_535(gw):
    with smtplib.SMTP("127.0.0.1", gw.port) as s:
        s.ehlo()
        code, text = s.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0ironport\0wrong").decode())
        assert (code, text) == (535, b"5.7.8 Authentication credentials invalid")
    assert lines_matching(gw.log_bodies(), r"Info: SMTP Auth: \(ICID \d+\) failed for user: ironport using AUTH "
                                           r"mechanism: PLAIN with profile: IncomingAuthentication")


def test_unknown_user_same_reply_as_wrong_password(gw):
    with smtplib.SMTP("127.0.0.1", gw.port) as s:
        s.ehlo()
        a = s.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0nobody\0wrong").decode())
        b = s.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0ironport\0wrong").decode())
    assert a == b == (535, b"5.7.8 Authentication credentials invalid")


def test_auth_login_success_and_failure(gw):
    with smtplib.SMTP("127.0.0.1", gw.port) as s:
        s.ehlo()
        assert s.docmd("AUTH", "LOGIN")[0] == 334
        assert s.docmd(base64.b64encode(b"ironport").decode())[0] == 334
        assert s.docmd(base64.b64encode(b"bad").decode())[0] == 535
        assert s.docmd("AUTH", "LOGIN " + base64.b64encode(b"ironport").decode())[0] == 334
        assert s.docmd(base64.b64encode(b"s3cret-pass").decode())[0] == 235
    bodies = gw.log_bodies()
    assert lines_matching(bodies, r"Info: SMTP Auth: \(ICID \d+\) failed for user: ironport using AUTH mechanism: "
                                  r"LOGIN with profile: IncomingAuthentication")
    assert lines_matching(bodies, r"Info: SMTP Auth: \(ICID \d+\) succeeded for user: ironport using AUTH "
                                  r"mechanism: LOGIN with profile: IncomingAuthentication")


def test_bad_base64_cancel_and_auth_twice(gw):
    with smtplib.SMTP("127.0.0.1", gw.port) as s:
        s.ehlo()
        assert s.docmd("AUTH", "PLAIN not-base64!!")[0] == 501
        assert s.docmd("AUTH", "PLAIN")[0] == 334
        assert s.docmd("*")[0] == 501
        assert s.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0ironport\0s3cret-pass").decode())[0] == 235
        assert s.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0ironport\0s3cret-pass").decode())[0] == 503
        assert s.docmd("AUTH", "NOSUCH")[0] in (503, 504)


def test_relay_denied_without_auth_allowed_with_auth(gw):
    with smtplib.SMTP("127.0.0.1", gw.port) as s:
        s.ehlo()
        assert s.mail("sender@outside.test")[0] == 250
        code, text = s.rcpt("victim@elsewhere.test")
        assert (code, text) == (554, b"5.7.1 <victim@elsewhere.test>: Relay access denied")
        assert s.rcpt("user@example.test")[0] == 250       # accepted domain: fine
        s.rset()
        s.login("ironport", "s3cret-pass")
        assert s.sendmail("ironport@example.test", ["victim@elsewhere.test"], MSG) == {}
    bodies = gw.log_bodies()
    assert lines_matching(bodies, r"Info: MID \d+ ICID \d+ To: <victim@elsewhere\.test> Rejected by RAT")
    assert lines_matching(bodies, r"Info: MID \d+ ICID \d+ RID 0 To: <victim@elsewhere\.test>")
    assert lines_matching(bodies, r"Info: MID \d+ Subject 'hello'")
    assert lines_matching(bodies, r"Info: MID \d+ Message-ID '<m1@example\.test>'")
    assert lines_matching(bodies, r"Info: MID \d+ ready \d+ bytes from <ironport@example\.test>")
    assert lines_matching(bodies, r"Info: MID \d+ matched all recipients for per-recipient policy DEFAULT in the "
                                  r"outbound table")
    assert lines_matching(bodies, r"Info: MID \d+ queued for delivery")
    # the message is in the queue with the authenticated user noted in Received:
    msgs = list(gw.gateway.spool.messages())
    assert len(msgs) == 1 and msgs[0].envelope.auth_user == "ironport"
    body = gw.gateway.spool.read_body(msgs[0].envelope.mid)
    assert b"(Authenticated sender: ironport)" in body and b"with ESMTPA id" in body


@pytest.mark.parametrize("rcpt", [
    "user%elsewhere.test@example.test", "elsewhere.test!user@example.test", '"user@elsewhere.test"@example.test',
    "@example.test:user@elsewhere.test", "user@elsewhere.test.", "user@[127.0.0.1]", "USER@ELSEWHERE.TEST",
])
def test_relay_tricks_refused_without_auth(gw, rcpt):
    with smtplib.SMTP("127.0.0.1", gw.port) as s:
        s.ehlo()
        s.mail("x@outside.test")
        code, _ = s.docmd("RCPT", f"TO:<{rcpt}>")
        assert code >= 500


def test_pipelining(gw):
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        f = sock.makefile("rb")
        assert f.readline().startswith(b"220")
        sock.sendall(b"EHLO c.test\r\n")
        while not f.readline().startswith(b"250 "):
            pass
        sock.sendall(b"MAIL FROM:<a@outside.test>\r\nRCPT TO:<u1@example.test>\r\nRCPT TO:<u2@example.test>\r\n"
                     b"DATA\r\n")
        replies = [f.readline()[:3] for _ in range(4)]
        assert replies == [b"250", b"250", b"250", b"354"]
        sock.sendall(b"Subject: p\r\n\r\nhi\r\n.\r\nQUIT\r\n")
        assert f.readline().startswith(b"250")
        assert f.readline().startswith(b"221")


def test_hat_policies(tmp_path, users):
    hat = """
[[listener.hat]]
group = "EXEMPT"
match = ["127.0.0.5"]
policy = "CONTINUE"

[[listener.hat]]
group = "RELAYLIST"
match = ["127.0.0.2", "127.0.0.5"]
policy = "RELAY"

[[listener.hat]]
group = "BLOCKLIST"
match = ["127.0.0.3"]
policy = "REJECT"

[[listener.hat]]
group = "REFUSE"
match = ["127.0.0.4"]
policy = "TCPREFUSE"

[[listener.hat]]
group = "TRUSTED"
match = [".partner.test"]
policy = "RELAY"

[[listener.hat]]
group = "None"
match = ["ALL"]
policy = "ACCEPT"
"""
    resolver = StaticResolver(ptrs={"127.0.0.6": ["mx.partner.test"], "127.0.0.7": ["mx.partner.test"]},
                              hosts={"mx.partner.test": ["127.0.0.6"]})
    cfg = config_text(tmp_path, hat).replace('address = "127.0.0.1"', 'address = "0.0.0.0"')
    g = start_gateway(cfg, tmp_path, resolver=resolver)
    try:
        def connect(src):
            s = smtplib.SMTP(timeout=10)
            s.source_address = (src, 0)
            return s, s.connect("127.0.0.1", g.port)

        s, (code, _) = connect("127.0.0.2")          # RELAY: any destination without AUTH
        s.ehlo(); s.mail("a@b.test")
        assert s.rcpt("x@elsewhere.test")[0] == 250
        s.quit()
        s, (code, text) = connect("127.0.0.1")       # ACCEPT: only local domains
        s.ehlo(); s.mail("a@b.test")
        assert s.rcpt("x@elsewhere.test")[0] == 554
        s.quit()
        s, (code, text) = connect("127.0.0.3")       # REJECT: 554 banner, then close
        assert code == 554
        with pytest.raises(smtplib.SMTPServerDisconnected):
            s.ehlo()
        with pytest.raises(smtplib.SMTPServerDisconnected):      # TCPREFUSE: closed without banner
            connect("127.0.0.4")
        s, _ = connect("127.0.0.5")                  # CONTINUE skips EXEMPT, RELAYLIST decides
        s.ehlo(); s.mail("a@b.test")
        assert s.rcpt("x@elsewhere.test")[0] == 250
        s.quit()
        s, _ = connect("127.0.0.6")                  # verified rDNS suffix match
        s.ehlo(); s.mail("a@b.test")
        assert s.rcpt("x@elsewhere.test")[0] == 250
        s.quit()
        s, _ = connect("127.0.0.7")                  # PTR not forward-confirmed: no name match
        s.ehlo(); s.mail("a@b.test")
        assert s.rcpt("x@elsewhere.test")[0] == 554
        s.quit()
    finally:
        g.stop()
    bodies = g.log_bodies()
    for pattern in [r"Info: ICID \d+ RELAY SG RELAYLIST match 127\.0\.0\.2 SBRS None",
                    r"Info: ICID \d+ ACCEPT SG None match ALL SBRS None",
                    r"Info: ICID \d+ REJECT SG BLOCKLIST match 127\.0\.0\.3 SBRS None",
                    r"Info: ICID \d+ TCPREFUSE SG REFUSE match 127\.0\.0\.4 SBRS None",
                    r"Info: ICID \d+ RELAY SG RELAYLIST match 127\.0\.0\.5 SBRS None",
                    r"Info: ICID \d+ RELAY SG TRUSTED match \.partner\.test SBRS None",
                    r"Info: New SMTP ICID \d+ interface IncomingMail \(127\.0\.0\.1\) address 127\.0\.0\.6 reverse "
                    r"dns host mx\.partner\.test verified yes",
                    r"Info: New SMTP ICID \d+ interface IncomingMail \(127\.0\.0\.1\) address 127\.0\.0\.7 reverse "
                    r"dns host mx\.partner\.test verified no"]:
        assert lines_matching(bodies, pattern), pattern


def _tls_gateway(tmp_path, starttls: str, auth_requires_tls: bool, auth: str = "preferred"):
    selfsigned("localhost", tmp_path / "c.crt", tmp_path / "c.key")
    listener = f"""
starttls = "{starttls}"
cert_file = "{tmp_path / 'c.crt'}"
key_file = "{tmp_path / 'c.key'}"
auth_requires_tls = {str(auth_requires_tls).lower()}
""" + ACCEPT_ALL
    cfg = config_text(tmp_path, listener).replace('auth = "preferred"', f'auth = "{auth}"')
    return start_gateway(cfg, tmp_path)


def _client_ctx():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def test_starttls_then_auth_and_auth_refused_before_tls(tmp_path, users):
    g = _tls_gateway(tmp_path, "preferred", True)
    try:
        with smtplib.SMTP("127.0.0.1", g.port) as s:
            s.ehlo()
            assert s.has_extn("starttls") and not s.has_extn("auth")
            code, text = s.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0ironport\0s3cret-pass").decode())
            assert (code, text) == (538, b"5.7.11 Encryption required for requested authentication mechanism")
            s.starttls(context=_client_ctx())
            s.ehlo()
            assert s.has_extn("auth") and not s.has_extn("starttls")
            s.login("ironport", "s3cret-pass")
            assert s.sendmail("ironport@example.test", ["x@elsewhere.test"], MSG) == {}
    finally:
        g.stop()
    bodies = g.log_bodies()
    assert lines_matching(bodies, r"Info: ICID \d+ TLS success protocol TLSv1\.[23] cipher \S+")
    assert lines_matching(bodies, r"Info: SMTP Auth: \(ICID \d+\) succeeded for user: ironport using AUTH mechanism: "
                                  r"PLAIN with profile: IncomingAuthentication")
    body = g.gateway.spool.read_body(next(iter(g.gateway.spool.messages())).envelope.mid)
    assert b"with ESMTPSA id" in body


def test_tls_required_and_auth_required(tmp_path, users):
    g = _tls_gateway(tmp_path, "required", False, auth="required")
    try:
        with smtplib.SMTP("127.0.0.1", g.port) as s:
            s.ehlo()
            assert s.mail("a@b.test")[0] == 530      # STARTTLS first
            s.starttls(context=_client_ctx())
            s.ehlo()
            code, text = s.mail("a@b.test")
            assert (code, text) == (530, b"5.7.0 Authentication required")
    finally:
        g.stop()
    bodies = g.log_bodies()
    assert lines_matching(bodies, r"Info: ICID \d+ TLS was required but remote host did not initiate it")
    assert lines_matching(bodies, r"Info: SMTP Auth: \(ICID \d+\) was required but remote host did not initiate it")


def test_limits_size_recipients_messages(tmp_path, users):
    limits = """
max_message_size = 2000
max_recipients = 2
max_messages_per_connection = 2
""" + ACCEPT_ALL
    g = start_gateway(config_text(tmp_path, limits), tmp_path)
    try:
        with smtplib.SMTP("127.0.0.1", g.port) as s:
            s.ehlo()
            assert s.docmd("MAIL", "FROM:<a@b.test> SIZE=5000")[0] == 552
            s.mail("a@b.test")
            assert s.rcpt("u1@example.test")[0] == 250
            assert s.rcpt("u2@example.test")[0] == 250
            assert s.rcpt("u3@example.test")[0] == 452
            assert s.docmd("DATA")[0] == 354
            s.send(("x" * 100 + "\r\n" + ("y" * 900 + "\r\n") * 5 + ".\r\n").encode())
            assert s.getreply()[0] == 552
            assert s.sendmail("a@b.test", ["u1@example.test"], MSG) == {}
            assert s.sendmail("a@b.test", ["u1@example.test"], MSG) == {}
            with pytest.raises(smtplib.SMTPException):
                s.sendmail("a@b.test", ["u1@example.test"], MSG)
    finally:
        g.stop()
    bodies = g.log_bodies()
    assert lines_matching(bodies, r"Info: ICID \d+ Receiving Failed: Message size exceeds limit")
    assert lines_matching(bodies, r"Info: ICID \d+ Receiving Failed: Too Many Recipients")


def test_line_too_long(gw):
    with smtplib.SMTP("127.0.0.1", gw.port) as s:
        s.ehlo()
        code, _ = s.docmd("NOOP " + "x" * 2000)
        assert code == 500
        assert s.noop()[0] == 250


def test_implicit_tls_offers_and_accepts_auth(tmp_path, users):
    """Port 465 style (RFC 8314): TLS from the first byte, AUTH offered there (aiosmtpd #281)."""
    selfsigned("localhost", tmp_path / "c.crt", tmp_path / "c.key")
    listener = f"""
type = "public"
implicit_tls = true
cert_file = "{tmp_path / 'c.crt'}"
key_file = "{tmp_path / 'c.key'}"
""" + ACCEPT_ALL
    g = start_gateway(config_text(tmp_path, listener).replace('type = "private"\n', ""), tmp_path)
    try:
        with smtplib.SMTP_SSL("127.0.0.1", g.port, context=_client_ctx()) as s:
            s.ehlo()
            assert s.has_extn("auth") and not s.has_extn("starttls")
            s.login("ironport", "s3cret-pass")
            assert s.sendmail("ironport@example.test", ["x@elsewhere.test"], MSG) == {}
    finally:
        g.stop()
    bodies = g.log_bodies()
    assert lines_matching(bodies, r"Info: ICID \d+ TLS success protocol TLSv1\.[23] cipher \S+")
    assert lines_matching(bodies, r"Info: SMTP Auth: \(ICID \d+\) succeeded for user: ironport using AUTH mechanism: "
                                  r"PLAIN with profile: IncomingAuthentication")


def test_public_listener_refuses_auth_before_tls_by_default(tmp_path, users):
    selfsigned("localhost", tmp_path / "c.crt", tmp_path / "c.key")
    listener = f"""
type = "public"
starttls = "preferred"
cert_file = "{tmp_path / 'c.crt'}"
key_file = "{tmp_path / 'c.key'}"
""" + ACCEPT_ALL
    g = start_gateway(config_text(tmp_path, listener).replace('type = "private"\n', ""), tmp_path)
    try:
        with smtplib.SMTP("127.0.0.1", g.port) as s:
            s.ehlo()
            assert not s.has_extn("auth")
            assert s.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0ironport\0s3cret-pass").decode())[0] == 538
    finally:
        g.stop()
