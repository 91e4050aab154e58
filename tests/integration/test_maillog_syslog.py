"""Syslog push on loopback: UDP datagrams and newline-framed TCP, read back by parse_line."""
from __future__ import annotations

import socket
import time
from datetime import datetime, timezone
from pathlib import Path

from mailward.maillog import MailLogWriter, parse_line
from mailward.maillog import events as ev
from mailward.maillog.syslog import SyslogTarget

T0 = datetime(2009, 4, 22, 11, 43, 59, tzinfo=timezone.utc).timestamp()


def _writer(tmp_path: Path, target: SyslogTarget) -> MailLogWriter:
    return MailLogWriter(tmp_path, version="0.1.0", serial="SN1", syslog=target, clock=lambda: T0,
                         tz=timezone.utc)


def test_udp_push_uses_rfc3164_with_subscription_tag(tmp_path):
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(2)
    port = rx.getsockname()[1]
    target = SyslogTarget("127.0.0.1", port, "udp", facility="mail", hostname="gw1")
    w = _writer(tmp_path, target)
    w.emit(ev.SmtpAuthResult(450, True, "ironport", "PLAIN", "IncomingAuthentication"))
    w.emit(ev.IcidClose(450))
    got = [rx.recv(65535).decode() for _ in range(2)]
    w.close()
    rx.close()
    assert got[0] == ("<22>Apr 22 11:43:59 gw1 mail_logs: Info: SMTP Auth: (ICID 450) succeeded for user: "
                      "ironport using AUTH mechanism: PLAIN with profile: IncomingAuthentication")
    rec = parse_line(got[1], year=2009)
    assert (rec.host, rec.subscription, rec.pri, rec.event) == ("gw1", "mail_logs", 22, ev.IcidClose(450))
    assert rec.timestamp == datetime(2009, 4, 22, 11, 43, 59)


def test_warning_level_and_facility_give_the_pri(tmp_path):
    target = SyslogTarget("127.0.0.1", 9, "udp", facility="local4")
    assert target.pri("Info") == 166 and target.pri("Warning") == 164
    target.close()


def test_tcp_push_is_newline_framed_and_survives_a_late_server(tmp_path):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    target = SyslogTarget("127.0.0.1", port, "tcp", facility=2, hostname=None)
    w = _writer(tmp_path, target)
    for i in range(20):
        w.emit(ev.DcidClose(i))          # buffered: nobody listens yet
    srv.listen(1)
    srv.settimeout(5)
    conn, _ = srv.accept()
    conn.settimeout(5)
    data = b""
    deadline = time.monotonic() + 5
    while data.count(b"\n") < 20 and time.monotonic() < deadline:
        chunk = conn.recv(65535)
        if not chunk:
            break
        data += chunk
    w.close()
    conn.close()
    srv.close()
    lines = data.decode().splitlines()
    assert len(lines) == 20
    assert [parse_line(x).event for x in lines] == [ev.DcidClose(i) for i in range(20)]
    assert parse_line(lines[0]).host is None and lines[0].startswith("<22>Apr 22 11:43:59 mail_logs: Info: ")


def test_tcp_buffer_is_bounded_and_drops_are_counted():
    # A port nobody listens on: every line waits in the buffer, the overflow is dropped.
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    target = SyslogTarget("127.0.0.1", port, "tcp", buffer_lines=5, connect_timeout=0.2)
    started = time.monotonic()
    for i in range(50):
        target.send(ev.IcidClose(i), datetime(2020, 1, 1))
    assert time.monotonic() - started < 1.0          # send never blocks
    assert target.dropped >= 40
    target.close(timeout=0.2)
