"""The verified-credential cache: hits, TTL, LRU bound, per-user invalidation, no secrets held."""
from __future__ import annotations

import asyncio

from mailward.auth.base import AuthOutcome, Credentials, Verdict
from mailward.auth.cache import CredentialCache, verify_with_cache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_hit_only_for_exact_triple():
    c = CredentialCache(key=b"k" * 32)
    c.store("P", "alice", "s3cret")
    assert c.hit("P", "alice", "s3cret")
    assert not c.hit("P", "alice", "s3cret ")
    assert not c.hit("P", "alicE", "s3cret")
    assert not c.hit("Q", "alice", "s3cret")


def test_field_boundaries_do_not_collide():
    c = CredentialCache()
    c.store("P", "ab", "c")
    assert not c.hit("P", "a", "bc")
    assert not c.hit("Pa", "b", "c")
    assert not c.hit("P", "abc", "")


def test_ttl_expires():
    clock = Clock()
    c = CredentialCache(ttl=300, clock=clock)
    c.store("P", "u", "pw")
    clock.now += 299
    assert c.hit("P", "u", "pw")
    clock.now += 2
    assert not c.hit("P", "u", "pw")
    assert len(c) == 0


def test_lru_bound():
    c = CredentialCache(max_entries=3)
    for i in range(3):
        c.store("P", f"u{i}", "pw")
    assert c.hit("P", "u0", "pw")          # u0 now most recently used
    c.store("P", "u3", "pw")               # evicts u1, the least recently used
    assert len(c) == 3
    assert not c.hit("P", "u1", "pw")
    assert c.hit("P", "u0", "pw") and c.hit("P", "u2", "pw") and c.hit("P", "u3", "pw")
    for i in range(1000):
        c.store("P", f"x{i}", "pw")
    assert len(c) == 3
    assert sum(len(v) for v in c._by_user.values()) == 3


def test_invalidate_per_user_and_profile():
    c = CredentialCache()
    c.store("P", "alice", "one")
    c.store("P", "alice", "two")
    c.store("Q", "alice", "one")
    c.store("P", "bob", "one")
    assert c.invalidate("P", "alice") == 2
    assert not c.hit("P", "alice", "one") and not c.hit("P", "alice", "two")
    assert c.hit("Q", "alice", "one") and c.hit("P", "bob", "one")
    assert c.invalidate(None, "alice") == 1
    assert not c.hit("Q", "alice", "one")


def test_holds_no_password_or_user_text():
    c = CredentialCache()
    c.store("P", "alice", "correct horse battery")
    blob = repr(c._entries).encode() + b"".join(c._entries)
    assert b"correct horse" not in blob
    assert "correct horse" not in repr(c)


def _run(coro):
    return asyncio.run(coro)


def test_verify_with_cache_stores_success_and_skips_backend():
    c = CredentialCache()
    calls = []

    async def backend():
        calls.append(1)
        return AuthOutcome(Verdict.OK, "P")

    creds = Credentials("PLAIN", "alice", "pw")
    assert _run(verify_with_cache(c, "P", creds, backend)).verdict is Verdict.OK
    out = _run(verify_with_cache(c, "P", creds, backend))
    assert out.verdict is Verdict.OK and out.detail == "cached"
    assert len(calls) == 1


def test_failure_invalidates_user_tempfail_does_not():
    c = CredentialCache()
    c.store("P", "alice", "old")
    verdict = {"v": Verdict.TEMPFAIL}

    async def backend():
        return AuthOutcome(verdict["v"], "P")

    _run(verify_with_cache(c, "P", Credentials("PLAIN", "alice", "guess"), backend))
    assert c.hit("P", "alice", "old")
    verdict["v"] = Verdict.FAIL
    _run(verify_with_cache(c, "P", Credentials("PLAIN", "alice", "guess"), backend))
    assert not c.hit("P", "alice", "old")


def test_cram_is_never_cached():
    c = CredentialCache()
    calls = []

    async def backend():
        calls.append(1)
        return AuthOutcome(Verdict.OK, "P")

    creds = Credentials("CRAM-MD5", "alice", challenge="<1@x>", digest="ab" * 16)
    _run(verify_with_cache(c, "P", creds, backend))
    _run(verify_with_cache(c, "P", creds, backend))
    assert len(calls) == 2 and len(c) == 0


def test_entries_are_keyed_macs():
    # The same triple under another key is another entry: a key is a MAC key, not a salt
    # anyone could recompute, and a different password never maps to the same entry.
    a, b = CredentialCache(key=b"a" * 32), CredentialCache(key=b"b" * 32)
    assert a._digest("P", "alice", "pw") != b._digest("P", "alice", "pw")
    assert a._digest("P", "alice", "pw") == CredentialCache(key=b"a" * 32)._digest("P", "alice", "pw")
    assert a._digest("P", "alice", "pw") != a._digest("P", "alice", "pw2")
    assert len(a._digest("P", "alice", "pw")) == 32
    for bad in (b"", b"k" * 15, b"k" * 65):
        try:
            CredentialCache(key=bad)
        except ValueError:
            continue
        raise AssertionError(f"a {len(bad)}-byte key was accepted")


def test_concurrent_attempts_with_the_same_credentials_share_one_verification():
    c = CredentialCache()
    calls = []

    def backend_for(verdict):
        async def backend():
            calls.append(1)
            await asyncio.sleep(0.05)
            return AuthOutcome(verdict, "P")
        return backend

    async def herd(password, verdict, n=20):
        creds = Credentials("PLAIN", "alice", password)
        return await asyncio.gather(*(verify_with_cache(c, "P", creds, backend_for(verdict)) for _ in range(n)))

    # the entry ran out and every connection of a busy client re-verifies at once: one KDF
    outs = _run(herd("pw", Verdict.OK))
    assert len(calls) == 1 and all(o.verdict is Verdict.OK for o in outs) and c.hit("P", "alice", "pw")
    assert not c._inflight
    # a failure is never shared: every attempt is verified (and counted by the guard) on its own
    calls.clear()
    outs = _run(herd("guess", Verdict.FAIL, n=5))
    assert len(calls) == 5 and all(o.verdict is Verdict.FAIL for o in outs)
    # different passwords never wait for each other
    calls.clear()

    async def two():
        a = verify_with_cache(c, "P", Credentials("PLAIN", "bob", "one"), backend_for(Verdict.OK))
        b = verify_with_cache(c, "P", Credentials("PLAIN", "bob", "two"), backend_for(Verdict.FAIL))
        return await asyncio.gather(a, b)
    a, b = _run(two())
    assert (a.verdict, b.verdict, len(calls)) == (Verdict.OK, Verdict.FAIL, 2)


def test_a_cancelled_verification_releases_those_waiting_for_it():
    c = CredentialCache()
    calls = []

    async def backend():
        calls.append(1)
        await asyncio.sleep(0.05)
        return AuthOutcome(Verdict.OK, "P")

    async def go():
        creds = Credentials("PLAIN", "alice", "pw")
        leader = asyncio.ensure_future(verify_with_cache(c, "P", creds, backend))
        await asyncio.sleep(0.01)
        waiter = asyncio.ensure_future(verify_with_cache(c, "P", creds, backend))
        await asyncio.sleep(0.01)
        leader.cancel()                       # the first client hung up mid-verification
        out = await asyncio.wait_for(waiter, 2.0)
        return out, leader.cancelled()

    out, cancelled = _run(go())
    assert cancelled and out.verdict is Verdict.OK and len(calls) == 2 and not c._inflight
