"""Per-recipient durability across ``kill -9``: the delivery manager runs in a child process,
is killed while one destination is still receiving, and a new process must deliver only
what was not recorded delivered. Also: a large (file-backed) body streams byte-exact."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import textwrap
import time

import pytest

from mailward.maillog import events as ev
from mailward.queue.model import Envelope
from mailward.queue.spool import Spool
from tests.integration.test_delivery_manager import Harness, harness, route_to, run
from tests.integration.test_delivery_testserver import ScriptedServer

CHILD = textwrap.dedent("""
    import asyncio, json, sys, time
    from pathlib import Path
    from mailward.delivery.manager import ManagerSettings, QueueManager
    from mailward.delivery.routes import Route, RouteHost, RouteTable
    from mailward.delivery.trouble import RetryPolicy
    from mailward.maillog.sink import ListSink
    from mailward.queue.counters import IdCounter
    from mailward.queue.spool import Spool

    root, port_a, port_b = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])

    class Printer(ListSink):
        def emit(self, event):
            print(json.dumps([type(event).__name__, getattr(event, "mid", None),
                              list(getattr(event, "rids", ()))]), flush=True)

    async def main():
        spool = Spool(root / "spool")          # real fsync: this is the crash test
        await spool.open()
        routes = RouteTable([Route("a.test", (RouteHost("127.0.0.1", port_a),), tls="off"),
                             Route("b.test", (RouteHost("127.0.0.1", port_b),), tls="off")])
        m = QueueManager(spool, Printer(), routes, dcids=IdCounter(root / "dcid"), mids=IdCounter(root / "mid"),
                         settings=ManagerSettings(hostname="gw.test", retry=RetryPolicy(initial=0.1),
                                                  idle_timeout=0.1))
        await m.start()
        await m.flush()
        await asyncio.sleep(30)               # killed long before this

    asyncio.run(main())
""")


@pytest.mark.slow
def test_kill_9_while_delivering_never_redelivers_a_recorded_recipient(tmp_path):
    async def go():
        async with ScriptedServer() as srv_a, ScriptedServer() as srv_b:
            srv_b.delay = 30.0                  # b.test takes the message but never answers the dot
            spool = Spool(tmp_path / "spool")
            await spool.open()
            w = spool.writer()
            w.write(b"Subject: crash\r\n\r\nbody\r\n")
            await w.commit(Envelope(mid=1, icid=1, sender="", recipients=("x@a.test", "y@b.test", "z@a.test"),
                                    received_at=time.time()))
            await spool.close()

            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", CHILD, str(tmp_path), str(srv_a.port), str(srv_b.port),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            seen = []
            try:
                async with asyncio.timeout(15):
                    while not (["MessageDone", 1, [0, 2]] in seen and srv_b.active):
                        line = await proc.stdout.readline()
                        assert line, (await proc.stderr.read()).decode()
                        seen.append(json.loads(line))
                # a.test's recipients are recorded and logged; b.test is mid-DATA: kill -9 now.
                os.kill(proc.pid, signal.SIGKILL)
            finally:
                if proc.returncode is None:
                    try:
                        proc.kill()
                    except ProcessLookupError:
                        pass
                await proc.wait()
            assert len(srv_a.messages) == 1 and srv_a.messages[0].rcpts == ("x@a.test", "z@a.test")

            srv_b.delay = 0.0
            spool = Spool(tmp_path / "spool", fsync=False)
            await spool.open()
            msg = spool.get(1)
            assert msg is not None and msg.pending_rids() == [1]
            await spool.close()
            # A new process picks up where the dead one left: only y@b.test is tried.
            routes = [route_to(srv_a, "a.test", tls="off"), route_to(srv_b, "b.test", tls="off")]
            h = await Harness(tmp_path, routes).start()
            try:
                await h.manager.flush()
                await h.until(lambda: h.spool.get(1) is None)
                assert [s.rids for s in h.of(ev.DeliveryStart)] == [(1,)]
            finally:
                await h.stop()
            assert len(srv_a.messages) == 1
            assert [m.rcpts for m in srv_b.messages] == [("y@b.test",)]
    run(go())


def test_a_large_file_backed_body_streams_byte_exact(tmp_path):
    lines = [b"Subject: big\r\n", b"\r\n"]
    for i in range(20000):
        lines.append(b"." * (i % 3) + b"line %d with some text to make it longer\r\n" % i)
    body = b"".join(lines)
    assert len(body) > 256 * 1024                       # past the spool's in-record threshold

    async def go():
        async with ScriptedServer() as srv, harness(tmp_path, [route_to(srv, tls="off")]) as h:
            mid = await h.submit(["b@dest.test"], body=body)
            await h.until(lambda: h.spool.get(mid) is None)
            assert srv.messages[0].data == body
    run(go())
