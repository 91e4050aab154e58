"""Find which lines a ``logs track`` search needs, without parsing the whole log.

Owns the plan behind ``logs track`` on files. Searches by value (``--user``, ``--ip``,
``--sender``, ``--rcpt``, ``--subject``) first become ids: one scan for the value's text picks
the few lines that can carry it, the grammar types them, and their MIDs/ICIDs/DCIDs are the
seeds (``seeds``). Then, from the seeds or the ``--mid``/``--icid`` given, a scan picks the lines
that name the wanted ids; only those are parsed, to learn the ids they pull in (the MID's ICID,
the DCIDs it was delivered on, the MIDs derived from it, the MIDs started on a wanted
connection or delivered on a wanted DCID); this repeats until no new id appears (usually
twice). The result is a ``LineScan`` the reader uses as its relevance filter, so the real pass
parses a few hundred lines instead of millions.

The plan may pick more stories than match (the command still tests each story), never fewer:
every line that can make a story match is found by the value scan or through an id. Typing each
line is still the grammar's job: this module only looks for literal text and ``MID n`` /
``ICID n`` / ``DCID n`` words.
"""
from __future__ import annotations

import gzip
import re
import zlib
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from mailward.maillog import events as E
from mailward.maillog.grammar import parse_line

from .scan import LineScan
from .sources import open_binary

MAX_ROUNDS = 6          # family chains deeper than this are unheard of; stop scanning anyway
MAX_SPELLED = 20000     # ids of one kind written out in a scan pattern; more are looked up
# A plan is worth it while it picks a small share of the log; past this share, reading every
# line once costs less than the rounds of scans (a search for a word in every other subject).
SELECTIVE = 0.05
MIN_LINES = 200_000     # below this a log is read in well under a second: always plan
LINES_PER_MESSAGE = 20  # a typical story: its MID's lines, its ICID's and DCIDs' own lines


def _alt(ids: Iterable[int]) -> bytes:
    """A pattern matching exactly these numbers, as a trie (``1(?:0|2(?:5)?)``): the regex
    engine then spends a few steps per candidate, not one per id."""
    root: dict = {}
    for word in {b"%d" % i for i in ids}:
        node = root
        for ch in word:
            node = node.setdefault(ch, {})
        node[None] = {}

    def emit(node: dict) -> bytes:
        alts = [bytes([ch]) + emit(child) for ch, child in sorted((k, v) for k, v in node.items() if k is not None)]
        if not alts:
            return b""
        body = alts[0] if len(alts) == 1 else b"(?:" + b"|".join(alts) + b")"
        return b"(?:" + body + b")?" if None in node else body

    return emit(root)


@dataclass
class Wanted:
    mids: set[int] = field(default_factory=set)           # messages to show (and their family)
    member_icids: set[int] = field(default_factory=set)   # connections whose every MID is shown
    fact_icids: set[int] = field(default_factory=set)     # connections whose facts are needed
    dcids: set[int] = field(default_factory=set)
    member_dcids: set[int] = field(default_factory=set)   # deliveries whose every MID is shown
    lines: int = 0          # lines in the inputs, once a scan has counted them

    def scan(self) -> LineScan:
        """The lines naming any wanted id. One pattern per id kind, each starting with literal
        text (``LineScan`` searches each for its literal start). The ids are spelled out in the
        pattern as a trie (tried in C only where its literal occurs); past ``MAX_SPELLED`` the
        pattern captures the id and a set lookup in Python decides."""
        pats: list[bytes] = []
        wanted: dict[str, set[bytes]] = {}

        def kind(name: str, ids: set[int], forms: tuple[bytes, ...]) -> None:
            if not ids:
                return
            if len(ids) <= MAX_SPELLED:
                pats.extend(f % (b"(?:" + _alt(ids) + b")") for f in forms)
            else:
                pats.extend(f % (b"(?P<%s>\\d+)" % name.encode()) for f in forms)
                wanted[name] = {b"%d" % i for i in ids}

        # "MID n" everywhere, plus the old "Message n to ..." / "Double bounce: Message n" forms
        kind("mid", self.mids, (rb"MID %s\b", rb"Message %s to\b"))
        kind("icid", self.member_icids | self.fact_icids, (rb"ICID:? %s\b",))
        kind("dcid", self.dcids | self.member_dcids, (rb"DCID:? %s\b",))
        return LineScan(pats, wanted or None)

    def size(self) -> tuple[int, ...]:
        return (len(self.mids), len(self.member_icids), len(self.fact_icids), len(self.member_dcids))


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
    if dcid and mid is not None and dcid in w.member_dcids:
        w.mids.add(mid)
    if dcid and mid in w.mids:
        w.dcids.add(dcid)
    if not family:
        return
    if cls in (E.SplitMid, E.RewrittenMid, E.Reinjected):
        if mid in w.mids:
            w.mids.add(ev.new_mid)
        elif ev.new_mid in w.mids:
            # the child inherits the parent's envelope and connection: its lines are needed
            w.mids.add(mid)
    elif cls in (E.GeneratedBcc, E.GeneratedForBounce):
        if ev.original_mid in w.mids:
            w.mids.add(ev.mid)


