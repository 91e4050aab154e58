"""A wake-up call for one waiting task: what ``asyncio.Event`` with ``asyncio.timeout`` (or
``wait_for``) gives a single waiter, at a fraction of the cost.

Owns ``Wakeup``: bound to its loop when made, ``set()`` wakes the task in ``wait()`` (at once
if it was set before), ``wait(timeout)`` says whether it was woken or timed out. Why not the
asyncio classes on these paths: the spool committer and the delivery scheduler wait once or
more per message, and on Python 3.11 each ``Event.wait`` and each ``asyncio.timeout`` asks
for the running loop, a ``getpid`` system call each, while ``wait_for`` adds a task per wait.
One waiter at a time (a second concurrent ``wait`` is a bug); loop thread only.
"""
from __future__ import annotations

import asyncio


class Wakeup:
    __slots__ = ("_loop", "_set", "_waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._set = False
        self._waiter: asyncio.Future | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(True)

    def clear(self) -> None:
        self._set = False

    async def wait(self, timeout: float | None = None) -> bool:
        """Until ``set()`` (True; at once if set already) or ``timeout`` seconds (False)."""
        if self._set:
            return True
        if self._waiter is not None:
            raise RuntimeError("Wakeup has one waiter at a time")
        loop = self._loop
        self._waiter = w = loop.create_future()
        timer = loop.call_later(timeout, _time_out, w) if timeout is not None else None
        try:
            return await w
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()


def _time_out(w: asyncio.Future) -> None:
    if not w.done():
        w.set_result(False)
