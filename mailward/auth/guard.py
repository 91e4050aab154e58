"""The brute-force and password-spraying guard shared by every listener.

Owns failure counters per client IP and per user name, the tarpit delay they imply, and
temporary lockouts. Must not know how credentials are checked nor SMTP replies; it logs
only by emitting ``SmtpAuthLockout`` when a lockout starts.

Rules (all numbers configurable, defaults in ``config.AuthGuardConfig``):
- a counter holds the failures of the last ``window_seconds`` (older ones decay away);
- with ``n`` failures counted and ``n >= free_failures``, each attempt first waits
  ``base_delay * 2 ** (n - free_failures)`` seconds, at most ``max_delay`` (the larger of the
  IP's and the user's delay applies);
- reaching ``lockout_failures`` locks the key for ``lockout_seconds``: attempts are refused
  without verifying. The per-IP counter stops one address trying many users (spraying); the
  per-user counter stops many addresses trying one user (a botnet).
- a success clears the user's counter, not the IP's: otherwise an attacker holding one valid
  account could reset its address's counter between guesses at other users.
- attempts still being verified count toward the delay of the next one from the same key,
  so many parallel connections from one address cannot all skip the tarpit;
- memory is bounded: at most ``max_keys`` counters per scope, least recently touched dropped
  first (an attacker rotating addresses only evicts its own old keys).
"""
from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..maillog.events import SmtpAuthLockout
from ..maillog.sink import EventSink


@dataclass(frozen=True)
class GuardSettings:
    free_failures: int = 3
    base_delay: float = 0.5
    max_delay: float = 8.0
    lockout_failures: int = 10
    lockout_seconds: int = 600
    window_seconds: int = 900
    max_keys: int = 100_000

    @classmethod
    def from_config(cls, cfg: object) -> "GuardSettings":
        """Build from ``config.AuthGuardConfig`` (or anything with the same attributes)."""
        names = ("free_failures", "base_delay", "max_delay", "lockout_failures",
                 "lockout_seconds", "window_seconds", "max_keys")
        return cls(**{n: getattr(cfg, n) for n in names if hasattr(cfg, n)})


@dataclass(frozen=True)
class LockoutInfo:
    scope: str          # "address" | "user"
    key: str
    until: float        # on the guard's clock
    failures: int

    def seconds_left(self, now: float) -> float:
        return max(0.0, self.until - now)


class _Counter:
    __slots__ = ("times", "locked_until", "in_flight")

    def __init__(self, maxlen: int):
        self.times: deque[float] = deque(maxlen=maxlen)
        self.locked_until = 0.0
        self.in_flight = 0


class _Scope:
    def __init__(self, name: str, settings: GuardSettings):
        self.name = name
        self.s = settings
        self.counters: OrderedDict[str, _Counter] = OrderedDict()

    def get(self, key: str, now: float) -> _Counter | None:
        c = self.counters.get(key)
        if c is None:
            return None
        self._decay(c, now)
        if not c.times and c.locked_until <= now and c.in_flight <= 0:
            del self.counters[key]
            return None
        return c

    def touch(self, key: str, now: float) -> _Counter:
        c = self.get(key, now)
        if c is None:
            # Only failures counting toward the lockout matter: the deque never grows past it.
            c = _Counter(max(self.s.lockout_failures, self.s.free_failures + 64))
            self.counters[key] = c
            while len(self.counters) > self.s.max_keys:
                self.counters.popitem(last=False)
        self.counters.move_to_end(key)
        return c

    def _decay(self, c: _Counter, now: float) -> None:
        horizon = now - self.s.window_seconds
        while c.times and c.times[0] <= horizon:
            c.times.popleft()

    def delay(self, key: str, now: float, *, others_in_flight: bool = False) -> float:
        c = self.get(key, now)
        n = len(c.times) if c else 0
        if others_in_flight and c is not None and c.times:
            # Parallel attempts count as the failures they likely are, but only for a key that
            # has already failed: a busy legitimate client (many connections AUTHing at once
            # with the right password) must not be tarpitted. Without prior failures an
            # attacker gets at most one wave (bounded by the per-IP connection limit) free.
            n += max(0, c.in_flight - 1)
        if n == 0 or n < self.s.free_failures or self.s.base_delay <= 0:
            return 0.0
        exp = n - self.s.free_failures
        # Cap the exponent before computing: 2 ** 10_000 is a big int, not a delay.
        return min(self.s.max_delay, self.s.base_delay * (2 ** min(exp, 62)))

    def lockout(self, key: str, now: float) -> LockoutInfo | None:
        c = self.get(key, now)
        if c is None or c.locked_until <= now:
            return None
        return LockoutInfo(self.name, key, c.locked_until, len(c.times))


