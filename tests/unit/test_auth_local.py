"""The users file and the local profile: Argon2id, permissions, atomic rewrite, reload,
cache invalidation, and no user enumeration (same reply, same time)."""
from __future__ import annotations

import asyncio
import math
import os
import stat
import time

import pytest
from argon2 import PasswordHasher, Type

from mailward.auth.base import Credentials, Verdict
from mailward.auth.cache import CredentialCache
from mailward.auth.local import LocalProfile
from mailward.auth.users import UserStore, UserStoreError
from mailward.maillog.events import SmtpAuthMisconfigured


def fast_hasher() -> PasswordHasher:
    # Cheap parameters keep the unit tests fast; production uses users.default_hasher().
    return PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1, type=Type.ID)


@pytest.fixture
def store(tmp_path):
    s = UserStore(tmp_path / "users.db", hasher=fast_hasher(), create=True)
    s.add("alice", "wonderland")
    s.add("bob", "builder")
    return s


def verify(profile, user, password, mech="PLAIN"):
    return asyncio.run(profile.verify(Credentials(mech, user, password), icid=7, client_ip="127.0.0.1"))


def test_file_created_0600_with_argon2id(store):
    mode = stat.S_IMODE(os.stat(store.path).st_mode)
    assert mode == 0o600
    text = store.path.read_text()
    assert "wonderland" not in text
    assert "alice:$argon2id$" in text and "bob:$argon2id$" in text


def test_default_hasher_is_argon2id():
    from mailward.auth.users import default_hasher

    h = default_hasher()
    assert h.type is Type.ID and h.memory_cost >= 19456 and h.time_cost >= 2


def test_verify_right_wrong_unknown(store):
    assert store.verify_sync("alice", "wonderland")
    assert not store.verify_sync("alice", "Wonderland")
    assert not store.verify_sync("carol", "wonderland")
    assert not store.verify_sync("alice", "")


def test_refuses_world_readable(store):
    os.chmod(store.path, 0o644)
    with pytest.raises(UserStoreError, match="chmod 600"):
        UserStore(store.path, hasher=fast_hasher())
    profile = LocalProfile("Local", store)
    out = verify(profile, "alice", "wonderland")
    assert out.verdict is Verdict.MISCONFIGURED
    assert out.events == (SmtpAuthMisconfigured(7, "Local"),)


def test_missing_file_is_misconfigured(tmp_path, store):
    profile = LocalProfile("Local", store)
    store.path.unlink()
    assert verify(profile, "alice", "wonderland").verdict is Verdict.MISCONFIGURED


def test_bad_names_and_passwords(store):
    for bad in ("", "a:b", "a b", "a\nb", "a\x00b"):
        with pytest.raises(UserStoreError):
            store.add(bad, "pw")
    with pytest.raises(UserStoreError):
        store.add("carol", "")
    with pytest.raises(UserStoreError, match="already exists"):
        store.add("alice", "x")
    with pytest.raises(UserStoreError, match="no user"):
        store.passwd("carol", "x")
    with pytest.raises(UserStoreError, match="no user"):
        store.delete("carol")


def test_passwd_delete_and_atomic_rewrite(store):
    ino = os.stat(store.path).st_ino
    store.passwd("alice", "looking-glass")
    assert os.stat(store.path).st_ino != ino       # replaced by rename, never rewritten in place
    assert not store.verify_sync("alice", "wonderland")
    assert store.verify_sync("alice", "looking-glass")
    store.delete("bob")
    assert store.names() == ["alice"]
    assert not [p for p in store.path.parent.iterdir() if p.name.endswith(".tmp")]


def test_reload_when_another_process_changes_file(store):
    other = UserStore(store.path, hasher=fast_hasher())   # e.g. the `mailward users` CLI
    other.add("carol", "c4rol")
    other.delete("bob")
    assert store.verify_sync("carol", "c4rol") is False   # not refreshed yet: sync path is raw
    assert sorted(store.refresh()) == ["bob", "carol"]
    assert store.verify_sync("carol", "c4rol")
    assert store.names() == ["alice", "carol"]


def test_profile_mechanisms_and_verdicts(store):
    profile = LocalProfile("IncomingAuthentication", store)
    assert profile.mechanisms == ("PLAIN", "LOGIN")
    ok = verify(profile, "alice", "wonderland")
    assert ok.verdict is Verdict.OK and ok.profile == "IncomingAuthentication"
    assert verify(profile, "alice", "nope").verdict is Verdict.FAIL
    assert verify(profile, "ghost", "nope").verdict is Verdict.FAIL
    assert verify(profile, "alice", "wonderland", mech="LOGIN").verdict is Verdict.OK
    cram = asyncio.run(profile.verify(Credentials("CRAM-MD5", "alice", challenge="<1@x>",
                                                  digest="00" * 16), icid=1, client_ip="::1"))
    assert cram.verdict is Verdict.FAIL


