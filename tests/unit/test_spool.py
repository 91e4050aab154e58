"""The spool: commit and read back, group commit, per-recipient state across restarts,
torn tails, reclaim and compaction, large bodies with bounded memory, disk errors."""
from __future__ import annotations

import asyncio
import errno
import os
import time
import tracemalloc
from pathlib import Path

import pytest

from mailward.queue import Envelope, RcptState, Spool, SpoolError
from mailward.queue.fsops import FileOps
from mailward.queue.records import Scan
from mailward.queue.recovery import seg_path, segment_numbers, snapshot


def env(mid: int, rcpts=("a@example.com", "b@example.com"), **kw) -> Envelope:
    return Envelope(mid=mid, icid=100 + mid, sender=f"s{mid}@example.org", recipients=tuple(rcpts),
                    received_at=1_700_000_000.0 + mid, **kw)


def body_for(mid: int, size: int = 300) -> bytes:
    head = b"Subject: message %d\r\n\r\n" % mid
    return head + bytes((mid * 7 + i) % 251 for i in range(max(0, size - len(head))))


async def commit(spool: Spool, mid: int, body: bytes | None = None, chunk: int = 4096, **kw):
    body = body_for(mid) if body is None else body
    w = spool.writer()
    for i in range(0, len(body), chunk):
        w.write(body[i:i + chunk])
    return await w.commit(env(mid, **kw))


def run(coro):
    return asyncio.run(coro)


async def opened(root: Path, **kw) -> Spool:
    s = Spool(root, **kw)
    await s.open()
    return s


# --- basics -------------------------------------------------------------------------------------

def test_commit_read_back_and_restart(tmp_path):
    async def go():
        s = await opened(tmp_path, memory_threshold=1024)
        full = env(1, auth_user="joe", params=(("BODY", "8BITMIME"), ("SMTPUTF8", "")),
                   listener="in", client_ip="127.0.0.1", helo="h.example")
        w = s.writer()
        w.write(body_for(1))
        q = await w.commit(full)
        assert q.size == 300 and q.states == [RcptState.PENDING, RcptState.PENDING]
        await commit(s, 2, body_for(2, 5000))          # spills: large file
        assert s.read_body(1) == body_for(1)
        assert s.read_body(2) == body_for(2, 5000)
        assert s.get(1).envelope == full
        await s.close()
        s = await opened(tmp_path)
        assert s.get(1).envelope == full
        assert s.read_body(1) == body_for(1)
        with s.open_body(2) as f:
            assert f.read() == body_for(2, 5000)
        assert sorted(m.mid for m in s.messages()) == [1, 2]
        await s.close()
    run(go())


def test_non_ascii_and_undecodable_envelope_text_round_trips(tmp_path):
    async def go():
        e = Envelope(1, 2, "jos\u00e9@b\u00fccher.example", ("\u7528\u6237@\u4f8b\u5b50.\u4e2d\u56fd", "x\udcff@y"),
                     1.5, helo="h\udc80", auth_user="\u00fc")
        s = await opened(tmp_path)
        w = s.writer()
        w.write(b"x")
        await w.commit(e)
        await s.close()
        s = await opened(tmp_path)
        assert s.get(1).envelope == e
        await s.close()
    run(go())


def test_commit_requires_open_and_unique_mid(tmp_path):
    async def go():
        s = Spool(tmp_path)
        with pytest.raises(SpoolError):
            s.writer()
        await s.open()
        await commit(s, 5)
        with pytest.raises(SpoolError):
            await commit(s, 5)
        w = s.writer()
        w.write(b"x")
        await w.commit(env(6))
        with pytest.raises(SpoolError):
            await w.commit(env(7))           # a writer commits once
        with pytest.raises(SpoolError):
            w.write(b"more")
        await s.close()
    run(go())


def test_second_owner_is_refused(tmp_path):
    async def go():
        async with Spool(tmp_path / "ctx") as c:
            with pytest.raises(SpoolError, match="already open"):
                await c.open()
        a = await opened(tmp_path)
        b = Spool(tmp_path)
        with pytest.raises(SpoolError, match="in use"):
            await b.open()
        await a.close()
        await b.open()
        await b.close()
    run(go())


