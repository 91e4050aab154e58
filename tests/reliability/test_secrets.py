"""Secrets: passwords never reach mail_logs, `config show` or CLI error text; the secret files
mailward makes are 0600; a config naming a secret file others can read is refused.

Three secrets are in play in one gateway process: a local user's inbound AUTH password, the
outgoing-AUTH password of a route (password_file) and an LDAP bind password (file). Each one
is proven to be really used (the destination and a fake LDAP server record what they got),
so "not in the log" is never vacuous.
"""
from __future__ import annotations

import base64
import os
import smtplib
import socket
import stat
import subprocess
import threading
import time

import pytest

from mailward.auth.users import UserStore
from tests.reliability.support import MAILWARD, GatewayProcess, RecordingSink, free_port, message

INBOUND_PW = "Inb0und-S3cret-Zq9"
OUTBOUND_PW = "0utb0und-S3cret-Xk7"
LDAP_PW = "Ld4p-B1nd-S3cret-Wm5"
SECRETS = (INBOUND_PW, OUTBOUND_PW, LDAP_PW)


def forms(secret: str) -> list[bytes]:
    """The secret as text and in the encodings it travels in (AUTH PLAIN / LOGIN base64)."""
    raw = secret.encode()
    return [raw, base64.b64encode(raw), base64.b64encode(b"\0alice\0" + raw), secret.lower().encode()]


def assert_no_secret(where: str, data: bytes) -> None:
    for secret in SECRETS:
        for form in forms(secret):
            assert form not in data, f"{where} contains a secret ({secret[:4]}...)"


class FakeLdap:
    """Accepts LDAP connections and records the bytes of the bind request (a simple bind
    carries the password in clear inside its BER), then hangs up: the profile fails."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received = b""
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._serve, daemon=True)
        self._t.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    self.received += conn.recv(4096)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._t.join(2)
        self.sock.close()


def write_secret(path, text: str, mode: int = 0o600) -> None:
    path.write_text(text + "\n")
    os.chmod(path, mode)


def config(tmp, port_local: int, port_ldap_listener: int, ldap_port: int, sink_port: int) -> str:
    return f"""
[gateway]
hostname = "gw.secrets.test"
spool_dir = "{tmp / 'spool'}"
log_dir = "{tmp / 'log'}"

[logging]
hash_chain = true

[dns]
reverse_lookups = false

[delivery]
initial_retry = 1
max_retry_interval = 1

[auth_profiles.Local]
type = "local"
users_file = "{tmp / 'users.db'}"

[auth_profiles.Directory]
type = "ldap"
urls = ["ldap://127.0.0.1:{ldap_port}"]
bind_dn = "cn=mailward,dc=secrets,dc=test"
bind_password_file = "{tmp / 'ldap.pw'}"
search_base = "dc=secrets,dc=test"
timeout = 2.0

[outgoing_auth.Out]
username = "gateway"
password_file = "{tmp / 'out.pw'}"

[[listener]]
name = "Local"
port = {port_local}
type = "private"
auth = "required"
auth_profile = "Local"
accepted_domains = ["example.test"]

[[listener.hat]]
group = "ALL"
match = ["ALL"]
policy = "ACCEPT"

[[listener]]
name = "Ldap"
port = {port_ldap_listener}
type = "private"
auth = "required"
auth_profile = "Directory"
accepted_domains = ["example.test"]

