"""Benchmark of the log toolkit: lines per second for parse only and for parse + correlate + auth report.

Generates a realistic mail_logs (default 1,000,000 lines: many ICIDs and MIDs, AUTH successes and
failures, password-guessing clients, deliveries, bounces, delays, bcc/bounce MIDs; every line
written by the gateway's own formatter) into a temporary directory, then times:

  read        iterating the file's lines (the floor: I/O and decoding)
  parse       ``parse_line`` on every line (the shared grammar)
  reader      the toolkit's reader: parse + appliance key + UTC time + counters
  full        reader + correlator + AUTH report (what ``mailward logs auth`` does)
  detect-cmd  what ``mailward logs detect`` runs: its block scan (AUTH lines, their connections,
              the start/recipient/end lines of messages on those connections), reader +
              correlator (evidence lines kept) + detection rules
  auth-cmd    what ``mailward logs auth`` runs: the relevance filter skips lines without "SMTP"
              unparsed, then reader + correlator + AUTH report on the rest
  track-cmd   what ``mailward logs track --mid M`` runs: id scans, then only those lines parsed
  track-user  what ``mailward logs track --user U`` runs: a scan for U's AUTH successes, then as above
  correlate   the correlator + AUTH report alone, on records parsed beforehand
  parallel    (``--parallel``, an experiment, not how the toolkit reads) byte ranges of the file
              parsed in a pool of worker processes into compact tuples (event = class id +
              field values), events and records rebuilt and correlated in order in this process;
              prints wall-clock lines/s and this process's CPU time

Usage: python bench/logs.py [--lines N] [--repeat R] [--only NAMES] [--parallel [WORKERS]]
                            [--profile] [--keep FILE] [--input FILE]
Figures are lines per second of *CPU time* of this process, best of R runs (the wall time is
printed too: on a shared machine it varies with other load). ``--profile`` prints where the
time goes in the full run. ``--only parse,full`` runs only those stages; ``--input`` times an
existing log instead of generating one.
"""
from __future__ import annotations

import argparse
import cProfile
import dataclasses
import itertools
import os
import pickle
import pstats
import sys
import tempfile
import time
from datetime import datetime
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mailward.logs import synth  # noqa: E402
from mailward.logs.authreport import AuthReport  # noqa: E402
from mailward.logs.correlate import Correlator  # noqa: E402
from mailward.logs.detect import Detector  # noqa: E402
from mailward.logs.scan import auth_scan, detect_scan  # noqa: E402
from mailward.logs.sources import Reader, open_binary  # noqa: E402
from mailward.maillog import events as E  # noqa: E402
from mailward.maillog import grammar  # noqa: E402
from mailward.maillog.grammar import parse_line  # noqa: E402


def t_read(path: str) -> int:
    n = 0
    with open(path, encoding="utf-8", errors="replace", newline="\n") as f:
        for _ in f:
            n += 1
    return n


def t_parse(path: str) -> int:
    n = 0
    parse = parse_line
    with open(path, encoding="utf-8", errors="replace", newline="\n") as f:
        for line in f:
            parse(line)
            n += 1
    return n


def t_reader(path: str) -> int:
    r = Reader()
    r.read([path], lambda a, t, rec: None)
    return r.stats.lines


def t_full(path: str) -> int:
    rep = AuthReport(keep_attempts=False)
    corr = Correlator(on_auth=rep.add)
    r = Reader()
    r.read([path], corr.feed)
    corr.flush()
    assert rep.inbound.successes > 0 and corr.counters.finished > 0
    return r.stats.lines


FULL_SUMMARY: dict = {}     # the AUTH summary of the full run, to check the faster ones against


def t_auth(path: str) -> int:
    """What ``mailward logs auth`` runs: a scan for the AUTH lines' connection ids, then only
    the AUTH lines and those connections' opening/closing lines are parsed."""
    rep = AuthReport(keep_attempts=False)
    corr = Correlator(on_auth=rep.add)
    r = Reader(only=auth_scan([path], open_binary))
    r.read([path], corr.feed)
    corr.flush()
    assert rep.inbound.successes > 0
    if FULL_SUMMARY:
        assert rep.summary() == FULL_SUMMARY, "logs auth's report differs from the full run's"
    return r.stats.lines


