"""The private Postfix peer answers with exactly the seed's server texts (stdlib smtplib client)."""
import smtplib

import pytest

from tests.peers.postfix import PostfixInstance, postfix_available, postfix_peer  # noqa: F401

pytestmark = pytest.mark.e2e


def test_wrong_password_gets_cyrus_535(postfix_peer):
    postfix_peer.add_user("carol", "right-one")
    with smtplib.SMTP(postfix_peer.host, postfix_peer.port, timeout=10) as s:
        s.ehlo("gw.test")
        with pytest.raises(smtplib.SMTPAuthenticationError) as exc:
            s.auth("PLAIN", lambda challenge=None: "\0carol\0wrong", initial_response_ok=True)
    assert exc.value.smtp_code == 535
    assert exc.value.smtp_error == b"5.7.8 Error: authentication failed: authentication failure"


def test_relay_without_auth_gets_554_relay_access_denied(postfix_peer):
    with smtplib.SMTP(postfix_peer.host, postfix_peer.port, timeout=10) as s:
        s.ehlo("gw.test")
        with pytest.raises(smtplib.SMTPRecipientsRefused) as exc:
            s.sendmail("a@gw.test", ["postmaster@example.com"], b"Subject: x\r\n\r\nx\r\n")
    assert exc.value.recipients["postmaster@example.com"] == (
        554, b"5.7.1 <postmaster@example.com>: Relay access denied")


def test_authenticated_relay_reaches_the_sink_and_the_log(postfix_peer):
    postfix_peer.add_user("dave", "s3cret")
    before = len(postfix_peer.messages)
    with smtplib.SMTP(postfix_peer.host, postfix_peer.port, timeout=10) as s:
        s.ehlo("gw.test")
        s.login("dave", "s3cret")
        s.sendmail("a@gw.test", ["bob@example.com"], b"Subject: peer\r\n\r\n.leading dot\r\n")
    got = postfix_peer.wait_for_messages(before + 1)[-1]
    assert postfix_peer.messages()[-1] == postfix_peer.messages[-1] == got
    assert got.mail_from == "a@gw.test" and got.rcpts == ("bob@example.com",)
    assert b"\r\n.leading dot\r\n" in got.data and b"Subject: peer" in got.data
    postfix_peer.wait_for_log(r"sasl_method=PLAIN, sasl_username=dave@")
    postfix_peer.wait_for_log(r"to=<bob@example.com>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:\d+.*status=sent")


@pytest.mark.skipif(not postfix_available(), reason="postfix not installed")
def test_stop_leaves_no_process_and_no_files():
    instance = PostfixInstance(mechanisms=("PLAIN", "LOGIN", "CRAM-MD5"))
    instance.start()
    try:
        pids = instance._own_pids()
        assert pids, "a running instance has processes carrying its MAIL_CONFIG"
        with smtplib.SMTP(instance.host, instance.port, timeout=10) as s:
            s.ehlo("gw.test")
            assert "CRAM-MD5" in s.esmtp_features["auth"]
    finally:
        instance.stop()
    assert instance._own_pids() == []
    assert not instance.root.exists()
