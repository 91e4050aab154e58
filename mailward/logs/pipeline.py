"""Wires a ``Reader`` to a ``Correlator`` for one run: host filter, progress, end of input.

Owns the composition used by every command (and the benchmark), so that each command only
chooses its callbacks. It does not format output.
"""
from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Callable, Iterable

from .correlate import Correlator
from .model import AuthAttempt, Message
from .scan import LineScan
from .sources import Reader, Stats


@dataclass(frozen=True, slots=True)
class Options:
    year: int | None = None
    hosts: tuple[str, ...] = ()        # glob patterns on the appliance key (serial or host)
    idle: float = 3600.0
    keep_lines: bool = False
    only: LineScan | None = None       # relevance filter: see Reader
    since: float | None = None         # line-level time window (stats only: stories need context)
    until: float | None = None


def host_filter(hosts: tuple[str, ...], feed: Callable) -> Callable:
    if not hosts:
        return feed
    seen: dict[str, bool] = {}

    def filtered(app: str, ts, rec) -> None:
        ok = seen.get(app)
        if ok is None:
            ok = seen[app] = any(fnmatchcase(app, h) or fnmatchcase((rec.host or ""), h) for h in hosts)
        if ok:
            feed(app, ts, rec)

    return filtered


def time_filter(since: float | None, until: float | None, feed: Callable, stats) -> Callable:
    lo = float("-inf") if since is None else since
    hi = float("inf") if until is None else until
    stats.in_range = 0

    def filtered(app: str, ts, rec) -> None:
        if ts is not None and lo <= ts <= hi:
            stats.in_range += 1
            feed(app, ts, rec)

    return filtered


def run(inputs: Iterable[str], opts: Options,
        on_story: Callable[[Message], None] | None = None,
        on_auth: Callable[[AuthAttempt], None] | None = None,
        progress: Callable[[int, int], None] | None = None) -> tuple[Stats, Correlator]:
    corr = Correlator(on_story=on_story, on_auth=on_auth, idle=opts.idle, keep_lines=opts.keep_lines)
    reader = Reader(year=opts.year, only=opts.only)
    feed = host_filter(opts.hosts, corr.feed)
    if opts.since is not None or opts.until is not None:
        feed = time_filter(opts.since, opts.until, feed, reader.stats)
    reader.read(inputs, feed, progress=progress)
    corr.flush()
    return reader.stats, corr
