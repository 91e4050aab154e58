"""Real SMTP clients nobody here wrote (swaks, curl) against a running gateway."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from mailward.auth.users import UserStore
from mailward.net.tls import selfsigned
from tests.support.gateway import config_text, start_gateway

pytestmark = pytest.mark.e2e

LISTENER = """
starttls = "preferred"
cert_file = "{d}/c.crt"
key_file = "{d}/c.key"
auth_requires_tls = true

[[listener.hat]]
group = "None"
match = ["ALL"]
policy = "ACCEPT"
"""


@pytest.fixture
def gw(tmp_path):
    for tool in ("swaks", "curl"):
        assert shutil.which(tool), f"{tool} is not installed (make test installs it)"
    UserStore(tmp_path / "users.db", create=True).add("ironport", "s3cret-pass")
    selfsigned("localhost", tmp_path / "c.crt", tmp_path / "c.key")
    g = start_gateway(config_text(tmp_path, LISTENER.format(d=tmp_path)), tmp_path)
    yield g
    g.stop()


def swaks(port: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["swaks", "--server", f"127.0.0.1:{port}", "--hide-informational", *args],
                          capture_output=True, text=True, timeout=60)


def test_swaks_tls_auth_plain_relays(gw):
    r = swaks(gw.port, "--tls", "--auth", "PLAIN", "--auth-user", "ironport", "--auth-password", "s3cret-pass",
              "--from", "ironport@example.test", "--to", "someone@elsewhere.test")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "235 2.7.0 Authentication successful" in r.stdout
    assert re.search(r"250 2\.0\.0 Ok: queued as \d+", r.stdout)
    bodies = gw.log_bodies()
    assert any(re.fullmatch(r"Info: SMTP Auth: \(ICID \d+\) succeeded for user: ironport using AUTH mechanism: "
                            r"PLAIN with profile: IncomingAuthentication", b) for b in bodies)


def test_swaks_auth_login_wrong_password(gw):
    r = swaks(gw.port, "--tls", "--auth", "LOGIN", "--auth-user", "ironport", "--auth-password", "nope",
              "--from", "a@example.test", "--to", "someone@elsewhere.test")
    assert r.returncode != 0
    assert "535 5.7.8 Authentication credentials invalid" in r.stdout
    assert any(re.fullmatch(r"Info: SMTP Auth: \(ICID \d+\) failed for user: ironport using AUTH mechanism: "
                            r"LOGIN with profile: IncomingAuthentication", b) for b in gw.log_bodies())


def test_swaks_no_auth_relay_denied(gw):
    r = swaks(gw.port, "--from", "a@outside.test", "--to", "postmaster@elsewhere.test")
    assert r.returncode != 0
    assert "554 5.7.1 <postmaster@elsewhere.test>: Relay access denied" in r.stdout


def test_curl_auth_and_send(gw, tmp_path):
    msg = tmp_path / "m.txt"
    msg.write_text("From: ironport@example.test\r\nSubject: via curl\r\n\r\nhello\r\n")
    r = subprocess.run(["curl", "-sS", "--ssl-reqd", "-k", f"smtp://127.0.0.1:{gw.port}",
                        "--mail-from", "ironport@example.test", "--mail-rcpt", "friend@elsewhere.test",
                        "--user", "ironport:s3cret-pass", "--upload-file", str(msg)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    bodies = gw.log_bodies()
    assert any(re.fullmatch(r"Info: MID \d+ Subject 'via curl'", b) for b in bodies)
    assert any("succeeded for user: ironport" in b for b in bodies)


def test_curl_wrong_password_fails(gw, tmp_path):
    msg = tmp_path / "m.txt"
    msg.write_text("Subject: x\r\n\r\nhello\r\n")
    r = subprocess.run(["curl", "-sS", "--ssl-reqd", "-k", f"smtp://127.0.0.1:{gw.port}",
                        "--mail-from", "a@example.test", "--mail-rcpt", "friend@elsewhere.test",
                        "--user", "ironport:bad", "--upload-file", str(msg)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert any("failed for user: ironport" in b for b in gw.log_bodies())


def test_curl_ehlo_right_after_tls_handshake_is_answered(gw, tmp_path):
    """curl sends EHLO the moment the TLS handshake ends; that EHLO may arrive before the
    server's STARTTLS step has resumed. It must be answered, not dropped as injected
    plaintext (it hung one connection in four before the fix)."""
    msg = tmp_path / "m.txt"
    msg.write_text("Subject: x\r\n\r\nhello\r\n")
    codes = []
    for _ in range(12):
        r = subprocess.run(["curl", "-sS", "--ssl-reqd", "-k", f"smtp://127.0.0.1:{gw.port}", "--max-time", "10",
                            "--mail-from", "a@example.test", "--mail-rcpt", "friend@elsewhere.test",
                            "--user", "ironport:bad", "--upload-file", str(msg)],
                           capture_output=True, text=True, timeout=30)
        codes.append(r.returncode)
    assert codes == [67] * 12          # 67: login denied; 28 would be a hang cut by --max-time
