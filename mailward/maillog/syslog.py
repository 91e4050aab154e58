"""Pushing mail_logs lines to a syslog server (RFC 3164 framing, tag = subscription name).

Owns: the network side of log push: UDP (one datagram per line, lossy by nature) and TCP
(newline-framed as RFC 6587 "non-transparent framing", sent by one background thread from a
bounded buffer so that ``send`` never blocks; when the buffer is full, lines are dropped and
counted). It knows how to frame a line (through ``grammar.format_syslog_line``) but nothing
of files, rotation or which events exist.
"""
from __future__ import annotations

import queue
import socket
import threading
import time
from datetime import datetime

from .events import Event
from .grammar import format_syslog_line
from .timefmt import format_syslog_time

FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
    "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "local0": 16, "local1": 17, "local2": 18,
    "local3": 19, "local4": 20, "local5": 21, "local6": 22, "local7": 23,
}
# The appliance's level words mapped to syslog severities (Critical ~ alert per the ESA help;
# every real sample is Info = 6, which gives the familiar <22> for facility mail).
SEVERITIES = {"Critical": 1, "Alert": 1, "Warning": 4, "Info": 6, "Debug": 7, "Trace": 7}

#: Longest UDP payload we try to send; longer lines are cut (relays cut them anyway).
MAX_DATAGRAM = 8192


class SyslogTarget:
    """One syslog destination. ``send`` never blocks and never raises."""

    def __init__(self, host: str, port: int = 514, protocol: str = "udp", facility: int | str = "mail",
                 hostname: str | None = None, *, buffer_lines: int = 10_000, connect_timeout: float = 2.0) -> None:
        if protocol not in ("udp", "tcp"):
            raise ValueError("protocol must be 'udp' or 'tcp'")
        self.host = host
        self.port = port
        self.protocol = protocol
        self.facility = FACILITIES[facility] if isinstance(facility, str) else int(facility)
        if not 0 <= self.facility <= 23:
            raise ValueError("facility must be 0..23")
        self.hostname = hostname
        self.connect_timeout = connect_timeout
        self.sent = 0
        self.dropped = 0
        self._closed = False
        self._udp: socket.socket | None = None
        self._queue: queue.Queue[bytes] | None = None
        self._thread: threading.Thread | None = None
        if protocol == "udp":
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            self._udp = socket.socket(family, socket.SOCK_DGRAM)
            self._udp.setblocking(False)
        else:
            self._queue = queue.Queue(maxsize=buffer_lines)
            self._thread = threading.Thread(target=self._tcp_loop, name="mailward-syslog-tcp", daemon=True)
            self._thread.start()

    def pri(self, level: str) -> int:
        return self.facility * 8 + SEVERITIES.get(level, 6)

    def format(self, event: Event, when: datetime, *, tag: str, level: str | None = None) -> str:
        lvl = level or event.LEVEL
        return format_syslog_line(event, when, hostname=self.hostname, tag=tag, pri=self.pri(lvl), level=lvl)

    def send(self, event: Event, when: datetime, *, tag: str = "mail_logs", level: str | None = None) -> None:
        try:
            self.send_line(self.format(event, when, tag=tag, level=level))
        except Exception:  # logging must never take the gateway down
            self.dropped += 1

    def send_body(self, body: str, when: datetime, level: str, *, tag: str = "mail_logs") -> None:
        """Send an already formatted body (the writer formats each event once for both outputs)."""
        host = (self.hostname + " ") if self.hostname else ""
        self.send_line("<%d>%s %s%s: %s: %s" % (self.pri(level), format_syslog_time(when), host, tag, level, body))

    def send_line(self, line: str) -> None:
        if self._closed:
            self.dropped += 1
            return
        data = line.encode("utf-8", "surrogateescape")
        if self._udp is not None:
            try:
                self._udp.sendto(data[:MAX_DATAGRAM], (self.host, self.port))
                self.sent += 1
            except OSError:
                self.dropped += 1
            return
        assert self._queue is not None
        try:
            self._queue.put_nowait(data + b"\n")
        except queue.Full:
            self.dropped += 1

    # --- TCP sender thread ---------------------------------------------------------------

    def _tcp_loop(self) -> None:
        assert self._queue is not None
        sock: socket.socket | None = None
        pending: bytes | None = None
        backoff = 0.05
        while True:
            if pending is None:
                try:
                    pending = self._queue.get(timeout=0.2)
                except queue.Empty:
                    if self._closed:
                        break
                    continue
            try:
                if sock is None:
                    sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
                sock.sendall(pending)
                self.sent += 1
                pending = None
                backoff = 0.05
            except OSError:
                if sock is not None:
                    sock.close()
                    sock = None
                if self._closed:
                    self.dropped += 1 + self._queue.qsize()
                    break
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
        if sock is not None:
            sock.close()

    def close(self, timeout: float = 2.0) -> None:
        """Stop; TCP gets up to ``timeout`` seconds to drain its buffer."""
        if self._closed:
            return
        if self._thread is not None and self._queue is not None:
            deadline = time.monotonic() + timeout
            while not self._queue.empty() and time.monotonic() < deadline:
                time.sleep(0.01)
            self._closed = True
            self._thread.join(max(0.0, deadline - time.monotonic()) + 0.5)
        self._closed = True
        if self._udp is not None:
            self._udp.close()