[[route]]
domain = "ALL"
hosts = [{{ host = "127.0.0.1", port = {sink_port} }}]
auth_profile = "Out"
tls = "off"
"""


@pytest.fixture
def setup(tmp_path):
    UserStore(tmp_path / "users.db", create=True).add("alice", INBOUND_PW)
    write_secret(tmp_path / "out.pw", OUTBOUND_PW)
    write_secret(tmp_path / "ldap.pw", LDAP_PW)
    ldap = FakeLdap()
    sink = RecordingSink(auth="reject").start()
    ports = free_port(), free_port()
    cfg = tmp_path / "mailward.toml"
    cfg.write_text(config(tmp_path, ports[0], ports[1], ldap.port, sink.port))
    yield tmp_path, cfg, ports, ldap, sink
    ldap.close()
    sink.close()


def test_passwords_never_in_logs_or_cli_output(setup):
    tmp, cfg, (port_local, port_ldap), ldap, sink = setup
    gw = GatewayProcess(cfg, port_local)
    gw.start()
    try:
        with smtplib.SMTP("127.0.0.1", port_local, timeout=10) as s:       # wrong, then right
            s.ehlo("client.test")
            with pytest.raises(smtplib.SMTPAuthenticationError):
                s.login("alice", INBOUND_PW + "-wrong")
            s.login("alice", INBOUND_PW)
            s.sendmail("alice@example.test", ["x@dest.test"], message("secret-test@t"))
        with smtplib.SMTP("127.0.0.1", port_local, timeout=10) as s:       # AUTH LOGIN, wrong
            s.ehlo("client.test")
            s.user, s.password = "alice", "x" + INBOUND_PW
            with pytest.raises(smtplib.SMTPAuthenticationError):
                s.auth("LOGIN", s.auth_login, initial_response_ok=False)
        with smtplib.SMTP("127.0.0.1", port_ldap, timeout=10) as s:        # the LDAP profile binds
            s.ehlo("client.test")
            with pytest.raises(smtplib.SMTPException):
                s.login("bob", INBOUND_PW)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not (sink.auth_seen and sink.received and LDAP_PW.encode() in ldap.received):
            time.sleep(0.1)
    finally:
        gw.stop()
    # every secret was really used...
    assert any(OUTBOUND_PW.encode() in blob for blob in sink.auth_seen), sink.auth_seen
    assert LDAP_PW.encode() in ldap.received
    assert sink.received >= 1               # on_auth_failure = continue: delivered anyway
    # ...and appears nowhere the gateway wrote: logs (all files), the chain, its own output
    log_files = [p for p in (tmp / "log").rglob("*") if p.is_file() and p.name != "chain.key"]
    assert log_files
    text = b"".join(p.read_bytes() for p in log_files)
    assert b"SMTP Auth" in text and b"alice" in text
    assert_no_secret("mail_logs", text)
    assert_no_secret("gateway output", b"".join(p.read_bytes() for p in tmp.glob("gateway-*.out")))
    # the toolkit's reports of that log neither
    for args in (["auth", "--format", "json"], ["track", "--format", "json", "--user", "alice"],
                 ["export", "--format", "json"]):
        out = subprocess.run([str(MAILWARD), "logs", *args, str(tmp / "log" / "mail_logs" / "mail.current")],
                             capture_output=True, timeout=60)
        assert_no_secret(f"logs {args[0]}", out.stdout + out.stderr)


def test_config_show_never_shows_a_secret(setup):
    tmp, cfg, *_ = setup
    for mode in ("--defaults", "--non-default"):
        out = subprocess.run([str(MAILWARD), "config", "show", "--config", str(cfg), mode],
                             capture_output=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert b"out.pw" in out.stdout            # the file is named, its content is not
        assert_no_secret("config show", out.stdout + out.stderr)
    out = subprocess.run([str(MAILWARD), "config", "check", str(cfg)], capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert_no_secret("config check", out.stdout + out.stderr)


@pytest.mark.parametrize("name,mode", [
    ("out.pw", 0o644), ("out.pw", 0o640), ("out.pw", 0o604),
    ("ldap.pw", 0o644), ("ldap.pw", 0o640), ("ldap.pw", 0o604),
    # the users store allows a group-readable file (an admin group): others are refused
    ("users.db", 0o644), ("users.db", 0o604),
])
def test_loose_secret_file_refused_without_echoing_it(setup, name, mode):
    tmp, cfg, (port_local, _), *_ = setup
    os.chmod(tmp / name, mode)
    runs = [[str(MAILWARD), "run", "--config", str(cfg)]]
    if name != "users.db":                  # the users file is the store's to check, at open
        runs.append([str(MAILWARD), "config", "check", str(cfg)])
    for cmd in runs:
        try:
            out = subprocess.run(cmd, capture_output=True, timeout=15)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{' '.join(cmd[1:3])} accepted a secret file of mode {mode:04o} (still running)")
        err = out.stdout + out.stderr
        assert out.returncode != 0, (cmd, err)
        assert name.encode() in err, err
        assert b"Traceback" not in err, err
        assert_no_secret(" ".join(cmd[1:3]), err)


def test_secret_files_made_by_mailward_are_0600(tmp_path):
    users = tmp_path / "made" / "users.db"
    users.parent.mkdir()
    out = subprocess.run([str(MAILWARD), "users", "add", "carol", "--file", str(users)],
                         input=b"Car0l-Pw-123\nCar0l-Pw-123\n", capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    out = subprocess.run([str(MAILWARD), "tls", "selfsigned", "--cert", str(tmp_path / "c.pem"),
                          "--key", str(tmp_path / "k.pem")], capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    # the chain key is made by a gateway's first start with hash_chain = true
    UserStore(tmp_path / "users.db", create=True)
    port = free_port()
    cfg = tmp_path / "gw.toml"
    cfg.write_text(f"""
[gateway]
spool_dir = "{tmp_path / 'spool'}"
log_dir = "{tmp_path / 'log'}"
[logging]
hash_chain = true
[dns]
reverse_lookups = false
[[listener]]
name = "L"
port = {port}
auth = "off"
""")
    old = os.umask(0o022)                   # a permissive umask must not leak into secret files
    try:
        gw = GatewayProcess(cfg, port)
        gw.start()
        gw.stop()
    finally:
        os.umask(old)
    for path in (users, tmp_path / "k.pem", tmp_path / "log" / "chain.key"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, (path.name, oct(path.stat().st_mode))
    assert b"Car0l" not in users.read_bytes()
