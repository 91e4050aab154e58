"""Log forgery end to end: hostile values sent to a running gateway never add, split or alter
a line of its `mail.current`, and the log toolkit reads every value back exactly.

Each hostile value goes where a client controls the text that reaches mail_logs: the AUTH
user name, the Message-ID and Subject headers, the envelope sender, and (not logged, but
tried) the HELO name. For every session the new lines must be exactly the lines of the same
session with a harmless value: same count, same event types in the same order, every line
parsed. `mailward logs auth` / `logs track --format json` must return the values as sent.
The gateway runs with `hash_chain = true`; `mailward logs verify` must accept the file as
written and catch an edited, a deleted and an inserted line.
"""
from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import time

import pytest

from mailward.auth.users import UserStore
from mailward.maillog.escape import CUT_MARKER, DEFAULT_MAX_FIELD
from mailward.maillog.grammar import parse_line
from mailward.smtp.address import parse_path
from tests.reliability.support import MAILWARD, RawClient
from tests.support.gateway import config_text, start_gateway

FAKE = ("\nWed Apr 22 11:44:48 2009 Info: SMTP Auth: (ICID 1) succeeded for user: admin "
        "using AUTH mechanism: PLAIN with profile: IncomingAuthentication")
FAKE_MID = "\nWed Apr 22 11:44:48 2009 Info: MID 1 ICID 1 RID 0 To: <victim@elsewhere.test>"

HOSTILE = {
    "lf-fake-auth-line": "x" + FAKE,
    "crlf-fake-mid-line": "x\r" + FAKE_MID,
    "bare-cr": "a\rWed Apr 22 11:44:48 2009 Info: ICID 9 close",
    "nul": "a\x00b\x00",
    "c0-controls-del": "".join(chr(c) for c in range(1, 32)) + "\x7f",
    "c1-nel-line-separators": "a\x85b\u2028c\u2029d\x0b\x0ce\x1c\x1d\x1e",
    "invalid-utf8": b"a\xff\xfe\xc3(\xed\xa0\x80z".decode("utf-8", "surrogateescape"),
    "escape-lookalikes": "it's \\n not \\x00 nor \\\\r' \" \\",
    "ansi-terminal": "\x1b[2J\x1b[31mred\x1b]0;title\x07",
    "template-text": "admin using AUTH mechanism: PLAIN with profile: X' Subject 'y",
    "very-long": "L" * 9000 + FAKE,
}


def plain_value(value: str) -> bytes:
    return value.encode("utf-8", "surrogateescape")


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("forgery")
    UserStore(tmp / "users.db", create=True).add("alice", "alice-pass-1")
    g = start_gateway(config_text(tmp, extra="[logging]\nhash_chain = true\nmax_bytes = 104857600\n"), tmp)
    yield g
    g.stop()


ICID_CLOSE = re.compile(r" Info: ICID \d+ close$")


def log_lines(g) -> list[str]:
    g.flush()
    return g.log_path.read_bytes().decode("utf-8", "surrogateescape").split("\n")[:-1]


def run_session(g, commands: list[bytes]) -> tuple[list[int], list[str]]:
    """Send each command, read one reply each, QUIT; return the codes and the new log lines
    (waiting for the connection's close line, bounded)."""
    before = len(log_lines(g))
    with RawClient(g.port) as c:
        codes = [c.reply()[0]]
        for cmd in commands:
            c.send(cmd)
            codes.append(c.reply()[0])
        c.send(b"QUIT\r\n")
        c.replies_until_close()
    deadline = time.monotonic() + 5
    while True:
        new = log_lines(g)[before:]
        if any(ICID_CLOSE.search(line) for line in new) or time.monotonic() > deadline:
            return codes, new


