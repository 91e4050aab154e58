"""Find which lines a search by id needs, without parsing the whole log.

Owns the two-pass plan behind ``logs track --mid/--icid`` on files: a first scan with one
compiled pattern picks the lines that name the wanted MIDs/ICIDs; only those are parsed, to learn
the ids they pull in (the MID's ICID, the DCIDs it was delivered on, the MIDs derived from it);
this repeats until no new id appears (usually twice). The result is a pattern the reader uses as
its relevance filter, so the real pass parses a few hundred lines instead of millions. Typing
each line is still the grammar's job: this module only looks for ``MID n`` / ``ICID n`` /
``DCID n`` words.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Iterable

from mailward.maillog import events as E
from mailward.maillog.grammar import parse_line

from .sources import open_binary, text_lines

MAX_ROUNDS = 6          # family chains deeper than this are unheard of; stop scanning anyway


def _alt(ids: Iterable[int]) -> str:
    return "|".join(str(i) for i in sorted(set(ids)))


@dataclass
class Wanted:
    mids: set[int] = field(default_factory=set)           # messages to show (and their family)
    member_icids: set[int] = field(default_factory=set)   # connections whose every MID is shown
    fact_icids: set[int] = field(default_factory=set)     # connections whose facts are needed
    dcids: set[int] = field(default_factory=set)

    def literals(self) -> set[str]:
        return {str(i) for i in self.mids | self.member_icids | self.fact_icids | self.dcids}

    def pattern(self) -> re.Pattern[str]:
        parts = []
        if self.mids:
            m = _alt(self.mids)
            # "MID n" everywhere, plus the old "Message n to ..." / "Double bounce: Message n" forms
            parts.append(rf"\bMID ({m})\b|\bMessage ({m}) to\b")
        icids = self.member_icids | self.fact_icids
        if icids:
            parts.append(rf"\bICID:? ({_alt(icids)})\b")
        if self.dcids:
            parts.append(rf"\bDCID:? ({_alt(self.dcids)})\b")
        return re.compile("|".join(parts) or r"(?!)")


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


def matcher(w: Wanted) -> Callable[[str], bool]:
    """``line -> bool``. With a few ids, a plain substring test on the digits rejects almost
    every line before the pattern runs (the pattern alone scans every position of every line)."""
    search = w.pattern().search
    lits = tuple(sorted(w.literals()))
    if len(lits) > 12:
        return lambda line: search(line) is not None

    def match(line: str) -> bool:
        for s in lits:
            if s in line:
                return search(line) is not None
        return False

    return match


def plan(paths: list[str], mids: Iterable[int], icids: Iterable[int], family: bool = True) -> Callable[[str], bool]:
    """The relevance test for tracking ``mids``/``icids`` in ``paths`` (files, not stdin)."""
    w = Wanted(set(mids), set(icids))
    for _ in range(MAX_ROUNDS):
        # New DCIDs pull in no further id, so only new MIDs/ICIDs call for another round.
        before = (len(w.mids), len(w.member_icids), len(w.fact_icids))
        match = matcher(w)
        for p in paths:
            stream, raw, _ = open_binary(p)
            try:
                with text_lines(stream) as f:
                    for line in f:
                        if match(line):
                            ev = parse_line(line).event
                            if ev is not None:
                                _learn(w, ev, family)
            finally:
                raw.close()
        if (len(w.mids), len(w.member_icids), len(w.fact_icids)) == before:
            break
    return matcher(w)
