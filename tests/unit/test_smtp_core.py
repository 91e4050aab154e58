"""Conversation scripts for the sans-IO SMTP server core: bytes in, replies out."""
from __future__ import annotations

import base64

import pytest

from mailward.smtp import events as ev
from mailward.smtp.reply import Reply
from mailward.smtp.server import ProtocolError, ServerConfig, ServerConnection

from test_smtp_support import Script, valid_reply_stream

EHLO = b"EHLO client.test\r\n"
ENVELOPE = EHLO + b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n"


def b64(s: bytes) -> bytes:
    return base64.b64encode(s)


# --- greeting, HELO/EHLO -----------------------------------------------------------------

def test_banner_and_ehlo_keywords():
    s = Script()
    assert s.banner == b"220 mx.test ESMTP\r\n"
    s.send(EHLO)
    lines = s.out.split(b"\r\n")[:-1]
    assert lines[0] == b"250-mx.test"
    assert lines[-1] == b"250 SMTPUTF8"
    kws = [line[4:] for line in lines[1:]]
    assert kws == [b"PIPELINING", b"SIZE 1000", b"STARTTLS", b"AUTH PLAIN LOGIN CRAM-MD5",
                   b"ENHANCEDSTATUSCODES", b"8BITMIME", b"SMTPUTF8"]
    assert s.of(ev.Helo) == [ev.Helo("client.test", True)]


def test_helo_plain_reply_and_no_params_after_helo():
    s = Script().send(b"HELO c\r\nMAIL FROM:<a@b> SIZE=10\r\nMAIL FROM:<a@b>\r\n")
    assert s.take() == [b"250 mx.test", b"555 5.5.4 Error: MAIL parameters need EHLO", b"250 2.1.0 Ok"]


def test_size_added_when_app_omits_it():
    s = Script(answer=lambda e: (None, {"keywords": []}) if isinstance(e, ev.Helo) else (None, {}),
               max_message_size=4242, tls_available=False)
    s.send(EHLO)
    assert b"250-SIZE 4242\r\n" in s.out and b"STARTTLS" not in s.out


def test_helo_needs_argument():
    s = Script().send(b"HELO\r\nEHLO\r\n")
    assert s.codes() == [501, 501]


def test_helo_refused_by_app_keeps_state():
    s = Script(answer=lambda e: (Reply(550, "5.7.1 no"), {}) if isinstance(e, ev.Helo) else (None, {}))
    s.send(b"EHLO x\r\nMAIL FROM:<a@b>\r\n")
    assert s.codes() == [550, 503]


# --- sequence errors ---------------------------------------------------------------------

@pytest.mark.parametrize("script,expected", [
    (b"MAIL FROM:<a@b>\r\n", [503]),
    (b"RCPT TO:<a@b>\r\n", [503]),
    (b"DATA\r\n", [503]),
    (EHLO + b"RCPT TO:<a@b>\r\n", [250, 503]),
    (EHLO + b"DATA\r\n", [250, 503]),
    (EHLO + b"MAIL FROM:<a@b>\r\nDATA\r\n", [250, 250, 503]),
    (EHLO + b"MAIL FROM:<a@b>\r\nMAIL FROM:<a@b>\r\n", [250, 250, 503]),
    (EHLO + b"MAIL FROM:<a@b>\r\nRCPT TO:<u@nowhere.test>\r\nDATA\r\n", [250, 250, 550, 554]),
    (EHLO + b"MAIL FROM:<a@b>\r\nSTARTTLS\r\n", [250, 250, 503]),
    (EHLO + b"MAIL FROM:<a@b>\r\nAUTH PLAIN\r\n", [250, 250, 503]),
])
def test_sequence_errors(script, expected):
    assert Script().send(script).codes() == expected


