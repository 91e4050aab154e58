"""Tailing a live mail.current across rotation and truncation, and ``logs follow`` printing
findings as they happen. Real files, a writer thread, bounded in time."""
from __future__ import annotations

import os
import threading
import time
from datetime import datetime, timedelta

from click.testing import CliRunner

from mailward.logs.cli import logs_group
from mailward.logs.follow import Follower
from mailward.maillog import events as E
from mailward.maillog.grammar import format_file_line

T0 = datetime(2026, 3, 2, 8, 0, 0)


def line(i: int) -> str:
    return format_file_line(E.IcidClose(i), T0 + timedelta(seconds=i)) + "\n"


def wait_for(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return False


def test_follow_across_rotation_truncation_and_partial_lines(tmp_path):
    path = tmp_path / "mail.current"
    path.write_text(line(0))                # existing content: skipped (start at end)
    got: list[str] = []
    f = Follower(str(path), poll=0.05)
    done = threading.Event()

    def consume():
        for ln in f.lines(max_seconds=8, stop=done.is_set):
            got.append(ln)

    t = threading.Thread(target=consume)
    t.start()
    try:
        time.sleep(0.2)
        with open(path, "a") as w:
            w.write(line(1))
            w.write(line(2)[:20])           # half a line: held back until its newline
            w.flush()
            assert wait_for(lambda: len(got) == 1)
            time.sleep(0.1)
            assert len(got) == 1
            w.write(line(2)[20:])
        assert wait_for(lambda: len(got) == 2)
        # rotation: the appliance renames mail.current and starts a new one
        with open(path, "a") as w:
            w.write(line(3))                # written just before the rename: must not be lost
        os.rename(path, tmp_path / "mail.@20260302T080003.s")
        path.write_text(line(4))
        assert wait_for(lambda: len(got) == 4)
        # truncation in place (copytruncate)
        time.sleep(0.1)
        with open(path, "w") as w:
            w.write(line(5))
        assert wait_for(lambda: len(got) == 5)
        # truncated and refilled past our offset between two polls: read from the new start
        time.sleep(0.1)
        with open(path, "w") as w:
            w.write(line(6) + line(7) + line(8))
        assert wait_for(lambda: len(got) == 8)
    finally:
        done.set()
        t.join(10)
    assert not t.is_alive()
    assert got == [line(i) for i in (1, 2, 3, 4, 5, 6, 7, 8)]
    assert f.rotations == 1 and f.truncations == 2


def test_follow_command_prints_findings_live(tmp_path):
    path = tmp_path / "mail.current"
    path.write_text("")

    def writer():
        time.sleep(0.3)
        with open(path, "a") as w:
            for i in range(6):
                t = T0 + timedelta(seconds=i)
                w.write(format_file_line(E.NewIcid(10 + i, "In", "10.0.0.1", "203.0.113.9", None, False), t) + "\n")
                w.write(format_file_line(E.SmtpAuthResult(10 + i, False, "root", "LOGIN", "Inc"), t) + "\n")
                w.flush()
                time.sleep(0.02)

    th = threading.Thread(target=writer)
    th.start()
    start = time.monotonic()
    res = CliRunner().invoke(logs_group, ["follow", str(path), "--max-seconds", "2", "--poll", "0.02",
                                          "--brute-failures", "5", "--auth-events"],
                             catch_exceptions=False)
    th.join(5)
    assert time.monotonic() - start < 6
    assert res.exit_code == 0, res.output
    assert res.output.count("auth inbound FAILED root 203.0.113.9") == 6
    assert "[high] brute_force 203.0.113.9: 5 failed logins from 203.0.113.9" in res.output
