"""Output helpers: the progress bar only on a terminal, tables and CSV cells."""
from __future__ import annotations

import io

from mailward.logs.render import progress, table, write_csv


def test_progress_is_quiet_when_not_a_terminal_and_works_when_asked():
    with progress() as p:          # under pytest stderr is not a terminal
        assert p is None
    with progress(enabled=True) as p:
        assert callable(p)
        p(10, 100)
        p(100, 100)


def test_table_and_csv_cells():
    out = io.StringIO()
    table([{"a": None, "b": True, "c": ["x", "y"]}], ("a", "b", "c"), out=out)
    assert "yes" in out.getvalue() and "x, y" in out.getvalue()
    out = io.StringIO()
    write_csv([{"a": None, "b": False}], ("a", "b"), out=out)
    assert out.getvalue().splitlines() == ["a,b", ",no"]
    out = io.StringIO()
    write_csv([], ("a", "b"), out=out)
    assert out.getvalue().strip() == "a,b"
