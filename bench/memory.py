"""Memory benchmark: 10 concurrent 25 MB messages through a gateway process.

Owns: starting one `mailward run --config FILE` process (spool and log in a temp dir, a route
to a recording destination in this process), sending N messages of S MB at once from N
client threads, waiting until the destination has them all, and printing the gateway's
resident memory: at rest, sampled during the run, and its peak (VmHWM from
/proc/<pid>/status). The body streams to a spill file and from the spool to the next hop, so
the peak must stay far below N x S. Must not know mailward's internals: CLI, config, SMTP.

Usage: python bench/memory.py [--messages 10] [--mb 25] [--limit-mb 150]
Exit status 1 when the peak is at or above --limit-mb.
"""
from __future__ import annotations

import argparse
import shutil
import smtplib
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.reliability.support import (GatewayProcess, RecordingSink, free_port,  # noqa: E402
                                       gateway_config)


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def big_message(n: int, mb: int) -> bytes:
    line = (b"%06d " % n) + b"z" * 69 + b"\r\n"           # 78-byte lines, like a base64 part
    body = line * (mb * 1024 * 1024 // len(line))
    return (f"From: load@client.test\r\nTo: rcpt@dest.test\r\nMessage-ID: <big{n}@load.test>\r\n"
            f"Subject: big {n}\r\n\r\n").encode() + body


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=10)
    ap.add_argument("--mb", type=int, default=25)
    ap.add_argument("--limit-mb", type=float, default=150.0)
    ap.add_argument("--timeout", type=float, default=300.0)
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="mw-memory-"))
    sink = RecordingSink().start()
    port = free_port()
    cfg = root / "mailward.toml"
    cfg.write_text(gateway_config(root, port, sink.port,
                                  listener_extra=f"max_message_size = {(args.mb + 5) * 1024 * 1024}"))
    gw = GatewayProcess(cfg, port)
    payloads = [big_message(n, args.mb) for n in range(args.messages)]
    acked: list[int] = []
    errors: list[str] = []
    try:
        gw.start()
        time.sleep(0.5)
        rest_kb = status_kb(gw.pid, "VmRSS")

        def client(n: int) -> None:
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=120) as s:
                    s.sendmail("load@client.test", ["rcpt@dest.test"], payloads[n])
                acked.append(n)
            except (OSError, smtplib.SMTPException) as exc:
                errors.append(f"message {n}: {exc}")

        t0 = time.monotonic()
        threads = [threading.Thread(target=client, args=(n,)) for n in range(args.messages)]
        for t in threads:
            t.start()
        samples = []
        deadline = t0 + args.timeout
        while time.monotonic() < deadline:
            samples.append(status_kb(gw.pid, "VmRSS"))
            if all(not t.is_alive() for t in threads) and sink.received >= len(acked):
                break
            time.sleep(0.1)
        elapsed = time.monotonic() - t0
        # VmHWM is the kernel's high-water mark; its per-thread counters are folded in lazily,
        # so a sample may briefly read higher: report the larger of the two.
        peak_kb = max(status_kb(gw.pid, "VmHWM"), max(samples))
    finally:
        gw.stop()
        sink.close()
        shutil.rmtree(root, ignore_errors=True)

    mb = lambda kb: kb / 1024  # noqa: E731
    total_mb = args.messages * args.mb
    print(f"mailward memory: {args.messages} concurrent messages of {args.mb} MB ({total_mb} MB in flight)")
    print(f"  {'accepted (250)':<28} {len(acked)}/{args.messages}")
    print(f"  {'delivered to destination':<28} {sink.received}")
    print(f"  {'seconds':<28} {elapsed:.1f}")
    print(f"  {'RSS at rest':<28} {mb(rest_kb):.1f} MB")
    print(f"  {'RSS during (max sample)':<28} {mb(max(samples)):.1f} MB")
    print(f"  {'peak RSS (VmHWM)':<28} {mb(peak_kb):.1f} MB   (target < {args.limit_mb:.0f} MB)")
    for e in errors:
        print(f"  error: {e}")
    ok = mb(peak_kb) < args.limit_mb and len(acked) == args.messages and sink.received >= args.messages
    print("  result: " + ("OK" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
