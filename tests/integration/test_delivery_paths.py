"""Delivery paths over loopback: MX fallback with an injected resolver, DNS failures, TLS
policies, outgoing AUTH choices, connection errors, pipelining, and the control channel."""
from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
import pytest

from mailward.delivery.control import ControlError, ControlServer, call
from mailward.delivery.routes import Route, RouteHost
from mailward.delivery.trouble import RetryPolicy
from mailward.maillog import events as ev
from mailward.net.dns import StaticResolver
from tests.integration.test_delivery_manager import Harness, harness, route_to, run
from tests.integration.test_delivery_testserver import ScriptedServer, make_cert

SLOW = RetryPolicy(initial=300, max_interval=300)


class Creds:
    def __init__(self, name, username, secret):
        self.name, self.username, self._secret = name, username, secret

    def password(self):
        return self._secret


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- MX and DNS ---------------------------------------------------------------------------------

def test_mx_fallback_to_the_next_preference_after_a_connection_error(tmp_path):
    async def go():
        async with ScriptedServer() as srv:
            # mx1 (preferred) resolves to a loopback address nobody listens on; mx2 to the server.
            resolver = StaticResolver(mxs={"dest.test": [(20, "mx2.dest.test"), (10, "mx1.dest.test")]},
                                      hosts={"mx1.dest.test": ["127.0.0.2"], "mx2.dest.test": ["127.0.0.1"]})
            route = Route("dest.test", tls="off", port=srv.port)      # USEDNS, MX hosts on srv.port
            async with harness(tmp_path, [route], resolver=resolver, retry=SLOW) as h:
                mid = await h.submit(["b@dest.test"])
                await h.until(lambda: h.spool.get(mid) is None)
                err = h.of(ev.DeliveryConnectionError)
                assert err and err[0].address == "127.0.0.2" and err[0].domain == "dest.test"
                assert err[0].reason == "network error" and err[0].port == srv.port
                new = h.of(ev.NewDcid)[0]
                assert new.address == "127.0.0.1" and new.dcid != err[0].dcid
                assert len(srv.messages) == 1
    run(go())


def test_implicit_mx_uses_the_domains_own_address(tmp_path):
    async def go():
        async with ScriptedServer() as srv:
            resolver = StaticResolver(hosts={"plain.test": ["127.0.0.1"]})
            async with harness(tmp_path, [Route("plain.test", tls="off", port=srv.port)],
                               resolver=resolver, retry=SLOW) as h:
                mid = await h.submit(["b@plain.test"])
                await h.until(lambda: h.spool.get(mid) is None)
                assert srv.messages[0].rcpts == ("b@plain.test",)
    run(go())


def test_nxdomain_bounces_with_dcid_0_and_a_dns_error_line(tmp_path):
    async def go():
        async with harness(tmp_path, [Route("ALL", tls="off")], resolver=StaticResolver(), retry=SLOW) as h:
            mid = await h.submit(["b@nowhere.test"], sender="")
            await h.until(lambda: h.spool.get(mid) is None)
            lines = h.text()
            assert lines[0] == "DNS Error nowhere.test MX - NXDomain"
            assert lines[1] == (f"Bounced: DCID 0 MID {mid} to RID 0 - 5.1.2 - Bad destination host "
                                "('000', ['DNS Hard Error looking up nowhere.test (MX):  NXDomain'])")
            assert lines[2] == f"Message finished MID {mid} done"
    run(go())


def test_dns_temporary_failure_defers(tmp_path):
    async def go():
        resolver = StaticResolver(temporary_failures={"flaky.test"})
        async with harness(tmp_path, [Route("ALL", tls="off")], resolver=resolver, retry=SLOW) as h:
            mid = await h.submit(["b@flaky.test"])
            await h.until(lambda: h.of(ev.PendingTill))
            assert h.of(ev.DnsError)[0].kind == "Temporary Failure"
            d = h.of(ev.Delayed)[0]
            assert (d.dcid, d.status) == (0, "4.4.3")
            assert h.spool.get(mid).attempts == 1
    run(go())


def test_null_mx_bounces(tmp_path):
    async def go():
        resolver = StaticResolver(mxs={"nomail.test": [(0, "")]})
        async with harness(tmp_path, [Route("ALL", tls="off")], resolver=resolver, retry=SLOW) as h:
            mid = await h.submit(["b@nomail.test"], sender="")
            await h.until(lambda: h.spool.get(mid) is None)
            assert h.of(ev.Bounced)[0].status == "5.1.2"
    run(go())


