"""Property tests of the SMTP core: framing is independent of how bytes are split, and any
byte stream yields a well-formed reply stream without exceptions or corrupt state.

``HYPOTHESIS_PROFILE=deep`` runs many more examples than the default fast CI profile.
"""
from __future__ import annotations

import base64
import os

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mailward.smtp import events as ev
from test_smtp_support import Script, valid_reply_stream

settings.register_profile("ci", max_examples=150, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("deep", max_examples=4000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PROFILE = settings.get_profile("deep" if os.environ.get("HYPOTHESIS_PROFILE") == "deep" else "ci")

TOKENS = [
    b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n",      # straight into a body
    b"EHLO c.test\r\n", b"HELO c\r\n", b"MAIL FROM:<a@b.test>\r\n", b"MAIL FROM:<> SIZE=10\r\n",
    b"RCPT TO:<x@y.test>\r\n", b"RCPT TO:<u@nowhere.test>\r\n", b"RCPT TO:<\"q@r\"@y.test>\r\n",
    b"DATA\r\n", b"RSET\r\n", b"NOOP\r\n", b"VRFY x\r\n", b"HELP\r\n", b"STARTTLS\r\n", b"QUIT\r\n",
    b"AUTH PLAIN\r\n", b"AUTH LOGIN\r\n", b"AUTH CRAM-MD5\r\n",
    b"AUTH PLAIN " + base64.b64encode(b"\0u\0pw") + b"\r\n", base64.b64encode(b"u") + b"\r\n",
    b"*\r\n", b"=\r\n", b".\r\n", b"..\r\n", b"\r\n", b"\n", b"\r", b"\n.\r\n", b"\r.\n", b"\n.\n",
    b"\r\n.\r\n", b"body line\r\n", b"x" * 600, b"y" * 1100 + b"\r\n", b"\x00", b"\xff\xfe",
    "MAIL FROM:<jörg@b.test> SMTPUTF8\r\n".encode(), b"GET / HTTP/1.0\r\n", b"MAIL FROM:<@a,@b:c@d>\r\n",
]

streams = st.lists(st.one_of(st.sampled_from(TOKENS), st.binary(max_size=40)), max_size=40).map(b"".join)


def run(chunks: list[bytes], **config) -> Script:
    s = Script(max_message_size=2000, **config)
    for c in chunks:
        if c:                       # b"" would mean EOF
            s.send(c)
    return s


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, prev = [], 0
    for p in points:
        out.append(data[prev:p])
        prev = p
    out.append(data[prev:])
    return [c for c in out if c]


def summary(s: Script):
    """Everything observable except where DataChunk boundaries fall, and except how much of
    a refused message was streamed before the reason to refuse it arrived (a bare LF, a
    long line or the size limit can only be seen when they come)."""
    events, messages, current = [], [], bytearray()
    for e in s.events:
        if isinstance(e, ev.DataChunk):
            current += e.data
            continue
        events.append(e)
        if isinstance(e, ev.DataEnd):
            messages.append(bytes(current) if e.error is None else None)
            current = bytearray()
    partial = None if s.conn.data_refused else bytes(current)
    return bytes(s.out), events, messages, partial, s.conn.closed, s.conn.tls_pending


@PROFILE
@given(streams, st.lists(st.integers(min_value=0, max_value=10_000), max_size=30),
       st.sampled_from(["reject", "normalize"]))
# found by the deep profile: a bare LF inside an over-long line, and its size, must count
# whether the line arrives whole or is skipped piece by piece
@example(data=b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n\n" + b"y" * 1100 + b"\r\n\r\n.\r\n",
         cuts=[60], mode="reject")
@example(data=b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n" + b"y" * 1500 + b"\r\n" + b"z" * 900
         + b"\r\n.\r\n", cuts=[100], mode="reject")
def test_split_points_do_not_change_anything(data, cuts, mode):
    whole = run([data], bare_newline=mode)
    pieces = run(split(data, cuts), bare_newline=mode)
    bytewise = run([data[i:i + 1] for i in range(len(data))], bare_newline=mode)
    assert summary(pieces) == summary(whole)
    assert summary(bytewise) == summary(whole)


@PROFILE
@given(streams, st.booleans())
def test_any_stream_gives_valid_replies_and_sane_state(data, eof):
    s = run([data])
    if eof:
        s.eof()
    assert valid_reply_stream(s.banner + bytes(s.out))
    c = s.conn
    assert c.rcpt_count <= c.rcpt_attempts
    if c.mail_from is None:
        assert c.rcpt_count == 0
    if c.in_data:
        assert c.mail_from is not None and c.rcpt_count > 0
    assert c.authenticated is (c.helo is not None and c.authenticated)
    if not c.closed:
        assert c.errors < c.config.max_errors
    if eof:
        assert c.closed or c.tls_pending
    # once closed, the core says nothing more whatever arrives
    if c.closed:
        before = bytes(s.out)
        s.send(b"NOOP\r\nQUIT\r\n")
        assert bytes(s.out) == before


@PROFILE
@given(st.binary(max_size=3000), st.lists(st.integers(min_value=0, max_value=5000), max_size=20))
def test_data_body_roundtrip_of_dot_stuffing(body, cuts):
    """Whatever a correct client dot-stuffs, the core gives back exactly (CRLF-only bodies)."""
    body = body.replace(b"\r", b"").replace(b"\n", b"\r\n")
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"
    lines = body.split(b"\r\n")[:-1] if body else []
    stuffed = b"".join((b"." + ln if ln.startswith(b".") else ln) + b"\r\n" for ln in lines)
    wire = b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n" + stuffed + b".\r\nNOOP\r\n"
    s = Script(max_message_size=10**6, text_line_limit=10**5)
    for c in split(wire, cuts):
        s.send(c)
    assert bytes(s.content) == body
    assert s.codes()[-2:] == [250, 250]