def plan(paths: list[str], mids: Iterable[int], icids: Iterable[int], family: bool = True,
         seed: Wanted | None = None) -> LineScan | None:
    """The relevance filter for tracking ``mids``/``icids`` (and the ids of ``seed``) in
    ``paths`` (files, not stdin); None when the search is too broad for a plan to pay (the
    caller then reads every line)."""
    w = seed if seed is not None else Wanted()
    w.mids |= set(mids)
    w.member_icids |= set(icids)
    for _ in range(MAX_ROUNDS):
        broad = LINES_PER_MESSAGE * (len(w.mids) + len(w.member_icids)) > SELECTIVE * w.lines
        if w.lines >= MIN_LINES and broad:
            return None
        # New DCIDs pull in no further id, so only new MIDs/ICIDs call for another round.
        before = w.size()
        tally = [0, 0]
        for ev in _events(paths, w.scan(), tally):
            _learn(w, ev, family)
        w.lines = tally[0]
        if w.lines >= MIN_LINES and tally[1] > SELECTIVE * w.lines:
            return None
        if w.size() == before:
            break
    return w.scan()


def _events(paths: list[str], scan: LineScan, tally: list[int] | None = None) -> Iterator[E.Event]:
    """The events of the lines ``scan`` picks in ``paths``; ``tally`` gets [lines read, picked]."""
    tally = tally if tally is not None else [0, 0]
    for p in paths:
        stream, raw, _ = open_binary(p)
        counts = [0]
        try:
            for line in scan.lines(stream, counts):
                tally[1] += 1
                ev = parse_line(line).event
                if ev is not None:
                    yield ev
        except (EOFError, zlib.error, gzip.BadGzipFile):
            pass        # a damaged .gz: the reader reports it when it reads the file
        finally:
            raw.close()
            tally[0] += counts[0]


# --- searches by value ----------------------------------------------------------------------

# Text a value can be searched for as written: the log escapes backslashes, quotes, controls
# and (where they would end a field early) some punctuation, so only these survive verbatim.
_VERBATIM = re.compile(r"[A-Za-z0-9@._+=:/ -]+")
_SENDER_EVENTS = (E.MailFrom, E.MessageReady, E.Bounced, E.Delayed)
_RCPT_EVENTS = (E.RcptTo, E.Bounced, E.Delayed, E.LdapDrop)
_DCID_ADDRESS_EVENTS = (E.NewDcid, E.OutboundAuthResult, E.DeliveryConnectionError, E.DcidTlsRequired)


def seeds(paths: list[str], users=(), ips=(), sender: str | None = None, rcpt: str | None = None,
          subject: str | None = None) -> Wanted | None:
    """The ids a story matching these values must reach, from one scan for one value's text;
    None when no value can be searched for as text (the caller then reads everything).

    ``users`` and ``ips`` are exact; ``sender``/``rcpt``/``subject`` are case-insensitive
    substrings (ASCII letters only: other text may be escaped in the log)."""
    w = Wanted()
    tally = [0, 0]
    if users:
        # A connection's user is the one of its successful AUTH. Names written verbatim in the
        # log are part of the pattern (only their lines are parsed); others are checked parsed.
        head = rb"SMTP Auth:? \(ICID \d+\) succeeded for user: "
        if all(_VERBATIM.fullmatch(u) for u in users):
            head += rb"(?:%s) using AUTH mechanism: " % b"|".join(re.escape(u.encode()) for u in users)
        scan = LineScan([head])
        for ev in _events(paths, scan, tally):
            if isinstance(ev, E.SmtpAuthResult) and ev.succeeded and ev.user in users:
                w.member_icids.add(ev.icid)
        w.lines = tally[0]
        return w
    if ips and all(_VERBATIM.fullmatch(ip) for ip in ips):
        scan = LineScan([re.escape(ip.encode()) + rb"\b" for ip in ips])
        for ev in _events(paths, scan, tally):
            if isinstance(ev, E.NewIcid) and ev.address in ips:
                w.member_icids.add(ev.icid)
            elif isinstance(ev, _DCID_ADDRESS_EVENTS) and ev.address in ips:
                w.member_dcids.add(ev.dcid)
        w.lines = tally[0]
        return w
    for text, classes, attr in ((rcpt, _RCPT_EVENTS, "rcpt"), (sender, _SENDER_EVENTS, "sender"),
                                (subject, (E.SubjectHeader,), "subject")):
        if text and _VERBATIM.fullmatch(text):
            low = text.lower()
            scan = LineScan([re.compile(re.escape(text.encode()), re.IGNORECASE)])
            for ev in _events(paths, scan, tally):
                if isinstance(ev, classes):
                    value = ev.address if isinstance(ev, E.LdapDrop) else getattr(ev, attr)
                    if value is not None and low in value.lower():
                        w.mids.add(ev.mid)
            w.lines = tally[0]
            return w
    return None
