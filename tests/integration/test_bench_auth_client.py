"""The relay benchmark's load client (bench/auth_client.py) over real loopback sockets.

It must count exactly: every message that got its 250 after DATA, every failure with its
reason, replies split across reads and multi-line replies included, and give up on a silent
server within its timeout.
"""
from __future__ import annotations

import asyncio
import importlib.util
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support.gateway import ACCEPT_ALL, config_text, fast_user_store, start_gateway

_spec = importlib.util.spec_from_file_location(
    "bench_auth_client", Path(__file__).resolve().parents[2] / "bench" / "auth_client.py")
auth_client = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = auth_client          # dataclasses look their module up there
_spec.loader.exec_module(auth_client)

@pytest.fixture
def gw(tmp_path):
    fast_user_store(tmp_path, {"bench": "bench-pw"})
    g = start_gateway(config_text(tmp_path, ACCEPT_ALL), tmp_path)
    yield g
    g.stop()


def load(port: int, **kw):
    kw.setdefault("timeout", 10.0)
    kw.setdefault("deadline", 60.0)
    return asyncio.run(auth_client.run_load("127.0.0.1", port, **kw))


def test_auth_and_plain_runs_count_every_message(gw):
    r = load(gw.port, messages=20, concurrency=4, size=1024, user="bench", password="bench-pw",
             rcpt="someone@elsewhere.test")
    assert (r.sent, r.failed, r.errors) == (20, 0, ())
    r = load(gw.port, messages=10, concurrency=3, size=100, rcpt="someone@example.test")
    assert (r.sent, r.failed, r.errors) == (10, 0, ())
    ok = [b for b in gw.log_bodies() if "SMTP Auth:" in b and "succeeded for user: bench" in b]
    assert len(ok) == 20


def test_wrong_password_and_relay_refusal_are_failures_with_their_reply(gw):
    r = load(gw.port, messages=3, concurrency=2, size=100, user="bench", password="wrong",
             rcpt="someone@elsewhere.test")
    assert r.sent == 0 and r.failed == 3
    assert any("535 5.7.8" in e for e in r.errors)
    r = load(gw.port, messages=2, concurrency=1, size=100, rcpt="someone@elsewhere.test")
    assert r.sent == 0 and r.failed == 2 and any("554 5.7.1" in e for e in r.errors)


class ScriptedServer:
    """Answers each command with replies cut into pieces, sent with pauses between them."""

    def __init__(self, replies: dict[bytes, list[bytes]], silent: bool = False):
        self.replies = replies
        self.silent = silent
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(10)
        self.port = self.sock.getsockname()[1]
        self.heard: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        conn.settimeout(10)
        with conn:
            if self.silent:
                conn.recv(1)          # until the client gives up and closes
                return
            self._send(conn, self.replies[b"BANNER"])
            buf = b""
            in_data = False
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
                while True:
                    end = buf.find(b"\r\n.\r\n" if in_data else b"\r\n")
                    if end < 0:
                        break
                    line, buf = buf[:end], buf[end + (5 if in_data else 2):]
                    key = b"BODY" if in_data else line.split(b" ")[0].upper()
                    in_data = False
                    self.heard.append(key)
                    self._send(conn, self.replies[key])
                    if key == b"DATA":
                        in_data = True
                    if key == b"QUIT":
                        return

    @staticmethod
    def _send(conn: socket.socket, pieces: list[bytes]) -> None:
        for p in pieces:
            conn.sendall(p)
            time.sleep(0.02)         # separate reads on the client's side

    def close(self) -> None:
        self.sock.close()
        self.thread.join(10)


def test_replies_split_across_reads_and_multiline_replies():
    srv = ScriptedServer({
        b"BANNER": [b"22", b"0 mx ESMTP\r\n"],
        b"EHLO": [b"250-mx\r\n250-PIPE", b"LINING\r\n", b"250-AUTH PLAIN\r\n250 8BITMIME\r", b"\n"],
        b"AUTH": [b"235 2.7.0 ok\r\n"],
        b"MAIL": [b"250 2.1.0 Ok\r\n"],
        b"RCPT": [b"250 2.1.5 Ok\r\n"],
        b"DATA": [b"354 go\r\n"],
        b"BODY": [b"250-queued\r\n", b"250 as 1\r\n"],
        b"QUIT": [b"221 bye\r\n"],
    })
    try:
        r = load(srv.port, messages=1, concurrency=1, size=300, user="u", password="p")
        assert (r.sent, r.failed, r.errors) == (1, 0, ())
        # not pipelined: each command was sent only after the reply to the one before
        assert srv.heard == [b"EHLO", b"AUTH", b"MAIL", b"RCPT", b"DATA", b"BODY", b"QUIT"]
    finally:
        srv.close()


def test_a_silent_server_is_given_up_within_the_timeout():
    srv = ScriptedServer({}, silent=True)
    try:
        start = time.monotonic()
        r = load(srv.port, messages=1, concurrency=1, size=100, timeout=0.5)
        assert r.sent == 0 and r.failed == 1
        assert any("TimeoutError" in e for e in r.errors)
        assert time.monotonic() - start < 5
    finally:
        srv.close()
