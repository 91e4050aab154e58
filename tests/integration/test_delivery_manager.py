"""The queue manager over real loopback sockets: a spool on disk, ScriptedServer peers,
an injected resolver (never real DNS), events checked in a ListSink and as exact text."""
from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from mailward.delivery.manager import ManagerSettings, QueueManager
from mailward.delivery.routes import Route, RouteHost, RouteTable
from mailward.delivery.trouble import RetryPolicy
from mailward.maillog import events as ev
from mailward.maillog.sink import ListSink
from mailward.queue.counters import IdCounter
from mailward.queue.model import Envelope
from mailward.queue.spool import Spool

from tests.integration.test_delivery_testserver import DROP, ScriptedServer

FAST = RetryPolicy(initial=0.2, max_interval=0.4, max_lifetime=60, max_retries=100)
BODY = b"From: a@sender.test\r\nTo: b@dest.test\r\nSubject: hi\r\nMessage-ID: <m1@sender.test>\r\n\r\nhello\r\n.dot line\r\n"


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


class Harness:
    def __init__(self, root: Path, routes, *, retry=FAST, resolver=None, credentials=None, **settings):
        self.root = root
        self.routes = RouteTable(routes)
        self.sink = ListSink()
        self.retry = retry
        self.resolver = resolver
        self.credentials = credentials
        self.settings = settings
        self.spool: Spool | None = None
        self.manager: QueueManager | None = None

    async def start(self) -> "Harness":
        self.spool = Spool(self.root / "spool", fsync=False)
        await self.spool.open()
        self.mids = IdCounter(self.root / "mid.counter", start=100)
        self.dcids = IdCounter(self.root / "dcid.counter", start=5000)
        opts = dict(hostname="gw.test", retry=self.retry, idle_timeout=0.3, connect_timeout=2.0,
                    command_timeout=5.0)
        opts.update(self.settings)
        self.manager = QueueManager(self.spool, self.sink, self.routes, dcids=self.dcids, mids=self.mids,
                                    settings=ManagerSettings(**opts), resolver=self.resolver,
                                    credentials=self.credentials)
        await self.manager.start()
        return self

    async def stop(self) -> None:
        await self.manager.stop()
        await self.spool.close()

    async def submit(self, recipients, sender="a@sender.test", body=BODY) -> int:
        mid = self.mids.next()
        w = self.spool.writer()
        w.write(body)
        await w.commit(Envelope(mid=mid, icid=1, sender=sender, recipients=tuple(recipients),
                                received_at=time.time()))
        return mid

    async def idle(self, timeout=10.0) -> None:
        await self.manager.wait_idle(timeout)

    async def until(self, predicate, timeout=10.0) -> None:
        """Poll (bounded) until ``predicate()`` holds, then until the manager is idle."""
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, "condition not reached in time"
            await asyncio.sleep(0.02)
        await self.idle()

    def of(self, cls):
        return self.sink.of_type(cls)

    def text(self) -> list[str]:
        from mailward.maillog.grammar import format_body

        return [format_body(e) for e in self.sink.events]


@asynccontextmanager
async def harness(tmp_path, routes, **kw):
    h = await Harness(tmp_path, routes, **kw).start()
    try:
        yield h
    finally:
        await h.stop()


def route_to(srv, domain="ALL", **kw):
    return Route(domain=domain, hosts=(RouteHost("127.0.0.1", srv.port),), **kw)


# --- the ordinary path ---------------------------------------------------------------------------

def test_delivers_and_logs_the_appliance_sequence(tmp_path):
    async def go():
        async with ScriptedServer() as srv, harness(tmp_path, [route_to(srv, tls="off")]) as h:
            mid = await h.submit(["b@dest.test"])
            await h.idle()
            await asyncio.sleep(0.5)       # the idle connection closes after idle_timeout
            assert [m.rcpts for m in srv.messages] == [("b@dest.test",)]
            assert srv.messages[0].data == BODY
            assert h.spool.get(mid) is None
            kinds = [type(e).__name__ for e in h.sink.events]
            assert kinds == ["NewDcid", "DeliveryStart", "MessageDone", "DeliveryResponse", "MessageFinished",
                             "DcidClose"]
            dcid = h.of(ev.NewDcid)[0].dcid
            assert h.of(ev.NewDcid)[0] == ev.NewDcid(dcid, "127.0.0.1", "127.0.0.1", srv.port)
            assert h.of(ev.DeliveryStart)[0] == ev.DeliveryStart(dcid, mid, (0,))
            assert h.of(ev.MessageDone)[0] == ev.MessageDone(dcid, mid, (0,))
            assert h.of(ev.DeliveryResponse)[0] == ev.DeliveryResponse(mid, (0,), "2.0.0 Ok: queued as Q1")
            assert h.of(ev.MessageFinished)[0] == ev.MessageFinished(mid, "done")
            assert h.of(ev.DcidClose)[0] == ev.DcidClose(dcid)
    run(go())


