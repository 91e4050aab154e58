"""Pick out, in blocks of raw bytes, the few lines a report needs, before any line is parsed.

Owns the block scan behind the toolkit's relevance filters: a file is read in blocks of a few
MiB; compiled bytes patterns search each block (in C, never line by line in Python), and only
the lines holding a match are decoded and handed to the reader; the others are counted. The
header lines (``Begin Logfile`` / ``Version:`` / ``Time offset``, at the start of an input or
after a later ``Begin Logfile``) always pass, so that appliance keys and UTC times stay right.

It decides nothing about which lines matter (the callers do: ``auth_scan`` below for ``logs
auth``, ``prefilter`` for ``logs track``, the detector's needle list) and does not parse bodies:
typing every line that passes is still the grammar's job.
"""
from __future__ import annotations

import gzip
import re
import zlib
from typing import BinaryIO, Callable, Iterable, Iterator

BLOCK = 4 << 20         # bytes read at a time: large enough that the per-block cost vanishes
HEAD_LINES = 4          # the file header: Begin Logfile, Version, Time offset (+ one spare)

# A header can also appear mid-file (files concatenated): the lines from a "Begin Logfile"
# on always pass. (One literal to search for: each extra pattern is one more pass.)
_BEGIN = re.compile(rb"Begin Logfile")


def blocks(stream: BinaryIO) -> Iterator[bytes]:
    """``stream`` in blocks of about ``BLOCK`` bytes, each ending at a line end but the last
    when the input does not end with one. ``read1`` where there is one: a gzip stream cut
    short raises at its end, and the blocks before it are handed out first."""
    rest = b""
    read = getattr(stream, "read1", stream.read)
    while True:
        chunk = read(BLOCK)
        if not chunk:
            break
        block = rest + chunk if rest else chunk
        cut = block.rfind(b"\n") + 1
        if cut == 0:
            rest = block
            continue
        rest = block[cut:]
        yield block[:cut] if cut != len(block) else block
    if rest:
        yield rest


class LineScan:
    """A relevance filter on raw bytes. Each of ``patterns`` is searched on its own through a
    block (a pattern that starts with literal text is searched for that text at memchr speed;
    one pattern with alternatives starting differently would be tried at every byte, ten times
    slower); a line holding a match of any is selected. ``wanted`` narrows matches that went
    through a named group: ``{"icid": {b"1005", ...}}`` keeps a match whose ``icid`` group
    captured one of those values (and drops the others); matches through no group are kept.
    The header lines always pass."""

    def __init__(self, patterns: Iterable[bytes | re.Pattern[bytes]],
                 wanted: dict[str, set[bytes]] | None = None) -> None:
        self.patterns = tuple(p if isinstance(p, re.Pattern) else re.compile(p) for p in patterns)
        self.wanted = wanted

    @classmethod
    def of_texts(cls, texts: str | Iterable[str]) -> "LineScan":
        """Lines containing any of ``texts``."""
        if isinstance(texts, str):
            texts = (texts,)
        return cls(re.escape(t.encode()) for t in texts)

    def wants(self, line: str) -> bool:
        """The same choice for one line of text (for lines that did not come from ``lines``)."""
        return bool(self._starts(line.encode("utf-8", "surrogateescape") + b"\n", 0)[0])

    def lines(self, stream: BinaryIO, counts: list[int],
              on_block: Callable[[], None] | None = None) -> Iterator[str]:
        """The selected lines of ``stream`` as text (each with its newline, but a last line
        that has none); ``counts[0]`` grows by every line read, selected or not, so that the
        caller can count the skipped ones. ``on_block`` is called after each block (progress:
        few lines may be selected from a large file)."""
        head = HEAD_LINES
        for block in blocks(stream):
            if not block.endswith(b"\n"):
                # A last line without its newline: scanned with one added, yielded without it.
                counts[0] += 1
                if head or self._starts(block + b"\n", 0)[0]:
                    yield block.decode("utf-8", "replace")
                break
            counts[0] += block.count(b"\n")
            start = 0
            while head and start < len(block):
                end = block.index(b"\n", start) + 1
                yield block[start:end].decode("utf-8", "replace")
                start = end
                head -= 1
            find = block.find
            starts, carry = self._starts(block, start)
            for s in starts:
                yield block[s:find(b"\n", s) + 1].decode("utf-8", "replace")
            head = max(head, carry)     # a header that goes on in the next block
            if on_block is not None:
                on_block()

    def _starts(self, block: bytes, pos: int) -> tuple[list[int], int]:
        """Sorted start offsets of the selected lines of ``block`` (which ends with a newline),
        and how many header lines are still due from the next block."""
        wanted = self.wanted
        rfind = block.rfind
        starts: set[int] = set()
        add = starts.add
        for pat in self.patterns:
            if wanted is None:
                for m in pat.finditer(block, pos):
                    add(rfind(b"\n", 0, m.start()) + 1)
            else:
                for m in pat.finditer(block, pos):
                    g = m.lastgroup
                    if g is None or m[g] in wanted[g]:
                        add(rfind(b"\n", 0, m.start()) + 1)
        find = block.find
        carry = 0
        for m in _BEGIN.finditer(block, pos):
            s = rfind(b"\n", 0, m.start()) + 1
            carry = HEAD_LINES
            while carry and s < len(block):
                add(s)
                s = find(b"\n", s) + 1
                carry -= 1
        return sorted(starts), carry