def test_on_commit_callback_sees_each_durable_message(tmp_path):
    async def go():
        s = await opened(tmp_path)
        seen = []
        s.on_commit(lambda m: seen.append((m.mid, s.get(m.mid) is m)))
        for mid in (1, 2, 3):
            await commit(s, mid)
        await s.close()
        return seen
    assert run(go()) == [(1, True), (2, True), (3, True)]


def test_cancelled_committer_still_queues_message(tmp_path):
    # A client that hangs up while its commit is in flight: the message may be durable, so
    # it must be in the index (and delivered) rather than lost until the next restart.
    async def go():
        s = await opened(tmp_path)
        w = s.writer()
        w.write(b"x" * 10)
        t = asyncio.create_task(w.commit(env(9)))
        await asyncio.sleep(0)
        t.cancel()
        await asyncio.sleep(0.2)
        present = s.get(9) is not None
        await s.close()
        s2 = await opened(tmp_path)
        on_disk = s2.get(9) is not None
        await s2.close()
        return present, on_disk
    assert run(go()) == (True, True)


# --- group commit -------------------------------------------------------------------------------

def test_one_fdatasync_serves_many_concurrent_commits(tmp_path):
    # A slow disk (each sync takes 20 ms) makes batching visible and deterministic: while the
    # first commit's fdatasync runs, the other 99 queue up and share the next one.
    def slow(kind, target):
        time.sleep(0.02)
    fs = FileOps(on_sync=slow)

    async def go():
        s = await opened(tmp_path, fs=fs)
        before = fs.data_syncs
        await asyncio.gather(*(commit(s, mid) for mid in range(1, 101)))
        used = fs.data_syncs - before
        stats = s.stats()
        await s.close()
        return used, stats
    used, stats = run(go())
    assert stats["messages"] == 100
    # first segment's magic + first commit alone + the rest together (a small margin)
    assert used <= 4, used
    assert stats["records"] == 100 and stats["batches"] <= 3


def test_sequential_commits_each_get_their_own_sync(tmp_path):
    fs = FileOps()

    async def go():
        s = await opened(tmp_path, fs=fs)
        await commit(s, 1)
        before = fs.data_syncs
        for mid in range(2, 6):
            await commit(s, mid)
        await s.close()
        return fs.data_syncs - before
    assert run(go()) == 4


def test_commit_window_gathers_a_burst_into_one_batch(tmp_path):
    async def go():
        s = await opened(tmp_path, commit_window=0.2)
        await commit(s, 1)
        before = s.stats()["batches"]

        async def late(mid, delay):
            await asyncio.sleep(delay)
            await commit(s, mid)
        # arrivals spread over 10 ms all land in the window opened by the first one
        await asyncio.gather(*(late(mid, (mid - 2) * 0.001) for mid in range(2, 12)))
        batches = s.stats()["batches"] - before
        await s.close()
        return batches
    assert run(go()) == 1


def test_fsync_off_issues_no_syncs(tmp_path):
    async def go():
        s = await opened(tmp_path, fsync=False, memory_threshold=100)
        await asyncio.gather(*(commit(s, m, body_for(m, 50 + 100 * (m % 2))) for m in range(1, 11)))
        n = s.fs.syncs
        await s.close()
        return n
    assert run(go()) == 0


# --- per-recipient state ------------------------------------------------------------------------

