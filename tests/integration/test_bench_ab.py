"""bench/ab.py end to end, tiny: two gateways (HEAD and the working tree) relaying to their own
smtp-sink over loopback, one round each way; the script must report a ratio for the cell and
leave no git worktree behind."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("smtp-sink") is None, reason="smtp-sink (Debian package postfix) not installed")
def test_ab_compares_head_with_the_working_tree():
    if subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True).returncode != 0:
        pytest.skip("not a git checkout")
    before = subprocess.run(["git", "-C", str(REPO), "worktree", "list"], capture_output=True, text=True).stdout
    out = subprocess.run([sys.executable, str(REPO / "bench" / "ab.py"), "--base", "HEAD", "--conc", "2",
                          "--modes", "client", "--rounds", "1", "--messages", "20", "--timeout", "60"],
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout + out.stderr
    line = [x for x in out.stdout.splitlines() if x.startswith("client c=2")]
    assert line and "new/base" in line[0] and "CPU per message" in line[0], out.stdout
    after = subprocess.run(["git", "-C", str(REPO), "worktree", "list"], capture_output=True, text=True).stdout
    assert after == before


def test_ab_refuses_an_unknown_ref():
    out = subprocess.run([sys.executable, str(REPO / "bench" / "ab.py"), "--base", "no-such-ref-xyz",
                          "--modes", "client"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "cannot check out no-such-ref-xyz" in out.stderr