# --- logs auth ------------------------------------------------------------------------------

# Every AUTH line names its connection: "SMTP Auth: (ICID n)" (and the old colon-less form)
# inbound, "DCID: n IP: a SMTP authentication" outbound.
# (Two patterns, each searched for its literal start: see ``LineScan``.)
_AUTH_ICIDS = re.compile(rb"SMTP Auth:? \(ICID (\d+)\)")
_AUTH_DCIDS = re.compile(rb"DCID: (\d+) IP: \S+ SMTP authentication ")

# What an AUTH attempt is joined with: the connection's opening line (peer and listener
# addresses; our interface outbound) and its end (after which the id is a new connection).
# Each pattern starts with literal text, so that it is searched for quickly.
# ("ICID n close" and "DCID n close" share one pattern that starts with "CID "; lookbehinds
# tell which id it is.)
_AUTH_LINES = (rb"SMTP (?:Auth|authentication |ICID (?P<icid>\d+) |DCID (?P<dcid>\d+) )",
               rb"CID (?:(?<=ICID )(?P<icid>\d+)|(?<=DCID )(?P<dcid>\d+)) (?:close|lost)\b")


def _auth_ids(paths: list[str], open_binary) -> tuple[set[bytes], set[bytes]]:
    """The ICIDs and DCIDs named by AUTH lines in ``paths`` (ids of every appliance together:
    a few extra lines of another appliance's same id are harmless, a missing one is not)."""
    icids: set[bytes] = set()
    dcids: set[bytes] = set()
    for p in paths:
        stream, raw, _ = open_binary(p)
        try:
            for block in blocks(stream):
                icids.update(_AUTH_ICIDS.findall(block))
                dcids.update(_AUTH_DCIDS.findall(block))
        except (EOFError, zlib.error, gzip.BadGzipFile):
            pass        # a damaged .gz: the reader reports it; what was there is scanned
        finally:
            raw.close()
    return icids, dcids


def auth_scan(paths: list[str], open_binary) -> LineScan:
    """The lines ``logs auth`` needs from ``paths``; ``open_binary`` opens one input.

    Stdin cannot be read twice: with it, every connection's opening and closing line is kept.
    With files, a first scan collects the ICIDs and DCIDs that carry AUTH lines. The second
    keeps the AUTH lines and the opening and closing lines of those connections only: on a
    busy gateway that is a few percent of the log. The correlator then sees, for every id
    that matters, the same lifecycle lines as in a full read.
    """
    if "-" in paths:
        return LineScan(_AUTH_LINES)
    icids, dcids = _auth_ids(paths, open_binary)
    return LineScan(_AUTH_LINES, {"icid": icids, "dcid": dcids})


# --- logs detect ----------------------------------------------------------------------------

# Besides AUTH, the detector reads the stories of authenticated senders (how many recipients
# per message): a message's start and recipient lines name its ICID; its end does not.
_DETECT_LINES = _AUTH_LINES + (rb"Start MID \d+ ICID (?P<icid>\d+)",
                               rb"ICID (?P<icid>\d+) (?:RID \d+ )?To: <",
                               rb"Message finished MID ")


def detect_scan(paths: list[str], open_binary) -> LineScan:
    """The lines ``logs detect`` needs: those of ``auth_scan``, and the start, recipient and
    end lines of the messages sent on connections that carry AUTH lines."""
    if "-" in paths:
        return LineScan(_DETECT_LINES)
    icids, dcids = _auth_ids(paths, open_binary)
    return LineScan(_DETECT_LINES, {"icid": icids, "dcid": dcids})
