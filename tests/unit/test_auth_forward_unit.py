"""Forwarding-profile checks that need no SMTP server (the Postfix tests are in tests/e2e)."""
from __future__ import annotations

import asyncio

import pytest

from mailward.auth.base import Credentials, Verdict
from mailward.auth.forward import ForwardServer, SmtpForwardProfile
from mailward.maillog.events import SmtpAuthForwardUnreachable


def test_server_settings_are_validated():
    with pytest.raises(ValueError, match="tls"):
        ForwardServer("h", tls="maybe")
    with pytest.raises(ValueError, match="mechanisms"):
        ForwardServer("h", mechanisms=("CRAM-MD5",))
    with pytest.raises(ValueError, match="mechanisms"):
        ForwardServer("h", mechanisms=())
    with pytest.raises(ValueError, match="no servers"):
        SmtpForwardProfile("F", [])


def test_refused_before_any_network():
    p = SmtpForwardProfile("F", [ForwardServer("127.0.0.1", 1, tls="off")], local_hostname="gw.test")
    for creds in (Credentials("PLAIN", "alice", ""), Credentials("CRAM-MD5", "alice"),
                  Credentials("PLAIN", "alice", "pw", authzid="root")):
        out = asyncio.run(p.verify(creds, icid=1, client_ip="127.0.0.1"))
        assert out.verdict is Verdict.FAIL and out.events == ()


def test_refused_connection_is_tempfail_with_event():
    p = SmtpForwardProfile("F", [ForwardServer("127.0.0.1", 1, tls="off")], timeout=2.0,
                           local_hostname="gw.test")
    out = asyncio.run(p.verify(Credentials("PLAIN", "alice", "pw"), icid=77, client_ip="127.0.0.1"))
    assert out.verdict is Verdict.TEMPFAIL
    (ev,) = out.events
    assert isinstance(ev, SmtpAuthForwardUnreachable) and (ev.icid, ev.server) == (77, "127.0.0.1:1")


def test_from_config():
    from mailward.config import SmtpForwardProfile as Cfg

    cfg = Cfg.model_validate({"type": "smtp_forward", "servers": [
        {"host": "10.0.0.5", "port": 587, "tls": "starttls", "mechanisms": ["LOGIN"]}], "pool_size": 2})
    p = SmtpForwardProfile.from_config("Fwd", cfg)
    assert p.servers == (ForwardServer("10.0.0.5", 587, "starttls", True, None, ("LOGIN",)),)
    assert p.pool_size == 2 and p.mechanisms == ("PLAIN", "LOGIN")