def test_recipient_state_survives_restart(tmp_path):
    async def go():
        s = await opened(tmp_path)
        await commit(s, 1, rcpts=("a@x", "b@x", "c@x"))
        await commit(s, 2)
        await s.record(1, 0, RcptState.DELIVERED)
        await s.defer(1, [1, 2], next_attempt=2_000_000_000.0, error="451 4.7.1 greylisted")
        await s.record(1, 2, RcptState.BOUNCED, error="550 5.1.1 no such user")
        await s.record(2, 0, RcptState.DELIVERED)
        await s.record(2, 1, RcptState.DELIVERED)    # finishes MID 2
        assert s.get(2) is None
        await s.close()
        s = await opened(tmp_path)
        m = s.get(1)
        assert m.states == [RcptState.DELIVERED, RcptState.PENDING, RcptState.BOUNCED]
        assert m.pending_rids() == [1]
        assert m.attempts == 1 and m.next_attempt == 2_000_000_000.0
        assert m.last_error == "550 5.1.1 no such user"
        assert m.rcpt_errors == {1: "451 4.7.1 greylisted", 2: "550 5.1.1 no such user"}
        assert m.first_attempt_at is not None
        assert s.get(2) is None                     # delivered is never delivered again
        assert s.due(1_999_999_999.0) == [] and [x.mid for x in s.due(2_000_000_001.0)] == [1]
        await s.record(1, 1, RcptState.DELIVERED)
        await s.close()
        s = await opened(tmp_path)
        assert list(s.messages()) == []
        await s.close()
    run(go())


def test_delete_and_unknown_mid(tmp_path):
    async def go():
        s = await opened(tmp_path, memory_threshold=100)
        await commit(s, 1, body_for(1, 1000))
        large = tmp_path / "large" / "1"
        assert large.exists()
        await s.delete(1)
        assert s.get(1) is None and not large.exists()
        with pytest.raises(KeyError):
            await s.record(1, 0, RcptState.DELIVERED)
        with pytest.raises(KeyError):
            s.read_body(1)
        await commit(s, 2)
        with pytest.raises(ValueError):
            await s.record(2, 5, RcptState.DELIVERED)
        await s.close()
        s = await opened(tmp_path)
        assert [m.mid for m in s.messages()] == [2]
        await s.close()
    run(go())


# --- torn tails ---------------------------------------------------------------------------------

def test_torn_tail_at_every_cut_of_the_last_record(tmp_path):
    async def build(root):
        s = await opened(root)
        for mid in (1, 2, 3):
            await commit(s, mid, body_for(mid, 120))
        await s.close()

    root = tmp_path / "orig"
    run(build(root))
    path = seg_path(root, 1)
    data = path.read_bytes()
    recs = list(Scan(data))
    assert data[recs[-1].end:].count(0) == len(data) - recs[-1].end   # preallocated zeros
    data = data[:recs[-1].end]
    last_start = recs[-1].offset
    # every byte of the header region, then a sample through the payload
    cuts = list(range(last_start, last_start + 24)) + list(range(last_start + 24, len(data), 11))
    for cut in cuts:
        root2 = tmp_path / f"cut{cut}"
        (root2 / "segments").mkdir(parents=True)
        seg_path(root2, 1).write_bytes(data[:cut])

        async def check():
            sp = await opened(root2, fsync=False)
            assert sorted(m.mid for m in sp.messages()) == [1, 2]
            assert sp.recovered_torn == ({1: cut - last_start} if cut > last_start else {})
            await commit(sp, 4)                       # appends after the clean end
            await sp.close()
            sp = await opened(root2, fsync=False)
            assert sorted(m.mid for m in sp.messages()) == [1, 2, 4]
            assert sp.read_body(4) == body_for(4) and sp.read_body(2) == body_for(2, 120)
            await sp.close()
        run(check())


def test_preallocated_zero_tail_is_the_clean_end_not_a_torn_write(tmp_path):
    async def go():
        s = await opened(tmp_path, prealloc=64 << 10)
        await commit(s, 1)
        await s.close()
        path = seg_path(tmp_path, 1)
        assert path.stat().st_size == 64 << 10          # zero-filled ahead of the records
        s = await opened(tmp_path, prealloc=64 << 10)
        assert s.recovered_torn == {} and path.stat().st_size == 64 << 10
        await commit(s, 2)                               # overwrites zeros in place
        assert path.stat().st_size == 64 << 10
        await s.close()
        # A record cut short with zeros after it (a torn write into the zero region).
        data = bytearray(path.read_bytes())
        end = list(Scan(bytes(data)))[-1].end
        start = list(Scan(bytes(data)))[-1].offset
        data[start + 20:end] = bytes(end - start - 20)
        path.write_bytes(bytes(data))
        s = await opened(tmp_path, prealloc=64 << 10)
        assert [m.mid for m in s.messages()] == [1]
        assert s.recovered_torn == {1: len(data) - start} and path.stat().st_size == start
        await commit(s, 3)
        await s.close()
        s = await opened(tmp_path)
        assert sorted(m.mid for m in s.messages()) == [1, 3] and s.read_body(3) == body_for(3)
        await s.close()
    run(go())


