"""Resource limits of the whole gateway over real sockets.

Slowloris from one address (idle and byte-at-a-time connections up to its per-IP limit)
leaves service intact for another loopback address; the per-IP and total connection limits
answer 421 (and are logged); command, idle and data timeouts close with 421; an over-long
command line, an over-long data line and an oversized message each get exactly one clean
error and leave the connection usable.
"""
from __future__ import annotations

import smtplib
import threading
import time

import pytest

from mailward.auth.users import UserStore
from tests.reliability.support import RawClient, message
from tests.support.gateway import config_text, start_gateway

PER_IP = 6
TOTAL = 10
MAX_SIZE = 20_000


def limited_gateway(tmp, *, command_timeout: float, data_timeout: float):
    UserStore(tmp / "users.db", create=True)
    listener = (f"max_connections_per_ip = {PER_IP}\nmax_connections = {TOTAL}\n"
                f"command_timeout = {command_timeout}\ndata_timeout = {data_timeout}\n"
                f"max_message_size = {MAX_SIZE}\n")
    return start_gateway(config_text(tmp, listener), tmp)


@pytest.fixture
def gw(tmp_path):
    g = limited_gateway(tmp_path, command_timeout=30, data_timeout=30)
    yield g
    g.stop()


@pytest.fixture
def quick_gw(tmp_path):
    g = limited_gateway(tmp_path, command_timeout=0.6, data_timeout=0.6)
    yield g
    g.stop()


def deliver_one(port: int, source: str, mid: str) -> float:
    t0 = time.monotonic()
    with smtplib.SMTP("127.0.0.1", port, timeout=10, source_address=(source, 0)) as s:
        s.sendmail("a@client.test", ["x@example.test"], message(mid))
    return time.monotonic() - t0


def test_slowloris_from_one_address_does_not_stop_service_for_another(gw):
    idle = [RawClient(gw.port, source="127.0.0.1") for _ in range(PER_IP // 2)]
    trickle = [RawClient(gw.port, source="127.0.0.1") for _ in range(PER_IP - PER_IP // 2)]
    stop = threading.Event()

    def drip():
        # one byte at a time of a never-ending command line, for as long as the test runs
        for i in range(400):
            if stop.wait(0.01):
                return
            for c in trickle:
                try:
                    c.send(b"E" if i == 0 else b"x")
                except OSError:
                    return

    t = threading.Thread(target=drip, daemon=True)
    try:
        for c in idle + trickle:
            assert c.reply()[0] == 220
        t.start()
        time.sleep(0.3)
        # the attacker's address is at its limit: one more gets 421 at once
        with RawClient(gw.port, source="127.0.0.1") as extra:
            code, text = extra.reply()
            assert code == 421 and "too many connections" in text
        # another address is served normally, several times over
        times = [deliver_one(gw.port, "127.0.0.2", f"other{n}@t") for n in range(3)]
        assert max(times) < 5.0, times
    finally:
        stop.set()
        t.join(5)
        for c in idle + trickle:
            c.close()
    assert any("Receiving Failed: Connection limit exceeded" in line for line in gw.log_bodies())


def test_total_connection_limit_gives_421(gw):
    holders = []
    try:
        for n in range(TOTAL):
            c = RawClient(gw.port, source=f"127.0.1.{n + 1}")
            holders.append(c)
            assert c.reply()[0] == 220
        with RawClient(gw.port, source="127.0.2.1") as extra:
            code, text = extra.reply()
            assert code == 421 and "too many connections" in text
            assert extra.replies_until_close() == []
    finally:
        for c in holders:
            c.close()
    # capacity comes back once they are gone
    deadline = time.monotonic() + 5
    while True:
        try:
            deliver_one(gw.port, "127.0.2.2", "after@t")
            break
        except smtplib.SMTPConnectError:
            assert time.monotonic() < deadline
            time.sleep(0.05)


@pytest.mark.parametrize("phase", ["banner", "after-ehlo", "mid-transaction", "data"])
def test_timeouts_close_with_421(quick_gw, phase):
    with RawClient(quick_gw.port) as c:
        assert c.reply()[0] == 220
        steps = {"banner": [], "after-ehlo": [b"EHLO t\r\n"],
                 "mid-transaction": [b"EHLO t\r\n", b"MAIL FROM:<a@client.test>\r\n"],
                 "data": [b"EHLO t\r\n", b"MAIL FROM:<a@client.test>\r\n", b"RCPT TO:<x@example.test>\r\n",
                          b"DATA\r\n"]}[phase]
        for cmd in steps:
            c.send(cmd)
            assert c.reply()[0] in (250, 354)
        if phase == "data":
            c.send(b"Subject: half a message\r\n")       # then silence
        t0 = time.monotonic()
        replies = c.replies_until_close(timeout=8)
        waited = time.monotonic() - t0
    assert [code for code, _ in replies] == [421], replies
    assert "timeout" in replies[0][1]
    assert 0.4 < waited < 6.0, waited       # 0.6 s configured; generous for a loaded machine
    bodies = quick_gw.log_bodies()
    assert any(line.endswith("lost") or "lost" in line for line in bodies), bodies[-5:]
    assert list(quick_gw.gateway.spool.messages()) == []


def test_oversized_command_line_gets_one_error(gw):
    with RawClient(gw.port) as c:
        assert c.reply()[0] == 220
        c.send(b"EHLO " + b"h" * 20000 + b"\r\nNOOP\r\n")
        first = c.reply()
        assert first[0] // 100 == 5, first
        assert c.reply()[0] == 250          # the NOOP: exactly one error, then normal service
        c.send(b"QUIT\r\n")
        assert [code for code, _ in c.replies_until_close()] == [221]


def test_oversized_data_line_gets_one_error(gw):
    with RawClient(gw.port) as c:
        c.send(b"EHLO t\r\nMAIL FROM:<a@client.test>\r\nRCPT TO:<x@example.test>\r\nDATA\r\n")
        assert [c.reply()[0] for _ in range(5)] == [220, 250, 250, 250, 354]
        c.send(b"Subject: long\r\n\r\n" + b"y" * 5000 + b"\r\nshort\r\n.\r\nNOOP\r\nQUIT\r\n")
        codes = [code for code, _ in c.replies_until_close()]
    assert len(codes) == 3 and codes[0] // 100 == 5 and codes[1:] == [250, 221], codes
    assert list(gw.gateway.spool.messages()) == []


def test_oversized_message_gets_one_error(gw):
    with RawClient(gw.port) as c:
        c.send(b"EHLO t\r\nMAIL FROM:<a@client.test>\r\nRCPT TO:<x@example.test>\r\nDATA\r\n")
        assert [c.reply()[0] for _ in range(5)] == [220, 250, 250, 250, 354]
        c.send(message("big@t", MAX_SIZE * 5) + b".\r\nNOOP\r\nQUIT\r\n")
        replies = c.replies_until_close()
    assert [code for code, _ in replies] == [552, 250, 221], replies
    assert list(gw.gateway.spool.messages()) == []
    assert any("Receiving Failed: Message size exceeds limit" in line for line in gw.log_bodies())
    # SIZE declared up front: refused at MAIL, once
    with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as s:
        s.ehlo("t")
        assert s.docmd("MAIL", f"FROM:<a@client.test> SIZE={MAX_SIZE * 5}")[0] == 552
        assert s.noop()[0] == 250
