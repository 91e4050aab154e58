"""The whole path in one test: a client authenticates on our listener and sends; the gateway
queues the message and delivers it through an SMTP route with outgoing AUTH to a real
Postfix; the mail_logs file holds the full ICID -> MID -> DCID story, and the log toolkit
reads that story back and joins it.
"""
from __future__ import annotations

import json
import re
import smtplib
import time

import pytest
from click.testing import CliRunner

from mailward.auth.users import UserStore
from mailward.cli import main
from tests.peers.postfix import postfix_peer  # noqa: F401  (fixture)
from tests.support.gateway import config_text, start_gateway

pytestmark = pytest.mark.e2e


def wait_for(predicate, timeout=20.0, step=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("condition not met in time")


def test_inbound_auth_queue_outbound_auth_postfix_and_toolkit(tmp_path, postfix_peer):
    postfix_peer.add_user("relayuser", "relay-pass")
    UserStore(tmp_path / "users.db", create=True).add("ironport", "s3cret-pass")
    secret = tmp_path / "outbound.secret"
    secret.write_text("relay-pass\n")
    secret.chmod(0o600)
    extra = f"""
[outgoing_auth.OutboundAuthentication]
username = "relayuser"
password_file = "{secret}"

[[route]]
domain = "example.com"
hosts = [{{ host = "{postfix_peer.host}", port = {postfix_peer.port} }}]
auth_profile = "OutboundAuthentication"
tls = "off"
"""
    hat = '\n[[listener.hat]]\ngroup = "None"\nmatch = ["ALL"]\npolicy = "ACCEPT"\n'
    g = start_gateway(config_text(tmp_path, hat, extra), tmp_path, delivery=True)
    try:
        before = len(postfix_peer.messages())
        with smtplib.SMTP("127.0.0.1", g.port) as s:
            s.ehlo("client.test")
            s.login("ironport", "s3cret-pass")
            s.sendmail("ironport@example.test", ["postmaster@example.com"],
                       "From: ironport@example.test\r\nSubject: full path\r\nMessage-ID: <fp1@example.test>\r\n"
                       "\r\nhello through two AUTHs\r\n")
        msgs = postfix_peer.wait_for_messages(before + 1, timeout=30)
        assert b"hello through two AUTHs" in msgs[-1].data
        assert msgs[-1].rcpts == ("postmaster@example.com",)
        postfix_peer.wait_for_log(r"sasl_method=PLAIN, sasl_username=relayuser")
        wait_for(lambda: any(re.search(r"Message finished MID \d+ done", b) for b in g.log_bodies()))
    finally:
        g.stop()
    bodies = g.log_bodies()
    text = "\n".join(bodies)
    icid = re.search(r"SMTP Auth: \(ICID (\d+)\) succeeded for user: ironport using AUTH mechanism: PLAIN "
                     r"with profile: IncomingAuthentication", text).group(1)
    mid = re.search(rf"Start MID (\d+) ICID {icid}", text).group(1)
    dcid = re.search(rf"Delivery start DCID (\d+) MID {mid} to RID \[0\]", text).group(1)
    port = postfix_peer.port
    story = [
        rf"Info: New SMTP ICID {icid} interface IncomingMail \(127\.0\.0\.1\) address 127\.0\.0\.1 reverse dns host "
        r"unknown verified no",
        rf"Info: MID {mid} ICID {icid} From: <ironport@example\.test>",
        rf"Info: MID {mid} ICID {icid} RID 0 To: <postmaster@example\.com>",
        rf"Info: MID {mid} queued for delivery",
        rf"Info: New SMTP DCID {dcid} interface 127\.0\.0\.1 address 127\.0\.0\.1 port {port}",
        rf"Info: DCID: {dcid} IP: 127\.0\.0\.1 SMTP authentication using the profile OutboundAuthentication "
        r"succeeded\.",
        rf"Info: Delivery start DCID {dcid} MID {mid} to RID \[0\]",
        rf"Info: Message done DCID {dcid} MID {mid} to RID \[0\]",
        rf"Info: MID {mid} RID \[0\] Response '.*queued as .*'",
        rf"Info: Message finished MID {mid} done",
        rf"Info: DCID {dcid} close",
    ]
    positions = []
    for pattern in story:
        idx = [i for i, b in enumerate(bodies) if re.fullmatch(pattern, b)]
        assert idx, pattern
        positions.append(idx[0])
    assert positions == sorted(positions), "the story is out of order"

    # the toolkit reads our own log back and joins ICID -> MID -> DCID -> RID
    result = CliRunner().invoke(main, ["logs", "track", "--mid", mid, "--format", "json", str(g.log_path)])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    story_doc = doc[0] if isinstance(doc, list) else doc
    flat = json.dumps(story_doc)
    assert "ironport" in flat                       # the authenticated user, from the ICID
    assert "postmaster@example.com" in flat
    assert "OutboundAuthentication" in flat         # the outbound AUTH profile, from the DCID
    assert "delivered" in flat