def t_track(path: str) -> int:
    """What ``mailward logs track --mid M`` runs: two id scans, then parse only those lines."""
    from mailward.logs.prefilter import plan

    found = []
    keep = plan([path], [5000 + 4321], [], True)
    corr = Correlator(on_story=lambda m: found.append(m) if m.mid == 5000 + 4321 else None, keep_lines=True)
    r = Reader(only=keep)
    r.read([path], corr.feed)
    corr.flush()
    assert found and found[0].recipients
    return r.stats.lines


def t_track_user(path: str) -> int:
    """What ``mailward logs track --user U`` runs: a scan for U's AUTH successes seeds the ids,
    then as ``track --mid``."""
    from mailward.logs.prefilter import plan, seeds

    found = []
    keep = plan([path], (), (), True, seeds([path], users={"user24"}))
    assert keep is not None
    corr = Correlator(on_story=lambda m: found.append(m) if m.auth_user == "user24" else None, keep_lines=True)
    r = Reader(only=keep)
    r.read([path], corr.feed)
    corr.flush()
    assert found
    return r.stats.lines


def correlate_only(path: str, limit: int = 200_000) -> None:
    """The correlator alone on records parsed beforehand (first ``limit`` lines, held in memory)."""
    recs = []
    r = Reader()
    with open(path, encoding="utf-8") as f:
        r.read_lines(itertools.islice(f, limit), lambda a, t, rec: recs.append((a, t, rec)))
    best = None
    for _ in range(3):
        corr = Correlator(on_auth=AuthReport(keep_attempts=False).add)
        feed = corr.feed
        c0 = time.process_time()
        for a, t, rec in recs:
            feed(a, t, rec)
        corr.flush()
        cpu = time.process_time() - c0
        best = cpu if best is None or cpu < best else best
    print(f"{'correlate':<12} {len(recs) / best / 1e3:8.0f} k lines/s   (correlator + AUTH report alone, "
          f"records parsed beforehand, {len(recs):,} lines)")


def t_detect(path: str) -> int:
    findings = []
    det = Detector(findings.append)
    corr = Correlator(on_auth=det.on_auth, on_story=det.on_story, keep_lines=True)
    r = Reader(only=detect_scan([path], open_binary))
    r.read([path], corr.feed)
    corr.flush()
    det.flush()
    return r.stats.lines


# --- the parallel experiment ---------------------------------------------------------------
# Measures whether parsing in worker processes pays on this machine: the main process still has
# to unpickle every line, rebuild its event and record (frozen values cannot cross a process
# boundary cheaply: pickling one goes through Python-level __getstate__/__setstate__) and run the
# correlator, which must see lines in order.

_CLASSES = [c for c in vars(E).values() if isinstance(c, type) and issubclass(c, E.Event)]
_CLASS_ID = {c: i for i, c in enumerate(_CLASSES)}
_FIELDS = [tuple(f.name for f in dataclasses.fields(c)) for c in _CLASSES]
_EPOCH = datetime(1970, 1, 1)


def _byte_ranges(path: str, size: int = 4 << 20) -> list[tuple[str, int, int]]:
    """The file cut into ranges of about ``size`` bytes, each ending at a line end."""
    total = os.path.getsize(path)
    out, pos = [], 0
    with open(path, "rb") as f:
        while pos < total:
            end = min(pos + size, total)
            if end < total:
                f.seek(end)
                end += len(f.readline())
            out.append((path, pos, end))
            pos = end
    return out


def _parse_range(job: tuple[str, int, int]) -> bytes:
    """Worker: one byte range -> pickled list of (utc_seconds, level, raw, unparsed, class id, values).
    The synthetic log's time offset is 0, so local time is UTC here."""
    path, start, end = job
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(end - start)
    out = []
    add = out.append
    last_dt = last_ts = None
    for line in data.decode("utf-8", "replace").splitlines(True):
        rec = parse_line(line)
        dt = rec.timestamp
        if dt is not last_dt:
            last_dt, last_ts = dt, (None if dt is None else (dt - _EPOCH).total_seconds())
        e = rec.event
        if e is None:
            add((last_ts, rec.level, rec.raw, rec.unparsed, -1, None))
        else:
            c = _CLASS_ID[e.__class__]
            add((last_ts, rec.level, rec.raw, rec.unparsed, c, tuple([getattr(e, n) for n in _FIELDS[c]])))
    return pickle.dumps(out, pickle.HIGHEST_PROTOCOL)