def test_without_preallocation_segments_grow_exactly(tmp_path):
    async def go():
        s = await opened(tmp_path, prealloc=0, segment_bytes=2048)
        for mid in range(1, 12):
            await commit(s, mid)
        await s.close()
        for n in segment_numbers(tmp_path):
            data = seg_path(tmp_path, n).read_bytes()
            scan = Scan(data)
            assert list(scan) and scan.end == len(data)      # no zero tail at all
        s = await opened(tmp_path, prealloc=0)
        assert sorted(m.mid for m in s.messages()) == list(range(1, 12)) and s.recovered_torn == {}
        await s.close()
    run(go())


def test_garbage_and_flipped_bits_stop_recovery_cleanly(tmp_path):
    async def go():
        s = await opened(tmp_path)
        for mid in (1, 2):
            await commit(s, mid)
        await s.close()
        path = seg_path(tmp_path, 1)
        data = bytearray(path.read_bytes())
        data = data[:list(Scan(bytes(data)))[-1].end]
        data[-5] ^= 0xFF                      # corrupt the body of MID 2: CRC fails
        path.write_bytes(bytes(data) + b"\0" * 100)
        s = await opened(tmp_path)
        assert [m.mid for m in s.messages()] == [1]
        assert path.stat().st_size < len(data)
        await s.close()
    run(go())


# --- reclaim and compaction ---------------------------------------------------------------------

async def finish_all_and_wait_reclaim(s: Spool, root: Path, mids) -> None:
    """Record both recipients of ``mids`` done, then wait (bounded, ~2 s) for the spool to
    reclaim every segment but the current one."""
    for mid in mids:
        await s.record(mid, 0, RcptState.DELIVERED)
        await s.record(mid, 1, RcptState.BOUNCED)
    for _ in range(200):
        if len(segment_numbers(root)) == 1:
            return
        await asyncio.sleep(0.01)


def test_finished_segments_are_reclaimed(tmp_path):
    async def go():
        s = await opened(tmp_path, segment_bytes=4096, fsync=False)
        for mid in range(1, 61):
            await commit(s, mid)
        assert len(segment_numbers(tmp_path)) >= 4
        await finish_all_and_wait_reclaim(s, tmp_path, range(1, 61))
        segs = segment_numbers(tmp_path)
        await s.close()
        return segs
    assert len(run(go())) == 1


def test_compaction_frees_a_segment_pinned_by_one_deferred_message(tmp_path):
    async def go():
        s = await opened(tmp_path, segment_bytes=4096, compact_after=3600)
        for mid in range(1, 21):       # a few segments: below the "2x live" space rule
            await commit(s, mid)
        await s.defer(1, [0, 1], next_attempt=2_000_000_000.0, error="451 later")
        await s.record(1, 0, RcptState.DELIVERED)
        for mid in range(2, 21):
            await s.record(mid, 0, RcptState.DELIVERED)
            await s.record(mid, 1, RcptState.DELIVERED)
        await asyncio.sleep(0.05)
        pinned = segment_numbers(tmp_path)
        assert pinned[0] == 1                       # MID 1 pins segment 1 (compact_after not reached)
        copied = await s.compact()
        assert copied == 1
        for _ in range(100):
            if 1 not in segment_numbers(tmp_path):
                break
            s._schedule_maintenance()
            await asyncio.sleep(0.01)
        segs = segment_numbers(tmp_path)
        assert 1 not in segs and len(segs) < len(pinned)
        assert s.read_body(1) == body_for(1)
        await s.close()
        s = await opened(tmp_path)
        m = s.get(1)
        assert [x.mid for x in s.messages()] == [1]
        assert m.states == [RcptState.DELIVERED, RcptState.PENDING]
        assert m.attempts == 1 and m.last_error == "451 later"
        assert s.read_body(1) == body_for(1)
        await s.record(1, 1, RcptState.DELIVERED)
        await s.close()
        s = await opened(tmp_path)
        assert list(s.messages()) == []
        await s.close()
    run(go())