def test_one_dcid_carries_several_mids_with_rset_between(tmp_path):
    async def go():
        async with ScriptedServer() as srv, harness(tmp_path, [route_to(srv, tls="off")],
                                                    concurrency_per_destination=1) as h:
            mids = [await h.submit([f"u{i}@dest.test"]) for i in range(3)]
            await h.idle()
            await asyncio.sleep(0.5)
            assert len(srv.conns) == 1
            assert len(srv.messages) == 3
            starts = h.of(ev.DeliveryStart)
            assert sorted(s.mid for s in starts) == mids
            assert len({s.dcid for s in starts}) == 1
            assert len(h.of(ev.NewDcid)) == 1 and len(h.of(ev.DcidClose)) == 1
            assert srv.conns[0].commands.count("RSET") == 2
    run(go())



def test_rset_on_a_kept_connection_travels_with_the_next_envelope(tmp_path):
    # With PIPELINING, RSET opens the next transaction in the same write as MAIL/RCPT/DATA:
    # one round trip per message saved on a kept connection.
    async def go():
        async with ScriptedServer() as srv, harness(tmp_path, [route_to(srv, tls="off")],
                                                    concurrency_per_destination=1) as h:
            for i in range(3):
                await h.submit([f"u{i}@dest.test"])
                await h.until(lambda: len(srv.messages) == i + 1)
            assert len(srv.conns) == 1
            assert srv.conns[0].pipelined_rsets == 2
            assert srv.conns[0].pipelined_batches == 3
    run(go())


@pytest.mark.parametrize("pipelining", [True, False])
def test_a_kept_connection_found_dead_at_rset_costs_the_message_nothing(tmp_path, pipelining):
    # The next hop drops the idle connection; the next message's RSET finds out. The message
    # goes over a new connection at once: no deferral, no failure in the log, and its
    # delivery starts (in the log) only on the connection that carried it.
    def script(verb, arg, conn):
        return DROP if verb == "RSET" and conn.n == 0 else None

    async def go():
        async with ScriptedServer(pipelining=pipelining, script=script) as srv, \
                harness(tmp_path, [route_to(srv, tls="off")], concurrency_per_destination=1) as h:
            first = await h.submit(["u1@dest.test"])
            await h.until(lambda: len(srv.messages) == 1)
            second = await h.submit(["u2@dest.test"])
            await h.until(lambda: h.spool.get(second) is None)
            assert [(m.conn, m.rcpts) for m in srv.messages] == [(0, ("u1@dest.test",)), (1, ("u2@dest.test",))]
            assert srv.conns[0].commands[-1] == "RSET"       # nothing of the message was answered there
            dcids = [e.dcid for e in h.of(ev.NewDcid)]
            assert len(dcids) == 2
            starts = [(e.dcid, e.mid) for e in h.of(ev.DeliveryStart)]
            assert starts == [(dcids[0], first), (dcids[1], second)]
            assert ev.DcidClose(dcids[0]) in h.sink.events
            assert not h.of(ev.Delayed) and not h.of(ev.Bounced)
            assert h.spool.get(first) is None
    run(go())

def test_recipients_of_one_message_share_a_transaction_and_refusals_bounce_only_themselves(tmp_path):
    def script(verb, arg, conn):
        if verb == "RCPT" and "nobody@" in arg:
            return "550 5.1.1 <nobody@dest.test>: Recipient address rejected"
        return None

    async def go():
        async with ScriptedServer(script=script) as srv, harness(tmp_path, [route_to(srv, tls="off")]) as h:
            mid = await h.submit(["x@dest.test", "nobody@dest.test", "y@dest.test"])
            await h.idle()
            assert srv.messages[0].rcpts == ("x@dest.test", "y@dest.test")
            assert h.of(ev.MessageDone)[0].rids == (0, 2)
            b = h.of(ev.Bounced)[0]
            assert (b.mid, b.rid, b.status, b.description, b.by_destination) == (mid, 1, "5.1.0",
                                                                                 "Unknown address error", True)
            assert b.response == ev.SmtpResponse("550", ("5.1.1 <nobody@dest.test>: Recipient address rejected",))
            # The DSN: a new MID from the null sender to the original sender, delivered too.
            gen = h.of(ev.GeneratedForBounce)[0]
            assert gen.original_mid == mid
            dsn = [m for m in srv.messages if m.mail_from == ""]
            assert dsn and dsn[0].rcpts == ("a@sender.test",)
            assert b"report-type=delivery-status" in dsn[0].data
            assert b"Final-Recipient: rfc822; nobody@dest.test" in dsn[0].data
            assert b"Subject: hi" in dsn[0].data               # the original headers ride along
            finished = {e.mid for e in h.of(ev.MessageFinished)}
            assert {mid, gen.mid} <= finished
    run(go())


