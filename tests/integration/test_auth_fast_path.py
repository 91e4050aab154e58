"""AUTH answered from the verified-credential cache, over real loopback sockets.

A repeated AUTH with the right password is answered in the listener's read callback: no
executor hop (no Argon2id), no awaited ``on_auth``. Everything else still takes the full path
(guard, tarpit delay, verifier): a wrong password, a cold cache, a tarpitted or locked-out
client. The command deadline restarts after an AUTH answered that way.
"""
from __future__ import annotations

import base64
import socket
import time

import pytest

from mailward.auth.users import UserStore
from mailward.gateway.session import InboundSession
from tests.support.gateway import ACCEPT_ALL, config_text, fast_user_store, start_gateway

def plain(user: str, password: str) -> bytes:
    return b"AUTH PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode()) + b"\r\n"


class Conn:
    """A raw SMTP client: one reply per command, every read bounded by a timeout."""

    def __init__(self, port: int, timeout: float = 10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.file = self.sock.makefile("rb")
        assert self.reply().startswith(b"220")

    def reply(self) -> bytes:
        while True:
            line = self.file.readline()
            if not line or line[3:4] != b"-":
                return line.rstrip(b"\r\n")

    def cmd(self, data: bytes) -> bytes:
        self.sock.sendall(data)
        return self.reply()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


class CountingExecutor:
    """Wraps the users store's executor: counts the work sent to it (Argon2id checks)."""

    def __init__(self, inner):
        self.inner = inner
        self.submitted = 0

    def submit(self, fn, *args, **kw):
        self.submitted += 1
        return self.inner.submit(fn, *args, **kw)

    def shutdown(self, *a, **kw):
        return self.inner.shutdown(*a, **kw)


def gateway(tmp_path, *, guard: str = "", listener: str = ""):
    fast_user_store(tmp_path, {"alice": "alice-pw", "bob": "bob-pw"})
    text = config_text(tmp_path, listener + ACCEPT_ALL)
    if guard:
        text = text.replace("free_failures = 100\nlockout_failures = 1000", guard)
    return start_gateway(text, tmp_path)


@pytest.fixture
def awaited(monkeypatch):
    """Counts the AUTHs answered through the awaited ``on_auth`` (the full path)."""
    calls = []
    real = InboundSession.on_auth

    async def on_auth(self, creds):
        calls.append(creds.username)
        return await real(self, creds)

    monkeypatch.setattr(InboundSession, "on_auth", on_auth)
    return calls


def session(port: int, *commands: bytes) -> list[bytes]:
    c = Conn(port)
    try:
        return [c.cmd(b"EHLO client.test\r\n")] + [c.cmd(x) for x in commands]
    finally:
        c.close()


def test_cached_auth_is_answered_without_executor_or_awaited_on_auth(tmp_path, awaited):
    gw = gateway(tmp_path)
    try:
        profile = gw.gateway.authenticator.profiles["IncomingAuthentication"]
        store = profile.store
        executor = CountingExecutor(store._executor)
        store._executor = executor
        guard = gw.gateway.authenticator.guard

        assert session(gw.port, plain("alice", "alice-pw"))[-1].startswith(b"235")
        assert executor.submitted == 1 and awaited == ["alice"]          # cold cache: Argon2id
        for _ in range(10):
            replies = session(gw.port, plain("alice", "alice-pw"), b"MAIL FROM:<alice@example.test>\r\n")
            assert replies[1] == b"235 2.7.0 Authentication successful"
            assert replies[2].startswith(b"250")
        assert executor.submitted == 1 and awaited == ["alice"]          # 10 hits: no hop, no await

        # A wrong password never hits: the full verifier, counted by the guard.
        assert session(gw.port, plain("alice", "wrong"))[-1].startswith(b"535")
        assert executor.submitted == 2 and awaited == ["alice", "alice"]
        assert len(guard._ip.counters["127.0.0.1"].times) == 1
        # ... and it forgot alice's cached entry: the right password is verified in full again.
        assert session(gw.port, plain("alice", "alice-pw"))[-1].startswith(b"235")
        assert executor.submitted == 3 and len(awaited) == 3

        # Another process changes the password: the very next AUTH with the old one fails.
        UserStore(store.path).passwd("alice", "new-alice-pw")
        assert session(gw.port, plain("alice", "alice-pw"))[-1].startswith(b"535")
        assert executor.submitted == 4

        bodies = gw.log_bodies()
        ok = [b for b in bodies if "SMTP Auth:" in b and "succeeded for user: alice" in b]
        failed = [b for b in bodies if "SMTP Auth:" in b and "failed for user: alice" in b]
        assert len(ok) == 12 and len(failed) == 2                         # every hit is logged
    finally:
        gw.stop()


def test_tarpitted_or_locked_client_takes_the_full_path_even_with_a_cached_password(tmp_path, awaited):
    guard_cfg = "free_failures = 1\nbase_delay = 0.3\nmax_delay = 0.3\nlockout_failures = 3"
    gw = gateway(tmp_path, guard=guard_cfg)
    try:
        assert session(gw.port, plain("alice", "alice-pw"))[-1].startswith(b"235")     # cached now
        assert session(gw.port, plain("bob", "wrong"))[-1].startswith(b"535")          # 1 failure
        start = time.monotonic()
        assert session(gw.port, plain("alice", "alice-pw"))[-1].startswith(b"235")
        assert time.monotonic() - start >= 0.29                           # the tarpit applied
        assert awaited == ["alice", "bob", "alice"]                       # ... through on_auth
        assert session(gw.port, plain("bob", "wrong"))[-1].startswith(b"535")
        assert session(gw.port, plain("bob", "wrong"))[-1].startswith(b"535")          # lockout
        assert session(gw.port, plain("alice", "alice-pw"))[-1].startswith(b"454")
    finally:
        gw.stop()


def test_command_deadline_restarts_after_an_auth_answered_at_once(tmp_path, awaited):
    gw = gateway(tmp_path, listener="command_timeout = 1.0\n")
    try:
        assert session(gw.port, plain("alice", "alice-pw"))[-1].startswith(b"235")     # warm the cache
        c = Conn(gw.port)
        try:
            assert c.cmd(b"EHLO client.test\r\n").startswith(b"250")
            time.sleep(0.7)
            assert c.cmd(plain("alice", "alice-pw")).startswith(b"235")
            time.sleep(0.7)                 # 1.4 s after EHLO, 0.7 s after AUTH: still in time
            assert c.cmd(b"MAIL FROM:<alice@example.test>\r\n").startswith(b"250")
        finally:
            c.close()
        c = Conn(gw.port)
        try:
            assert c.cmd(b"EHLO client.test\r\n").startswith(b"250")
            assert c.cmd(plain("alice", "alice-pw")).startswith(b"235")
            t0 = time.monotonic()
            assert c.reply() == b"421 4.4.2 gw.example.test Error: timeout exceeded"   # and it still ends
            assert 0.8 <= time.monotonic() - t0 <= 5.0
        finally:
            c.close()
        assert awaited == ["alice"]
    finally:
        gw.stop()


def _pipelined_auth_mail_rcpt(port: int, password: str) -> list[bytes]:
    """EHLO, then AUTH PLAIN + MAIL + RCPT in one write: the three replies, in order."""
    c = Conn(port)
    try:
        assert c.cmd(b"EHLO client.test\r\n").startswith(b"250")
        c.sock.sendall(plain("alice", password) + b"MAIL FROM:<alice@example.test>\r\n"
                       + b"RCPT TO:<someone@elsewhere.test>\r\n")
        return [c.reply() for _ in range(3)]
    finally:
        c.close()


def test_pipelined_auth_and_mail_are_answered_in_order(tmp_path, awaited):
    gw = gateway(tmp_path)
    try:
        assert session(gw.port, plain("alice", "alice-pw"))[-1].startswith(b"235")
        auth, mail, rcpt = _pipelined_auth_mail_rcpt(gw.port, "alice-pw")
        assert auth.startswith(b"235")
        assert mail.startswith(b"250 2.1.0")
        assert rcpt.startswith(b"250 2.1.5")            # relayed: the AUTH counted
        # a wrong password pipelined the same way goes the full path, still in order
        auth, mail, rcpt = _pipelined_auth_mail_rcpt(gw.port, "nope")
        assert auth.startswith(b"535")
        assert mail.startswith(b"250 2.1.0")
        assert rcpt.startswith(b"554 5.7.1")            # not authenticated: no relay
        assert awaited == ["alice", "alice"]
    finally:
        gw.stop()
