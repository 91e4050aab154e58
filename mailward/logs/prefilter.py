"""Find which lines a search by id needs, without parsing the whole log.

Owns the two-pass plan behind ``logs track --mid/--icid`` on files: a first scan with one
compiled pattern picks the lines that name the wanted MIDs/ICIDs; only those are parsed, to learn
the ids they pull in (the MID's ICID, the DCIDs it was delivered on, the MIDs derived from it);
this repeats until no new id appears (usually twice). The result is a ``LineScan`` the reader uses
as its relevance filter, so the real pass parses a few hundred lines instead of millions. Typing
each line is still the grammar's job: this module only looks for ``MID n`` / ``ICID n`` /
``DCID n`` words.
"""
from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass, field
from typing import Iterable

from mailward.maillog import events as E
from mailward.maillog.grammar import parse_line

from .scan import LineScan
from .sources import open_binary

MAX_ROUNDS = 6          # family chains deeper than this are unheard of; stop scanning anyway


def _alt(ids: Iterable[int]) -> bytes:
    return b"|".join(b"%d" % i for i in sorted(set(ids)))


@dataclass
class Wanted:
    mids: set[int] = field(default_factory=set)           # messages to show (and their family)
    member_icids: set[int] = field(default_factory=set)   # connections whose every MID is shown
    fact_icids: set[int] = field(default_factory=set)     # connections whose facts are needed
    dcids: set[int] = field(default_factory=set)

    def scan(self) -> LineScan:
        """The lines naming any wanted id. One pattern per id kind, each starting with literal
        text (``LineScan`` searches each for its literal start; the id alternatives are tried
        only where it occurs)."""
        pats = []
        if self.mids:
            m = _alt(self.mids)
            # "MID n" everywhere, plus the old "Message n to ..." / "Double bounce: Message n" forms
            pats += [rb"MID (?:%s)\b" % m, rb"Message (?:%s) to\b" % m]
        icids = self.member_icids | self.fact_icids
        if icids:
            pats.append(rb"ICID:? (?:%s)\b" % _alt(icids))
        if self.dcids:
            pats.append(rb"DCID:? (?:%s)\b" % _alt(self.dcids))
        return LineScan(pats)


def _learn(w: Wanted, ev: E.Event, family: bool) -> None:
    cls = ev.__class__
    mid = getattr(ev, "mid", None)
    icid = getattr(ev, "icid", None)
    if cls in (E.StartMid, E.MailFrom, E.RcptTo, E.RcptRejected):
        if icid in w.member_icids:
            w.mids.add(mid)
        if mid in w.mids and icid:
            w.fact_icids.add(icid)
    dcid = getattr(ev, "dcid", None)
    if dcid and mid in w.mids:
        w.dcids.add(dcid)
    if not family:
        return
    if cls in (E.SplitMid, E.RewrittenMid, E.Reinjected):
        if mid in w.mids:
            w.mids.add(ev.new_mid)
    elif cls in (E.GeneratedBcc, E.GeneratedForBounce):
        if ev.original_mid in w.mids:
            w.mids.add(ev.mid)


def plan(paths: list[str], mids: Iterable[int], icids: Iterable[int], family: bool = True) -> LineScan:
    """The relevance filter for tracking ``mids``/``icids`` in ``paths`` (files, not stdin)."""
    w = Wanted(set(mids), set(icids))
    for _ in range(MAX_ROUNDS):
        # New DCIDs pull in no further id, so only new MIDs/ICIDs call for another round.
        before = (len(w.mids), len(w.member_icids), len(w.fact_icids))
        scan = w.scan()
        for p in paths:
            stream, raw, _ = open_binary(p)
            try:
                for line in scan.lines(stream, [0]):
                    ev = parse_line(line).event
                    if ev is not None:
                        _learn(w, ev, family)
            except (EOFError, zlib.error, gzip.BadGzipFile):
                pass        # a damaged .gz: the reader reports it when it reads the file
            finally:
                raw.close()
        if (len(w.mids), len(w.member_icids), len(w.fact_icids)) == before:
            break
    return w.scan()