# --- connection-level failures -------------------------------------------------------------------

def test_all_hosts_refusing_defers_every_message_of_the_destination(tmp_path):
    async def go():
        dead = free_port()
        route = Route("ALL", (RouteHost("127.0.0.1", dead),), tls="off")
        async with harness(tmp_path, [route], retry=SLOW, concurrency_per_destination=1) as h:
            mids = [await h.submit([f"u{i}@dest.test"]) for i in range(2)]
            await h.until(lambda: len(h.of(ev.PendingTill)) == 2)
            lines = h.text()
            assert lines[0].startswith(f"Connection Error: DCID {h.of(ev.DeliveryConnectionError)[0].dcid} "
                                       f"domain: dest.test IP: 127.0.0.1 port: {dead} details: ")
            assert lines[0].endswith("interface: 127.0.0.1 reason: network error")
            assert {d.mid for d in h.of(ev.Delayed)} == set(mids)
            assert {d.status for d in h.of(ev.Delayed)} == {"4.4.0"}
    run(go())


def test_5xx_greeting_from_the_only_host_bounces(tmp_path):
    async def go():
        async with ScriptedServer(banner="554 5.7.1 go away") as srv, \
                harness(tmp_path, [route_to(srv, tls="off")], retry=SLOW) as h:
            mid = await h.submit(["b@dest.test"], sender="")
            await h.until(lambda: h.spool.get(mid) is None)
            err = h.of(ev.DeliveryConnectionError)[0]
            assert err.reason == "unexpected SMTP response" and err.details == "554-'5.7.1 go away'"
            b = h.of(ev.Bounced)[0]
            assert b.response == ev.SmtpResponse("554", ("5.7.1 go away",)) and b.status.startswith("5.")
    run(go())


# --- TLS ------------------------------------------------------------------------------------------

def test_tls_required_but_not_offered_defers_without_sending_mail(tmp_path):
    async def go():
        async with ScriptedServer() as srv, harness(tmp_path, [route_to(srv, tls="required")], retry=SLOW) as h:
            mid = await h.submit(["b@dest.test"])
            await h.until(lambda: h.of(ev.PendingTill))
            dcid = h.of(ev.NewDcid)[0].dcid
            lines = h.text()
            assert f"DCID {dcid} IP 127.0.0.1 TLS was required but could not be successfully negotiated" in lines
            d = h.of(ev.Delayed)[0]
            assert (d.mid, d.status, d.description) == (mid, "4.7.0", "TLS required but could not be negotiated")
            assert not any(c.startswith("MAIL") for c in srv.all_commands())
    run(go())


def test_preferred_tls_upgrades_and_authenticates_with_plain_inside(tmp_path):
    cert, key = make_cert(tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)

    async def go():
        async with ScriptedServer(tls=ctx, auth=("PLAIN", "LOGIN"), users={"u": "pw"}) as srv, \
                harness(tmp_path, [route_to(srv, auth_profile="Out")], retry=SLOW,
                        credentials={"Out": Creds("Out", "u", "pw")}) as h:
            mid = await h.submit(["b@dest.test"])
            await h.until(lambda: h.spool.get(mid) is None)
            tls = h.of(ev.DcidTlsSuccess)[0]
            assert tls.protocol and tls.protocol.startswith("TLS") and tls.cipher
            assert h.of(ev.OutboundAuthResult)[0].succeeded
            assert srv.conns[0].tls and srv.conns[0].user == "u"
            assert "AUTH PLAIN ***" in srv.conns[0].commands
            text = h.text()
            assert text[1] == f"DCID {tls.dcid} TLS success protocol {tls.protocol} cipher {tls.cipher}"
    run(go())


def test_required_verify_rejects_an_untrusted_certificate_and_accepts_a_trusted_one(tmp_path):
    cert, key = make_cert(tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)

    async def go():
        async with ScriptedServer(tls=ctx) as srv:
            async with harness(tmp_path / "a", [route_to(srv, tls="required-verify")], retry=SLOW) as h:
                await h.submit(["b@dest.test"])
                await h.until(lambda: h.of(ev.PendingTill))
                assert h.of(ev.DcidTlsFailed) and h.of(ev.DcidTlsRequired)
                assert srv.messages == []
            async with harness(tmp_path / "b", [route_to(srv, tls="required-verify")], retry=SLOW,
                               tls_cafile=str(cert)) as h:
                mid = await h.submit(["b@dest.test"])
                await h.until(lambda: h.spool.get(mid) is None)
                assert h.of(ev.DcidTlsSuccess) and len(srv.messages) == 1
    run(go())


