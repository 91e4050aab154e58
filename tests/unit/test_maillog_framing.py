"""Line framings read by parse_line: file ctime (1 or 2 spaces before the day), syslog with
and without PRI and hostname, relay-mangled headers, truncation, bad dates."""
from __future__ import annotations

from datetime import datetime

import pytest

from mailward.maillog import events as ev
from mailward.maillog.grammar import format_file_line, format_syslog_line, parse_line

CLOSE = ev.IcidClose(69610481)


@pytest.mark.parametrize("line,ts,host,tag,pri", [
    ("Wed May  4 00:24:31 2005 Info: ICID 69610481 close", datetime(2005, 5, 4, 0, 24, 31), None, None, None),
    ("Wed May 4 00:24:31 2005 Info: ICID 69610481 close", datetime(2005, 5, 4, 0, 24, 31), None, None, None),
    ("Wed May  4 00:24:31 2005 Info: ICID 69610481 close\n", datetime(2005, 5, 4, 0, 24, 31), None, None, None),
    ("<166>Mar 17 18:24:37 mail_logs: Info: ICID 69610481 close", datetime(2024, 3, 17, 18, 24, 37), None,
     "mail_logs", 166),
    ("<94>Nov 24 14:22:57 REDACTED.africa.example.net mail_logs: Info: ICID 69610481 close",
     datetime(2024, 11, 24, 14, 22, 57), "REDACTED.africa.example.net", "mail_logs", 94),
    ("Jun 26 10:42:23 ip1out.temple.edu mail_logs: Info: ICID 69610481 close",
     datetime(2024, 6, 26, 10, 42, 23), "ip1out.temple.edu", "mail_logs", None),
    ("Aug  2 23:59:52 10.0.1.1 MAIL_SecurityAudit: Info: ICID 69610481 close",
     datetime(2024, 8, 2, 23, 59, 52), "10.0.1.1", "MAIL_SecurityAudit", None),
    ("Feb  1 08:32:59 c60 smail: Info: ICID 69610481 close", datetime(2024, 2, 1, 8, 32, 59), "c60", "smail", None),
    ("Wed May  4 00:24:31 2005 Info: ICID 69610481 close   ", datetime(2005, 5, 4, 0, 24, 31), None, None, None),
])
def test_header_forms(line, ts, host, tag, pri):
    rec = parse_line(line, year=2024)
    assert rec.event == CLOSE and rec.unparsed is None
    assert (rec.timestamp, rec.host, rec.subscription, rec.pri) == (ts, host, tag, pri)
    assert rec.has_year == (tag is None)
    assert rec.raw == line


def test_relay_mangled_header_still_reads_the_body():
    line = ("Oct 20 16:11:05 195.88.94.253 Original Address=195.88.94.10 Oct 20 16:11:05 Syslog-Test: Info: "
            "ICID 3604683 REJECT SG None match ALL SBRS not enabled")
    rec = parse_line(line, year=2020)
    assert rec.subscription == "Syslog-Test" and rec.level == "Info"
    assert rec.event == ev.HatDecision(3604683, "REJECT", "None", "ALL", "not enabled")


@pytest.mark.parametrize("level", ["Info", "Warning", "Critical", "Debug", "Trace"])
def test_levels_are_kept(level):
    line = format_file_line(CLOSE, datetime(2020, 1, 2, 3, 4, 5), level)
    assert parse_line(line).level == level


def test_body_that_starts_like_a_level_stays_in_the_body():
    rec = parse_line("Fri Mar 25 20:50:10 2022 Info: Warning: Your key will expire")
    assert rec.level == "Info" and rec.event == ev.SystemNote("Warning: Your key will expire")


@pytest.mark.parametrize("cut", ["Wed Apr 22 11:4", "<22>Apr 2", "Wed", "<2"])
def test_header_cut_short_is_truncated(cut):
    rec = parse_line(cut)
    assert rec.event is None and rec.unparsed == "truncated"


@pytest.mark.parametrize("junk", ["", "hello world", "2009-04-22T11:43:59Z something", "\x00\x01"])
def test_no_header(junk):
    rec = parse_line(junk)
    assert rec.event is None and rec.unparsed in ("no-header", "truncated")


def test_impossible_date_is_flagged_but_the_body_is_typed():
    rec = parse_line("Wed Feb 30 11:43:59 2009 Info: ICID 69610481 close")
    assert rec.timestamp is None and rec.unparsed == "bad-time" and rec.event == CLOSE


def test_unknown_idless_body_is_a_flagged_system_note():
    rec = parse_line("Wed Apr 22 11:43:59 2009 Info: something new in AsyncOS 99")
    assert rec.event == ev.SystemNote("something new in AsyncOS 99") and rec.unparsed == "unknown-body"
    rec = parse_line("Wed Apr 22 11:43:59 2009 Info: CASE cache status: hits = 1, misses = 2")
    assert isinstance(rec.event, ev.SystemNote) and rec.unparsed is None


def test_status_counters_are_not_mistaken_for_ids():
    rec = parse_line("Thu Jan 25 18:57:01 2007 Info: Status: CPULd 3 DskIO 0 RAMUtil 1 CrtMID 141 CrtICID 9")
    assert isinstance(rec.event, ev.SystemNote)


def test_syslog_format_exact_text():
    when = datetime(2009, 4, 2, 11, 43, 59)
    assert format_syslog_line(CLOSE, when, hostname=None) == "<22>Apr  2 11:43:59 mail_logs: Info: ICID 69610481 close"
    assert (format_syslog_line(CLOSE, when, hostname="gw", tag="sc4s_mail_logs", pri=166)
            == "<166>Apr  2 11:43:59 gw sc4s_mail_logs: Info: ICID 69610481 close")
    assert format_file_line(CLOSE, when) == "Thu Apr  2 11:43:59 2009 Info: ICID 69610481 close"
