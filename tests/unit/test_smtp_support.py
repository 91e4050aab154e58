"""Helpers for driving the sans-IO SMTP core in tests: a conversation script runner.

Holds no tests itself; the other ``test_smtp_*`` modules import it.
"""
from __future__ import annotations

import re

from mailward.smtp import events as ev
from mailward.smtp.reply import Reply
from mailward.smtp.server import NEED_DATA, PAUSED, ServerConfig, ServerConnection

REPLY_LINE = re.compile(rb"[2-5][0-9][0-9][ -][^\r\n]*\r\n")


def default_answer(event):
    """An application that accepts everything and rejects recipients at nowhere.test."""
    if isinstance(event, ev.Helo):
        return None, {"keywords": ["SIZE 1000", "STARTTLS", "AUTH PLAIN LOGIN CRAM-MD5"]}
    if isinstance(event, ev.RcptTo) and event.address.domain == "nowhere.test":
        return Reply(550, "5.1.1 unknown user"), {}
    if isinstance(event, ev.AuthCredentials):
        c = event.credentials
        ok = (c.password == "pw") if c.password is not None else c.check_cram("pw")
        return (Reply(235, "2.7.0 Authentication successful") if ok
                else Reply(535, "5.7.8 Authentication credentials invalid")), {}
    if isinstance(event, ev.AuthStart) and event.mechanism == "CRAM-MD5":
        return None, {"challenge": "<1.2@mx.test>"}
    return None, {}


class Script:
    """Feeds bytes to a core, answers its events, collects replies, events and content."""

    def __init__(self, answer=default_answer, **config):
        config.setdefault("hostname", "mx.test")
        config.setdefault("tls_available", True)
        self.conn = ServerConnection(ServerConfig(**config))
        self.answer = answer
        self.events: list = []
        self.content = bytearray()
        self.out = bytearray()
        self.conn.greet("mx.test ESMTP")
        self.banner = self.conn.data_to_send()

    def pump(self) -> None:
        while True:
            event = self.conn.next_event()
            if event is NEED_DATA or event is PAUSED:
                break
            self.events.append(event)
            if isinstance(event, ev.DataChunk):
                self.content += event.data
            elif event.needs_answer:
                reply, kw = self.answer(event)
                self.conn.respond(reply, **kw)
        self.out += self.conn.data_to_send()

    def send(self, data: bytes) -> "Script":
        self.conn.receive_data(data)
        self.pump()
        return self

    def eof(self) -> "Script":
        self.conn.receive_data(b"")
        self.pump()
        return self

    def codes(self) -> list[int]:
        return [int(r.split(b" ", 1)[0]) for r in self.replies()]

    def replies(self) -> list[bytes]:
        """Final lines of each reply (multi-line replies collapse to their last line)."""
        return [line for line in self.out.split(b"\r\n")[:-1] if line[3:4] == b" "]

    def take(self) -> list[bytes]:
        r = self.replies()
        self.out.clear()
        return r

    def of(self, cls) -> list:
        return [e for e in self.events if isinstance(e, cls)]


def valid_reply_stream(data: bytes) -> bool:
    pos = 0
    while pos < len(data):
        m = REPLY_LINE.match(data, pos)
        if not m:
            return False
        pos = m.end()
    return True
