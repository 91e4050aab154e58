"""bench/auth_cost.py end to end, tiny: a gateway under Callgrind relaying to smtp-sink over
loopback, with and without AUTH PLAIN; the script must count instructions and system calls per
message for both and judge the difference against the 10 % bar."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

from auth_cost import Count, auth_change, parse_strace_summary  # noqa: E402

STRACE_TABLE = """\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 75.91    4.941041         221     22281      2211 futex
  6.14    0.399353          12     32814           write
  0.02    0.001085          90        12           fsync
------ ----------- ----------- --------- --------- ----------------
100.00    6.509279          44    147423      5136 total
"""


def test_strace_summary_is_read_per_call_without_the_total():
    assert parse_strace_summary(STRACE_TABLE) == {"futex": 22281, "write": 32814, "fsync": 12}


def test_auth_change_pairs_rounds_of_one_concurrency():
    counts = [Count("client", 1, 10, 1000.0), Count("auth", 1, 10, 1100.0),
              Count("client", 1, 10, 1000.0), Count("auth", 1, 10, 1050.0),
              Count("client", 10, 10, 500.0), Count("auth", 10, 10, 600.0)]
    assert [round(x, 3) for x in auth_change(counts, 1)] == [0.1, 0.05]
    assert [round(x, 3) for x in auth_change(counts, 10)] == [0.2]


@pytest.mark.slow
@pytest.mark.skipif(any(shutil.which(t) is None for t in ("valgrind", "callgrind_control", "smtp-sink", "strace")),
                    reason="valgrind, strace and smtp-sink (Debian packages valgrind, strace, postfix) needed")
def test_auth_cost_counts_both_modes():
    out = subprocess.run([sys.executable, str(REPO / "bench" / "auth_cost.py"), "--messages", "4",
                          "--conc", "1", "--rounds", "1", "--timeout", "120"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    for mode in ("client", "auth"):
        m = re.search(rf"instructions\s+{mode}\s+c=1\s+([\d,]+) per message", text)
        assert m and int(m.group(1).replace(",", "")) > 100_000, text      # a relayed message is work
        assert re.search(rf"system calls\s+{mode}\s+c=1\s+[\d.]+ per message", text), text
    verdict = re.search(r"c=1\s+instructions [\d,]+ -> [\d,]+: ([+-][\d.]+)%.*(within|over) the 10% bar", text)
    assert verdict, text
    # AUTH adds work (a round trip, a check, a log line), never removes it
    assert float(verdict.group(1)) > 0, text
    assert re.search(r"system calls [\d.]+ -> [\d.]+: \+", text), text