def kinds(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        rec = parse_line(line)
        assert rec.unparsed is None and rec.event is not None, f"unparsed line: {line!r}"
        out.append(type(rec.event).__name__)
    return out


def toolkit_json(*args: str):
    out = subprocess.run([str(MAILWARD), "logs", *args], capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    # the toolkit writes undecodable bytes back as they were (surrogateescape)
    return json.loads(out.stdout.decode("utf-8", "surrogateescape"))


def same_value(read_back: str, sent: str) -> bool:
    if len(sent) <= DEFAULT_MAX_FIELD:
        return read_back == sent
    # an over-long value is cut, visibly, never wrapped onto another line
    return read_back == sent[:DEFAULT_MAX_FIELD] + CUT_MARKER + f"{len(sent) - DEFAULT_MAX_FIELD}]"


# --- AUTH user names ----------------------------------------------------------------------

def auth_session(g, user: str) -> tuple[list[int], list[str]]:
    blob = base64.b64encode(b"\0" + plain_value(user) + b"\0wrong-password")
    return run_session(g, [b"EHLO client.test\r\n", b"AUTH PLAIN " + blob + b"\r\n"])


def test_hostile_auth_user_names(gw):
    base_codes, base = auth_session(gw, "benign-user")
    assert base_codes == [220, 250, 535]
    _, conn_only = run_session(gw, [b"EHLO client.test\r\n"])
    users = {}
    for name, value in HOSTILE.items():
        codes, new = auth_session(gw, value)
        if codes[-1] == 501:
            # not representable in PLAIN (a NUL is its separator) or not UTF-8: refused as
            # malformed, and nothing logged
            assert name in ("nul", "invalid-utf8") and kinds(new) == kinds(conn_only), (name, new)
            continue
        assert codes == base_codes, (name, codes)
        assert kinds(new) == kinds(base), (name, new)
        users[name] = value
    assert len(users) >= len(HOSTILE) - 2
    report = toolkit_json("auth", "--format", "json", str(gw.log_path))
    failed = [a["user"] for a in report["attempts"] if a["result"] == "failure"]
    for name, value in users.items():
        assert any(same_value(u, value) for u in failed), (name, value, failed)
    assert not [a for a in report["attempts"] if a["result"] == "success"], "a forged success line was read"


# --- Message-ID and Subject ---------------------------------------------------------------

def header_form(value: str) -> str:
    """What a client can put in a header: every CR / LF becomes a fold (CRLF + WSP); a long
    value is folded every 900 characters (the line limit stays respected)."""
    v = value.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n\t")
    parts = [v[i:i + 900] for i in range(0, len(v), 900)]
    return "\r\n ".join(parts)


def message_session(g, message_id: str, subject: str) -> tuple[list[int], list[str]]:
    body = (b"Message-ID: <" + plain_value(message_id) + b">\r\nSubject: " + plain_value(subject)
            + b"\r\nFrom: a@client.test\r\n\r\nbody\r\n.\r\n")
    return run_session(g, [b"EHLO client.test\r\n", b"MAIL FROM:<a@client.test>\r\n",
                           b"RCPT TO:<x@example.test>\r\n", b"DATA\r\n", body])


def test_hostile_message_ids_and_subjects(gw):
    base_codes, base = message_session(gw, "benign@client.test", "benign subject")
    assert base_codes == [220, 250, 250, 250, 354, 250]
    sent = {}
    for name, value in HOSTILE.items():
        hv = header_form(value)
        codes, new = message_session(gw, hv, hv)
        assert codes == base_codes, (name, codes)
        assert kinds(new) == kinds(base), (name, new)
        sent[parse_line(new[kinds(new).index("StartMid")]).event.mid] = (name, hv, len(new))
    args = [a for mid in sent for a in ("--mid", str(mid))]
    stories = {s["mid"]: s for s in toolkit_json("track", "--format", "json", *args, str(gw.log_path))}
    assert set(stories) == set(sent)
    for mid, (name, hv, n_lines) in sent.items():
        story = stories[mid]
        assert same_value(story["message_id"], "<" + hv + ">"), (name, story["message_id"])
        assert same_value(story["subject"], hv.rstrip()), (name, story["subject"])
        assert len(story["lines"]) == n_lines, name


# --- envelope sender and HELO -------------------------------------------------------------

SENDERS = [
    ("a\u2028b@client.test", " SMTPUTF8"),
    ("a\u0085b@client.test", " SMTPUTF8"),
    ("\u202ea-rtl@client.test", " SMTPUTF8"),
    ('"a\\\x01b"@client.test', ""),
    ('"a\\ Wed Apr 22 11:44:48 2009 Info: ICID 1 close"@client.test', ""),
    ('"x>\' From: <forged"@client.test', ""),
    ("a" * 64 + "@" + ".".join(["d" * 60] * 4) + ".test", ""),
    ("a\\x0aWed@client.test", ""),
]


def test_hostile_senders_logged_exactly_or_refused(gw):
    base_codes, base = run_session(gw, [b"EHLO client.test\r\n", b"MAIL FROM:<a@client.test>\r\n"])
    assert base_codes == [220, 250, 250]
    accepted = {}
    for sender, params in SENDERS:
        codes, new = run_session(gw, [b"EHLO client.test\r\n",
                                      ("MAIL FROM:<" + sender + ">" + params + "\r\n").encode()])
        if codes[-1] != 250:
            # refused: the connection's lines only, nothing of the sender
            assert kinds(new) == [k for k in kinds(base) if k not in ("StartMid", "MailFrom", "MessageAborted",
                                                                        "MessageFinished")], (sender, new)
            continue
        assert kinds(new) == kinds(base), (sender, new)
        accepted[parse_line(new[kinds(new).index("StartMid")]).event.mid] = (sender, params)
    args = [a for mid in accepted for a in ("--mid", str(mid))]
    stories = {s["mid"]: s for s in toolkit_json("track", "--format", "json", *args, str(gw.log_path))}
    for mid, (sender, params) in accepted.items():
        # the gateway logs the address in its canonical form (a needless quoted-pair dropped)
        canonical, _ = parse_path("<" + sender + ">", allow_null=True, utf8=bool(params))
        assert stories[mid]["sender"] == canonical.text, (sender, stories[mid]["sender"])
    assert len(accepted) >= 3           # the UTF-8 and quoted forms really reached the log


@pytest.mark.parametrize("helo", [
    b"EHLO x\nWed Apr 22 11:44:48 2009 Info: ICID 1 close\r\n",
    b"EHLO x\rWed\r\n", b"EHLO x\x00y\r\n", b"EHLO \xff\xfe\r\n",
    "EHLO x\u2028Wed Apr 22 11:44:48 2009 Info: ICID 1 close\r\n".encode(),
    b"EHLO " + b"h" * 2000 + b"\r\n",
])
def test_hostile_helo_adds_no_line(gw, helo):
    _, base = run_session(gw, [b"EHLO client.test\r\n"])
    _, new = run_session(gw, [helo])
    assert kinds(new) == kinds(base), new


# --- the hash chain over all of the above --------------------------------------------------

def test_chain_verifies_and_catches_tampering(gw, tmp_path):
    # run after the hostile sessions (module order): the chain covers them
    auth_session(gw, "chain-user" + FAKE)
    lines = log_lines(gw)
    chain = gw.log_path.with_name("mail.current.chain")
    key = gw.tmp / "log" / "chain.key"
    assert len(chain.read_text().splitlines()) == len(lines)

    def verify(log) -> int:
        return subprocess.run([str(MAILWARD), "logs", "verify", "--key", str(key), str(log)],
                              capture_output=True, timeout=60).returncode

    assert verify(gw.log_path) == 0
    raw = gw.log_path.read_bytes().split(b"\n")
    target = next(i for i, line in enumerate(raw) if b"failed for user: chain-user" in line)
    for how in ("edit", "delete", "insert"):
        copy = tmp_path / how / "mail.current"
        copy.parent.mkdir()
        shutil.copy(chain, copy.with_name("mail.current.chain"))
        tampered = list(raw)
        if how == "edit":
            tampered[target] = tampered[target].replace(b"failed for user", b"succeeded for user")
        elif how == "delete":
            del tampered[target]
        else:
            tampered.insert(target, raw[target].replace(b"failed for user: chain-user", b"succeeded for user: admin"))
        copy.write_bytes(b"\n".join(tampered))
        assert verify(copy) == 1, how


# --- a hostile next hop: its reply text reaches the delivery lines -------------------------

REPLY_TEXTS = {
    "bare-lf-fake-line": b"2.0.0 Ok\nWed Apr 22 11:44:48 2009 Info: MID 1 RID [0] Response 'forged'",
    "bare-cr": b"2.0.0 Ok\rWed Apr 22 11:44:48 2009 Info: Message finished MID 1 done",
    "nul-controls": b"2.0.0 a\x00b\x01\x1b[31m\x7f",
    "invalid-utf8-c1": b"2.0.0 \xff\xfe\xc2\x85\xe2\x80\xa8 done",
    "quote-and-backslash": b"2.0.0 it's \\n' ok",
    "long": b"2.0.0 " + b"R" * 480,              # a reply line may be 512 bytes (RFC 5321)
}


def test_hostile_destination_replies_add_no_line(tmp_path):
    from tests.reliability.support import RecordingSink

    UserStore(tmp_path / "users.db", create=True)
    sink = RecordingSink().start()
    extra = f"""
[delivery]
initial_retry = 1

[[route]]
domain = "ALL"
hosts = [{{ host = "127.0.0.1", port = {sink.port} }}]
tls = "off"
"""
    g = start_gateway(config_text(tmp_path, extra=extra), tmp_path, delivery=True)

    def one(reply: bytes, code: bytes = b"250") -> list[str]:
        sink.data_reply = code + b" " + reply + b"\r\n"
        before = len(log_lines(g))
        got = sink.received
        codes, _ = run_session(g, [b"EHLO client.test\r\n", b"MAIL FROM:<>\r\n", b"RCPT TO:<x@dest.test>\r\n",
                                   b"DATA\r\n", b"Subject: s\r\n\r\nbody\r\n.\r\n"])
        assert codes[-1] == 250
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            new = log_lines(g)[before:]
            if sink.received > got and any("Message finished" in line for line in new):
                return new
            time.sleep(0.05)
        raise AssertionError(f"no delivery for {reply[:60]!r}: {log_lines(g)[before:][-4:]}")

    try:
        for code in (b"250", b"550"):
            base = one(b"2.0.0 benign reply", code)
            for name, text in REPLY_TEXTS.items():
                new = one(text, code)
                # the delivery connection may be reused or not: compare the message's own lines
                strip = lambda ks: [k for k in ks if not k.startswith(("NewDcid", "DcidClose", "DeliveryStart"))]  # noqa: E731
                assert strip(kinds(new)) == strip(kinds(base)), (code, name, new)
    finally:
        g.stop()
        sink.close()
