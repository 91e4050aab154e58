"""Lazy outcome records: durable when awaited, but they share a reception's fdatasync."""
import asyncio
import time

from mailward.queue.fsops import FileOps
from mailward.queue.model import Envelope, RcptState
from mailward.queue.spool import Spool


def env(mid):
    return Envelope(mid=mid, icid=1, sender="a@x.test", recipients=("b@y.test",), received_at=time.time())


async def commit(spool, mid):
    w = spool.writer()
    w.write(b"Subject: x\r\n\r\nbody\r\n")
    return await w.commit(env(mid))


def test_lazy_record_shares_the_next_reception_sync(tmp_path):
    async def main():
        fs = FileOps()
        spool = Spool(tmp_path, fs=fs)
        await spool.open()
        await commit(spool, 1)
        before = fs.data_syncs
        # an outcome, then a reception a millisecond later: one fdatasync for both
        async def later():
            await asyncio.sleep(0.001)
            return await commit(spool, 2)

        await asyncio.gather(spool.record(1, 0, RcptState.DELIVERED), later())
        shared = fs.data_syncs - before
        await spool.close()
        reopened = Spool(tmp_path)
        await reopened.open()
        assert reopened.get(1) is None            # finished: the outcome is on disk
        assert reopened.get(2) is not None
        await reopened.close()
        return shared

    assert asyncio.run(main()) == 1


def test_lazy_record_alone_is_not_held_long(tmp_path):
    async def main():
        spool = Spool(tmp_path)
        await spool.open()
        await commit(spool, 1)
        t = time.monotonic()
        await spool.record(1, 0, RcptState.DELIVERED)
        took = time.monotonic() - t
        await spool.close()
        return took

    assert asyncio.run(main()) < 1.0     # bounded by the lazy delay (milliseconds), never stuck
