"""What AUTH PLAIN costs mailward, counted instead of timed.

Owns: running the gateway (configured as ``relay.py`` does, relaying to ``smtp-sink``) under
Callgrind, driving the same asyncio client (``auth_client.py``) with and without AUTH PLAIN
on every connection, and reading how many instructions the gateway executed per relayed
message in each case; then, unless ``--no-syscalls``, the same runs on a plain gateway under
``strace -c`` for the system calls per message. Prints both and the AUTH cost against issue 7's
bar (at most 10 %). Everything else (config, sink, client, what is counted) is ``relay.py``'s.

Why: throughput on a shared 2-core VM moves ±15 % from one run to the next, and the client's
own extra round trip slows the gateway's core too (a busy neighbour costs it ~10 % here), so
a 5-10 % effect cannot be settled by msg/s. Instructions executed and system calls made are
what AUTH adds to the gateway's own work, and they repeat to a fraction of a per cent. The
instruction count covers user space (the interpreter, uvloop, the C libraries); the kernel's
share is what the system-call table shows.

Each measured window runs from the first connection to the moment the gateway has delivered
every message and written its last log line, so the delivery, the spool and the log writer's
work are in it. At concurrency 10 (the default) the gateway, slowed ~50x by Callgrind, is
saturated and batches as much as it can, in both modes alike: the case where instructions are
throughput. Concurrency 1 can be asked for, but read it with care: the spool's wall-clock
waits (a delivery outcome waits 5 ms for a reception to share its fdatasync) run out under
Callgrind where at full speed they do not, so there each message pays a commit of its own, and
how often depends on the dialogue's length (AUTH adds a round trip).

Usage: python bench/auth_cost.py [--messages 300] [--conc 10] [--rounds 2] [--no-syscalls] [--keep]
Needs valgrind (callgrind_control), smtp-sink; strace for the system calls.
Exit status 0 when every run delivered everything, 1 otherwise, 2 on a setup error.
"""
from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from relay import (Cell, CountingSink, MailwardRelay, client_command, remove_unless_kept,  # noqa: E402
                   stop_process)

GOAL = 0.10  # issue 7: AUTH PLAIN on every connection costs the gateway at most 10 %
MODES = ("client", "auth")


@dataclass(frozen=True)
class Count:
    mode: str
    concurrency: int
    messages: int
    total: float            # instructions, or system calls, in the measured window

    @property
    def per_message(self) -> float:
        return self.total / self.messages


def gateway_command() -> list[str]:
    # The interpreter itself, not a launcher script: Callgrind must run the Python process.
    return [sys.executable, "-m", "mailward"]


def quiet_log(path: Path, quiet: float, timeout: float) -> None:
    """Until the gateway's mail_logs has not grown for ``quiet`` s: its last lines are written."""
    deadline = time.monotonic() + timeout
    size, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now_size = path.stat().st_size if path.exists() else 0
        if now_size != size:
            size, since = now_size, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(quiet / 5)


def drive(mw: MailwardRelay, sink: CountingSink, mode: str, concurrency: int, messages: int,
          timeout: float, quiet: float) -> bool:
    """One client run through the gateway; True when the sink got every message."""
    cell = Cell(mode, concurrency, 1024, messages)
    port = mw.auth_port if mode == "auth" else mw.plain_port
    target = sink.settle(quiet=0.2) + messages
    subprocess.run(client_command(cell, port, deadline=timeout), capture_output=True, text=True,
                   timeout=timeout + 30)
    ok = sink.wait_for(target, timeout=timeout, stall=timeout)
    quiet_log(mw.mail_current, quiet, timeout)
    return ok


def callgrind(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True, timeout=120)


def count_instructions(tmp: Path, args: argparse.Namespace) -> tuple[list[Count], bool]:
    """Instructions per message in each mode, under Callgrind (collection on only in the windows)."""
    out = tmp / "callgrind.out"
    wrap = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--dump-instr=no",
            f"--callgrind-out-file={out}"]
    counts: list[Count] = []
    ok = True
    with ExitStack() as stack:
        sink = CountingSink().start()
        stack.callback(sink.stop)
        mw = MailwardRelay(tmp / "callgrind", sink.port, command=gateway_command(), wrap=wrap)
        stack.callback(mw.stop)
        mw.start(timeout=300.0)
        pid = mw.proc.pid
        for mode in MODES:  # warm-up, not counted: imports, caches, the first AUTH's KDF, queue files
            ok &= drive(mw, sink, mode, 2, 10, args.timeout, quiet=1.0)
        dumps = 0
        for c in args.conc:
            for _ in range(args.rounds):
                for mode in MODES:
                    callgrind(pid, "--zero")
                    callgrind(pid, "--instr=on")
                    ok &= drive(mw, sink, mode, c, args.messages, args.timeout, quiet=1.0)
                    callgrind(pid, "--instr=off")
                    callgrind(pid, "--dump")
                    dumps += 1
                    counts.append(Count(mode, c, args.messages, _dump_total(out, dumps)))
                    print(f"  instructions  {mode:<6} c={c:<3} {counts[-1].per_message:>12,.0f} per message",
                          flush=True)
    return counts, ok