class AuthGuard:
    """Shared tarpit and lockout state. Use per AUTH attempt:

    ``check`` (refuse when locked) -> ``await delay`` -> verify -> ``record_failure`` or
    ``record_success``. ``service.Authenticator`` does exactly that around a profile
    (``admit`` = ``check`` + ``begin``, then ``end``).
    """

    def __init__(self, settings: GuardSettings | None = None, sink: EventSink | None = None, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        self.settings = settings or GuardSettings()
        self.sink = sink
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._ip = _Scope("address", self.settings)
        self._user = _Scope("user", self.settings)

    async def sleep(self, seconds: float) -> None:
        """The guard's sleep (injectable for tests)."""
        await self._sleep(seconds)

    def tracked(self) -> tuple[int, int]:
        """(address counters, user counters) currently held: for tests and status."""
        return len(self._ip.counters), len(self._user.counters)

    def check(self, ip: str, user: str | None) -> LockoutInfo | None:
        """The lockout that refuses this attempt, or None. The address lockout is reported first."""
        now = self._clock()
        with self._lock:
            info = self._ip.lockout(ip, now)
            if info is None and user is not None:
                info = self._user.lockout(user, now)
            return info

    def delay_for(self, ip: str, user: str | None) -> float:
        now = self._clock()
        with self._lock:
            d = self._ip.delay(ip, now)
            if user is not None:
                d = max(d, self._user.delay(user, now))
            return d

    async def delay(self, ip: str, user: str | None) -> float:
        """Sleep the tarpit delay this attempt earns; returns the seconds slept."""
        d = self.delay_for(ip, user)
        if d > 0:
            await self._sleep(d)
        return d

    def passes_now(self, ip: str, user: str | None) -> bool:
        """Would an attempt now be neither refused nor delayed? Registers nothing.

        For an attempt decided without waiting (``Authenticator.authenticate_now``): it
        would be in flight for no time at all, so ``admit`` + ``end`` around it reduce to this
        test: no lockout, and for a key with counted failures, fewer than ``free_failures``
        of them counting the attempts of others still in flight (what ``admit``'s delay is).
        The keys are touched (kept from eviction) as ``admit`` would.
        """
        if not self._ip.counters and not self._user.counters:
            return True                 # nobody has failed lately: the usual case, no lock
        now = self._clock()
        s = self.settings
        with self._lock:
            for scope, key in ((self._ip, ip), (self._user, user)):
                if key is None:
                    continue
                c = scope.get(key, now)
                if c is None:
                    continue
                scope.counters.move_to_end(key)
                if c.locked_until > now:
                    return False
                if c.times and s.base_delay > 0 and len(c.times) + c.in_flight >= s.free_failures:
                    return False
            return True

    def admit(self, ip: str, user: str | None) -> tuple[LockoutInfo | None, float]:
        """``check`` then ``begin`` in one step (one lock, one clock read), as an AUTH does.

        Returns the lockout that refuses this attempt (nothing is registered then), or
        ``(None, delay)`` for an attempt now in flight: pair that with ``end``.
        """
        now = self._clock()
        with self._lock:
            info = self._ip.lockout(ip, now)
            if info is None and user is not None:
                info = self._user.lockout(user, now)
            if info is not None:
                return info, 0.0
            d = 0.0
            for scope, key in ((self._ip, ip), (self._user, user)):
                if key is None:
                    continue
                c = scope.touch(key, now)
                c.in_flight += 1
                if c.times:         # no failures counted: no delay (see _Scope.delay)
                    d = max(d, scope.delay(key, now, others_in_flight=True))
            return None, d

    def begin(self, ip: str, user: str | None) -> float:
        """Register an attempt about to be verified; returns its delay counting parallel ones.

        Pair with ``end``. ``service.Authenticator`` uses this instead of ``delay_for``.
        """
        now = self._clock()
        with self._lock:
            d = 0.0
            for scope, key in ((self._ip, ip), (self._user, user)):
                if key is None:
                    continue
                scope.touch(key, now).in_flight += 1
                d = max(d, scope.delay(key, now, others_in_flight=True))
            return d

    def end(self, ip: str, user: str | None) -> None:
        now = self._clock()
        with self._lock:
            for scope, key in ((self._ip, ip), (self._user, user)):
                c = scope.counters.get(key) if key is not None else None
                if c is not None:
                    c.in_flight = max(0, c.in_flight - 1)
                    scope.get(key, now)      # drop it if nothing is left

    def record_failure(self, ip: str, user: str | None, *, icid: int = 0) -> list[LockoutInfo]:
        """Count a failed attempt; returns (and logs) the lockouts it started."""
        now = self._clock()
        started: list[LockoutInfo] = []
        with self._lock:
            for scope, key in ((self._ip, ip), (self._user, user)):
                if key is None:
                    continue
                c = scope.touch(key, now)
                c.times.append(now)
                if len(c.times) >= self.settings.lockout_failures and c.locked_until <= now:
                    c.locked_until = now + self.settings.lockout_seconds
                    started.append(LockoutInfo(scope.name, key, c.locked_until, len(c.times)))
        if self.sink is not None:
            for info in started:
                self.sink.emit(SmtpAuthLockout(icid, info.scope, info.key,
                                               int(self.settings.lockout_seconds), info.failures))
        return started

    def record_success(self, ip: str, user: str | None) -> None:
        if user is None or user not in self._user.counters:
            return
        with self._lock:
            self._user.counters.pop(user, None)
