"""Integration tests of the asyncio SMTP shell over real loopback sockets, with Python's
smtplib (and raw sockets where a misbehaving client is the point) against a small handler."""
from __future__ import annotations

import asyncio
import base64
import smtplib
import socket
import ssl
import threading
import time

import pytest

from mailward.net.server import ConnectDecision, ListenerSpec, serve_listener
from mailward.net.tls import selfsigned, server_context
from mailward.smtp.reply import Reply

HOST = "mx.test"


class RecordingHandler:
    """A minimal application: accepts everything, records what it heard."""

    def __init__(self, log: list, *, users=None, reject_connect=False, slow_rcpt=0.0):
        self.log = log
        self.users = users or {"alice": "s3cret"}
        self.reject_connect = reject_connect
        self.slow_rcpt = slow_rcpt
        self.tls = False
        self.authed = None
        self.body = bytearray()
        self.size = 0
        self.messages = []

    async def on_connect(self, conn):
        self.log.append(("connect", conn.peer_ip, conn.tls_protocol))
        self.tls = conn.tls_protocol is not None
        if self.reject_connect:
            return ConnectDecision.reject(Reply(554, "5.7.1 go away"))
        return ConnectDecision.accept(f"{HOST} ESMTP test")

    def ehlo_keywords(self):
        kw = ["SIZE 1000000"]
        if not self.tls:
            kw.append("STARTTLS")
        if self.authed is None:
            kw.append("AUTH PLAIN LOGIN CRAM-MD5")
        return kw

    async def on_helo(self, name, esmtp):
        self.log.append(("helo", name, esmtp))

    async def on_starttls(self):
        self.log.append(("starttls",))

    async def on_tls(self, ok, protocol, cipher, error):
        self.log.append(("tls", ok, protocol, error))
        self.tls = ok

    async def on_auth_start(self, mechanism):
        self.log.append(("auth_start", mechanism))

    async def on_auth(self, creds):
        self.log.append(("auth", creds.mechanism, creds.username))
        good = self.users.get(creds.username)
        ok = good is not None and (creds.check_cram(good) if creds.mechanism == "CRAM-MD5"
                                   else creds.password == good)
        if ok:
            self.authed = creds.username
            return Reply(235, "2.7.0 Authentication successful")
        return Reply(535, "5.7.8 Authentication credentials invalid")

    async def on_mail(self, address, params):
        self.log.append(("mail", address.text, dict(params)))
        return Reply(250, "2.1.0 Ok")

    async def on_rcpt(self, address, params):
        if self.slow_rcpt:
            await asyncio.sleep(self.slow_rcpt)
        self.log.append(("rcpt", address.text))
        if address.domain == "nowhere.test":
            return Reply(550, "5.1.1 unknown")
        return Reply(250, "2.1.5 Ok")

    async def on_data(self):
        self.body = bytearray()
        self.size = 0
        return Reply(354, "End data with <CR><LF>.<CR><LF>")

    def on_data_chunk(self, chunk):
        self.size += len(chunk)
        if self.size < 2_000_000:       # keep small bodies for assertions, count large ones
            self.body += chunk

    async def on_data_end(self, error):
        self.log.append(("data_end", error.code if error else None, self.size))
        if error is not None:
            return error
        self.messages.append(bytes(self.body))
        return Reply(250, f"2.0.0 Ok: queued as {len(self.messages)}")

    async def on_rset(self):
        self.log.append(("rset",))

    async def on_close(self, reason):
        self.log.append(("close", reason))


class ServerThread:
    """Runs one listener in its own event loop thread so blocking smtplib can talk to it."""

    def __init__(self, spec: ListenerSpec, ssl_ctx=None, **handler_kw):
        self.spec, self.ssl_ctx, self.handler_kw = spec, ssl_ctx, handler_kw
        self.log: list = []
        self.handlers: list[RecordingHandler] = []
        self.limits: list = []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._main, daemon=True)

    def _factory(self):
        h = RecordingHandler(self.log, **self.handler_kw)
        self.handlers.append(h)
        return h

    def _main(self):
        asyncio.set_event_loop(self.loop)

        async def boot():
            self.server = await serve_listener(self.spec, self.ssl_ctx, self._factory, hostname=HOST,
                                               on_limit=lambda info, what: self.limits.append(what))
            self.ready.set()

        self.loop.run_until_complete(boot())
        self.loop.run_forever()

    def __enter__(self):
        self.thread.start()
        assert self.ready.wait(5)
        self.port = self.server.port
        return self

    def __exit__(self, *exc):
        fut = asyncio.run_coroutine_threadsafe(self.server.close(grace=1.0), self.loop)
        fut.result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def wait_for(self, predicate, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.01)
        return False

    def closes(self):
        return [e for e in self.log if e[0] == "close"]


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    selfsigned("localhost", d / "cert.pem", d / "key.pem")
    return d / "cert.pem", d / "key.pem"


def client_ctx():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def spec(**kw):
    base = dict(name="test", host="127.0.0.1", port=0, command_timeout=5.0, data_timeout=5.0)
    base.update(kw)
    return ListenerSpec(**base)


def raw_conv(port, payload: bytes, *, expect_lines: int, timeout=5.0) -> list[str]:
    """Send bytes on a raw socket, read until ``expect_lines`` reply lines (or close)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        f = s.makefile("rb")
        lines = [f.readline().decode().rstrip("\r\n")]   # banner
        s.sendall(payload)
        while len(lines) < expect_lines + 1:
            line = f.readline()
            if not line:
                break
            lines.append(line.decode().rstrip("\r\n"))
        return lines[1:]
    finally:
        s.close()


def test_ehlo_keywords_and_simple_message():
    with ServerThread(spec()) as srv:
        with smtplib.SMTP("127.0.0.1", srv.port, timeout=5) as c:
            code, _ = c.ehlo("client.test")
            assert code == 250
            for kw in ("pipelining", "size", "8bitmime", "enhancedstatuscodes", "smtputf8", "auth"):
                assert c.has_extn(kw), kw
            assert not c.has_extn("starttls")       # no TLS context: never advertised
            c.sendmail("a@b.test", ["x@y.test"], b"Subject: hi\r\n\r\n.leading dot\r\nbody\r\n")
        assert srv.wait_for(lambda: srv.closes())
        h = srv.handlers[0]
        assert h.messages == [b"Subject: hi\r\n\r\n.leading dot\r\nbody\r\n"]
        assert srv.closes() == [("close", "quit")]