def _dump_total(out: Path, n: int) -> float:
    path = out.with_name(f"{out.name}.{n}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if path.exists():
            m = re.search(r"^totals:\s+(\d+)", path.read_text(errors="replace"), re.M)
            if m:
                return float(m.group(1))
        time.sleep(0.2)
    raise RuntimeError(f"no callgrind dump {path.name}")


_STRACE_ROW = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$")


def parse_strace_summary(text: str) -> dict[str, int]:
    """``strace -c`` table -> {syscall: calls} (the total row left out)."""
    calls = {}
    for line in text.splitlines():
        m = _STRACE_ROW.match(line)
        if m and m.group(2) != "total":
            calls[m.group(2)] = int(m.group(1))
    return calls


def count_syscalls(tmp: Path, args: argparse.Namespace) -> tuple[list[tuple[Count, dict[str, int]]], bool]:
    """System calls per message in each mode: ``strace -c -f`` attached for each window."""
    rows: list[tuple[Count, dict[str, int]]] = []
    ok = True
    with ExitStack() as stack:
        sink = CountingSink().start()
        stack.callback(sink.stop)
        mw = MailwardRelay(tmp / "strace", sink.port, command=gateway_command())
        stack.callback(mw.stop)
        mw.start()
        for mode in MODES:
            ok &= drive(mw, sink, mode, 2, 10, args.timeout, quiet=0.3)
        for c in args.conc:
            for mode in MODES:
                table = tmp / f"strace-{mode}-{c}.txt"
                tracer = subprocess.Popen(["strace", "-c", "-f", "-o", str(table), "-p", str(mw.proc.pid)],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                stack.callback(stop_process, tracer, 5.0)
                time.sleep(1.0)  # attached to every thread before the first connection
                ok &= drive(mw, sink, mode, c, args.messages, args.timeout, quiet=0.5)
                stop_process(tracer, grace=10.0)
                calls = parse_strace_summary(table.read_text(errors="replace"))
                rows.append((Count(mode, c, args.messages, sum(calls.values())), calls))
                print(f"  system calls  {mode:<6} c={c:<3} {rows[-1][0].per_message:>12.1f} per message",
                      flush=True)
    return rows, ok


def auth_change(counts: list[Count], c: int) -> list[float]:
    """Round by round: AUTH's count over the no-AUTH twin's, minus 1."""
    plain = [x.per_message for x in counts if x.concurrency == c and x.mode == "client"]
    auth = [x.per_message for x in counts if x.concurrency == c and x.mode == "auth"]
    return [a / p - 1 for a, p in zip(auth, plain)]


def report(counts: list[Count], syscalls: list[tuple[Count, dict[str, int]]], conc: list[int]) -> None:
    print("\nWhat AUTH PLAIN on every connection adds to the gateway's work per relayed message")
    for c in conc:
        changes = auth_change(counts, c)
        if changes:
            plain = statistics.median(x.per_message for x in counts if x.concurrency == c and x.mode == "client")
            auth = statistics.median(x.per_message for x in counts if x.concurrency == c and x.mode == "auth")
            mid = statistics.median(changes)
            verdict = "within" if max(changes) <= GOAL else "over"
            print(f"  c={c:<3} instructions {plain:,.0f} -> {auth:,.0f}: {mid:+.1%} "
                  f"(rounds {', '.join(f'{x:+.1%}' for x in changes)}); {verdict} the {GOAL:.0%} bar")
        pair = {x[0].mode: x for x in syscalls if x[0].concurrency == c}
        if len(pair) == 2:
            (pc, pcalls), (ac, acalls) = pair["client"], pair["auth"]
            n = pc.messages
            delta = {k: (acalls.get(k, 0) - pcalls.get(k, 0)) / n for k in set(acalls) | set(pcalls)}
            shown = ", ".join(f"{k} {v:+.2f}" for k, v in sorted(delta.items(), key=lambda kv: -abs(kv[1]))
                              if abs(v) >= 0.05)
            print(f"        system calls {pc.per_message:.1f} -> {ac.per_message:.1f}: "
                  f"{ac.per_message / pc.per_message - 1:+.1%} ({shown or 'no call changed by 0.05 per message'})")


def main(argv: list[str] | None = None) -> int:
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=300, help="messages per measured run")
    ap.add_argument("--conc", type=ints, default=[10], help="client concurrencies (see above on 1)")
    ap.add_argument("--rounds", type=int, default=2, help="runs per mode and concurrency under Callgrind")
    ap.add_argument("--timeout", type=float, default=600.0, help="per run, seconds")
    ap.add_argument("--no-syscalls", action="store_true", help="skip the strace part")
    ap.add_argument("--keep", action="store_true",
                    help="keep the temp dir (Callgrind dumps for callgrind_annotate, strace tables)")
    args = ap.parse_args(argv)
    need = ["valgrind", "callgrind_control", "smtp-sink"] + ([] if args.no_syscalls else ["strace"])
    missing = [t for t in need if shutil.which(t) is None]
    if missing:
        print(f"missing: {', '.join(missing)} (Debian packages valgrind, postfix, strace)", file=sys.stderr)
        return 2
    if args.messages < 1 or args.rounds < 1 or not args.conc:
        ap.error("--messages, --rounds and --conc must be positive")
    tmp = Path(tempfile.mkdtemp(prefix="mwauthcost-"))
    try:
        print(f"{args.messages} messages of 1 KiB per run, AUTH PLAIN or not, concurrency {args.conc}", flush=True)
        counts, ok = count_instructions(tmp, args)
        syscalls: list[tuple[Count, dict[str, int]]] = []
        if not args.no_syscalls:
            syscalls, ok2 = count_syscalls(tmp, args)
            ok &= ok2
        report(counts, syscalls, args.conc)
        if not ok:
            print("some run did not deliver every message: the counts above include a stall", file=sys.stderr)
        return 0 if ok else 1
    except KeyboardInterrupt:
        return 130
    finally:
        remove_unless_kept(tmp, args.keep)


if __name__ == "__main__":
    sys.exit(main())
