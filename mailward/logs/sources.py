"""Reading mail_logs from files, rolled files, gzip files and stdin, for one or many appliances.

Owns: opening inputs, the file-form header (``Version: … SN:`` keys the appliance, ``Time offset
from UTC`` converts local time to UTC), the year of syslog lines (which carry none), counting
lines read / parsed / unparsed by kind, and turning each line into ``(appliance, utc_seconds,
record)``. It does not parse line bodies (that is ``mailward.maillog.grammar``, the one grammar)
and knows nothing of messages or connections (that is ``correlate``).

Appliance key: the serial from the file's ``Version:`` header if the file has one, else the
syslog host of the line, else ``""`` (one unnamed appliance). Ids restart per appliance, so the
correlator keys every id by this value.

Year of syslog lines (``Mmm dd HH:MM:SS`` has no year): ``--year`` if given; otherwise the
year of the file's modification time (stdin: the current year), minus one for lines whose
month lies after that moment's month (a file written in January holding December lines).
Syslog lines carry no zone either: they are read as UTC unless a ``Time offset`` is known.
"""
from __future__ import annotations

import gc
import gzip
import io
import os
import re
import sys
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import chain, islice
from typing import Callable, Iterable, TextIO

from mailward.maillog.events import TimeOffset, VersionInfo
from mailward.maillog.grammar import LogRecord, parse_line

from .scan import LineScan
from .times import iso, parse_when  # noqa: F401 - re-exported for callers

_EPOCH = datetime(1970, 1, 1)
_NUM = re.compile(r"\d+")


@dataclass
class Stats:
    """Counters for ``logs stats`` and the end-of-run summary. Mutable: it is an accumulator."""

    lines: int = 0
    skipped: int = 0            # not parsed: irrelevant to the report (Reader ``only``)
    in_range: int | None = None  # lines inside --since/--until, when a window was given
    parsed: int = 0
    unparsed: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)          # unparsed lines by kind
    by_appliance: dict[str, list[int]] = field(default_factory=dict)  # key -> [lines, parsed, unparsed]
    examples: dict[str, str] = field(default_factory=dict)         # one raw example per kind
    files: list[str] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)             # files that ended in a broken state

    def as_dict(self) -> dict:
        return {
            "lines": self.lines, "skipped": self.skipped, "parsed": self.parsed,
            "unparsed": self.unparsed, **({"in_range": self.in_range} if self.in_range is not None else {}),
            "unparsed_by_kind": dict(sorted(self.by_kind.items(), key=lambda kv: -kv[1])),
            "appliances": {k or "-": {"lines": v[0], "parsed": v[1], "unparsed": v[2]}
                           for k, v in self.by_appliance.items()},
            "files": list(self.files), "damaged_files": list(self.damaged),
        }


def unparsed_kind(record: LogRecord) -> str:
    """A short, stable name for a line the grammar did not fully understand, for counting.

    The grammar's own verdict (``no-header``, ``truncated``, ``bad-time``, ``error``) is kept;
    bodies it does not know are named by their first two words with digits folded, so that
    ``graymail [CONFIG] …`` lines count together.
    """
    kind = record.unparsed or "unknown"
    if kind != "unknown-body":
        return kind
    ev = record.event
    body = (getattr(ev, "text", None) or "").strip()
    words = body.split(None, 2)[:2]
    return "unknown-body: " + _NUM.sub("N", " ".join(words))[:40] if words else "unknown-body: (empty)"


def syslog_year(reference: float, month: int) -> int:
    """Year of a syslog line in ``month`` for a file last written at ``reference`` (epoch s)."""
    ref = datetime.fromtimestamp(reference, timezone.utc)
    return ref.year - 1 if month > ref.month else ref.year


@dataclass(frozen=True, slots=True)
class Input:
    """One input: a path (``-`` is stdin). ``name`` is what reports show."""

    path: str

    @property
    def name(self) -> str:
        return "<stdin>" if self.path == "-" else self.path


def open_binary(path: str) -> tuple[io.BufferedIOBase, io.BufferedIOBase, int]:
    """Return (stream to read, raw file for progress, raw size). ``.gz`` is detected by magic."""
    if path == "-":
        return sys.stdin.buffer, sys.stdin.buffer, 0
    raw = open(path, "rb")
    size = os.fstat(raw.fileno()).st_size
    head = raw.peek(2)[:2] if hasattr(raw, "peek") else b""
    if head == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw), raw, size  # type: ignore[return-value]
    return raw, raw, size


