"""When each queued message is due: the delivery scheduler's bookkeeping.

Owns: the MIDs committed since the last pass, a heap of retry timers (entries may go stale;
the spool's ``next_attempt`` is the truth), MIDs that came due while locked, the periodic
full rescan that heals anything missed, and the fair order of a batch (new and deferred
mail alternate, as Postfix's qmgr takes from its incoming and deferred queues in turn).

A pass costs the number of messages that are due, not the size of the queue: a backlog of
deferred mail is never walked on every new commit. Must not know SMTP, routes or the log.
"""
from __future__ import annotations

import heapq
from collections import deque
from typing import Callable, Iterable, Protocol

from ..queue.model import QueuedMessage


class SpoolView(Protocol):
    def get(self, mid: int) -> QueuedMessage | None: ...
    def messages(self) -> Iterable[QueuedMessage]: ...


def fair_order(messages: list[QueuedMessage]) -> list[QueuedMessage]:
    """New mail and deferred mail alternate; each group keeps its own oldest-first order."""
    new = sorted((m for m in messages if m.attempts == 0), key=lambda m: (m.envelope.received_at, m.mid))
    old = sorted((m for m in messages if m.attempts > 0), key=lambda m: (m.next_attempt, m.mid))
    out = []
    for i in range(max(len(new), len(old))):
        if i < len(new):
            out.append(new[i])
        if i < len(old):
            out.append(old[i])
    return out


class Schedule:
    def __init__(self, spool: SpoolView, *, rescan_interval: float, clock: Callable[[], float]):
        self.spool = spool
        self.rescan_interval = rescan_interval
        self.clock = clock
        self._fresh: deque[int] = deque()             # committed since the last pass
        self._timers: list[tuple[float, int]] = []    # heap of (next attempt, MID)
        self._held: set[int] = set()                  # due while locked
        self._last_full = clock()
        for m in spool.messages():
            self.arm(m)

    def committed(self, mid: int) -> None:
        self._fresh.append(mid)

    def arm(self, msg: QueuedMessage, at: float | None = None) -> None:
        heapq.heappush(self._timers, (msg.next_attempt if at is None else at, msg.mid))

    def seconds_to_next(self) -> float:
        now = self.clock()
        delay = self.rescan_interval - (now - self._last_full)
        if self._timers:
            delay = min(delay, self._timers[0][0] - now)
        if self._held:
            delay = min(delay, 0.05)      # locked only for a moment (announcing, operator)
        return delay

    def due(self, *, busy: set[int] | dict, locked: set[int], flush: bool = False) -> list[QueuedMessage]:
        """The messages to start now, in fair order. ``busy`` MIDs are in flight (the end of
        their round re-arms them); ``locked`` ones are looked at again on a later pass."""
        now = self.clock()
        candidates: dict[int, QueuedMessage] = {}
        if flush or now - self._last_full >= self.rescan_interval:
            self._last_full = now
            self._fresh.clear()
            self._held.clear()
            self._timers = [(m.next_attempt, m.mid) for m in self.spool.messages() if m.mid not in busy]
            heapq.heapify(self._timers)
        if flush:
            candidates = {mid: m for _, mid in self._timers if (m := self.spool.get(mid)) is not None}
            self._timers = []
        while self._fresh:
            mid = self._fresh.popleft()
            if (m := self.spool.get(mid)) is not None:
                candidates[mid] = m
        while self._timers and self._timers[0][0] <= now:
            _, mid = heapq.heappop(self._timers)
            m = self.spool.get(mid)
            # Stale entries (message gone, or rescheduled later: its newer entry waits) drop.
            if m is not None and m.next_attempt <= now:
                candidates[mid] = m
        for mid in [mid for mid in self._held if mid not in locked]:
            self._held.discard(mid)
            if (m := self.spool.get(mid)) is not None:
                candidates[mid] = m
        ready = []
        for mid, m in candidates.items():
            if mid in busy or not m.pending_rids():
                continue
            if mid in locked:
                self._held.add(mid)
                continue
            ready.append(m)
        return fair_order(ready)
