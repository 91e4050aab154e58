"""The block scan picks the right lines out of raw bytes, and ``logs auth`` built on it reports
exactly what a full read of every line reports (the full read is the reference)."""
from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailward.logs import scan as S
from mailward.logs import synth
from mailward.logs.authreport import AuthReport
from mailward.logs.cli import logs_group
from mailward.logs.correlate import Correlator
from mailward.logs.scan import LineScan, auth_scan
from mailward.logs.sources import Reader, open_binary

SAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "samples"

HEADER = ("Wed Nov 19 09:16:46 2014 Info: Begin Logfile\n"
          "Wed Nov 19 09:16:46 2014 Info: Version: 7.6.3-019 SN: ABC\n"
          "Wed Nov 19 09:16:46 2014 Info: Time offset from UTC: -21600 seconds\n")


def picked(scan: LineScan, data: bytes) -> tuple[list[str], int]:
    counts = [0]
    return list(scan.lines(io.BytesIO(data), counts)), counts[0]


def test_texts_header_and_a_last_line_without_newline():
    body = "".join(f"Wed Nov 19 09:17:{i:02d} 2014 Info: MID {i} queued for delivery\n" for i in range(20))
    data = (HEADER + body + "Wed Nov 19 09:18:00 2014 Info: SMTP Auth: (ICID 9) failed").encode()
    lines, total = picked(LineScan.of_texts(("MID 7 ", "SMTP")), data)
    assert total == 3 + 20 + 1
    # the first lines of a file always pass (its header, and one spare)
    assert lines[:4] == data.decode().splitlines(keepends=True)[:S.HEAD_LINES]
    assert lines[4] == "Wed Nov 19 09:17:07 2014 Info: MID 7 queued for delivery\n"
    assert lines[5] == "Wed Nov 19 09:18:00 2014 Info: SMTP Auth: (ICID 9) failed"   # no newline added
    assert len(lines) == 6


def test_lines_across_block_boundaries_and_a_header_mid_file(monkeypatch):
    monkeypatch.setattr(S, "BLOCK", 37)       # blocks far shorter than a line
    body = "".join(f"Wed Nov 19 09:17:{i % 60:02d} 2014 Info: ICID {i} close\n" for i in range(50))
    data = (HEADER + body + HEADER + body).encode()
    lines, total = picked(LineScan([rb"CID (?P<icid>\d+) close"], {"icid": {b"3", b"41"}}), data)
    assert total == 2 * (3 + 50)
    ids = [ln.split("ICID ")[1].split()[0] for ln in lines if "ICID" in ln]
    # wanted ids only, in file order, and the line after each header (HEAD_LINES is 4)
    assert ids == ["0", "3", "41", "0", "3", "41"]
    assert sum("Begin Logfile" in ln for ln in lines) == 2 and sum("SN: ABC" in ln for ln in lines) == 2


def test_undecodable_bytes_and_wants_agree_with_lines():
    data = HEADER.encode() + b"Wed Nov 19 09:17:00 2014 Info: SMTP Auth: (ICID 5) failed for user: \xff\xfe\n"
    scan = LineScan.of_texts("SMTP Auth")
    lines, _ = picked(scan, data)
    assert lines[-1].endswith("user: \ufffd\ufffd\n")
    assert scan.wants(lines[-1]) and not scan.wants("Wed Nov 19 09:17:00 2014 Info: MID 1 ready")


def _report(reader: Reader, path: str) -> tuple[dict, list[dict]]:
    rep = AuthReport()
    corr = Correlator(on_auth=rep.add)
    reader.read([path], corr.feed)
    corr.flush()
    return rep.summary(), [a.as_dict() for a in rep.attempts]


@pytest.mark.parametrize("name", ["synthetic", "seed_smtp_auth_technote.log", "cribl_esa_7.6_2014_sanitised.log",
                                  "elastic_file_form.log", "elastic_syslog_mixed.log"])
def test_auth_scan_reports_exactly_what_a_full_read_reports(tmp_path, name):
    if name == "synthetic":
        path = tmp_path / "mail.current"
        with path.open("w") as f:
            synth.write(f, 60_000, seed=11)
        # the same log gzipped and rolled: read by the scan through the gzip stream
        gz = tmp_path / "mail.@20261126T000000.s.gz"
        gz.write_bytes(gzip.compress(path.read_bytes()))
        paths = [str(path), str(gz)]
    else:
        assert SAMPLES.is_dir(), f"samples folder missing: {SAMPLES}"
        paths = [str(SAMPLES / name)]
    for p in paths:
        full = _report(Reader(), p)
        reader = Reader(only=auth_scan([p], open_binary))
        fast = _report(reader, p)
        assert fast == full
        if name in ("synthetic", "seed_smtp_auth_technote.log"):
            assert full[1], "the log has AUTH events"
        if name == "synthetic":
            # most of the log was never parsed, and every line was still counted
            assert reader.stats.skipped > 0.8 * reader.stats.lines
            assert reader.stats.lines == sum(1 for _ in open_binary(p)[0])


