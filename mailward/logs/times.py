"""Time values of the toolkit: UTC epoch seconds inside, ISO 8601 UTC text outside.

Owns parsing of ``--since/--until`` values and the one rendering every report uses.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone


def parse_when(text: str) -> float:
    """Parse a ``--since/--until`` value: ISO 8601 (``2014-11-19T09:16``, zone optional, UTC
    assumed), a ctime (``Wed Nov 19 09:16:38 2014``, UTC) or epoch seconds."""
    t = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", t):
        return float(t)
    try:
        dt = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        try:
            dt = datetime.strptime(" ".join(t.split()), "%a %b %d %H:%M:%S %Y")
        except ValueError as exc:
            raise ValueError(f"cannot read time {text!r}: use ISO 8601 (2014-11-19T09:16:38Z) "
                             "or ctime (Wed Nov 19 09:16:38 2014)") from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def iso(ts: float | None) -> str | None:
    """UTC ISO 8601 text for a timestamp, as every report prints it."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
