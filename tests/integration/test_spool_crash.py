"""Crash safety of the spool and the id counters under SIGKILL.

A child process commits messages from many concurrent tasks and prints each MID only after
its commit returned (the moment the gateway would answer 250); it also records outcomes and
prints them after they returned. The parent kills it with SIGKILL at random moments, restarts
it (which runs recovery), and finally checks that every acknowledged MID is in the spool
with its exact body and recipients, that nothing recorded delivered came back, and that
no MID was handed out twice."""
from __future__ import annotations

import asyncio
import os
import random
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mailward.queue import RcptState, Spool

CHILD = textwrap.dedent('''
    import asyncio, sys, time
    from pathlib import Path
    from mailward.queue import Envelope, IdCounter, RcptState, Spool

    root = Path(sys.argv[1])

    def body(mid):
        size = 12000 if mid % 5 == 0 else 200 + (mid * 37) % 1500
        head = b"Subject: crash %d\\r\\n\\r\\n" % mid
        return head + bytes((mid + i) % 256 for i in range(size))

    async def worker(spool, mids, out):
        while True:
            mid = mids.next()
            w = spool.writer()
            data = body(mid)
            for i in range(0, len(data), 3000):
                w.write(data[i:i + 3000])
            await w.commit(Envelope(mid, 1, "s@x", ("r%da@x" % mid, "r%db@x" % mid), time.time()))
            out.write("C %d\\n" % mid); out.flush()
            if mid % 3 == 0:
                await spool.record(mid, 0, RcptState.DELIVERED)
                out.write("D %d\\n" % mid); out.flush()
            if mid % 4 != 1:
                # Announced before: once this starts, the message may be finished on disk
                # even if the kill comes before "F" is printed.
                out.write("P %d\\n" % mid); out.flush()
                await spool.record(mid, 0, RcptState.DELIVERED)
                await spool.record(mid, 1, RcptState.BOUNCED)
                out.write("F %d\\n" % mid); out.flush()

    async def main():
        spool = Spool(root, segment_bytes=64 << 10, memory_threshold=4096, compact_after=0.0,
                      compact_live_fraction=0.5)
        await spool.open()
        mids = IdCounter(root / "mid.counter", block=37)
        out = sys.stdout
        out.write("READY %d\\n" % len(list(spool.messages()))); out.flush()
        await asyncio.gather(*(worker(spool, mids, out) for _ in range(16)))

    asyncio.run(main())
''')


def body(mid: int) -> bytes:
    size = 12000 if mid % 5 == 0 else 200 + (mid * 37) % 1500
    head = b"Subject: crash %d\r\n\r\n" % mid
    return head + bytes((mid + i) % 256 for i in range(size))


def run_and_kill(script: Path, root: Path, rng: random.Random) -> list[str]:
    """Start the child, let it work for a random moment after it is ready, SIGKILL it,
    and return the complete lines it printed."""
    proc = subprocess.Popen([sys.executable, str(script), str(root)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=str(script.parent))
    buf = b""
    deadline = time.monotonic() + 20
    kill_at = None
    fd = proc.stdout.fileno()
    try:
        while time.monotonic() < deadline:
            if kill_at is not None and time.monotonic() >= kill_at:
                break
            ready, _, _ = select.select([fd], [], [], 0.01)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                buf += chunk
                if kill_at is None and b"READY" in buf:
                    kill_at = time.monotonic() + rng.uniform(0.05, 0.6)
        else:
            pytest.fail("child never became ready: " + proc.stderr.read(2000).decode(errors="replace"))
        assert proc.poll() is None, proc.stderr.read().decode(errors="replace")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        rest = proc.stdout.read()
        buf += rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()
    lines = buf.decode().split("\n")
    return lines[:-1]          # the last piece has no newline: it was cut by the kill


@pytest.mark.slow
def test_acknowledged_messages_survive_sigkill(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    root = tmp_path / "spool"
    rng = random.Random(int(os.environ.get("SPOOL_CRASH_SEED", "12345")))
    committed: list[int] = []
    delivered0: set[int] = set()
    finished: set[int] = set()
    finishing: set[int] = set()
    rounds = 8
    for _ in range(rounds):
        for line in run_and_kill(script, root, rng):
            kind, _, value = line.partition(" ")
            if kind == "C":
                committed.append(int(value))
            elif kind == "D":
                delivered0.add(int(value))
            elif kind == "P":
                finishing.add(int(value))
            elif kind == "F":
                finished.add(int(value))
    assert len(committed) > 50, "the child acknowledged too little to prove anything"
    assert len(committed) == len(set(committed)), "a MID was handed out twice"

    async def verify():
        spool = Spool(root)
        await spool.open()
        try:
            live = {m.mid: m for m in spool.messages()}
            for mid in committed:
                if mid in finished:
                    assert mid not in live, f"finished MID {mid} came back"
                    continue
                m = live.get(mid)
                if m is None and mid in finishing:
                    continue   # its finishing records became durable just before the kill
                assert m is not None, f"acknowledged MID {mid} lost"
                assert m.envelope.recipients == (f"r{mid}a@x", f"r{mid}b@x")
                assert spool.read_body(mid) == body(mid), f"MID {mid} body differs"
                if mid in delivered0:
                    assert m.states[0] == RcptState.DELIVERED, f"MID {mid} RID 0 would be redelivered"
            # Nothing appears that the child did not acknowledge, except commits in flight at
            # a kill (durable, not yet printed): at most 16 per round.
            assert len(set(live) - set(committed)) <= 16 * rounds
            # Finished segments were reclaimed during the run: disk use stays near 2x live.
            seg_bytes = sum(p.stat().st_size for p in (root / "segments").iterdir())
            assert seg_bytes <= 2 * spool._index.live_bytes + 8 * (64 << 10), seg_bytes
            return len(live)
        finally:
            await spool.close()

    assert asyncio.run(verify()) > 0


@pytest.mark.slow
def test_counter_never_repeats_across_sigkill(tmp_path):
    script = tmp_path / "counter.py"
    script.write_text(textwrap.dedent('''
        import sys
        from mailward.queue import IdCounter
        c = IdCounter(sys.argv[1] + "/c.counter", block=7)
        print("READY", flush=True)
        while True:
            print(c.next(), flush=True)
    '''))
    root = tmp_path / "ctr"
    root.mkdir()
    rng = random.Random(7)
    seen: list[int] = []
    for _ in range(6):
        for line in run_and_kill(script, root, rng):
            if line.isdigit():
                seen.append(int(line))
    assert len(seen) > 100
    assert len(seen) == len(set(seen))
    assert seen == sorted(seen)
