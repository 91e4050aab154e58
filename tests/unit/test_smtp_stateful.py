"""A model-based test of the SMTP core: hypothesis drives a client through random command
sequences and checks every reply code against a small model of RFC 5321 sequencing.

``HYPOTHESIS_PROFILE=deep`` runs many more and longer sequences.
"""
from __future__ import annotations

import base64
import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from test_smtp_support import Script, valid_reply_stream

DEEP = os.environ.get("HYPOTHESIS_PROFILE") == "deep"
MAX_ERRORS = 8

body_lines = st.lists(st.one_of(st.sampled_from([b".", b"..", b".x", b"", b"plain text", b" . "]),
                                st.binary(max_size=60).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))),
                      max_size=12)


class SmtpModel(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.s = Script(max_errors=MAX_ERRORS, max_message_size=400)
        self.helo = False
        self.esmtp = False
        self.in_mail = False
        self.rcpts = 0
        self.rcpt_attempts = 0
        self.authed = False
        self.errors = 0
        self.closed = False
        self.messages = []

    # --- helpers --------------------------------------------------------------------------

    def send(self, data: bytes, expected: list[int]) -> None:
        self.s.out.clear()
        self.s.send(data)
        assert self.s.codes() == expected, (data, self.s.replies(), expected)

    def core_error(self, code: int) -> list[int]:
        self.errors += 1
        if self.errors >= MAX_ERRORS:
            self.closed = True
            return [code, 421]
        return [code]

    def reset(self):
        self.in_mail, self.rcpts, self.rcpt_attempts = False, 0, 0

    # --- rules ------------------------------------------------------------------------------

    @precondition(lambda self: not self.closed)
    @rule(esmtp=st.booleans())
    def hello(self, esmtp):
        self.send(b"EHLO c.test\r\n" if esmtp else b"HELO c.test\r\n", [250])
        self.helo, self.esmtp = True, esmtp
        self.reset()

    @precondition(lambda self: not self.closed)
    @rule(with_size=st.booleans())
    def mail(self, with_size):
        cmd = b"MAIL FROM:<a@b.test>" + (b" SIZE=100" if with_size else b"") + b"\r\n"
        if not self.helo:
            self.send(cmd, self.core_error(503))
        elif self.in_mail:
            self.send(cmd, self.core_error(503))
        elif with_size and not self.esmtp:
            self.send(cmd, self.core_error(555))
        else:
            self.send(cmd, [250])
            self.in_mail = True

    @precondition(lambda self: not self.closed)
    @rule(good=st.booleans())
    def rcpt(self, good):
        cmd = b"RCPT TO:<x@y.test>\r\n" if good else b"RCPT TO:<u@nowhere.test>\r\n"
        if not self.helo or not self.in_mail:
            self.send(cmd, self.core_error(503))
            return
        self.rcpt_attempts += 1
        self.send(cmd, [250] if good else [550])
        self.rcpts += good

    @precondition(lambda self: not self.closed)
    @rule(lines=body_lines)
    def data(self, lines):
        if not self.helo or not self.in_mail:
            self.send(b"DATA\r\n", self.core_error(503))
            return
        if self.rcpts == 0:
            self.send(b"DATA\r\n", self.core_error(554 if self.rcpt_attempts else 503))
            return
        self.send(b"DATA\r\n", [354])
        body = b"".join(line + b"\r\n" for line in lines)
        wire = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)
        self.s.content.clear()
        too_big = len(body) > 400
        self.send(wire + b".\r\n", [552] if too_big else [250])
        if not too_big:
            assert bytes(self.s.content) == body
        self.reset()

    @precondition(lambda self: not self.closed)
    @rule()
    def rset(self):
        self.send(b"RSET\r\n", [250])
        self.reset()

    @precondition(lambda self: not self.closed)
    @rule(cmd=st.sampled_from([b"NOOP", b"VRFY x", b"HELP"]))
    def harmless(self, cmd):
        self.send(cmd + b"\r\n", [{b"NOOP": 250, b"VRFY x": 252, b"HELP": 214}[cmd]])

    @precondition(lambda self: not self.closed)
    @rule(garbage=st.sampled_from([b"BOGUS", b"MAIL", b"RCPT TO", b"x" * 600, b"NO\nOP"]))
    def bad(self, garbage):
        expected = 500 if garbage in (b"BOGUS", b"x" * 600, b"NO\nOP") else None
        if garbage == b"MAIL":
            expected = 503 if not self.helo or self.in_mail else 501
        if garbage == b"RCPT TO":
            expected = 503 if not self.helo or not self.in_mail else 501
        self.send(garbage + b"\r\n", self.core_error(expected))

    @precondition(lambda self: not self.closed)
    @rule(good=st.booleans(), mech=st.sampled_from(["PLAIN", "LOGIN"]))
    def auth(self, good, mech):
        pw = b"pw" if good else b"nope"
        if mech == "PLAIN":
            wire = b"AUTH PLAIN " + base64.b64encode(b"\0u\0" + pw) + b"\r\n"
            ok = [235] if good else [535]
        else:
            wire = b"AUTH LOGIN\r\n" + base64.b64encode(b"u") + b"\r\n" + base64.b64encode(pw) + b"\r\n"
            ok = [334, 334, 235 if good else 535]
        if not self.helo or self.authed or self.in_mail:
            first = self.core_error(503)
            if mech == "LOGIN" and not self.closed:
                # the base64 lines that follow are then (unknown) commands
                first += self.core_error(500)
                if not self.closed:
                    first += self.core_error(500)
            self.send(wire, first[:first.index(421) + 1] if 421 in first else first)
            return
        self.send(wire, ok)
        self.authed = good

    @precondition(lambda self: not self.closed)
    @rule()
    def quit(self):
        self.send(b"QUIT\r\n", [221])
        self.closed = True

    @precondition(lambda self: self.closed)
    @rule()
    def after_close(self):
        self.send(b"NOOP\r\nEHLO x\r\n", [])      # a closed session says nothing more

    # --- invariants -------------------------------------------------------------------------

    @invariant()
    def core_agrees(self):
        c = self.s.conn
        assert c.closed == self.closed
        if not self.closed:
            assert c.in_transaction == self.in_mail
            assert c.rcpt_count == self.rcpts
            assert c.authenticated == self.authed
            assert (c.helo is not None) == self.helo

    @invariant()
    def replies_well_formed(self):
        assert valid_reply_stream(bytes(self.s.out))


SmtpModel.TestCase.settings = settings(
    max_examples=1500 if DEEP else 60, stateful_step_count=40 if DEEP else 25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TestSmtpModel = SmtpModel.TestCase
