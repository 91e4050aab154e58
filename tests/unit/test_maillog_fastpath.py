"""The parser's fast path reads a line exactly as its slow path does.

``parse_line`` has a cached-header fast path (a file line whose ``... Info: `` header was seen
before) with its own body cut and dispatch, and a generated parser per template. These tests read
every line of the real samples, and bodies made to stress the edges (line ends, trailing spaces,
escapes, empty optional fields, short bodies), once with a cold header cache (slow path) and once
warm (fast path), and demand the same record.
"""
from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailward.maillog import events as ev
from mailward.maillog import grammar
from mailward.maillog.grammar import format_file_line, parse_body, parse_line

SAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "samples"
HEAD = "Wed Apr 22 11:43:59 2009 Info: "


def _cold(line: str) -> grammar.LogRecord:
    grammar._info_cache.clear()
    grammar._ts_cache.clear()
    return parse_line(line)


def _warm(line: str) -> grammar.LogRecord:
    parse_line(line)                      # fills the header cache (for an Info line)
    return parse_line(line)


def _same(line: str) -> None:
    cold, warm = _cold(line), _warm(line)
    assert warm == cold, line
    assert type(warm.event) is type(cold.event)


def _sample_lines() -> list[str]:
    assert SAMPLES.is_dir(), f"sample folder missing: {SAMPLES}"
    out = []
    for path in sorted(SAMPLES.glob("*.log")):
        with open(path, encoding="utf-8", errors="surrogateescape", newline="") as fh:
            out += list(fh)               # line ends kept, as a reader hands them over
    return out


def test_every_sample_line_reads_the_same_on_both_paths():
    lines = _sample_lines()
    assert len(lines) > 100
    for line in lines:
        _same(line)


EDGE_BODIES = [
    "ICID 5 close", "ICID 5 close   ", "MID 7 ICID 5 RID 0 To: <a\\x20b@x>", "MID 7 Subject 'a\\tb'",
    'MID 7 Subject "it\'s"', "MID 7 Subject", "MID 7 Subject ", "Start MID 7 ICID 5", "Start MID 7 ICID 5 note",
    "MID 7 RID [0, 1, 2] Response '250 ok'", "MID 7 RID [] Response 'x'", "MID 7 RID [3] Response 250 ok",
    "Message finished MID 7 done", "", " ", "MID", "MID 7", "A", "New SMTP ICID 1 interface Main (10.0.0.1) "
    "address 10.0.0.2 reverse dns host unknown verified yes", "SMTP Auth: (ICID 3) failed for user: "
    "a\\\\b using AUTH mechanism: PLAIN with profile: p", "something new in AsyncOS 99 MID 12",
    "MID 7 antivirus negative\r", "MID 7 x\x85y", "DCID 3 close\t",
]


@pytest.mark.parametrize("body", EDGE_BODIES)
@pytest.mark.parametrize("end", ["", "\n", "\r\n", "\r", "\n\n", " \n", "\r \n"])
def test_edge_bodies_read_the_same_on_both_paths(body, end):
    _same(HEAD + body + end)


def test_the_fast_path_is_the_one_taken_for_a_seen_header():
    # The record of a warm line is built by the fast path: its timestamp object is the cached one.
    line = HEAD + "ICID 5 close\n"
    _cold(line)
    cached = grammar._info_cache[line[:31]]
    rec = parse_line(HEAD + "DCID 9 close\n")
    assert rec.timestamp is cached and rec.event == ev.DcidClose(9) and rec.raw.endswith("\n")


def test_records_stay_frozen_values():
    rec = parse_line(HEAD + "ICID 5 close\n")
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.raw = "x"                     # type: ignore[misc]
    assert dataclasses.replace(rec, level="Warning").level == "Warning"
    assert rec == grammar.LogRecord(rec.timestamp, None, None, "Info", ev.IcidClose(5), HEAD + "ICID 5 close\n")
    assert hash(rec) == hash(grammar.LogRecord(rec.timestamp, None, None, "Info", ev.IcidClose(5), rec.raw))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("MIDCRSTt 0123456789:<>[]'\"\\,()-.xabn")), max_size=60),
       st.sampled_from(["", "\n", "\r\n", " ", "  \n"]))
def test_random_bodies_read_the_same_on_both_paths(body, end):
    _same(HEAD + body + end)


def test_generated_parsers_match_the_event_written():
    # Every event the formatter writes reads back through the generated parsers (inline
    # conversions: ints, yes/no, succeeded/failed, text with and without backslashes, qs quotes).
    when = datetime(2009, 4, 22, 11, 43, 59)
    events = [
        ev.NewIcid(1, "Main In", "10.0.0.1", "10.0.0.2", "h\\x.example", True),
        ev.SmtpAuthResult(3, False, "us\ter", "LOGIN", "prof"),
        ev.SubjectHeader(7, "it's \"q\"", "'"),
        ev.SubjectHeader(7, "it's", "'"),
        ev.SubjectHeader(7, "it's", '"'),
        ev.SubjectHeader(7, "plain", ""),
        ev.DeliveryStart(4, 7, (0, 1, 2)),
        ev.DeliveryStart(4, 7, (5,), "note \\ x"),
        ev.MessageFinished(7, "done"),
    ]
    for e in events:
        line = format_file_line(e, when) + "\n"
        assert _cold(line).event == e
        assert parse_line(line).event == e
        assert parse_body(line[31:-1])[0] == e