def test_sequence_error_texts_have_enhanced_codes():
    s = Script().send(b"MAIL FROM:<a@b>\r\nFOO\r\n" + EHLO + b"RCPT TO:<a@b>\r\n")
    r = s.replies()
    assert r[0] == b"503 5.5.1 Error: send HELO/EHLO first"
    assert r[1] == b"500 5.5.1 Error: command not recognized"
    assert r[3] == b"503 5.5.1 Error: need MAIL command"


# --- syntax ------------------------------------------------------------------------------

@pytest.mark.parametrize("line,code", [
    (b"MAIL FROM:a@b", 501),
    (b"MAIL FROM:<a@b", 501),
    (b"MAIL FROM:<a b@c>", 501),
    (b"MAIL TO:<a@b>", 501),
    (b"MAIL FROM:<a@b> FOO=1", 555),
    (b"MAIL FROM:<a@b> SIZE=abc", 501),
    (b"MAIL FROM:<a@b> BODY=BINARYMIME", 501),
    (b"MAIL FROM:<a@b> SIZE=1 SIZE=2", 501),
    (b"MAIL FROM:<a@b> BODY=8bitmime", 250),
    (b"MAIL FROM:<a@b> BODY=7BIT SIZE=100 AUTH=<>", 250),
    (b"MAIL FROM:<> ", 250),
    (b"mail from: <a@b>", 250),
    (b"MAIL FROM:<\"quoted local\"@b>", 250),
    (b"MAIL FROM:<a@[127.0.0.1]>", 250),
    (b"MAIL FROM:<a@[IPv6:::1]>", 250),
    (b"MAIL FROM:<a@[IPv6:nope]>", 501),
    (b"MAIL FROM:<a@[300.1.1.1]>", 501),
    (b"MAIL FROM:<a@-bad.test>", 501),
])
def test_mail_syntax(line, code):
    s = Script().send(EHLO + line + b"\r\n")
    assert s.codes()[-1] == code


@pytest.mark.parametrize("line,code", [
    (b"RCPT TO:<Postmaster>", 250),
    (b"RCPT TO:<x@y> NOTIFY=NEVER ORCPT=rfc822;x@y", 250),
    (b"RCPT TO:<x@y> FOO", 555),
    (b"RCPT TO:<>", 501),
    (b"RCPT TO:<nodomain>", 501),
    (b"RCPT TO:<@relay.test,@other.test:u@dest.test>", 250),
    (b"RCPT TO x@y", 501),
])
def test_rcpt_syntax(line, code):
    s = Script().send(EHLO + b"MAIL FROM:<a@b>\r\n" + line + b"\r\n")
    assert s.codes()[-1] == code


def test_source_route_dropped_and_flagged():
    s = Script().send(EHLO + b"MAIL FROM:<a@b>\r\nRCPT TO:<@relay.test,@other.test:u@dest.test>\r\n")
    (rcpt,) = s.of(ev.RcptTo)
    assert rcpt.address.text == "u@dest.test"
    assert rcpt.address.had_source_route and rcpt.address.source_route == ("relay.test", "other.test")


def test_routing_tricks_are_visible():
    s = Script().send(EHLO + b"MAIL FROM:<a@b>\r\nRCPT TO:<user%other.test@local.test>\r\n"
                      b"RCPT TO:<bang!path@local.test>\r\nRCPT TO:<\"user@other.test\"@local.test>\r\n")
    a, b, c = (e.address for e in s.of(ev.RcptTo))
    assert a.routing_tricks == ("percent",) and a.domain == "local.test"
    assert b.routing_tricks == ("bang",)
    assert c.routing_tricks == ("quoted-at",) and c.quoted_local and c.local_part == "user@other.test"
    assert c.text == '"user@other.test"@local.test'