# --- retries and expiry ---------------------------------------------------------------------------

def test_451_then_250_is_retried_with_delayed_and_pending_till(tmp_path):
    answers = iter(["451 4.3.0 Try again later"])

    def script(verb, arg, conn):
        if verb == "RCPT":
            return next(answers, None)
        return None

    async def go():
        async with ScriptedServer(script=script) as srv, harness(tmp_path, [route_to(srv, tls="off")]) as h:
            mid = await h.submit(["b@dest.test"])
            await h.until(lambda: h.spool.get(mid) is None)
            d = h.of(ev.Delayed)[0]
            assert (d.mid, d.rid, d.status, d.description) == (mid, 0, "4.1.0", "Unknown address error")
            assert d.response == ev.SmtpResponse("451", ("4.3.0 Try again later",))
            p = h.of(ev.PendingTill)[0]
            assert p.mid == mid and p.rids == (0,)
            assert len(srv.messages) == 1 and h.spool.get(mid) is None
            assert [s.mid for s in h.of(ev.DeliveryStart)] == [mid, mid]   # the retry, same MID
            assert h.of(ev.MessageFinished) == [ev.MessageFinished(mid, "done")]
    run(go())


def test_queue_lifetime_expiry_bounces_with_delivery_expired(tmp_path):
    def script(verb, arg, conn):
        if verb == "RCPT" and "b@dest.test" in arg:
            return "451 4.3.0 Try again later"
        return None

    async def go():
        policy = RetryPolicy(initial=0.1, max_interval=0.1, max_lifetime=0.35, max_retries=100)
        async with ScriptedServer(script=script) as srv, harness(tmp_path, [route_to(srv, tls="off")],
                                                                 retry=policy) as h:
            mid = await h.submit(["b@dest.test"])
            await h.until(lambda: h.of(ev.Bounced))
            b = h.of(ev.Bounced)[0]
            assert (b.mid, b.status, b.description) == (mid, "5.4.7", "Delivery expired (message too old)")
            assert b.response == ev.SmtpResponse("451", ("4.3.0 Try again later",))
            assert 1 <= len(h.of(ev.Delayed)) <= 5
            assert h.spool.get(mid) is None
            assert h.of(ev.GeneratedForBounce)[0].original_mid == mid
    run(go())


def test_retry_count_limit_bounces(tmp_path):
    async def go():
        policy = RetryPolicy(initial=0.05, max_interval=0.05, max_lifetime=60, max_retries=2)
        async with ScriptedServer(script=lambda v, a, c: "421 4.3.2 busy" if v == "MAIL" else None) as srv, \
                harness(tmp_path, [route_to(srv, tls="off")], retry=policy) as h:
            mid = await h.submit(["b@dest.test"], sender="")      # null sender: no DSN
            await h.until(lambda: h.of(ev.Bounced))
            assert len(h.of(ev.Delayed)) == 1
            assert h.of(ev.Bounced)[0].status == "5.4.7"
            assert h.of(ev.GeneratedForBounce) == []
            assert h.spool.get(mid) is None
    run(go())


# --- restart durability -----------------------------------------------------------------------

def test_no_recipient_is_delivered_twice_after_a_restart(tmp_path):
    state = {"b_ok": False}

    def script_b(verb, arg, conn):
        if verb == "RCPT" and not state["b_ok"]:
            return "451 4.3.0 later"
        return None

    async def go():
        async with ScriptedServer() as srv_a, ScriptedServer(script=script_b) as srv_b:
            routes = [route_to(srv_a, "a.test", tls="off"), route_to(srv_b, "b.test", tls="off")]
            slow = RetryPolicy(initial=30, max_interval=30)
            h = await Harness(tmp_path, routes, retry=slow).start()
            mid = await h.submit(["one@a.test", "two@b.test", "three@a.test"])
            await h.idle()
            assert [m.rcpts for m in srv_a.messages] == [("one@a.test", "three@a.test")]
            assert srv_b.messages == []
            await h.stop()
            # A new process: the spool remembers RIDs 0 and 2 delivered, RID 1 pending.
            state["b_ok"] = True
            h2 = await Harness(tmp_path, routes, retry=slow).start()
            try:
                msg = h2.spool.get(mid)
                assert msg is not None and msg.pending_rids() == [1] and msg.attempts == 1
                await h2.manager.flush()
                await h2.idle()
                assert len(srv_a.messages) == 1
                assert [m.rcpts for m in srv_b.messages] == [("two@b.test",)]
                assert h2.of(ev.DeliveryStart)[0].rids == (1,)
                assert h2.spool.get(mid) is None
            finally:
                await h2.stop()
    run(go())