def _builders() -> list:
    """Per event class, ``values -> event`` by slot setters (the grammar's own fast build)."""
    out = []
    for cls in _CLASSES:
        env = {"cls": cls, "new": object.__new__}
        src = ["def build(v):", "    o = new(cls)"]
        for i, f in enumerate(dataclasses.fields(cls)):
            env["s%d" % i] = getattr(cls, f.name).__set__
            src.append("    s%d(o, v[%d])" % (i, i))
        exec("\n".join(src + ["    return o", ""]), env)   # no loop per field: its best case
        out.append(env["build"])
    return out


def t_parallel(path: str, workers: int) -> None:
    builders = _builders()
    rep = AuthReport(keep_attempts=False)
    corr = Correlator(on_auth=rep.add)
    feed = corr.feed
    record = grammar._record    # the grammar's LogRecord builder (same value as LogRecord(...))
    n = 0
    t0, c0 = time.perf_counter(), time.process_time()
    with get_context("fork").Pool(workers) as pool:
        for blob in pool.imap(_parse_range, _byte_ranges(path)):
            for ts, level, raw, unparsed, c, values in pickle.loads(blob):
                ev = builders[c](values) if c >= 0 else None
                feed("", ts, record(None, None, None, level, ev, raw, unparsed, None, True))
                n += 1
    corr.flush()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert rep.inbound.successes > 0 and corr.counters.finished > 0
    print(f"{'parallel':<12} {n / wall / 1e3:8.0f} k lines/s WALL ({workers} workers; {wall:.2f} s wall, "
          f"{cpu:.2f} s CPU in the main process, {n:,} lines)")


STAGES = (("read", t_read), ("parse", t_parse), ("reader", t_reader), ("full", t_full),
          ("detect-cmd", t_detect), ("auth-cmd", t_auth), ("track-cmd", t_track),
          ("track-user", t_track_user))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--keep", help="also keep the generated log at this path")
    ap.add_argument("--input", help="time this existing synthetic log instead of generating one")
    ap.add_argument("--only", help="comma-separated stages to run (%s, correlate)" % ",".join(n for n, _ in STAGES))
    ap.add_argument("--parallel", type=int, nargs="?", const=2, default=0, metavar="WORKERS",
                    help="also time the parallel-parsing experiment (default 2 workers)")
    args = ap.parse_args()
    only = set(args.only.split(",")) if args.only else None

    with tempfile.TemporaryDirectory() as tmp:
        if args.input:
            path = args.input
        else:
            path = os.path.join(tmp, "mail.current")
            t0 = time.perf_counter()
            with open(path, "w", encoding="utf-8") as f:
                n = synth.write(f, args.lines)
            gen = time.perf_counter() - t0
            size = os.path.getsize(path)
            print(f"generated {n:,} lines ({size / 1e6:.0f} MB) in {gen:.1f} s "
                  f"({n / gen / 1e3:.0f} k lines/s through format_file_line)")
        if args.keep:
            Path(args.keep).write_bytes(Path(path).read_bytes())
        rates: dict[str, float] = {}
        for name, fn in STAGES:
            if only is not None and name not in only:
                continue
            best = None
            wall = None
            for _ in range(args.repeat):
                t0, c0 = time.perf_counter(), time.process_time()
                got = fn(path)
                dt, cpu = time.perf_counter() - t0, time.process_time() - c0
                best = cpu if best is None or cpu < best else best
                wall = dt if wall is None or dt < wall else wall
            print(f"{name:<12} {got / best / 1e3:8.0f} k lines/s   ({best:.2f} s CPU, {wall:.2f} s wall, "
                  f"{got:,} lines)")
            rates[name] = got / best
        if "full" in rates and "auth-cmd" in rates:
            print(f"\nparse + correlate + AUTH report (target: 1,000 k lines/s): "
                  f"{rates['auth-cmd'] / 1e3:,.0f} k lines/s as `logs auth` runs it (relevant lines picked by "
                  f"the block scan, report checked equal to the full run's); "
                  f"{rates['full'] / 1e3:,.0f} k lines/s typing and joining every line\n")
        if only is None or "correlate" in only:
            correlate_only(path)
        if args.parallel:
            t_parallel(path, args.parallel)
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            t_full(path)
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(18)


if __name__ == "__main__":
    main()
