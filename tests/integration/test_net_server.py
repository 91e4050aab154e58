"""Integration tests of the asyncio SMTP shell over real loopback sockets, with Python's
smtplib (and raw sockets where a misbehaving client is the point) against a small handler."""
from __future__ import annotations

import asyncio
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


def test_pipelined_batch_answered_in_order_one_write():
    with ServerThread(spec()) as srv:
        batch = (b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<u@nowhere.test>\r\nRCPT TO:<x@y>\r\nDATA\r\n")
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        f = s.makefile("rb")
        assert f.readline().startswith(b"220 ")
        s.sendall(batch)
        got = [f.readline()]
        while not got[-1].startswith(b"354"):
            got.append(f.readline())
        finals = [line[:3] for line in got if line[3:4] == b" "]
        assert finals == [b"250", b"250", b"550", b"250", b"354"]
        s.sendall(b"body\r\n.\r\nQUIT\r\n")
        assert f.readline().startswith(b"250 2.0.0 Ok: queued")
        assert f.readline().startswith(b"221 ")
        s.close()


def test_starttls_then_ehlo_again(certs):
    with ServerThread(spec(tls_mode="starttls"), server_context(*certs)) as srv:
        with smtplib.SMTP("127.0.0.1", srv.port, timeout=5) as c:
            c.ehlo("c")
            assert c.has_extn("starttls")
            code, _ = c.starttls(context=client_ctx())
            assert code == 220
            c.ehlo("c")
            assert not c.has_extn("starttls")
            c.login("alice", "s3cret")
            c.sendmail("a@b.test", ["x@y.test"], b"hi\r\n")
        assert srv.wait_for(lambda: srv.closes())
        tls = [e for e in srv.log if e[0] == "tls"]
        assert tls and tls[0][1] is True and tls[0][2].startswith("TLSv1.")
        helos = [e for e in srv.log if e[0] == "helo"]
        assert len(helos) == 2


def test_implicit_tls_offers_and_accepts_auth(certs):
    with ServerThread(spec(tls_mode="implicit"), server_context(*certs)) as srv:
        with smtplib.SMTP_SSL("127.0.0.1", srv.port, timeout=5, context=client_ctx()) as c:
            c.ehlo("c")
            assert c.has_extn("auth") and not c.has_extn("starttls")
            c.login("alice", "s3cret")
            assert c.docmd("STARTTLS")[0] == 503
        assert srv.wait_for(lambda: srv.closes())
        assert srv.log[0][0] == "connect" and srv.log[0][2].startswith("TLSv1.")
        assert ("auth", "CRAM-MD5", "alice") in srv.log     # smtplib prefers CRAM-MD5


def test_auth_mechanisms_over_socket():
    with ServerThread(spec()) as srv:
        for mech in ("PLAIN", "LOGIN", "CRAM-MD5"):
            with smtplib.SMTP("127.0.0.1", srv.port, timeout=5) as c:
                c.ehlo("c")
                c.user, c.password = "alice", "s3cret"
                code, _ = c.auth(mech, getattr(c, "auth_" + mech.lower().replace("-", "_")))
                assert code == 235
            with smtplib.SMTP("127.0.0.1", srv.port, timeout=5) as c:
                c.ehlo("c")
                c.user, c.password = "alice", "wrong"
                with pytest.raises(smtplib.SMTPAuthenticationError) as err:
                    c.auth(mech, getattr(c, "auth_" + mech.lower().replace("-", "_")))
                assert err.value.smtp_code == 535


def test_starttls_injection_discarded_over_socket(certs):
    with ServerThread(spec(tls_mode="starttls"), server_context(*certs)) as srv:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        f = s.makefile("rb")
        assert f.readline().startswith(b"220 ")
        s.sendall(b"EHLO c\r\n")
        while not f.readline().startswith(b"250 "):
            pass
        # the injection: commands in the same packet as STARTTLS, before the handshake
        s.sendall(b"STARTTLS\r\nMAIL FROM:<inject@evil.test>\r\nRCPT TO:<v@x.test>\r\n")
        assert f.readline().startswith(b"220 ")
        t = client_ctx().wrap_socket(s, server_hostname="localhost")
        tf = t.makefile("rb")
        t.sendall(b"MAIL FROM:<a@b>\r\n")
        assert tf.readline().startswith(b"503 ")       # pre-EHLO state: nothing was carried over
        t.sendall(b"EHLO c\r\n")
        while not tf.readline().startswith(b"250 "):
            pass
        t.sendall(b"MAIL FROM:<a@b>\r\nQUIT\r\n")
        assert tf.readline().startswith(b"250 ")
        assert tf.readline().startswith(b"221 ")
        t.close()
        assert srv.wait_for(lambda: srv.closes())
        assert not any(e[0] == "mail" and "inject" in e[1] for e in srv.log)
        assert [e for e in srv.log if e[0] == "mail"] == [("mail", "a@b", {})]


def test_failed_handshake_reported(certs):
    with ServerThread(spec(tls_mode="starttls"), server_context(*certs)) as srv:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        f = s.makefile("rb")
        f.readline()
        s.sendall(b"EHLO c\r\n")
        while not f.readline().startswith(b"250 "):
            pass
        s.sendall(b"STARTTLS\r\n")
        assert f.readline().startswith(b"220 ")
        s.sendall(b"this is not a TLS client hello\r\n" * 4)
        assert srv.wait_for(lambda: srv.closes())
        s.close()
        tls = [e for e in srv.log if e[0] == "tls"]
        assert tls and tls[0][1] is False and tls[0][3]
        assert srv.closes() == [("close", "error")]


def test_command_timeout():
    with ServerThread(spec(command_timeout=0.3)) as srv:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        f = s.makefile("rb")
        f.readline()
        t0 = time.monotonic()
        assert f.readline() == b"421 4.4.2 mx.test Error: timeout exceeded\r\n"
        assert f.readline() == b""                      # closed
        assert 0.25 < time.monotonic() - t0 < 3
        s.close()
        assert srv.wait_for(lambda: srv.closes() == [("close", "timeout")])


def test_data_timeout():
    with ServerThread(spec(command_timeout=5, data_timeout=0.3)) as srv:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        f = s.makefile("rb")
        f.readline()
        s.sendall(b"HELO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\npartial")
        replies = [f.readline() for _ in range(5)]
        assert replies[-1] == b"421 4.4.2 mx.test Error: timeout exceeded\r\n"
        s.close()
        assert srv.wait_for(lambda: srv.closes() == [("close", "timeout")])


def test_connection_limits_total_and_per_ip():
    with ServerThread(spec(max_connections=3, max_connections_per_ip=2)) as srv:
        socks = []
        try:
            for _ in range(2):
                s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
                assert s.makefile("rb").readline().startswith(b"220 ")
                socks.append(s)
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            assert s.makefile("rb").readline() == b"421 4.7.0 mx.test Error: too many connections\r\n"
            s.close()
            # another loopback address is another client
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=5, source_address=("127.0.0.2", 0))
            assert s.makefile("rb").readline().startswith(b"220 ")
            socks.append(s)
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=5, source_address=("127.0.0.3", 0))
            assert s.makefile("rb").readline().startswith(b"421 ")
            s.close()
            assert srv.wait_for(lambda: srv.limits == ["per_ip", "total"]), srv.limits
        finally:
            for s in socks:
                s.close()
        # slots are given back when sessions end
        assert srv.wait_for(lambda: srv.server.active == 0)
        with smtplib.SMTP("127.0.0.1", srv.port, timeout=5) as c:
            assert c.noop()[0] == 250


