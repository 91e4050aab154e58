"""The seed, end to end: the gateway's delivery to a real Postfix that requires SMTP AUTH.

Right password -> ``... SMTP authentication using the profile OutboundAuthentication
succeeded.``, delivery, Postfix's own log shows the message. Wrong password -> the failure
line with Postfix's real 535 text, delivery attempted anyway (``on_auth_failure =
"continue"``, as the appliance), Postfix's real 554 Relay access denied, the exact
``Bounced: ... Bounced by destination server with response: ...`` line and a DSN to the
sender in the spool. With ``on_auth_failure = "defer"`` the message stays queued instead.
"""
from __future__ import annotations

import asyncio
import re

import pytest

from mailward.auth.outgoing import OutgoingCredentials
from mailward.delivery.routes import Route, RouteHost
from mailward.delivery.trouble import RetryPolicy
from mailward.maillog import events as ev
from tests.integration.test_delivery_manager import Harness
from tests.peers.postfix import postfix_peer  # noqa: F401  (fixture)

pytestmark = pytest.mark.e2e

PROFILE = "OutboundAuthentication"
SLOW = RetryPolicy(initial=300, max_interval=300)


def creds(tmp_path, password: str) -> dict:
    secret = tmp_path / "outbound.secret"
    secret.write_text(password + "\n")
    secret.chmod(0o600)
    return {PROFILE: OutgoingCredentials(PROFILE, "ironport", password_file=secret)}


def routes(peer, on_auth_failure="continue"):
    # The Postfix peer offers no STARTTLS: the route says so explicitly (tls = "off"), which
    # is also what allows AUTH PLAIN in clear, as on the seed's appliance.
    return [Route("example.com", (RouteHost(peer.host, peer.port),), auth_profile=PROFILE, tls="off",
                  on_auth_failure=on_auth_failure),
            # Bounces go back to the sender's domain: a dead port keeps the DSN in the spool.
            Route("sender.test", (RouteHost("127.0.0.1", 9),), tls="off")]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_right_password_delivers_and_logs_the_seed_success_lines(tmp_path, postfix_peer):
    postfix_peer.add_user("ironport", "correct horse")
    before = len(postfix_peer.messages)

    async def go():
        h = await Harness(tmp_path, routes(postfix_peer), retry=SLOW,
                          credentials=creds(tmp_path, "correct horse"), idle_timeout=0.2).start()
        try:
            mid = await h.submit(["postmaster@example.com"])
            await h.until(lambda: h.of(ev.DcidClose))
            return h, mid
        finally:
            await h.stop()

    h, mid = run(go())
    dcid = h.of(ev.NewDcid)[0].dcid
    lines = h.text()
    port = postfix_peer.port
    assert lines == [
        f"New SMTP DCID {dcid} interface 127.0.0.1 address 127.0.0.1 port {port}",
        f"DCID: {dcid} IP: 127.0.0.1 SMTP authentication using the profile {PROFILE} succeeded.",
        f"Delivery start DCID {dcid} MID {mid} to RID [0]",
        f"Message done DCID {dcid} MID {mid} to RID [0]",
        lines[4],
        f"Message finished MID {mid} done",
        f"DCID {dcid} close",
    ]
    assert re.fullmatch(rf"MID {mid} RID \[0\] Response '2\.0\.0 Ok: queued as [0-9A-F]+'", lines[4])
    queue_id = lines[4].rsplit(" ", 1)[1].rstrip("'")
    # Postfix's own log: our AUTH, the message arriving, and relayed on to its next hop.
    postfix_peer.wait_for_log(rf"{queue_id}: client=.*sasl_method=PLAIN, sasl_username=ironport@")
    postfix_peer.wait_for_log(rf"{queue_id}: to=<postmaster@example.com>.*status=sent")
    got = postfix_peer.wait_for_messages(before + 1)[-1]
    assert got.rcpts == ("postmaster@example.com",) and got.mail_from == "a@sender.test"
    assert b"\r\n.dot line\r\n" in got.data