def first_time(path: str, probe: int = 20) -> datetime | None:
    """The first timestamp among a file's first lines (None for stdin or when none is found)."""
    if path == "-":
        return None
    try:
        stream, raw, _ = open_binary(path)
    except OSError:
        return None
    try:
        f = text_lines(stream)
        for line in islice(f, probe):
            rec = parse_line(line)
            if rec.timestamp is not None:
                return rec.timestamp
        return None
    except (OSError, EOFError):
        return None
    finally:
        raw.close()


def order_inputs(paths: Iterable[str]) -> list[str]:
    """Oldest file first, so that a message spanning a rotation is read in order whatever order
    the files were named in (``mail.current`` before ``mail.@….s``). Files without a readable
    time keep their place relative to each other, after the dated ones; stdin stays last."""
    paths = list(paths)
    keyed = [(first_time(p), i, p) for i, p in enumerate(paths)]
    keyed.sort(key=lambda k: (k[2] == "-", k[0] is None, k[0] or datetime.min, k[1]))
    return [p for _, _, p in keyed]


def text_lines(stream: io.BufferedIOBase) -> TextIO:
    # Real logs are mostly ASCII; stray bytes must not stop a run, so undecodable bytes become
    # U+FFFD. newline="\n": a raw CR inside a truncated line is kept as text, not a line break.
    return io.TextIOWrapper(stream, encoding="utf-8", errors="replace", newline="\n")  # type: ignore[arg-type]