def test_reject_at_connect():
    with ServerThread(spec(), reject_connect=True) as srv:
        lines = raw_conv(srv.port, b"", expect_lines=0)
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        f = s.makefile("rb")
        assert f.readline() == b"554 5.7.1 go away\r\n"
        assert f.readline() == b""
        s.close()
        assert lines == []
        assert srv.wait_for(lambda: len(srv.closes()) == 2)
        assert set(srv.closes()) == {("close", "rejected")}


@pytest.mark.parametrize("fake_end", [b"\n.\r\n", b"\r.\n", b"\n.\n", b"\r\n.\n"])
def test_smuggling_over_socket(fake_end):
    with ServerThread(spec()) as srv:
        payload = (b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n"
                   b"Subject: one\r\n\r\nhello" + fake_end +
                   b"MAIL FROM:<admin@b.test>\r\nRCPT TO:<victim@y.test>\r\nDATA\r\nforged\r\n.\r\nQUIT\r\n")
        lines = raw_conv(srv.port, payload, expect_lines=14)
        finals = [ln[:3] for ln in lines if ln[3:4] == " "]
        assert finals == ["250", "250", "250", "354", "554", "221"]
        assert srv.wait_for(lambda: srv.closes())
        assert [e[1] for e in srv.log if e[0] == "mail"] == ["a@b.test"]
        assert not srv.handlers[0].messages


