"""The brute-force guard: tarpit growth, lockout, decay, isolation, bounded memory, events."""
from __future__ import annotations

import asyncio

from mailward.auth.guard import AuthGuard, GuardSettings
from mailward.maillog.events import SmtpAuthLockout
from mailward.maillog.sink import ListSink


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


def make(**kw):
    clock = Clock()
    sink = ListSink()
    slept: list[float] = []

    async def sleep(d: float) -> None:
        slept.append(d)

    guard = AuthGuard(GuardSettings(**kw), sink, clock=clock, sleep=sleep)
    return guard, clock, sink, slept


def test_delay_grows_exponentially_and_is_capped():
    g, clock, _, _ = make(free_failures=3, base_delay=0.5, max_delay=8.0, lockout_failures=100)
    delays = []
    for _ in range(10):
        delays.append(g.delay_for("10.0.0.1", "alice"))
        g.record_failure("10.0.0.1", "alice")
        clock.now += 1
    assert delays == [0, 0, 0, 0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_delay_sleeps_through_injected_sleep():
    g, _, _, slept = make(free_failures=1, base_delay=0.25, lockout_failures=100)
    assert asyncio.run(g.delay("10.0.0.1", "u")) == 0
    g.record_failure("10.0.0.1", "u")
    assert asyncio.run(g.delay("10.0.0.1", "u")) == 0.25
    assert slept == [0.25]


def test_lockout_starts_once_logs_event_and_expires():
    g, clock, sink, _ = make(lockout_failures=5, lockout_seconds=600, window_seconds=900)
    for i in range(4):
        assert g.record_failure("10.0.0.1", f"user{i}", icid=40 + i) == []
    assert g.check("10.0.0.1", "other") is None
    started = g.record_failure("10.0.0.1", "user9", icid=99)
    assert [s.scope for s in started] == ["address"]
    assert sink.of_type(SmtpAuthLockout) == [SmtpAuthLockout(99, "address", "10.0.0.1", 600, 5)]
    info = g.check("10.0.0.1", "anyone")
    assert info is not None and info.scope == "address" and info.seconds_left(clock.now) == 600
    # Further failures during the lockout do not log again.
    g.record_failure("10.0.0.1", "user9", icid=100)
    assert len(sink.of_type(SmtpAuthLockout)) == 1
    clock.now += 601
    assert g.check("10.0.0.1", "anyone") is None


def test_per_user_lockout_catches_distributed_guessing():
    g, _, sink, _ = make(lockout_failures=4)
    for i in range(4):
        g.record_failure(f"192.0.2.{i}", "alice", icid=i)
    info = g.check("198.51.100.7", "alice")
    assert info is not None and info.scope == "user" and info.key == "alice"
    assert g.check("198.51.100.7", "bob") is None
    assert sink.of_type(SmtpAuthLockout)[0].scope == "user"


def test_other_ip_and_other_user_unaffected():
    g, _, _, _ = make(free_failures=2, lockout_failures=10)
    for _ in range(50):
        g.record_failure("10.6.6.6", "victim")
    assert g.check("10.6.6.6", "x") is not None
    assert g.check("10.1.1.1", "legit") is None
    assert g.delay_for("10.1.1.1", "legit") == 0.0


def test_failures_decay_after_window():
    g, clock, _, _ = make(free_failures=2, base_delay=1.0, lockout_failures=100, window_seconds=60)
    for _ in range(5):
        g.record_failure("10.0.0.1", "u")
    assert g.delay_for("10.0.0.1", "u") > 0
    clock.now += 61
    assert g.tracked() == (1, 1)
    assert g.delay_for("10.0.0.1", "u") == 0.0
    assert g.check("10.0.0.1", "u") is None
    assert g.tracked() == (0, 0)      # counters found empty are dropped


def test_success_clears_user_not_address():
    g, _, _, _ = make(free_failures=1, base_delay=1.0, lockout_failures=100)
    for _ in range(3):
        g.record_failure("10.0.0.1", "alice")
    g.record_success("10.0.0.1", "alice")
    assert g.delay_for("10.9.9.9", "alice") == 0.0
    assert g.delay_for("10.0.0.1", "zed") > 0


def test_memory_is_bounded():
    g, _, _, _ = make(max_keys=100, lockout_failures=1000)
    for i in range(5000):
        g.record_failure(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", f"user{i}")
    assert g.tracked() == (100, 100)
    # Per key too: the failure history never grows past what the rules look at.
    for _ in range(5000):
        g.record_failure("10.0.0.1", "u")
    assert max(len(c.times) for c in g._ip.counters.values()) <= 1000


def test_from_config_reads_the_schema():
    from mailward.config import AuthGuardConfig

    s = GuardSettings.from_config(AuthGuardConfig(free_failures=1, lockout_seconds=5))
    assert s.free_failures == 1 and s.lockout_seconds == 5 and s.max_keys == 100_000


def test_real_time_attack_is_slowed_while_legit_user_is_not():
    """1,000 wrong passwords from one address on the real clock: tarpitted, then refused;
    a legitimate login from elsewhere meanwhile takes no tarpit time at all."""
    import time

    from mailward.auth.base import AuthOutcome, Credentials, Verdict
    from mailward.auth.service import Authenticator

    class Table:
        name = "P"
        mechanisms = ("PLAIN",)

        async def verify(self, creds, *, icid, client_ip):
            ok = (creds.username, creds.password) == ("legit", "right")
            return AuthOutcome(Verdict.OK if ok else Verdict.FAIL, "P")

    sink = ListSink()
    guard = AuthGuard(GuardSettings(free_failures=2, base_delay=0.02, max_delay=0.08, lockout_failures=8,
                                    lockout_seconds=60), sink)
    auth = Authenticator({"P": Table()}, sink, guard)

    async def attacker():
        verdicts = []
        for i in range(1000):
            out = await auth.authenticate("P", Credentials("PLAIN", f"u{i % 50}", "guess"), icid=i,
                                          client_ip="203.0.113.9")
            verdicts.append(out.verdict)
            await asyncio.sleep(0)
        return verdicts

    async def legit():
        await asyncio.sleep(0.02)            # the attack is under way
        t0 = time.perf_counter()
        out = await auth.authenticate("P", Credentials("PLAIN", "legit", "right"), icid=5000,
                                      client_ip="198.51.100.20")
        return out.verdict, time.perf_counter() - t0

    async def main():
        t0 = time.perf_counter()
        verdicts, (legit_verdict, legit_time) = await asyncio.gather(attacker(), legit())
        return verdicts, legit_verdict, legit_time, time.perf_counter() - t0

    verdicts, legit_verdict, legit_time, attack_time = asyncio.run(main())
    assert verdicts.count(Verdict.FAIL) == 8 and verdicts.count(Verdict.LOCKED) == 992
    assert attack_time >= 0.02 + 0.04 + 0.08 * 4    # the tarpit really waited (failures 3..8)
    assert legit_verdict is Verdict.OK
    assert legit_time < 0.02                # less than the smallest tarpit step: none applied
    assert [e.scope for e in sink.of_type(SmtpAuthLockout)] == ["address"]


def test_parallel_attempts_from_one_address_share_the_tarpit():
    """Attempts verified at the same time each count for the next: 20 parallel guesses do not
    all start with no delay, and counters are released afterwards."""
    from mailward.auth.base import AuthOutcome, Credentials, Verdict
    from mailward.auth.service import Authenticator

    class Slow:
        name = "P"
        mechanisms = ("PLAIN",)

        async def verify(self, creds, *, icid, client_ip):
            await asyncio.sleep(0.01)
            return AuthOutcome(Verdict.FAIL, "P")

    slept: list[float] = []

    async def fake_sleep(d):
        slept.append(d)

    guard = AuthGuard(GuardSettings(free_failures=3, base_delay=0.5, max_delay=8.0, lockout_failures=100),
                      ListSink(), sleep=fake_sleep)
    auth = Authenticator({"P": Slow()}, ListSink(), guard)

    async def main():
        # one failure first: from then on the address is suspect and parallel attempts count
        await auth.authenticate("P", Credentials("PLAIN", "u0", "x"), icid=0, client_ip="203.0.113.9")
        await asyncio.gather(*(auth.authenticate("P", Credentials("PLAIN", f"u{i}", "x"), icid=i,
                                                 client_ip="203.0.113.9") for i in range(1, 21)))

    asyncio.run(main())
    assert len(slept) == 21 - 3                    # all but the first three were tarpitted
    assert max(slept) == 8.0
    assert all(c.in_flight == 0 for c in guard._ip.counters.values())
    assert guard.tracked() == (1, 21)              # 21 failures remembered, nothing leaked


def test_parallel_successes_without_failures_are_not_tarpitted():
    """A busy client with the right password on many connections at once pays nothing."""
    from mailward.auth.base import AuthOutcome, Credentials, Verdict
    from mailward.auth.service import Authenticator

    class Ok:
        name = "P"
        mechanisms = ("PLAIN",)

        async def verify(self, creds, *, icid, client_ip):
            await asyncio.sleep(0.01)
            return AuthOutcome(Verdict.OK, "P")

    slept: list[float] = []

    async def fake_sleep(d):
        slept.append(d)

    guard = AuthGuard(GuardSettings(free_failures=3, base_delay=0.5), ListSink(), sleep=fake_sleep)
    auth = Authenticator({"P": Ok()}, ListSink(), guard)

    async def main():
        await asyncio.gather(*(auth.authenticate("P", Credentials("PLAIN", "relay", "right"), icid=i,
                                                 client_ip="203.0.113.7") for i in range(50)))

    asyncio.run(main())
    assert [d for d in slept if d > 0] == []


def test_admit_is_check_then_begin_in_one_step():
    # Twin guards fed the same failures: admit() must answer what check() + begin() answer.
    a, clock_a, _, _ = make(free_failures=1, base_delay=0.5, max_delay=8.0, lockout_failures=4)
    b, clock_b, _, _ = make(free_failures=1, base_delay=0.5, max_delay=8.0, lockout_failures=4)
    assert a.admit("10.0.0.1", "alice") == (None, 0.0)      # clean: no delay, now in flight
    assert b.check("10.0.0.1", "alice") is None and b.begin("10.0.0.1", "alice") == 0.0
    for g in (a, b):
        g.end("10.0.0.1", "alice")
        g.record_failure("10.0.0.1", "alice")
        g.record_failure("10.0.0.1", "alice")
    lock, delay = a.admit("10.0.0.1", "alice")
    assert lock is None and delay == b.begin("10.0.0.1", "alice") == 1.0
    # a second attempt in flight from a failing address counts as a likely failure
    assert a.admit("10.0.0.1", "bob")[1] == b.begin("10.0.0.1", "bob") == 2.0
    for g in (a, b):
        g.end("10.0.0.1", "alice")
        g.end("10.0.0.1", "bob")
        g.record_failure("10.0.0.1", "alice")
        g.record_failure("10.0.0.1", "alice")           # the 4th: lockout
    lock, delay = a.admit("10.0.0.1", "alice")
    assert lock == b.check("10.0.0.1", "alice") and lock.scope == "address" and delay == 0.0
    # a refused attempt is not in flight: nothing to end, nothing counted
    assert a._ip.counters["10.0.0.1"].in_flight == 0
    assert a.tracked() == b.tracked()


def test_passes_now_is_admit_without_delay_or_lockout_and_registers_nothing():
    # Twin guards fed the same history: passes_now() on one must say what admit() says on the
    # other (no lockout and no delay), at every step, without putting anything in flight.
    def twins(**kw):
        return make(**kw)[:2], make(**kw)[:2]

    for kw in (dict(free_failures=2, base_delay=0.5, lockout_failures=5),
               dict(free_failures=2, base_delay=0.0, lockout_failures=5)):
        (a, clock_a), (b, clock_b) = twins(**kw)
        answers = []
        for step in range(7):
            for ip, user in (("10.0.0.1", "alice"), ("10.0.0.2", "alice"), ("10.0.0.1", "bob"),
                             ("10.0.0.3", "carol")):
                before = a._ip.counters.get(ip).in_flight if ip in a._ip.counters else 0
                now = a.passes_now(ip, user)
                lock, delay = b.admit(ip, user)
                if lock is None:
                    b.end(ip, user)
                assert now == (lock is None and delay == 0.0), (kw, step, ip, user)
                assert (a._ip.counters.get(ip).in_flight if ip in a._ip.counters else 0) == before
                answers.append(now)
            for g in (a, b):                       # history: alice fails from 10.0.0.1 ...
                g.record_failure("10.0.0.1", "alice")
            if step == 0:                          # ... while another attempt is in flight there
                for g in (a, b):
                    g.begin("10.0.0.1", "dave")
        assert True in answers and False in answers   # both answers were exercised