class Reader:
    """Reads inputs in order and hands ``(appliance, utc_seconds, record)`` to a callback.

    The callback style (rather than a generator) keeps the per-line path to one call; use
    ``iter_records`` when a generator is more convenient. ``progress(done_bytes, total_bytes)``
    is called every few thousand lines when given.
    """

    PROGRESS_EVERY = 16384

    def __init__(self, year: int | None = None, only: LineScan | None = None) -> None:
        """``only``: a relevance filter for reports that need few line types (``scan``): the
        lines it does not pick are counted as skipped and never parsed, which is where nearly
        all the time goes. Header lines are always parsed."""
        self.year = year
        self.only = only
        self.stats = Stats()

    def read(self, inputs: Iterable[str], handle: Callable[[str, float | None, LogRecord], None],
             progress: Callable[[int, int], None] | None = None,
             stop: Callable[[], bool] | None = None, ordered: bool = True) -> Stats:
        """Read every input (oldest first unless ``ordered`` is False) into ``handle``."""
        paths = order_inputs(inputs) if ordered else list(inputs)
        total = 0
        for p in paths:
            if p != "-":
                try:
                    total += os.path.getsize(p)
                except OSError:
                    pass
        # The cyclic collector would rescan the growing correlation state thousands of times per
        # run; nothing built while reading holds a reference cycle (records, events, stories are
        # trees), so plain reference counting frees everything. Restored on exit.
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            self._read_paths(paths, handle, progress, stop, total)
        finally:
            if was_enabled:
                gc.enable()
        return self.stats

    def _read_paths(self, paths, handle, progress, stop, total) -> None:
        sizes_done = 0
        for p in paths:
            stream, raw, size = open_binary(p)
            try:
                mtime = time.time() if p == "-" else os.fstat(raw.fileno()).st_mtime
                self.stats.files.append(Input(p).name)
                scan = self.only
                base = sizes_done
                before = self.stats.lines

                def file_progress(raw=raw, base=base) -> None:
                    if progress is not None:
                        try:
                            progress(base + raw.tell(), total)
                        except (OSError, ValueError):
                            pass

                counts = [0]
                if scan is not None:
                    f = scan.lines(stream, counts, file_progress if progress else None)
                else:
                    f = text_lines(stream)

                try:
                    self.read_lines(f, handle, mtime, file_progress if progress else None, stop,
                                    prefiltered=scan is not None)
                except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
                    # A .gz cut short (still being written, or a partial copy): what was read
                    # stands; the rest of the file is reported, not a crash.
                    self.stats.damaged.append(f"{Input(p).name}: {exc}")
                finally:
                    if scan is not None:
                        # lines the scan passed over were never handed to read_lines
                        passed_over = max(0, counts[0] - (self.stats.lines - before))
                        self.stats.lines += passed_over
                        self.stats.skipped += passed_over
                    elif p == "-":
                        f.detach()      # leave stdin open for the caller
                    else:
                        f.close()
                sizes_done += size
                if progress is not None:
                    progress(sizes_done, total)
            finally:
                if p != "-":
                    raw.close()

    def read_lines(self, lines: Iterable[str], handle: Callable[[str, float | None, LogRecord], None],
                   mtime: float | None = None, progress: Callable[[], None] | None = None,
                   stop: Callable[[], bool] | None = None, lookahead: bool = True,
                   prefiltered: bool = False) -> None:
        """The per-line loop. Kept flat on purpose: this is where the time goes.

        ``prefiltered``: the lines were already picked by the reader's block scan.

        ``lookahead``: read the first lines ahead to find the ``Version:`` header (off for live
        tailing, where waiting for lines would delay output)."""
        stats = self.stats
        by_kind = stats.by_kind
        by_app = stats.by_appliance
        reference = time.time() if mtime is None else mtime
        fixed_year = self.year
        serial: str | None = None          # from this file's Version: header
        offset = 0                         # seconds east of UTC, from Time offset header
        last_dt = None
        last_ts: float | None = None
        last_app: str | None = None
        app_counts: list[int] = [0, 0, 0]
        n = 0
        parse = parse_line
        every = self.PROGRESS_EVERY
        # The header (Begin Logfile / Version / Time offset) opens a file: look ahead so that
        # the header lines themselves are counted under the serial too.
        it = iter(lines)
        head = list(islice(it, 4)) if lookahead else []
        for h in head:
            hev = parse(h).event
            if isinstance(hev, VersionInfo):
                serial = hev.serial
        # Lines that did not come through the block scan (live tailing) are asked one by one.
        want = None if prefiltered or self.only is None else self.only.wants
        nhead = len(head)
        skipped = 0
        for line in chain(head, it):
            n += 1
            if want is not None and n > nhead and not want(line):
                skipped += 1
                continue
            rec = parse(line)
            ev = rec.event
            unparsed = rec.unparsed
            # Which appliance: serial from header wins; else the syslog host.
            app = serial if serial is not None else (rec.host or "")
            if app is not last_app:
                app_counts = by_app.get(app)  # type: ignore[assignment]
                if app_counts is None:
                    app_counts = by_app[app] = [0, 0, 0]
                last_app = app
            app_counts[0] += 1
            if unparsed is not None:
                app_counts[2] += 1
                kind = unparsed_kind(rec)
                by_kind[kind] = by_kind.get(kind, 0) + 1
                if kind not in stats.examples:
                    stats.examples[kind] = rec.raw.rstrip("\n")[:300]
            if ev is not None:
                if unparsed is None:
                    app_counts[1] += 1
                cls = ev.__class__
                if cls is VersionInfo:
                    serial = ev.serial
                elif cls is TimeOffset:
                    offset = ev.seconds
                    last_dt = None
            dt = rec.timestamp
            if dt is None:
                ts = None
            elif dt is last_dt or dt == last_dt:
                ts = last_ts
            else:
                # Only on a new second: fix the year of syslog lines, then local -> UTC.
                if not rec.has_year:
                    year = fixed_year or syslog_year(reference, dt.month)
                    if dt.year != year:
                        try:
                            dt2 = dt.replace(year=year)
                        except ValueError:  # Feb 29 in a non-leap inferred year
                            dt2 = dt.replace(year=year, day=28)
                    else:
                        dt2 = dt
                else:
                    dt2 = dt
                if dt2.tzinfo is not None:
                    ts = dt2.timestamp()
                else:
                    ts = (dt2 - _EPOCH).total_seconds() - offset
                last_dt = dt
                last_ts = ts
            handle(app, ts, rec)
            if progress is not None and n % every == 0:
                progress()
                if stop is not None and stop():
                    break
        stats.lines += n
        stats.skipped += skipped
        total_unparsed = 0
        total_parsed = 0
        # recompute totals from per-appliance counters (cheap, once per file)
        for v in by_app.values():
            total_parsed += v[1]
            total_unparsed += v[2]
        stats.parsed = total_parsed
        stats.unparsed = total_unparsed