@pytest.mark.slow
def test_25mb_message_streams_with_bounded_memory():
    import tracemalloc
    size = 25 * 1024 * 1024
    with ServerThread(spec(max_message_size=30 * 1024 * 1024)) as srv:
        tracemalloc.start()
        try:
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=20)
            f = s.makefile("rb")
            f.readline()
            s.sendall(b"EHLO c\r\nMAIL FROM:<a@b> SIZE=%d\r\nRCPT TO:<c@d>\r\nDATA\r\n" % size)
            line = f.readline()
            while line[:1] == b"2":
                line = f.readline()
            assert line.startswith(b"354")
            line = b"x" * 998 + b"\r\n"
            block = line * 256                          # 256 KB
            sent = 0
            while sent < size:
                s.sendall(block)
                sent += len(block)
            s.sendall(b".\r\nQUIT\r\n")
            assert f.readline().startswith(b"250 2.0.0 Ok")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            s.close()
        assert srv.handlers[0].size == sent
        # the server thread never held more than a few read buffers at once
        assert peak < 8 * 1024 * 1024, peak


def test_shutdown_sends_421_to_idle_sessions():
    srv = ServerThread(spec(command_timeout=30))
    srv.__enter__()
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    f = s.makefile("rb")
    f.readline()
    t0 = time.monotonic()
    srv.__exit__(None, None, None)
    assert time.monotonic() - t0 < 3
    assert f.readline().startswith(b"421 4.3.2")
    s.close()
    assert srv.closes() == [("close", "shutdown")]


def test_max_messages_per_connection_over_socket():
    with ServerThread(spec(max_messages_per_connection=1)) as srv:
        with smtplib.SMTP("127.0.0.1", srv.port, timeout=5) as c:
            c.sendmail("a@b", ["c@d"], b"one\r\n")
            with pytest.raises(smtplib.SMTPSenderRefused) as err:
                c.sendmail("a@b", ["c@d"], b"two\r\n")
            assert err.value.smtp_code == 421
        assert srv.wait_for(lambda: srv.closes() == [("close", "limit")])


def test_slow_handler_pipelining_still_ordered():
    with ServerThread(spec(), slow_rcpt=0.05) as srv:
        payload = b"HELO c\r\nMAIL FROM:<a@b>\r\n" + b"".join(b"RCPT TO:<r%d@y>\r\n" % i for i in range(10)) + \
            b"NOOP\r\nQUIT\r\n"
        lines = raw_conv(srv.port, payload, expect_lines=14)
        assert [ln[:3] for ln in lines] == ["250"] * 13 + ["221"]
        assert [e[1] for e in srv.log if e[0] == "rcpt"] == [f"r{i}@y" for i in range(10)]


def test_listener_spec_from_config_like_object():
    class Cfg:
        name = "in"
        address = "127.0.0.1"
        port = 0
        starttls = "required"
        implicit_tls = False
        command_timeout = 7.0
        max_connections_per_ip = 3
    s = ListenerSpec.from_config(Cfg())
    assert (s.tls_mode, s.command_timeout, s.max_connections_per_ip, s.host) == ("starttls", 7.0, 3, "127.0.0.1")
    with pytest.raises(ValueError):
        ListenerSpec(name="x", tls_mode="sometimes")


def _only_session(srv):
    assert srv.wait_for(lambda: len(srv.server.sessions) == 1)
    return next(iter(srv.server.sessions))


def test_pipelined_replies_leave_in_one_write():
    with ServerThread(spec()) as srv:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        f = s.makefile("rb")
        f.readline()
        session = _only_session(srv)
        writes = []
        real_write = session.transport.write

        def counting_write(data):
            writes.append(data)
            real_write(data)

        session.transport.write = counting_write
        s.sendall(b"HELO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nRCPT TO:<z@y>\r\nNOOP\r\n")
        lines = [f.readline() for _ in range(5)]
        assert [ln[:3] for ln in lines] == [b"250"] * 5
        assert len(writes) == 1 and writes[0] == b"".join(lines)
        s.close()


def test_read_backpressure_while_handler_awaits():
    with ServerThread(spec(), slow_rcpt=1.0) as srv:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        f = s.makefile("rb")
        f.readline()
        session = _only_session(srv)
        s.sendall(b"HELO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\n")
        # while the handler sits on RCPT, flood the server with pipelined commands: more than
        # the kernel's socket buffers hold, so only pausing keeps the server's memory bounded
        s.setblocking(False)
        block = b"NOOP\r\n" * 10_000
        sent, deadline = 0, time.monotonic() + 0.5
        while time.monotonic() < deadline and sent < 64 * 1024 * 1024:
            try:
                sent += s.send(block)
            except BlockingIOError:
                time.sleep(0.005)
        time.sleep(0.1)
        buffered, paused = session.core.buffered, session._read_paused
        s.setblocking(True)
        assert sent > 1024 * 1024
        assert paused and buffered < 256 * 1024 + 300 * 1024, (buffered, sent)
        s.close()