def test_logs_auth_from_files_and_from_stdin_agree(tmp_path):
    path = tmp_path / "mail.current"
    with path.open("w") as f:
        synth.write(f, 20_000, seed=5)
    runner = CliRunner()
    from_file = runner.invoke(logs_group, ["auth", str(path), "--format", "json"], catch_exceptions=False)
    from_stdin = runner.invoke(logs_group, ["auth", "-", "--format", "json"], input=path.read_text(),
                               catch_exceptions=False)
    a, b = json.loads(from_file.stdout), json.loads(from_stdin.stdout)
    assert a["lines"] == b["lines"] == sum(1 for _ in path.open())
    assert a["attempts"] and a["attempts"] == b["attempts"] and a["summary"] == b["summary"]


def test_progress_moves_with_the_blocks_even_when_few_lines_are_picked(tmp_path, monkeypatch):
    monkeypatch.setattr(S, "BLOCK", 4096)
    path = tmp_path / "mail.current"
    path.write_text(HEADER + "".join(f"Wed Nov 19 09:17:00 2014 Info: MID {i} queued for delivery\n"
                                     for i in range(3000)))
    seen: list[tuple[int, int]] = []
    reader = Reader(only=LineScan.of_texts("SMTP Auth"))    # selects nothing but the header
    reader.read([str(path)], lambda a, t, rec: None, progress=lambda done, total: seen.append((done, total)))
    size = path.stat().st_size
    assert len(seen) > size // 4096 // 2
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and seen[-1] == (size, size)
    assert reader.stats.lines == 3003 and reader.stats.skipped == 3003 - S.HEAD_LINES


def test_two_appliances_over_syslog_with_the_same_ids(tmp_path):
    """Two appliances' logs pushed to one syslog file: their ICIDs/DCIDs collide (both count
    from the same start), which the id scan ignores; the report must still match a full read."""
    logs = []
    for seed, host in ((21, "esa-a"), (22, "esa-b")):
        buf = io.StringIO()
        synth.write(buf, 15_000, seed=seed)
        out = []
        for line in buf.getvalue().splitlines():
            stamp, body = line[:24], line[25:]          # "Thu Nov 26 00:00:00 2026", "Info: ..."
            if "Begin Logfile" in body or "Version:" in body or "Time offset" in body:
                continue                                # syslog pushes carry no file header
            out.append((stamp[4:19], f"<22>{stamp[4:19]} {host} mail_logs: {body}\n"))
        logs.append(out)
    merged = sorted(logs[0] + logs[1], key=lambda x: x[0])     # stable: each host keeps its order
    path = tmp_path / "syslog.log"
    path.write_text("".join(line for _, line in merged))
    full = _report(Reader(year=2026), str(path))
    fast = _report(Reader(year=2026, only=auth_scan([str(path)], open_binary)), str(path))
    assert fast == full
    assert {a["appliance"] for a in full[1]} == {"esa-a", "esa-b"}
    by_host = [{a["icid"] for a in full[1] if a["direction"] == "inbound" and a["appliance"] == h}
               for h in ("esa-a", "esa-b")]
    assert by_host[0] & by_host[1]                   # the same ICIDs on both appliances


def _findings(reader: Reader, path: str) -> list[dict]:
    from mailward.logs.detect import Detector, Thresholds

    found = []
    # a low recipient threshold, so that the story-based rule fires on the generated log too
    det = Detector(found.append, Thresholds(burst_recipients=8, burst_window=900))
    corr = Correlator(on_auth=det.on_auth, on_story=det.on_story, keep_lines=True)
    reader.read([path], corr.feed)
    corr.flush()
    det.flush()
    return [f.as_dict() for f in found]


def test_detect_scan_finds_exactly_what_a_full_read_finds(tmp_path):
    from mailward.logs.scan import detect_scan

    path = tmp_path / "mail.current"
    with path.open("w") as f:
        synth.write(f, 120_000, seed=13)
    def comparable(findings: list[dict]) -> list[dict]:
        # A recipient burst quotes the first lines of each message as its evidence; the scan
        # reads a message's start and recipient lines, a full read also its HAT and From lines.
        return [f | {"evidence": None} if f["kind"] == "recipient_burst" else f for f in findings]

    kinds = set()
    for p in (str(path), str(SAMPLES / "seed_smtp_auth_technote.log")):
        full = _findings(Reader(), p)
        reader = Reader(only=detect_scan([p], open_binary))
        assert comparable(_findings(reader, p)) == comparable(full)
        kinds |= {f["kind"] for f in full}
        if p == str(path):
            assert reader.stats.skipped > reader.stats.lines / 2
    assert kinds >= {"brute_force", "password_spray", "recipient_burst"}
    runner = CliRunner()
    from_file = runner.invoke(logs_group, ["detect", str(path), "--format", "json"], catch_exceptions=False)
    from_stdin = runner.invoke(logs_group, ["detect", "-", "--format", "json"], input=path.read_text(),
                               catch_exceptions=False)
    assert json.loads(from_file.stdout) == json.loads(from_stdin.stdout) != []
