"""Wakeup: the one-waiter wake-up the spool committer and the delivery scheduler use in place
of asyncio.Event + timeout: set before or during a wait wakes it, a timeout ends it, clear
forgets a set, and a second waiter at once is refused."""
from __future__ import annotations

import asyncio

import pytest

from mailward.wakeup import Wakeup


def test_set_wakes_a_waiter_and_a_set_before_the_wait_returns_at_once():
    async def main():
        loop = asyncio.get_running_loop()
        w = Wakeup(loop)
        loop.call_later(0.01, w.set)
        woke = await w.wait(5.0)
        at_once = await w.wait(5.0)          # still set: no waiting
        w.clear()
        assert not w.is_set()
        return woke, at_once

    assert asyncio.run(main()) == (True, True)


def test_timeout_ends_the_wait_and_cancels_nothing_else():
    async def main():
        loop = asyncio.get_running_loop()
        w = Wakeup(loop)
        start = loop.time()
        got = await w.wait(0.05)
        took = loop.time() - start
        w.set()                                # after the timeout: remembered for the next wait
        return got, took, await w.wait(0.05)

    got, took, later = asyncio.run(main())
    assert got is False and 0.04 < took < 2.0 and later is True


def test_one_waiter_at_a_time():
    async def main():
        w = Wakeup(asyncio.get_running_loop())
        first = asyncio.ensure_future(w.wait())
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError):
            await w.wait()
        w.set()
        return await first

    assert asyncio.run(main()) is True


def test_a_cancelled_wait_leaves_it_usable():
    async def main():
        loop = asyncio.get_running_loop()
        w = Wakeup(loop)
        t = asyncio.ensure_future(w.wait())
        await asyncio.sleep(0)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        loop.call_later(0.01, w.set)
        return await w.wait(5.0)

    assert asyncio.run(main()) is True