def test_utf8_only_with_smtputf8():
    s = Script().send(EHLO + "MAIL FROM:<jörg@b.test>\r\n".encode())
    assert s.replies()[-1] == b"553 5.6.7 Error: SMTPUTF8 not requested for this address"
    s = Script().send(EHLO + "MAIL FROM:<jörg@b.test> SMTPUTF8\r\nRCPT TO:<δοκιμή@παράδειγμα.δοκιμή>\r\n".encode())
    assert s.codes() == [250, 250, 250]
    assert s.of(ev.RcptTo)[0].address.utf8
    s = Script().send(EHLO + "MAIL FROM:<a@b.test>\r\nRCPT TO:<δοκιμή@b.test>\r\n".encode())
    assert s.codes() == [250, 250, 553]


def test_unknown_and_invalid_bytes():
    s = Script().send(b"FOO\r\nNO\x00OP\r\n\xff\xfe\r\nVRFY\r\nVRFY x\r\nEXPN x\r\nHELP\r\nNOOP\r\n")
    assert s.codes() == [500, 500, 500, 501, 252, 502, 214, 250]


def test_http_probe_closes():
    s = Script().send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert s.codes() == [421] and s.conn.closed
    assert s.of(ev.Closed) == [ev.Closed("error")]


def test_too_many_errors_closes():
    s = Script(max_errors=3).send(b"X\r\nY\r\nZ\r\nNOOP\r\n")
    assert s.codes() == [500, 500, 500, 421]
    assert s.conn.closed and s.of(ev.Closed) == [ev.Closed("limit")]


def test_junk_commands_past_the_limit_count_as_errors():
    # NOOP, RSET, VRFY and HELP move the command deadline like any command: past the junk
    # limit each also counts as an error, so they cannot hold a connection for ever.
    s = Script(max_junk_commands=3, max_errors=2).send(b"NOOP\r\nRSET\r\nHELP\r\nVRFY x\r\nNOOP\r\nNOOP\r\n")
    assert s.codes() == [250, 250, 214, 252, 421]
    assert s.conn.closed and s.of(ev.Closed) == [ev.Closed("limit")]


def test_junk_count_starts_again_after_an_accepted_message():
    s = Script(max_junk_commands=2, max_errors=1)
    s.send(EHLO + b"NOOP\r\nNOOP\r\n" + ENVELOPE[len(EHLO):] + b"hi\r\n.\r\n")
    s.send(b"RSET\r\nNOOP\r\n")             # two more after the message: still free
    assert s.codes()[-4:] == [354, 250, 250, 250] and not s.conn.closed
    s.send(b"NOOP\r\n")                       # the third: one error, and the limit is 1
    assert s.codes()[-1] == 421 and s.conn.closed


def test_quit_and_eof():
    s = Script().send(b"QUIT\r\nNOOP\r\n")
    assert s.codes() == [221] and s.of(ev.Closed) == [ev.Closed("quit")]
    s = Script().send(b"NOOP\r\n").eof()
    assert s.of(ev.Closed) == [ev.Closed("eof")]


def test_rset_resets_transaction():
    s = Script().send(EHLO + b"MAIL FROM:<a@b>\r\nRSET\r\nRCPT TO:<x@y>\r\nRSET x\r\n")
    assert s.codes() == [250, 250, 250, 503, 501]
    assert len(s.of(ev.Rset)) == 1


# --- line limits ---------------------------------------------------------------------------

def test_command_line_too_long_one_reply_then_continue():
    s = Script().send(b"NOOP " + b"x" * 600 + b"\r\nNOOP\r\n")
    assert s.replies() == [b"500 5.5.2 Error: line too long", b"250 2.0.0 Ok"]


def test_command_line_exactly_512_ok():
    s = Script().send(b"NOOP " + b"x" * (512 - 7) + b"\r\n" + b"NOOP " + b"x" * (512 - 6) + b"\r\n")
    assert s.codes() == [250, 500]


def test_long_line_is_not_buffered():
    s = Script()
    s.send(b"NOOP ")
    for _ in range(100):
        s.send(b"y" * 10_000)
        assert s.conn.buffered <= 512
    s.send(b"\r\nNOOP\r\n")
    assert s.codes() == [500, 250]