def test_outcomes_racing_a_compaction_are_never_lost(tmp_path):
    # Records for messages being copied forward arrive while the copy is in flight; after
    # a restart each message has exactly the state the running spool had.
    async def go():
        s = await opened(tmp_path, segment_bytes=4096, compact_after=3600, fsync=False)
        for mid in range(1, 31):
            await commit(s, mid, rcpts=("a@x", "b@x", "c@x"))
        assert len(segment_numbers(tmp_path)) >= 3
        jobs = [s.compact(1)]
        for mid in range(1, 31):
            jobs.append(s.record(mid, mid % 3, RcptState.DELIVERED))
            if mid % 2:
                jobs.append(s.defer(mid, [(mid + 1) % 3], next_attempt=2e9, error="451 x"))
            if mid % 5 == 0:
                jobs.append(s.record(mid, (mid + 1) % 3, RcptState.BOUNCED))
                jobs.append(s.record(mid, (mid + 2) % 3, RcptState.DELIVERED))
        await asyncio.gather(*jobs)
        await s.compact()
        expected = {m.mid: (list(m.states), m.attempts, m.last_error) for m in s.messages()}
        assert len(expected) == 24                      # every 5th finished
        await s.close()
        s = await opened(tmp_path)
        got = {m.mid: (list(m.states), m.attempts, m.last_error) for m in s.messages()}
        assert all(s.read_body(mid) == body_for(mid) for mid in got)
        await s.close()
        return expected, got
    expected, got = run(go())
    assert got == expected


def test_disk_use_stays_near_twice_live_when_old_messages_linger(tmp_path):
    # Every 10th message is deferred for a long time: each segment stays pinned by a few,
    # and without the space rule the spool would keep every segment forever.
    async def go():
        s = await opened(tmp_path, segment_bytes=4096, compact_after=3600, fsync=False)
        for mid in range(1, 401):
            await commit(s, mid)
            if mid % 10:
                await s.record(mid, 0, RcptState.DELIVERED)
                await s.record(mid, 1, RcptState.DELIVERED)
            else:
                await s.defer(mid, [0, 1], next_attempt=2_000_000_000.0, error="451 later")
        await asyncio.sleep(0.05)
        on_disk = sum(p.stat().st_size for p in (tmp_path / "segments").iterdir())
        live = s._index.live_bytes
        written = s.stats()["current_segment"] * 4096      # about what was ever written
        assert len(list(s.messages())) == 40
        await s.close()
        s = await opened(tmp_path)
        assert sorted(m.mid for m in s.messages()) == list(range(10, 401, 10))
        assert all(s.read_body(m) == body_for(m) for m in range(10, 401, 10))
        await s.close()
        return on_disk, live, written
    on_disk, live, written = run(go())
    assert on_disk <= 2 * live + 6 * 4096, (on_disk, live)
    assert on_disk < written / 3, (on_disk, written)   # far below "keep everything"


def test_automatic_compaction_after_delay(tmp_path):
    async def go():
        s = await opened(tmp_path, segment_bytes=4096, compact_after=0.0, memory_threshold=200,
                         fsync=False)
        await commit(s, 1, body_for(1, 1000))           # large body: pointer is copied
        for mid in range(2, 40):
            await commit(s, mid)
            await s.record(mid, 0, RcptState.DELIVERED)
            await s.record(mid, 1, RcptState.DELIVERED)
        for _ in range(200):
            if segment_numbers(tmp_path)[0] != 1:
                break
            await asyncio.sleep(0.01)
        assert segment_numbers(tmp_path)[0] != 1
        assert s.read_body(1) == body_for(1, 1000)
        await s.close()
        s = await opened(tmp_path)
        assert [m.mid for m in s.messages()] == [1] and s.read_body(1) == body_for(1, 1000)
        await s.close()
    run(go())