# --- limits and warnings -----------------------------------------------------------------------

def test_per_destination_concurrency_limit(tmp_path):
    async def go():
        async with ScriptedServer() as srv, harness(tmp_path, [route_to(srv, tls="off")],
                                                    concurrency_per_destination=2) as h:
            srv.delay = 0.05
            mids = [await h.submit([f"u{i}@dest.test"]) for i in range(8)]
            await h.until(lambda: all(h.spool.get(m) is None for m in mids))
            assert len(srv.messages) == 8
            assert srv.max_active == 2
            assert len(h.of(ev.NewDcid)) == 2        # two connections carried all eight
    run(go())


def test_total_concurrency_limit_across_destinations(tmp_path):
    async def go():
        async with ScriptedServer() as srv, harness(tmp_path, [route_to(srv, tls="off")],
                                                    total_concurrency=1) as h:
            srv.delay = 0.05
            mids = [await h.submit([f"u@d{i}.test"]) for i in range(4)]
            await h.until(lambda: all(h.spool.get(m) is None for m in mids))
            assert srv.max_active == 1 and len(srv.messages) == 4
    run(go())


def test_one_delay_warning_dsn_when_the_message_crosses_the_threshold(tmp_path):
    def script(verb, arg, conn):
        if verb == "RCPT" and "b@dest.test" in arg:
            return "451 4.3.0 Try again later"
        return None

    async def go():
        async with ScriptedServer(script=script) as srv, harness(tmp_path, [route_to(srv, tls="off")],
                                                                 delay_warning=0.1) as h:
            mid = await h.submit(["b@dest.test"])
            await h.until(lambda: len([d for d in h.of(ev.Delayed) if d.mid == mid]) >= 4)
            warnings = [m for m in srv.messages if m.mail_from == "" and b"Action: delayed" in m.data]
            assert len(warnings) == 1
            assert warnings[0].rcpts == ("a@sender.test",)
            assert b"Final-Recipient: rfc822; b@dest.test" in warnings[0].data
            assert h.spool.get(mid) is not None            # still queued, still retried
    run(go())


def test_a_scheduler_pass_costs_the_due_messages_not_the_queue_size(tmp_path):
    async def go():
        # A backlog of 300 deferred messages, due in an hour.
        spool = Spool(tmp_path / "spool", fsync=False)
        await spool.open()
        for mid in range(1000, 1300):
            w = spool.writer()
            w.write(BODY)
            await w.commit(Envelope(mid=mid, icid=1, sender="a@sender.test", recipients=("z@dead.test",),
                                    received_at=time.time()))
            await spool.defer(mid, [0], next_attempt=time.time() + 3600, error="451 later")
        await spool.close()
        async with ScriptedServer() as srv, harness(tmp_path, [route_to(srv, tls="off")]) as h:
            scans = {"n": 0}
            real = h.spool.messages

            def counting():
                scans["n"] += 1
                return real()

            h.spool.messages = counting
            new = [await h.submit([f"u{i}@dest.test"]) for i in range(5)]
            deadline = time.monotonic() + 10
            while any(h.spool.get(m) is not None for m in new):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            assert len(srv.messages) == 5
            assert scans["n"] == 0          # no pass walked the 300-message backlog
            assert len(list(real())) == 300
    run(go())


def test_an_over_long_250_after_data_is_taken_not_retried(tmp_path):
    """A next hop's 250 after DATA with an over-long text (a real server's banner-sized id)
    means delivered: refusing it would deliver the message again on every retry."""
    async def go():
        async with ScriptedServer() as srv, harness(tmp_path, [route_to(srv, tls="off")]) as h:
            srv.data_reply = "250 2.0.0 Ok: queued as " + "Q" * 6000
            mid = await h.submit(["b@dest.test"])
            await h.until(lambda: h.spool.get(mid) is None)
            assert len(srv.messages) == 1
            assert h.of(ev.MessageFinished) == [ev.MessageFinished(mid, "done")]
            assert h.of(ev.Delayed) == []
    run(go())