def test_tls_client_vanishing_is_lost_without_warnings(certs, caplog):
    with ServerThread(spec(tls_mode="implicit"), server_context(*certs)) as srv:
        raw = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        t = client_ctx().wrap_socket(raw, server_hostname="localhost")
        tf = t.makefile("rb")
        assert tf.readline().startswith(b"220 ")
        t.sendall(b"EHLO c\r\n")
        while not tf.readline().startswith(b"250 "):
            pass
        t.unwrap().close()          # close_notify, then TCP close, no QUIT
        assert srv.wait_for(lambda: srv.closes() == [("close", "lost")])
    assert not [r for r in caplog.records if "eof_received" in r.getMessage()]


def test_plain_half_close_after_quit_still_gets_221():
    with ServerThread(spec()) as srv:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        f = s.makefile("rb")
        f.readline()
        s.sendall(b"HELO c\r\nQUIT\r\n")
        s.shutdown(socket.SHUT_WR)
        assert f.readline().startswith(b"250 ")
        assert f.readline().startswith(b"221 ")
        s.close()
        assert srv.wait_for(lambda: srv.closes() == [("close", "quit")])


def test_starttls_handshake_timeout(certs):
    with ServerThread(spec(tls_mode="starttls", tls_handshake_timeout=0.3), server_context(*certs)) as srv:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        f = s.makefile("rb")
        f.readline()
        s.sendall(b"EHLO c\r\nSTARTTLS\r\n")
        while not f.readline().startswith(b"220 "):
            pass
        t0 = time.monotonic()
        assert f.readline() == b""                      # never handshaken: closed
        assert time.monotonic() - t0 < 3
        s.close()
        assert srv.wait_for(lambda: srv.closes() == [("close", "error")])
        assert [e[1] for e in srv.log if e[0] == "tls"] == [False]


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv6_listener():
    with ServerThread(spec(host="::1")) as srv:
        with smtplib.SMTP("::1", srv.port, timeout=5) as c:
            c.sendmail("a@b", ["c@d"], b"v6\r\n")
        assert srv.wait_for(lambda: srv.closes())
        assert srv.log[0][:2] == ("connect", "::1")


def test_random_garbage_never_breaks_the_listener(caplog):
    """Seeded fuzz over real sockets: every session ends cleanly, nothing is logged as a
    failure, and the listener still serves a normal client afterwards."""
    import random
    rng = random.Random(5321)
    tokens = [b"EHLO x\r\n", b"MAIL FROM:<a@b>\r\n", b"RCPT TO:<c@d>\r\n", b"DATA\r\n", b".\r\n", b"\r\n",
              b"\n.\n", b"AUTH LOGIN\r\n", b"AUTH PLAIN =\r\n", b"*\r\n", b"STARTTLS\r\n", b"RSET\r\n",
              b"x" * 700, b"\x00\xff", b"QUIT\r\n"]
    with ServerThread(spec(command_timeout=2, data_timeout=2)) as srv:
        for _ in range(25):
            payload = b"".join(rng.choice(tokens) if rng.random() < 0.7 else rng.randbytes(rng.randint(1, 30))
                               for _ in range(rng.randint(1, 40)))
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            s.close()
            assert data.startswith(b"220 ") and data.endswith(b"\r\n")
        assert srv.wait_for(lambda: len(srv.closes()) == 25 and srv.server.active == 0)
        with smtplib.SMTP("127.0.0.1", srv.port, timeout=5) as c:
            assert c.noop()[0] == 250
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


def test_peer_that_never_reads_is_cut_off():
    with ServerThread(spec(command_timeout=0.5)) as srv:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", srv.port))
        s.settimeout(5)
        s.sendall(b"HELO c\r\n")
        # thousands of pipelined EHLOs (not junk commands: NOOPs would reach the junk limit
        # first) whose replies we never read fill the server's send buffer
        s.setblocking(False)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not srv.closes():
            try:
                s.send(b"EHLO c\r\n" * 2000)
            except (BlockingIOError, ConnectionError):
                time.sleep(0.02)
        assert srv.wait_for(lambda: srv.closes() == [("close", "timeout")], timeout=5), srv.closes()
        s.close()