def test_commands_end_only_at_crlf():
    s = Script().send(b"NOOP\nNOOP\r\n")
    assert s.replies() == [b"500 5.5.2 Error: bare <LF> received"]
    s = Script().send(b"NOOP\rQUIT\r\n")
    assert s.codes() == [500] and not s.conn.closed


# --- DATA --------------------------------------------------------------------------------

def test_data_dot_unstuffing_and_pipelined_quit():
    s = Script().send(ENVELOPE + b"line1\r\n..dot\r\n...two\r\n.\r\nQUIT\r\n")
    assert s.codes() == [250, 250, 250, 354, 250, 221]
    assert bytes(s.content) == b"line1\r\n.dot\r\n..two\r\n"


def test_data_first_line_dot():
    s = Script().send(ENVELOPE + b"..first\r\n.\r\n")
    assert bytes(s.content) == b".first\r\n"
    s = Script().send(ENVELOPE + b".\r\n")
    assert bytes(s.content) == b"" and s.codes()[-1] == 250


@pytest.mark.parametrize("fake_end", [b"\n.\r\n", b"\r.\n", b"\n.\n", b"\r\n.\n", b"\r.\r\n", b"\n.\r"])
@pytest.mark.parametrize("mode", ["reject", "normalize"])
def test_smuggling_sequences_never_end_data(fake_end, mode):
    smuggled = b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@y.test>\r\nDATA\r\nforged\r\n"
    s = Script(bare_newline=mode).send(ENVELOPE + b"hello" + fake_end + smuggled + b".\r\n")
    # one message, not two; the fake end and the smuggled commands are content
    assert len(s.of(ev.DataEnd)) == 1 and len(s.of(ev.MailFrom)) == 1 and not s.conn.in_data
    if mode == "reject":
        assert s.replies()[-1] == b"554 5.5.0 Error: bare <LF> received"
        assert bytes(s.content) == b""
    else:
        assert s.codes()[-1] == 250
        assert smuggled in bytes(s.content)


def test_bare_newline_normalize_mode():
    s = Script(bare_newline="normalize").send(ENVELOPE + b"a\nb\rc\r\n.\r\n")
    assert bytes(s.content) == b"a\r\nb\r\nc\r\n" and s.codes()[-1] == 250


def test_data_refused_flag_while_streaming():
    s = Script().send(ENVELOPE + b"fine\r\n")
    assert s.conn.in_data and not s.conn.data_refused
    s.send(b"bare\nlf\r\n")
    assert s.conn.data_refused
    s.send(b"more\r\n.\r\n")
    assert not s.conn.data_refused and bytes(s.content) == b"fine\r\n"
    s = Script(bare_newline="normalize").send(ENVELOPE + b"bare\nlf\r\n")
    assert not s.conn.data_refused


def test_bare_cr_alone_is_flagged():
    s = Script().send(ENVELOPE + b"a\rb\r\n.\r\n")
    assert s.of(ev.DataEnd) == [ev.DataEnd(Reply(554, "5.5.0 Error: bare <LF> received"))]


def test_size_limit_discards_until_end():
    s = Script(max_message_size=100).send(ENVELOPE)
    for _ in range(10):
        s.send(b"x" * 50 + b"\r\n")
    s.send(b".\r\nNOOP\r\n")
    assert len(s.content) <= 100
    assert s.replies()[-2:] == [b"552 5.3.4 Message size exceeds fixed limit", b"250 2.0.0 Ok"]
    assert s.conn.mail_from is None


def test_data_line_too_long_reported_at_end():
    s = Script().send(ENVELOPE + b"x" * 1200 + b"\r\nshort\r\n.\r\n")
    assert s.replies()[-1] == b"500 5.5.2 Error: message line too long"
    assert bytes(s.content) == b""
    s = Script().send(ENVELOPE + b"before\r\n")
    s.send(b"x" * 1200 + b"\r\nshort\r\n.\r\n")
    assert bytes(s.content) == b"before\r\n" and s.codes()[-1] == 500
    s = Script().send(ENVELOPE + b"x" * 998 + b"\r\n.\r\n")
    assert s.codes()[-1] == 250