def test_starttls_response_injection_is_refused(tmp_path):
    cert, key = make_cert(tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)

    def script(verb, arg, conn):
        # A man in the middle appends a reply the client would read "inside" TLS.
        return "220 2.0.0 Ready to start TLS\r\n250-injected\r\n250 AUTH PLAIN" if verb == "STARTTLS" else None

    async def go():
        async with ScriptedServer(tls=ctx, script=script) as srv, \
                harness(tmp_path, [route_to(srv, tls="required")], retry=SLOW) as h:
            await h.submit(["b@dest.test"])
            await h.until(lambda: h.of(ev.PendingTill))
            assert h.of(ev.DcidTlsFailed)[0].reason == "plaintext data after the STARTTLS reply"
            assert not h.of(ev.DcidTlsSuccess) and srv.messages == []
    run(go())


# --- outgoing AUTH -----------------------------------------------------------------------------

def test_without_tls_a_password_is_never_sent_in_clear_but_cram_md5_is_used(tmp_path):
    async def go():
        async with ScriptedServer(auth=("PLAIN", "LOGIN", "CRAM-MD5"), users={"u": "pw"}) as srv, \
                harness(tmp_path, [route_to(srv, auth_profile="Out")], retry=SLOW,
                        credentials={"Out": Creds("Out", "u", "pw")}) as h:
            mid = await h.submit(["b@dest.test"])
            await h.until(lambda: h.spool.get(mid) is None)
            assert "(CRAM-MD5 u ok)" in srv.conns[0].commands
            assert not any(c.startswith(("AUTH PLAIN", "AUTH LOGIN")) for c in srv.all_commands())
    run(go())


def test_plain_only_server_without_tls_is_not_given_the_password(tmp_path):
    async def go():
        async with ScriptedServer(auth=("PLAIN", "LOGIN"), users={"u": "pw"}) as srv, \
                harness(tmp_path, [route_to(srv, auth_profile="Out")], retry=SLOW,
                        credentials={"Out": Creds("Out", "u", "pw")}) as h:
            await h.submit(["b@dest.test"])
            await h.until(lambda: h.of(ev.PendingTill))
            assert not any(c.startswith("AUTH") for c in srv.all_commands())
            assert h.of(ev.Delayed)[0].status.startswith("4.")
    run(go())


def test_one_wrong_password_is_one_failure_at_the_server(tmp_path):
    async def go():
        async with ScriptedServer(auth=("CRAM-MD5", "PLAIN", "LOGIN"), users={"u": "pw"}) as srv, \
                harness(tmp_path, [route_to(srv, auth_profile="Out", tls="off")], retry=SLOW,
                        credentials={"Out": Creds("Out", "u", "nope")}) as h:
            mid = await h.submit(["b@dest.test"])
            await h.until(lambda: h.spool.get(mid) is None)     # continue: the server accepts anyway
            auths = [c for c in srv.all_commands() if c.startswith("AUTH")]
            assert len(auths) == 1
            r = h.of(ev.OutboundAuthResult)[0]
            assert not r.succeeded and r.response.code == "535"
    run(go())


# --- pipelining ---------------------------------------------------------------------------------

def test_mail_and_rcpts_are_pipelined_when_offered_and_not_otherwise(tmp_path):
    async def go():
        for pipelining in (True, False):
            async with ScriptedServer(pipelining=pipelining) as srv, \
                    harness(tmp_path / str(pipelining), [route_to(srv, tls="off")], retry=SLOW) as h:
                mid = await h.submit(["x@dest.test", "y@dest.test"])
                await h.until(lambda: h.spool.get(mid) is None)
                assert srv.messages[0].rcpts == ("x@dest.test", "y@dest.test")
                assert srv.conns[0].pipelined_batches == (1 if pipelining else 0)
    run(go())


# --- control channel and CLI -------------------------------------------------------------------