def test_cache_makes_repeats_cheap_and_forgets_changed_users(store):
    cache = CredentialCache()
    profile = LocalProfile("Local", store, cache)
    assert verify(profile, "alice", "wonderland").detail is None
    assert verify(profile, "alice", "wonderland").detail == "cached"
    # Another process changes alice's password: the cached old one must stop working.
    UserStore(store.path, hasher=fast_hasher()).passwd("alice", "new-one")
    out = verify(profile, "alice", "wonderland")
    assert out.verdict is Verdict.FAIL
    assert verify(profile, "alice", "new-one").verdict is Verdict.OK
    # A deleted user too.
    assert verify(profile, "bob", "builder").verdict is Verdict.OK
    assert verify(profile, "bob", "builder").detail == "cached"
    UserStore(store.path, hasher=fast_hasher()).delete("bob")
    assert verify(profile, "bob", "builder").verdict is Verdict.FAIL


def test_failure_clears_cached_user(store):
    cache = CredentialCache()
    profile = LocalProfile("Local", store, cache)
    verify(profile, "alice", "wonderland")
    assert cache.hit("Local", "alice", "wonderland")
    verify(profile, "alice", "wrong")
    assert not cache.hit("Local", "alice", "wonderland")


def test_verification_does_not_block_the_event_loop(tmp_path):
    slow = PasswordHasher(time_cost=1, memory_cost=16384, parallelism=1, type=Type.ID)
    s = UserStore(tmp_path / "u.db", hasher=slow, create=True)
    s.add("alice", "pw")
    profile = LocalProfile("Local", s)

    async def main():
        ticks = 0
        done = asyncio.Event()

        async def ticker():
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0)

        t = asyncio.create_task(ticker())
        outs = await asyncio.gather(*(profile.verify(Credentials("PLAIN", "alice", "pw"), icid=1,
                                                     client_ip="127.0.0.1") for _ in range(4)))
        done.set()
        await t
        return ticks, outs

    ticks, outs = asyncio.run(main())
    assert all(o.verdict is Verdict.OK for o in outs)
    assert ticks > 10   # the loop kept running while Argon2 worked in threads


# --- no user enumeration ---------------------------------------------------------------

def mann_whitney_z(a: list[float], b: list[float]) -> float:
    """Normal-approximation z of the Mann-Whitney U statistic (ties get mid-ranks)."""
    pooled = sorted([(v, 0) for v in a] + [(v, 1) for v in b])
    ranks = [0.0] * len(pooled)
    i = 0
    while i < len(pooled):
        j = i
        while j + 1 < len(pooled) and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[k] = (i + j) / 2 + 1
        i = j + 1
    r_a = sum(r for r, (_, g) in zip(ranks, pooled) if g == 0)
    n1, n2 = len(a), len(b)
    u = r_a - n1 * (n1 + 1) / 2
    mu = n1 * n2 / 2
    sigma = math.sqrt(n1 * n2 * (n1 + n2 + 1) / 12)
    return (u - mu) / sigma


def sample_times(profile, pairs, rounds):
    """Interleaved timings so drift in machine load hits both groups alike."""
    times: dict[str, list[float]] = {k: [] for k, _, _ in pairs}

    async def main():
        for _ in range(rounds):
            for key, user, pw in pairs:
                t0 = time.perf_counter()
                out = await profile.verify(Credentials("PLAIN", user, pw), icid=1, client_ip="127.0.0.1")
                times[key].append(time.perf_counter() - t0)
                assert out.verdict is Verdict.FAIL

    asyncio.run(main())
    return times


def test_mann_whitney_detects_a_real_difference():
    # The statistic must have power: a 2x slower group is flagged at once.
    a = [1.0 + 0.01 * i for i in range(30)]
    b = [2.0 + 0.01 * i for i in range(30)]
    assert abs(mann_whitney_z(a, b)) > 6
    assert abs(mann_whitney_z(a, list(a))) < 0.01


def test_unknown_user_and_wrong_password_cost_the_same(tmp_path):
    hasher = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1, type=Type.ID)
    s = UserStore(tmp_path / "u.db", hasher=hasher, create=True)
    s.add("alice", "wonderland")
    profile = LocalProfile("Local", s)
    times = sample_times(profile, [("wrong", "alice", "nope"), ("unknown", "nobody", "nope")], 40)
    z = mann_whitney_z(times["wrong"], times["unknown"])
    # |z| > 4.5 happens by chance about once in 150,000 runs; skipping the dummy hash for an
    # unknown user makes it ~0.05 ms vs several ms, i.e. |z| near 7.7.
    assert abs(z) < 4.5, (z, sorted(times["wrong"])[20], sorted(times["unknown"])[20])


