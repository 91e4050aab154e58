"""``track --mid/--icid`` parses only the lines its ids need, and tells the same story as a full
parse (stdin is always parsed in full, so it is the reference)."""
from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from mailward.logs import synth
from mailward.logs.cli import logs_group
from mailward.logs.prefilter import plan

SAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "samples"
CRIBL = SAMPLES / "cribl_esa_7.6_2014_sanitised.log"


def track(path: Path, *args: str, stdin: bool = False) -> list[dict]:
    assert SAMPLES.is_dir(), f"samples folder missing: {SAMPLES}"
    if stdin:
        res = CliRunner().invoke(logs_group, ["track", "-", *args, "--format", "json"],
                                 input=path.read_text(), catch_exceptions=False)
    else:
        res = CliRunner().invoke(logs_group, ["track", str(path), *args, "--format", "json"],
                                 catch_exceptions=False)
    return json.loads(res.stdout) if res.exit_code == 0 else []


def test_same_stories_as_a_full_parse_on_real_and_synthetic_logs(tmp_path):
    log = tmp_path / "mail.current"
    with log.open("w") as f:
        synth.write(f, 20_000, seed=3)
    cases = [(CRIBL, ["--mid", "24611507"]), (CRIBL, ["--mid", "24611491", "--mid", "24611421"]),
             (CRIBL, ["--icid", "60140302"]), (CRIBL, ["--mid", "24611498", "--no-family"]),
             (log, ["--mid", "5100"]), (log, ["--mid", "5400", "--mid", "5401"]), (log, ["--icid", "1200"]),
             # a split child alone: it inherits its parent's envelope and connection
             (CRIBL, ["--mid", "24611528", "--no-family"]), (CRIBL, ["--icid", "60140302", "--no-family"]),
             # searches by value: seeded by a scan for the value's text
             (log, ["--user", "user111"]), (log, ["--user", "user196", "--user", "user43", "--no-family"]),
             (log, ["--ip", "198.51.120.240"]), (log, ["--ip", "203.0.113.125"]), (log, ["--subject", "your ORDER"]),
             (log, ["--sender", "S4269@"]), (log, ["--rcpt", "r8466@"]), (CRIBL, ["--sender", "solidsignal"]),
             (CRIBL, ["--rcpt", "user25@"]),
             (log, ["--user", "user111", "--since", "2026-11-26T00:05:00", "--until", "2026-11-26T00:10:00"])]
    for path, args in cases:
        fast = track(path, *args)
        full = track(path, *args, stdin=True)
        assert fast, (path.name, args)
        assert fast == full, (path.name, args)


def test_plan_follows_icid_dcid_and_family():
    keep = plan([str(CRIBL)], [24611507], [], family=True)
    lines = CRIBL.read_text().splitlines()
    picked = [ln for ln in lines if keep.wants(ln)]
    text = "\n".join(picked)
    assert "ICID 60140302 close" in text                          # the MID's ICID facts
    assert "MID 24611528" in text and "Start MID 24611531" in text  # split child, its bcc copy
    assert 10 < len(picked) < 60
    assert any("New SMTP ICID 60140302" in ln for ln in picked)
    assert not any("MID 24611498" in ln for ln in picked)


def test_a_broad_search_reads_every_line_instead(tmp_path, monkeypatch):
    from mailward.logs import prefilter as P
    from mailward.logs.prefilter import seeds

    log = tmp_path / "mail.current"
    with log.open("w") as f:
        synth.write(f, 20_000, seed=3)
    monkeypatch.setattr(P, "MIN_LINES", 1000)
    # one subject in four: a plan would pick most of the log
    assert plan([str(log)], (), (), True, seeds([str(log)], subject="Invoice")) is None
    narrow = plan([str(log)], (), (), True, seeds([str(log)], users={"user111"}))
    assert narrow is not None
    # and the command still answers, from a full read
    assert track(log, "--subject", "Invoice") == track(log, "--subject", "Invoice", stdin=True)
