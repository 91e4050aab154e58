"""Spool commit throughput: commits/s and fdatasyncs per commit, fsync on.

For 1 KiB and 20 KiB bodies at concurrency 1, 10 and 50 (each a set of tasks committing in a
loop for a fixed time, like that many SMTP sessions at end-of-DATA), prints one line each.
Run from the repository root: ``python bench/spool.py [--seconds S] [--dir DIR]``.
The spool is created in a fresh temporary directory (under --dir: put it on the disk you
want to measure) and removed afterwards.
"""
from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

from mailward.queue import Envelope, RcptState, Spool


async def measure(root: Path, size: int, concurrency: int, seconds: float, deliver: bool) -> dict:
    spool = Spool(root)
    await spool.open()
    body = (b"X" * 76 + b"\r\n") * (size // 78) + b"Y" * (size % 78)
    mids = iter(range(1, 1 << 62))
    done = 0
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def session() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            mid = next(mids)
            w = spool.writer()
            for i in range(0, len(body), 8192):      # DATA arrives in chunks
                w.write(body[i:i + 8192])
            t0 = time.perf_counter()
            await w.commit(Envelope(mid, mid, "sender@example.org", ("rcpt@example.com",), time.time()))
            latencies.append(time.perf_counter() - t0)
            done += 1
            if deliver:
                await spool.record(mid, 0, RcptState.DELIVERED)

    syncs0 = spool.fs.data_syncs
    t0 = time.perf_counter()
    await asyncio.gather(*(session() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    syncs = spool.fs.data_syncs - syncs0
    await spool.close()
    latencies.sort()
    return {"rate": done / elapsed, "commits": done, "syncs_per_commit": syncs / max(done, 1),
            "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else 0.0,
            "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)] if latencies else 0.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="duration of each measurement")
    ap.add_argument("--dir", default=None, help="parent directory of the temporary spool")
    ap.add_argument("--deliver", action="store_true",
                    help="also record each message delivered (the relay's full queue cost)")
    ap.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = ap.parse_args()
    if args.uvloop:
        import uvloop
        uvloop.install()
    print(f"spool commit benchmark, fsync on, {args.seconds:g}s per line"
          + (", each message also recorded delivered" if args.deliver else ""))
    print(f"{'body':>6} {'conc':>5} {'commits/s':>10} {'fdatasync/commit':>17} {'p50 ms':>7} {'p99 ms':>7}")
    for size in (1024, 20 * 1024):
        for conc in (1, 10, 50):
            root = Path(tempfile.mkdtemp(prefix="spool-bench-", dir=args.dir))
            try:
                r = asyncio.run(measure(root, size, conc, args.seconds, args.deliver))
            finally:
                shutil.rmtree(root, ignore_errors=True)
            print(f"{size // 1024:>4}Ki {conc:>5} {r['rate']:>10.0f} {r['syncs_per_commit']:>17.3f} "
                  f"{r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f}")


if __name__ == "__main__":
    main()
