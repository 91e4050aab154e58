"""Against a real Postfix offering STARTTLS: a route with ``tls = "preferred"`` upgrades, logs
``DCID d TLS success protocol ... cipher ...`` with what Postfix negotiated, and only then
sends AUTH PLAIN; Postfix's own log shows the TLS session and the authenticated relay."""
from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

import pytest

from mailward.delivery.routes import Route, RouteHost
from mailward.delivery.trouble import RetryPolicy
from mailward.maillog import events as ev
from tests.integration.test_delivery_manager import Harness
from tests.integration.test_delivery_testserver import make_cert
from tests.peers.postfix import PostfixInstance, postfix_available

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not postfix_available(), reason="postfix not installed")]


class Creds:
    name, username = "OutboundAuthentication", "tlsuser"

    def password(self):
        return "tls-secret"


@pytest.fixture(scope="module")
def tls_postfix():
    root = Path(tempfile.mkdtemp(prefix="mwpft-"))
    root.chmod(0o755)
    cert, key = make_cert(root, "mx.peer.test")
    inst = PostfixInstance(root / "pf", tls_cert=(cert, key))
    try:
        inst.start()
        inst.add_user("tlsuser", "tls-secret")
        yield inst
    finally:
        inst.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_starttls_then_auth_plain_inside_then_delivery(tmp_path, tls_postfix):
    route = Route("example.com", (RouteHost(tls_postfix.host, tls_postfix.port),),
                  auth_profile="OutboundAuthentication", tls="preferred")

    async def go():
        h = await Harness(tmp_path, [route], retry=RetryPolicy(initial=300),
                          credentials={"OutboundAuthentication": Creds()}, idle_timeout=0.2).start()
        try:
            mid = await h.submit(["someone@example.com"])
            await h.until(lambda: h.of(ev.DcidClose))
            return h, mid
        finally:
            await h.stop()

    h, mid = asyncio.run(asyncio.wait_for(go(), 60))
    tls = h.of(ev.DcidTlsSuccess)[0]
    assert tls.protocol in ("TLSv1.2", "TLSv1.3") and tls.cipher
    kinds = [type(e).__name__ for e in h.sink.events]
    assert kinds[:4] == ["NewDcid", "DcidTlsSuccess", "OutboundAuthResult", "DeliveryStart"]
    assert h.of(ev.OutboundAuthResult)[0].succeeded
    assert h.of(ev.MessageFinished) == [ev.MessageFinished(mid, "done")]
    tls_postfix.wait_for_log(r"TLS connection established from .*127\.0\.0\.1")
    tls_postfix.wait_for_log(r"sasl_method=PLAIN, sasl_username=tlsuser@")
    tls_postfix.wait_for_log(r"to=<someone@example.com>.*status=sent")