def test_factory_failure_does_not_leak_a_slot(caplog):
    with ServerThread(spec(max_connections=1)) as srv:
        real = srv._factory
        calls = []

        def broken():
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("factory broke")
            return real()

        srv.server.factory = broken
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        assert s.makefile("rb").readline().startswith(b"421 4.3.0")
        s.close()
        assert srv.wait_for(lambda: srv.server.active == 0)
        with smtplib.SMTP("127.0.0.1", srv.port, timeout=5) as c:
            assert c.noop()[0] == 250
    assert any("factory broke" in (r.exc_text or str(r.exc_info)) for r in caplog.records)


class _AcceptAll:
    """The least a listener needs from a session handler: accept, no keywords, no close work."""

    async def on_connect(self, conn):
        from mailward.net.server import ConnectDecision
        return ConnectDecision.accept("t ESMTP")

    def ehlo_keywords(self):
        return []

    async def on_close(self, reason):
        pass


def test_command_trickled_byte_by_byte_still_times_out():
    """The command timeout is a deadline for the whole command, not a per-read timer."""
    import socket as _socket
    import time as _time

    from mailward.net.server import ListenerSpec, serve_listener

    H = _AcceptAll

    async def main():
        server = await serve_listener(ListenerSpec(name="T", command_timeout=0.8), None, H, hostname="t")
        loop = asyncio.get_running_loop()

        def client():
            s = _socket.create_connection(("127.0.0.1", server.port), timeout=10)
            f = s.makefile("rb")
            f.readline()
            start = _time.monotonic()
            try:
                for _ in range(60):                      # 6 s of trickle if never cut
                    s.sendall(b"N")
                    _time.sleep(0.1)
            except OSError:
                pass
            line = f.readline()
            s.close()
            return _time.monotonic() - start, line

        took, line = await loop.run_in_executor(None, client)
        await server.close()
        return took, line

    took, line = asyncio.run(main())
    assert line.startswith(b"421")
    assert took < 4.0


def test_command_deadline_moves_with_each_command():
    """One timer serves many waits: a command in time pushes the deadline on, and the idle
    connection still times out one command timeout after its last command."""
    with ServerThread(spec(command_timeout=0.6)) as srv:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        f = s.makefile("rb")
        f.readline()
        start = time.monotonic()
        for _ in range(5):                      # 1.5 s in all: past the first wait's end
            s.sendall(b"NOOP\r\n")
            assert f.readline().startswith(b"250")
            time.sleep(0.3)
        assert time.monotonic() - start > 1.2
        last = time.monotonic() - 0.3
        assert f.readline() == b"421 4.4.2 mx.test Error: timeout exceeded\r\n"
        assert 0.4 < time.monotonic() - last < 2.5
        s.close()
        assert srv.wait_for(lambda: srv.closes() == [("close", "timeout")])


def test_ended_sessions_leave_no_timer_behind():
    """The kept timer is cancelled when a session ends: a closed session must not stay
    referenced by a timer for up to the command timeout."""
    from mailward.net.server import ListenerSpec, serve_listener

    async def main():
        loop = asyncio.get_running_loop()
        server = await serve_listener(ListenerSpec(name="T", command_timeout=300.0), None, _AcceptAll,
                                      hostname="t")

        def clients():
            for _ in range(20):
                with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
                    f = s.makefile("rb")
                    f.readline()
                    s.sendall(b"EHLO c\r\nNOOP\r\nQUIT\r\n")
                    while f.readline():
                        pass

        await loop.run_in_executor(None, clients)
        for _ in range(50):                     # let the sessions' tasks finish
            await asyncio.sleep(0.01)
        live = [h for h in loop._scheduled if not h.cancelled()]
        await server.close()
        return live

    live = asyncio.run(main())
    assert len(live) <= 2, live


def test_noop_flood_is_cut_by_the_junk_limit():
    """Over a real socket: NOOPs are answered, but past the junk limit (100, Postfix's) each
    counts as an error and the error limit (20) ends the session with 421."""
    with ServerThread(spec()) as srv:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        f = s.makefile("rb")
        f.readline()
        s.sendall(b"NOOP\r\n" * 150)
        replies = []
        while True:
            line = f.readline()
            if not line:
                break
            replies.append(line)
        s.close()
        assert replies[:119] == [b"250 2.0.0 Ok\r\n"] * 119
        assert replies[119:] == [b"421 4.7.0 mx.test Error: too many errors\r\n"]
        assert srv.wait_for(lambda: srv.closes() == [("close", "limit")])