def test_wrong_password_logs_535_then_bounces_on_the_real_554(tmp_path, postfix_peer):
    postfix_peer.add_user("ironport", "correct horse")

    async def go():
        h = await Harness(tmp_path, routes(postfix_peer), retry=SLOW,
                          credentials=creds(tmp_path, "wrong horse"), idle_timeout=0.2).start()
        try:
            mid = await h.submit(["postmaster@example.com"])
            await h.until(lambda: h.of(ev.MessageFinished) and h.of(ev.DcidClose))
            dsn_mid = h.of(ev.GeneratedForBounce)[0].mid
            dsn = h.spool.get(dsn_mid)
            assert dsn is not None, "the DSN waits in the spool for the sender's domain"
            body = h.spool.read_body(dsn_mid)
            return h, mid, dsn, body
        finally:
            await h.stop()

    h, mid, dsn, body = run(go())
    dcid = h.of(ev.NewDcid)[0].dcid
    lines = h.text()
    assert lines[:5] == [
        f"New SMTP DCID {dcid} interface 127.0.0.1 address 127.0.0.1 port {postfix_peer.port}",
        f"DCID: {dcid} IP: 127.0.0.1 SMTP authentication using the profile {PROFILE} failed: "
        "('535', ['5.7.8 Error: authentication failed: authentication failure'])",
        f"Delivery start DCID {dcid} MID {mid} to RID [0]",
        f"Bounced: DCID {dcid} MID {mid} to RID 0 - Bounced by destination server with response: "
        "5.1.0 - Unknown address error ('554', ['5.7.1 <postmaster@example.com>: Relay access denied'])",
        f"MID {dsn.mid} was generated for bounce of MID {mid}",
    ]
    assert f"Message finished MID {mid} done" in lines
    assert f"DCID {dcid} close" in lines
    # Postfix saw exactly one failed AUTH (one mechanism per attempt) and refused the relay.
    postfix_peer.wait_for_log(r"NOQUEUE: reject: RCPT from .*: 554 5\.7\.1 <postmaster@example.com>: "
                              r"Relay access denied")
    # The DSN: null sender, to the original sender, RFC 3464 report naming Postfix's reply.
    assert dsn.envelope.sender == "" and dsn.envelope.recipients == ("a@sender.test",)
    assert dsn.envelope.origin_mid == mid
    assert b"Content-Type: multipart/report; report-type=delivery-status" in body
    assert b"Diagnostic-Code: smtp; 554 5.7.1 <postmaster@example.com>: Relay access denied" in body
    assert b"From: Mail Delivery System <MAILER-DAEMON@gw.test>" in body


def test_wrong_password_with_on_auth_failure_defer_keeps_the_mail_queued(tmp_path, postfix_peer):
    postfix_peer.add_user("ironport", "correct horse")

    async def go():
        h = await Harness(tmp_path, routes(postfix_peer, on_auth_failure="defer"), retry=SLOW,
                          credentials=creds(tmp_path, "stale password"), idle_timeout=0.2).start()
        try:
            mid = await h.submit(["postmaster@example.com"])
            await h.until(lambda: h.of(ev.PendingTill))
            msg = h.spool.get(mid)
            assert msg is not None and msg.pending_rids() == [0] and msg.attempts == 1
            return h, mid
        finally:
            await h.stop()

    h, mid = run(go())
    dcid = h.of(ev.NewDcid)[0].dcid
    lines = h.text()
    assert lines[1].endswith("failed: ('535', ['5.7.8 Error: authentication failed: authentication failure'])")
    assert f"DCID {dcid} close" in lines
    assert (f"Delayed: DCID {dcid} MID {mid} to RID 0 - 4.7.0 - Authentication failed "
            "('535', ['5.7.8 Error: authentication failed: authentication failure'])") in lines
    assert not h.of(ev.DeliveryStart) and not h.of(ev.Bounced)