def test_control_socket_flush_delete_bounce_through_the_cli(tmp_path):
    sock = tmp_path / "c.sock"

    async def cli(*args):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "from mailward.delivery.cli import " + args[0] + " as c; c()",
            *args[1:], "--socket", str(sock), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await proc.communicate()
        return proc.returncode, out.decode() + err.decode()

    answers = {"n": 0}

    def script(verb, arg, conn):
        if verb == "RCPT" and answers["n"] < 3:
            answers["n"] += 1
            return "451 4.3.0 later"
        return None

    async def go():
        async with ScriptedServer(script=script) as srv:
            h = await Harness(tmp_path, [route_to(srv, tls="off")], retry=SLOW).start()
            control = ControlServer(sock, h.manager)
            await control.start()
            try:
                m1 = await h.submit(["one@dest.test"])
                m2 = await h.submit(["two@dest.test"])
                m3 = await h.submit(["three@dest.test"])
                await h.until(lambda: len(h.of(ev.PendingTill)) == 3)
                code, out = await cli("delete", str(m1))
                assert code == 0 and f"MID {m1} deleted" in out
                assert h.spool.get(m1) is None
                assert ev.MessageFinished(m1, "aborted") in h.sink.events
                code, out = await cli("bounce", str(m2))
                assert code == 0 and "DSN queued as MID" in out
                assert h.spool.get(m2) is None
                b = [e for e in h.of(ev.Bounced) if e.mid == m2][0]
                assert (b.dcid, b.status) == (0, "5.0.0")
                code, out = await cli("flush")
                assert code == 0 and "flush requested" in out
                await h.until(lambda: h.spool.get(m3) is None)
                assert [m.rcpts for m in srv.messages if m.mail_from] == [("three@dest.test",)]
                code, out = await cli("delete", "999999")
                assert code == 2 and "MID 999999 is not queued" in out
                with pytest.raises(ControlError, match="unknown op 'nonsense'"):
                    await asyncio.to_thread(call, sock, {"op": "nonsense"}, 5)
            finally:
                await control.stop()
                await h.stop()
        assert not sock.exists()
    run(go())


# --- failures inside a transaction ---------------------------------------------------------------

def test_connection_lost_after_data_defers_and_the_retry_delivers(tmp_path):
    from tests.integration.test_delivery_testserver import DROP

    state = {"drops": 1}

    def script(verb, arg, conn):
        if verb == "DATA" and state["drops"]:
            state["drops"] -= 1
            return DROP
        return None

    async def go():
        quick = RetryPolicy(initial=0.1, max_interval=0.1)
        async with ScriptedServer(script=script) as srv, \
                harness(tmp_path, [route_to(srv, tls="off")], retry=quick) as h:
            mid = await h.submit(["b@dest.test"])
            await h.until(lambda: h.spool.get(mid) is None)
            d = h.of(ev.Delayed)[0]
            assert (d.status, d.response) == ("4.4.0", ev.SmtpResponse("000", ("EOF",)))
            assert len(srv.messages) == 1 and len(h.of(ev.NewDcid)) == 2
    run(go())


def test_a_silent_server_times_out_and_defers(tmp_path):
    async def go():
        async with ScriptedServer(banner=None) as srv, \
                harness(tmp_path, [route_to(srv, tls="off")], retry=SLOW, command_timeout=0.3) as h:
            mid = await h.submit(["b@dest.test"])
            await h.until(lambda: h.of(ev.PendingTill))
            err = h.of(ev.DeliveryConnectionError)[0]
            assert (err.details, err.reason) == ("timeout", "network error")
            assert h.spool.get(mid).attempts == 1
    run(go())


def test_no_answer_to_the_final_dot_times_out_and_defers(tmp_path):
    # The reply timer tears the connection down; the wait ends as a timeout, not a hang.
    async def go():
        async with ScriptedServer() as srv, \
                harness(tmp_path, [route_to(srv, tls="off")], retry=SLOW, command_timeout=0.3) as h:
            srv.delay = 5.0
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            mid = await h.submit(["b@dest.test"])
            await h.until(lambda: h.of(ev.Delayed))
            assert loop.time() - t0 < 3.0
            d = h.of(ev.Delayed)[0]
            assert d.response == ev.SmtpResponse("000", ("timeout",)) and d.status.startswith("4.")
            assert h.spool.get(mid).attempts == 1
            await h.until(lambda: h.of(ev.DcidClose))
    run(go())