def test_data_refused_by_app_keeps_commands_mode():
    s = Script(answer=lambda e: (Reply(451, "4.3.0 no"), {}) if isinstance(e, ev.DataStart) else (None, {}))
    s.send(ENVELOPE + b"NOOP\r\n")
    assert s.codes() == [250, 250, 250, 451, 250]


def test_data_args_rejected():
    assert Script().send(EHLO + b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA x\r\n").codes()[-1] == 501


def test_max_messages_per_connection():
    msg = b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nx\r\n.\r\n"
    s = Script(max_messages=2).send(EHLO + msg + msg + msg)
    assert s.codes()[-1] == 421 and s.of(ev.Closed) == [ev.Closed("limit")]
    assert len(s.of(ev.DataEnd)) == 2


def test_chunks_stream_without_whole_message_buffer():
    s = Script(max_message_size=10**9).send(ENVELOPE)
    chunk = (b"y" * 70 + b"\r\n") * 1000
    for _ in range(50):
        s.send(chunk)
        assert s.conn.buffered == 0
    s.send(b".\r\n")
    assert len(s.content) == len(chunk) * 50 and s.codes()[-1] == 250


# --- PIPELINING ----------------------------------------------------------------------------

def test_pipelined_batch_replies_in_order():
    s = Script().send(EHLO + b"MAIL FROM:<a@b>\r\nRCPT TO:<u@nowhere.test>\r\nRCPT TO:<c@d>\r\n"
                      b"DATA\r\nbody\r\n.\r\nRSET\r\nNOOP\r\nQUIT\r\n")
    assert s.codes() == [250, 250, 550, 250, 354, 250, 250, 250, 221]


def test_paused_until_respond():
    conn = ServerConnection(ServerConfig(hostname="mx.test"))
    conn.greet("hi")
    conn.receive_data(b"EHLO a\r\nNOOP\r\n")
    assert isinstance(conn.next_event(), ev.Helo)
    from mailward.smtp.server import PAUSED
    assert conn.next_event() is PAUSED
    assert conn.data_to_send() == b"220 hi\r\n"      # NOOP not answered before EHLO
    conn.respond(None, keywords=[])
    conn.next_event()
    out = conn.data_to_send()
    assert out.endswith(b"250 SMTPUTF8\r\n250 2.0.0 Ok\r\n")
    with pytest.raises(ProtocolError):
        conn.respond(None)


# --- STARTTLS ----------------------------------------------------------------------------

def test_starttls_injection_discarded():
    s = Script().send(EHLO + b"STARTTLS\r\nMAIL FROM:<inject@x>\r\nRCPT TO:<y@z>\r\n")
    assert s.codes() == [250, 220]
    assert s.conn.tls_pending and not s.of(ev.MailFrom)
    s.send(b"MAIL FROM:<more-plaintext@x>\r\n")         # still before the handshake: void
    s.conn.tls_started()
    s.send(b"MAIL FROM:<a@b>\r\n" + EHLO + b"MAIL FROM:<a@b>\r\n")
    assert s.codes()[2:] == [503, 250, 250]
    assert [e.address.text for e in s.of(ev.MailFrom)] == ["a@b"]
    assert s.conn.tls


def test_starttls_when_already_tls_or_unavailable():
    s = Script(implicit_tls=True).send(EHLO + b"STARTTLS\r\n")
    assert s.codes() == [250, 503] and b"STARTTLS" not in s.out
    s = Script(tls_available=False).send(EHLO + b"STARTTLS\r\n")
    assert s.codes() == [250, 502]
    s = Script().send(EHLO + b"STARTTLS now\r\n")
    assert s.codes() == [250, 501]


def test_starttls_refused_by_app():
    s = Script(answer=lambda e: (Reply(454, "4.7.0 no TLS"), {}) if isinstance(e, ev.StartTls) else (None, {}))
    s.send(EHLO + b"STARTTLS\r\nNOOP\r\n")
    assert s.codes() == [250, 454, 250] and not s.conn.tls_pending


def test_starttls_forgets_auth_and_helo():
    s = Script().send(EHLO + b"AUTH PLAIN " + b64(b"\0u\0pw") + b"\r\n")
    assert s.conn.authenticated
    s.send(b"STARTTLS\r\n")
    s.conn.tls_started()
    assert not s.conn.authenticated and s.conn.helo is None


def test_tls_started_without_starttls_is_misuse():
    with pytest.raises(ProtocolError):
        Script().conn.tls_started()


# --- AUTH ----------------------------------------------------------------------------------

def test_auth_plain_initial_response():
    s = Script().send(EHLO + b"AUTH PLAIN " + b64(b"\0alice\0pw") + b"\r\n")
    assert s.replies()[-1] == b"235 2.7.0 Authentication successful"
    (creds,) = s.of(ev.AuthCredentials)
    assert creds.credentials.username == "alice" and creds.credentials.password == "pw"
    assert s.conn.authenticated


def test_auth_plain_empty_challenge_then_response():
    s = Script().send(EHLO + b"AUTH PLAIN\r\n")
    assert s.out.endswith(b"334 \r\n")
    s.send(b64(b"\0alice\0bad") + b"\r\n")
    assert s.codes()[-1] == 535 and not s.conn.authenticated


def test_auth_plain_equals_means_empty_initial_response():
    s = Script().send(EHLO + b"AUTH PLAIN =\r\n")
    assert s.replies()[-1] == b"501 5.5.2 Invalid authentication response"


def test_auth_login_exchange():
    s = Script().send(EHLO + b"AUTH LOGIN\r\n")
    assert s.replies()[-1] == b"334 VXNlcm5hbWU6"
    s.send(b64(b"alice") + b"\r\n")
    assert s.replies()[-1] == b"334 UGFzc3dvcmQ6"
    s.send(b64(b"pw") + b"\r\n")
    assert s.codes()[-1] == 235


def test_auth_login_with_initial_username():
    s = Script().send(EHLO + b"AUTH LOGIN " + b64(b"alice") + b"\r\n" + b64(b"pw") + b"\r\n")
    assert s.codes()[-2:] == [334, 235]


def test_auth_cram_md5():
    import hashlib
    import hmac
    s = Script().send(EHLO + b"AUTH CRAM-MD5\r\n")
    challenge = base64.b64decode(s.replies()[-1][4:])
    assert challenge == b"<1.2@mx.test>"
    digest = hmac.new(b"pw", challenge, hashlib.md5).hexdigest()
    s.send(b64(b"alice " + digest.encode()) + b"\r\n")
    assert s.codes()[-1] == 235
    c = s.of(ev.AuthCredentials)[0].credentials
    assert c.password is None and c.challenge == "<1.2@mx.test>" and c.digest == digest


def test_auth_cancel_bad_base64_unknown_mech():
    s = Script().send(EHLO + b"AUTH LOGIN\r\n*\r\n")
    assert s.replies()[-1] == b"501 5.0.0 Authentication cancelled"
    s = Script().send(EHLO + b"AUTH LOGIN\r\n!!!notbase64\r\n")
    assert s.replies()[-1] == b"501 5.5.2 Cannot decode response"
    s = Script().send(EHLO + b"AUTH PLAIN !!!\r\n")
    assert s.replies()[-1] == b"501 5.5.2 Cannot decode response"
    s = Script().send(EHLO + b"AUTH GSSAPI\r\n")
    assert s.replies()[-1] == b"504 5.5.4 Unrecognized authentication type"
    s = Script().send(EHLO + b"AUTH\r\n")
    assert s.codes()[-1] == 501


def test_auth_when_already_authenticated():
    s = Script().send(EHLO + b"AUTH PLAIN " + b64(b"\0a\0pw") + b"\r\nAUTH PLAIN " + b64(b"\0a\0pw") + b"\r\n")
    assert s.codes()[-2:] == [235, 503]


def test_auth_refused_by_app_before_exchange():
    def answer(e):
        if isinstance(e, ev.AuthStart):
            return Reply(538, "5.7.11 Encryption required for requested authentication mechanism"), {}
        return None, {}
    s = Script(answer=answer).send(EHLO + b"AUTH LOGIN\r\nNOOP\r\n")
    assert s.codes()[-2:] == [538, 250] and not s.of(ev.AuthCredentials)


def test_auth_plain_authzid_mismatch():
    s = Script().send(EHLO + b"AUTH PLAIN " + b64(b"admin\0alice\0pw") + b"\r\n")
    assert s.codes()[-1] == 535 and not s.of(ev.AuthCredentials)
    s = Script(allow_authzid=True).send(EHLO + b"AUTH PLAIN " + b64(b"admin\0alice\0pw") + b"\r\n")
    assert s.codes()[-1] == 235 and s.of(ev.AuthCredentials)[0].credentials.authzid == "admin"
    s = Script().send(EHLO + b"AUTH PLAIN " + b64(b"alice\0alice\0pw") + b"\r\n")
    assert s.codes()[-1] == 235


def test_auth_long_initial_response_allowed():
    token = b64(b"\0alice\0" + b"p" * 3000)
    s = Script().send(EHLO + b"AUTH PLAIN " + token + b"\r\n")
    assert s.codes()[-1] == 535        # wrong password, but not "line too long"


def test_auth_cram_initial_response_rejected():
    s = Script().send(EHLO + b"AUTH CRAM-MD5 " + b64(b"x") + b"\r\n")
    assert s.codes()[-1] == 501


# --- the reply stream is always well-formed ----------------------------------------------

def test_reply_text_sanitised():
    assert Reply(250, "a\rb\x00c").to_bytes() == b"250 ab?c\r\n"
    assert Reply(250, "one\ntwo").to_bytes() == b"250-one\r\n250 two\r\n"
    with pytest.raises(ValueError):
        Reply(99, "x")


def test_full_session_reply_stream_valid():
    s = Script().send(ENVELOPE + b"x\r\n.\r\nQUIT\r\n")
    assert valid_reply_stream(s.banner + bytes(s.out))


def test_plain_and_login_draw_no_random_challenge_cram_md5_does(monkeypatch):
    import secrets

    import mailward.smtp.server as core

    drawn = []
    real = secrets.randbits
    monkeypatch.setattr(core.secrets, "randbits", lambda k: drawn.append(k) or real(k))
    s = Script(answer=lambda e: (None, {})).send(EHLO + b"AUTH PLAIN " + b64(b"\0alice\0pw") + b"\r\n")
    assert s.codes()[-1] == 535 and drawn == []          # the default answer: no verifier here
    s = Script(answer=lambda e: (None, {})).send(EHLO + b"AUTH LOGIN\r\n")
    assert s.replies()[-1] == b"334 VXNlcm5hbWU6" and drawn == []
    s = Script(answer=lambda e: (None, {})).send(EHLO + b"AUTH CRAM-MD5\r\n")
    first = base64.b64decode(s.replies()[-1][4:])
    assert len(drawn) == 2 and first.startswith(b"<") and first.endswith(b"@mx.test>")
    s = Script(answer=lambda e: (None, {})).send(EHLO + b"AUTH CRAM-MD5\r\n")
    assert base64.b64decode(s.replies()[-1][4:]) != first   # fresh for every exchange