def test_same_reply_for_unknown_and_wrong(store):
    profile = LocalProfile("Local", store)
    a = verify(profile, "alice", "nope")
    b = verify(profile, "nobody", "nope")
    assert (a.verdict, a.profile, a.detail, a.events) == (b.verdict, b.profile, b.detail, b.events)


def test_authzid_other_than_self_is_refused(store):
    profile = LocalProfile("Local", store)

    def run(authzid):
        return asyncio.run(profile.verify(Credentials("PLAIN", "alice", "wonderland", authzid=authzid),
                                          icid=1, client_ip="127.0.0.1")).verdict

    assert run(None) is Verdict.OK and run("") is Verdict.OK and run("alice") is Verdict.OK
    assert run("bob") is Verdict.FAIL


# --- CRAM-MD5 (opt-in per user) ----------------------------------------------------------

def cram(profile, user, password_for_digest, challenge="<4711.1700000000@gw.example.test>", authzid=None):
    import hmac as _hmac

    digest = _hmac.new(password_for_digest.encode(), challenge.encode(), "md5").hexdigest()
    creds = Credentials("CRAM-MD5", user, authzid=authzid, challenge=challenge, digest=digest)
    return asyncio.run(profile.verify(creds, icid=1, client_ip="127.0.0.1")).verdict


def test_cram_offered_only_with_a_cram_user(store):
    profile = LocalProfile("Local", store)
    assert "CRAM-MD5" not in profile.mechanisms
    assert cram(profile, "alice", "wonderland") is Verdict.FAIL      # no context stored for alice
    store.add("carol", "c4rol-pw", cram=True)
    assert profile.mechanisms == ("PLAIN", "LOGIN", "CRAM-MD5")
    assert "c4rol-pw" not in store.path.read_text()
    assert ":{HMAC-MD5}" in store.path.read_text()
    assert cram(profile, "carol", "c4rol-pw") is Verdict.OK
    assert cram(profile, "carol", "wrong") is Verdict.FAIL
    assert cram(profile, "nobody", "c4rol-pw") is Verdict.FAIL
    assert cram(profile, "carol", "c4rol-pw", authzid="alice") is Verdict.FAIL
    assert verify(profile, "carol", "c4rol-pw").verdict is Verdict.OK   # PLAIN still via Argon2id


def test_passwd_keeps_or_changes_the_cram_setting(store):
    profile = LocalProfile("Local", store)
    store.add("carol", "one", cram=True)
    store.passwd("carol", "two")                   # keeps CRAM
    assert cram(profile, "carol", "two") is Verdict.OK
    assert cram(profile, "carol", "one") is Verdict.FAIL
    store.passwd("carol", "three", cram=False)     # drops it
    assert cram(profile, "carol", "three") is Verdict.FAIL
    assert "CRAM-MD5" not in profile.mechanisms
    assert "{HMAC-MD5}" not in store.path.read_text()


def test_corrupt_cram_field_is_refused(store):
    text = store.path.read_text().replace("\nalice:", "\nalice:", 1)
    lines = [ln + (":{HMAC-MD5}abc" if ln.startswith("alice:") else "") for ln in text.splitlines()]
    store.path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserStoreError, match="HMAC-MD5"):
        store.refresh()


def test_mechanisms_do_not_stat_every_time_verify_always_does(store, monkeypatch):
    import mailward.auth.users as users_mod

    now = [1000.0]
    monkeypatch.setattr(users_mod.time, "monotonic", lambda: now[0])
    stats = []
    real_stat = store._stat
    monkeypatch.setattr(store, "_stat", lambda: stats.append(1) or real_stat())
    cache = CredentialCache()
    profile = LocalProfile("Local", store, cache)
    for _ in range(5):                      # EHLO and AUTH of many connections
        assert profile.mechanisms == ("PLAIN", "LOGIN")
    assert len(stats) == 1
    # Another process adds a CRAM-MD5 user: the list shows it once the second has passed.
    UserStore(store.path, hasher=fast_hasher()).add("carol", "c4rol", cram=True)
    assert profile.mechanisms == ("PLAIN", "LOGIN")
    now[0] += 1.0
    assert profile.mechanisms == ("PLAIN", "LOGIN", "CRAM-MD5")
    # A password check always looks at the file, even from the cache, even within the second.
    assert verify(profile, "alice", "wonderland").verdict is Verdict.OK
    n = len(stats)
    assert verify(profile, "alice", "wonderland").detail == "cached"
    assert len(stats) == n + 1
    UserStore(store.path, hasher=fast_hasher()).passwd("alice", "changed")
    assert verify(profile, "alice", "wonderland").verdict is Verdict.FAIL