# --- large bodies -------------------------------------------------------------------------------

def test_large_message_spills_with_bounded_memory(tmp_path):
    threshold = 256 << 10
    chunk = b"0123456789abcdef" * 4096          # 64 KiB
    total_chunks = 160                          # 10 MiB body

    async def go():
        s = await opened(tmp_path, memory_threshold=threshold)
        w = s.writer()
        tracemalloc.start()
        try:
            for _ in range(total_chunks):
                w.write(chunk)
                assert len(w._buf) <= threshold
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert w.spilled and w.size == len(chunk) * total_chunks
        q = await w.commit(env(1))
        assert q.size == len(chunk) * total_chunks
        with s.open_body(1) as f:
            n = 0
            while True:
                part = f.read(len(chunk))
                if not part:
                    break
                assert part == chunk[:len(part)]
                n += len(part)
        assert n == q.size
        assert not any(p.name.startswith("tmp-") for p in (tmp_path / "large").iterdir())
        await s.record(1, 0, RcptState.DELIVERED)
        await s.record(1, 1, RcptState.DELIVERED)
        assert not (tmp_path / "large" / "1").exists()
        await s.close()
        return peak
    peak = run(go())
    assert peak < 2 * threshold + (1 << 20), peak     # ~ threshold + one chunk, not 10 MiB


def test_aborted_and_orphaned_spill_files_are_removed(tmp_path):
    async def go():
        s = await opened(tmp_path, memory_threshold=10)
        w = s.writer()
        w.write(b"x" * 100)
        assert w.spilled
        w.abort()
        w.abort()
        assert list((tmp_path / "large").iterdir()) == []
        w2 = s.writer()
        w2.write(b"y" * 100)       # never committed: the process "dies" here
        await s.close()
        assert len(list((tmp_path / "large").iterdir())) == 1
        s = await opened(tmp_path)
        assert list((tmp_path / "large").iterdir()) == []
        await s.close()
    run(go())


# --- disk errors ----------------------------------------------------------------------------------

