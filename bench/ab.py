"""Is a change faster? Two mailward gateways side by side: the code of a git ref against the
working tree, under the same load, runs alternating, counted at their sinks.

Owns: checking out ``--base`` into a temporary git worktree, starting one gateway from it and
one from this tree (each with its own ``smtp-sink``, configured as ``relay.py`` does), running
each cell on both in turn for R rounds, and printing per cell the median of the round-by-round
ratios new/base with their range, and both gateways' CPU time per message. Everything else (the
relays' config, the sink, the load clients, what is counted) is ``relay.py``'s.

Why: on a shared 2-core machine one run's msg/s moves ±15 % with the host's load, so a change
worth 5 % cannot be seen by comparing two benchmark runs taken minutes apart; two gateways
measured back to back, round after round, can (the ratio's range says how far).

Usage: python bench/ab.py --base REF [--conc 10,50] [--modes plain,auth] [--rounds 4]
                          [--messages 3000] [--size 1024]
Modes: ``plain`` (smtp-source), ``client`` (asyncio client, no AUTH), ``auth`` (AUTH PLAIN).
Exit status 0 when every run delivered everything, 1 otherwise, 2 on a setup error.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from relay import Cell, CountingSink, MailwardRelay, Relay, measure  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def gateway_command(tree: Path) -> list[str]:
    """Start mailward from the sources in ``tree`` (the installed dependencies, that code)."""
    return [sys.executable, "-c",
            f"import sys; sys.path.insert(0, {str(tree)!r}); from mailward.cli import main; "
            "sys.argv[0] = 'mailward'; sys.exit(main())"]


def worktree(stack: ExitStack, ref: str, where: Path) -> Path:
    """A detached checkout of ``ref``, removed again when ``stack`` closes."""
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(where), ref],
                   check=True, capture_output=True, text=True, timeout=120)
    stack.callback(lambda: subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(where)],
                                          capture_output=True, timeout=120))
    return where


def main(argv: list[str] | None = None) -> int:
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="git ref to compare the working tree with (e.g. HEAD~3)")
    ap.add_argument("--conc", type=ints, default=[10, 50])
    ap.add_argument("--modes", default="plain", help="plain,client,auth")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--messages", type=int, default=3000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--timeout", type=float, default=300.0, help="per run, seconds")
    args = ap.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    if bad := [m for m in modes if m not in ("plain", "client", "auth")]:
        ap.error(f"unknown mode(s): {', '.join(bad)}")
    check = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", "--quiet", args.base + "^{commit}"],
                           capture_output=True, text=True, timeout=60)
    if check.returncode != 0:
        print(f"cannot check out {args.base}: not a commit of this repository", file=sys.stderr)
        return 2
    if not shutil.which("smtp-sink") or ("plain" in modes and not shutil.which("smtp-source")):
        print("smtp-sink / smtp-source not found (Debian package postfix)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="mwab-"))
    os.chmod(tmp, 0o755)                # smtp-sink may run as nobody
    complete = True
    try:
        with ExitStack() as stack:
            try:
                base_tree = worktree(stack, args.base, tmp / "base")
            except subprocess.CalledProcessError as exc:
                print(f"cannot check out {args.base}: {exc.stderr.strip()}", file=sys.stderr)
                return 2
            relays: dict[str, Relay] = {}
            for name, tree in (("base", base_tree), ("new", REPO)):
                sink = CountingSink(tmp / f"bin-{name}").start()
                stack.callback(sink.stop)
                gw = MailwardRelay(tmp / name, sink.port, command=gateway_command(tree))
                stack.callback(gw.stop)
                gw.start()
                relays[name] = Relay(name, gw, sink)
                for mode in modes:                      # warm-up, not counted
                    measure(relays[name], Cell(mode, 10, args.size, 300), timeout=args.timeout, stall=30)
            print(f"base = {args.base}, new = the working tree; {args.rounds} rounds of {args.messages} messages")
            for c in args.conc:
                for mode in modes:
                    cell = Cell(mode, c, args.size, args.messages)
                    ratios, cpu = [], {"base": [], "new": []}
                    for _ in range(args.rounds):
                        runs = {name: measure(rl, cell, timeout=args.timeout, stall=30) for name, rl in relays.items()}
                        complete &= all(r.complete for r in runs.values())
                        if runs["base"].rate > 0:
                            ratios.append(runs["new"].rate / runs["base"].rate)
                        for name, run in runs.items():
                            cpu[name].append(run.cpu_per_message)
                    if not ratios:
                        print(f"{cell.label}: no run delivered anything")
                        continue
                    print(f"{cell.label}: new/base {statistics.median(ratios):.3f} "
                          f"({min(ratios):.2f}..{max(ratios):.2f}); CPU per message base "
                          f"{statistics.median(cpu['base']):,.0f} us, new {statistics.median(cpu['new']):,.0f} us",
                          flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
