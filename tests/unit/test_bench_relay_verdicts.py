"""bench/relay.py's closing verdicts on issue 7's bars, from paired rounds (no relay started)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from relay import Cell, Run, goal_verdicts  # noqa: E402

C10 = Cell("plain", 10, 1024, 100)
CLIENT = Cell("client", 50, 1024, 100)
AUTH = Cell("auth", 50, 1024, 100)


def runs(system: str, cell: Cell, *seconds: float) -> list[Run]:
    return [Run(system, cell, 100, s, s, 0) for s in seconds]     # 100 messages in s seconds


def test_every_round_over_the_bar_is_met_and_a_crossing_range_is_not_settled():
    by = {("mailward", C10): runs("mailward", C10, 1.0, 1.0),
          ("postfix", C10): runs("postfix", C10, 1.6, 1.4),            # ratios 1.6 and 1.4
          ("mailward", CLIENT): runs("mailward", CLIENT, 1.0, 1.0),
          ("mailward", AUTH): runs("mailward", AUTH, 1.05, 1.2)}       # -5 % and -17 %
    out = goal_verdicts(by, [C10, CLIENT, AUTH])
    assert out[0].startswith("  c=10 1 KiB mailward/Postfix >= 1.0: met in every round; "
                             ">= 1.5: met by the median, not settled")
    assert out[1].startswith("  AUTH costs <= 10 % at c=50: not met by the median, not settled (-11%")


def test_clear_cases_and_missing_cells():
    by = {("mailward", CLIENT): runs("mailward", CLIENT, 1.0, 1.0, 1.0),
          ("mailward", AUTH): runs("mailward", AUTH, 1.02, 1.05, 1.08)}   # -2 .. -7 %
    assert goal_verdicts(by, [C10, CLIENT, AUTH]) == ["  AUTH costs <= 10 % at c=50: met in every round "
                                                      "(-5% (-7%..-2%))"]
    by[("mailward", AUTH)] = runs("mailward", AUTH, 1.2, 1.3)
    assert "not met in any round" in goal_verdicts(by, [AUTH])[0]
    assert goal_verdicts({}, [C10, AUTH]) == []