class FaultyOps(FileOps):
    """Fails writes (ENOSPC) or fdatasync (EIO) while armed."""

    def __init__(self) -> None:
        super().__init__()
        self.enospc = False
        self.eio = False
        self.eio_fsync = False

    def write(self, fd, data, offset=None):
        if self.enospc:
            half = memoryview(data)[:len(data) // 2]
            if len(half):
                super().write(fd, half, offset)     # a partial write, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        super().write(fd, data, offset)

    def fsync(self, fd):
        if self.eio_fsync:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        super().fsync(fd)

    def fdatasync(self, fd):
        if self.eio:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        super().fdatasync(fd)


def test_disk_full_fails_commit_without_harming_acknowledged(tmp_path):
    fs = FaultyOps()

    async def go():
        s = await opened(tmp_path, fs=fs, memory_threshold=500)
        await commit(s, 1)
        fs.enospc = True
        with pytest.raises(SpoolError, match="space"):
            await commit(s, 2)
        with pytest.raises(SpoolError):
            await commit(s, 3, body_for(3, 2000))        # spill write fails during DATA
        with pytest.raises(SpoolError):
            await s.record(1, 0, RcptState.DELIVERED)
        fs.enospc = False
        await commit(s, 4)
        assert s.read_body(1) == body_for(1) and s.read_body(4) == body_for(4)
        await s.close()
        s = await opened(tmp_path)
        assert sorted(m.mid for m in s.messages()) == [1, 4]
        assert s.recovered_torn == {}                      # the partial write was cut off
        assert s.read_body(4) == body_for(4)
        await s.close()
        assert [p.name for p in (tmp_path / "large").iterdir()] == []
    run(go())


def test_failed_fdatasync_abandons_the_segment(tmp_path):
    fs = FaultyOps()

    async def go():
        s = await opened(tmp_path, fs=fs)
        await commit(s, 1)
        fs.eio = True
        with pytest.raises(SpoolError, match="Input/output"):
            await commit(s, 2)
        fs.eio = False
        await commit(s, 3)
        assert s.stats()["current_segment"] == 2
        await s.close()
        s = await opened(tmp_path)
        assert sorted(m.mid for m in s.messages()) == [1, 3]
        await s.close()
    run(go())


def test_failed_fsync_of_a_large_body_fails_only_that_commit(tmp_path):
    fs = FaultyOps()

    async def go():
        s = await opened(tmp_path, fs=fs, memory_threshold=100)
        fs.eio_fsync = True
        results = await asyncio.gather(commit(s, 1, body_for(1, 5000)), commit(s, 2, body_for(2, 60)),
                                       return_exceptions=True)
        assert isinstance(results[0], SpoolError) and not isinstance(results[1], Exception)
        assert list((tmp_path / "large").iterdir()) == []
        fs.eio_fsync = False
        await commit(s, 3, body_for(3, 5000))
        await s.close()
        s = await opened(tmp_path)
        assert sorted(m.mid for m in s.messages()) == [2, 3]
        assert s.read_body(3) == body_for(3, 5000)
        await s.close()
    run(go())


def test_unwritable_spool_directory(tmp_path):
    async def go():
        s = await opened(tmp_path, memory_threshold=10)
        await commit(s, 1, b"small")
        os.rename(tmp_path / "large", tmp_path / "large.gone")   # spill dir vanished
        w = s.writer()
        with pytest.raises(SpoolError):
            w.write(b"z" * 100)
        os.rename(tmp_path / "large.gone", tmp_path / "large")
        assert s.read_body(1) == b"small"
        await s.close()
    run(go())


# --- read-only view -------------------------------------------------------------------------------

def test_snapshot_retries_when_a_segment_is_reclaimed_under_it(tmp_path, monkeypatch):
    from mailward.queue import recovery

    async def build():
        s = await opened(tmp_path, fsync=False)
        await commit(s, 1)
        await s.close()
    run(build())
    real = recovery.replay
    calls = []

    def flaky(root, *, repair):
        calls.append(repair)
        if len(calls) == 1:
            raise recovery.SegmentVanished(1)
        return real(root, repair=repair)
    monkeypatch.setattr(recovery, "replay", flaky)
    assert set(recovery.snapshot(tmp_path).index.messages) == {1}
    assert calls == [False, False]


def test_snapshot_while_owner_writes(tmp_path):
    async def go():
        s = await opened(tmp_path, segment_bytes=8192, fsync=False)
        views = []
        for mid in range(1, 80):
            await commit(s, mid)
            if mid % 3 == 0:
                await s.record(mid - 1, 0, RcptState.DELIVERED)
                await s.record(mid - 1, 1, RcptState.DELIVERED)
            if mid % 10 == 0:
                views.append((set(s._index.messages), set(snapshot(tmp_path).index.messages)))
        await s.close()
        return views
    for live, seen in run(go()):
        assert live == seen


def _open_deleted_segments() -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.endswith(".seg (deleted)"):
            out.append(target)
    return out


def test_bodies_read_across_many_segments_and_reclaim_keeps_no_deleted_file_open(tmp_path):
    # Delivery reads bodies through a few cached segment descriptors: reading from more
    # segments than the cache holds still gives every body, and a reclaimed segment's
    # descriptor is closed before the file goes (no disk space held by a deleted file).
    async def go():
        s = await opened(tmp_path, segment_bytes=4096, fsync=False)
        for mid in range(1, 61):
            await commit(s, mid)
        assert len(segment_numbers(tmp_path)) > 4
        for mid in list(range(1, 61)) + list(range(60, 0, -7)):
            with s.open_body(mid) as f:
                assert f.read() == body_for(mid)
        assert len(s._read_fds) <= 4
        await finish_all_and_wait_reclaim(s, tmp_path, range(1, 61))
        deleted_open = _open_deleted_segments()
        await s.close()
        return deleted_open, s._read_fds
    deleted_open, fds_after_close = run(go())
    assert deleted_open == []
    assert fds_after_close == {}