def test_5xx_after_data_bounces_every_accepted_recipient(tmp_path):
    def script(verb, arg, conn):
        return "554 5.6.0 Message content rejected" if verb == "DATA" else None

    async def go():
        async with ScriptedServer(script=script) as srv, \
                harness(tmp_path, [route_to(srv, tls="off")], retry=SLOW) as h:
            mid = await h.submit(["x@dest.test", "y@dest.test"], sender="")
            await h.until(lambda: h.spool.get(mid) is None)
            bounced = h.of(ev.Bounced)
            assert [(b.rid, b.status, b.by_destination) for b in bounced] == [(0, "5.3.0", True), (1, "5.3.0", True)]
            assert bounced[0].response == ev.SmtpResponse("554", ("5.6.0 Message content rejected",))
    run(go())


def test_4xx_to_mail_defers_the_whole_message(tmp_path):
    async def go():
        async with ScriptedServer(script=lambda v, a, c: "452 4.3.1 Insufficient system storage"
                                  if v == "MAIL" else None) as srv, \
                harness(tmp_path, [route_to(srv, tls="off")], retry=SLOW) as h:
            mid = await h.submit(["x@dest.test", "y@dest.test"])
            await h.until(lambda: len(h.of(ev.PendingTill)) == 2)
            assert [(d.rid, d.status) for d in h.of(ev.Delayed)] == [(0, "4.1.0"), (1, "4.1.0")]
            msg = h.spool.get(mid)
            assert msg.pending_rids() == [0, 1] and msg.attempts == 1
    run(go())


# --- wiring from the config ---------------------------------------------------------------------

def test_build_manager_from_the_config_schema(tmp_path):
    from mailward.config import parse_config
    from mailward.delivery.manager import build_manager
    from mailward.maillog.sink import ListSink
    from mailward.queue.counters import IdCounter
    from mailward.queue.spool import Spool

    async def go():
        async with ScriptedServer() as srv:
            cfg = parse_config(f"""
[gateway]
hostname = "gw.cfg.test"
spool_dir = "{tmp_path / 's'}"

[delivery]
initial_retry = 7
max_retries = 3
concurrency_per_destination = 4

[[route]]
domain = "dest.test"
hosts = [{{ host = "127.0.0.1", port = {srv.port} }}]
tls = "off"
""", "t.toml", tmp_path)
            spool = Spool(cfg.gateway.spool_dir, fsync=False)
            await spool.open()
            sink = ListSink()
            m = build_manager(cfg, spool=spool, sink=sink, dcids=IdCounter(tmp_path / "d"),
                              mids=IdCounter(tmp_path / "m"), resolver=StaticResolver())
            assert m.settings.retry.initial == 7 and m.settings.retry.max_retries == 3
            assert m.settings.concurrency_per_destination == 4 and m.settings.hostname == "gw.cfg.test"
            await m.start()
            try:
                assert (cfg.gateway.spool_dir / "control.sock").exists()
                answer = await asyncio.to_thread(call, cfg.gateway.spool_dir / "control.sock", {"op": "flush"})
                assert answer == {"ok": True, "queued": 0}
                from click.testing import CliRunner

                from mailward.delivery.cli import flush

                res = await asyncio.to_thread(CliRunner().invoke, flush, ["--spool", str(cfg.gateway.spool_dir)])
                assert res.exit_code == 0 and "flush requested: 0 message(s)" in res.output
            finally:
                await m.stop()
                await spool.close()
            assert not (cfg.gateway.spool_dir / "control.sock").exists()
    run(go())


def test_control_characters_in_an_address_never_reach_the_wire(tmp_path):
    async def go():
        async with ScriptedServer() as srv, harness(tmp_path, [route_to(srv, tls="off")], retry=SLOW) as h:
            mid = await h.submit(["evil@dest.test>\r\nRCPT TO:<injected@dest.test", "ok@dest.test"], sender="")
            await h.until(lambda: h.spool.get(mid) is None)
            assert [m.rcpts for m in srv.messages] == [("ok@dest.test",)]
            assert not any("injected" in c for c in srv.all_commands())
            b = h.of(ev.Bounced)[0]
            assert (b.rid, b.status, b.response) == (0, "5.1.3", None)
    run(go())
