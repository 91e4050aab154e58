"""The two timestamp shapes of mail_logs, written and read fast.

Owns: ``Wed Apr 22 11:43:59 2009`` (file framing: ctime, day of month space padded, local
time as given) and ``Apr 22 11:43:59`` (RFC 3164 syslog framing, no year). It knows nothing
of events or line bodies. Parsing avoids ``strptime`` (slow) with a month table and a small
per-text cache: consecutive lines usually share their second.
"""
from __future__ import annotations

from datetime import datetime

DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
MONTH_NUM = {name: i + 1 for i, name in enumerate(MONTHS)}


def format_ctime(when: datetime) -> str:
    """``Wed Apr 22 11:43:59 2009`` (day space padded, as C's ctime)."""
    return "%s %s %2d %02d:%02d:%02d %d" % (
        DAYS[when.weekday()], MONTHS[when.month - 1], when.day,
        when.hour, when.minute, when.second, when.year)


def format_syslog_time(when: datetime) -> str:
    """``Apr 22 11:43:59`` / ``Apr  2 11:43:59`` (RFC 3164: day space padded)."""
    return "%s %2d %02d:%02d:%02d" % (
        MONTHS[when.month - 1], when.day, when.hour, when.minute, when.second)


_cache: dict[tuple, datetime | None] = {}
_CACHE_MAX = 4096


def make_time(mon: str, day: str, hms: str, year: int) -> datetime | None:
    """A naive datetime from the pieces of a header, or None when they are not a date.

    ``hms`` is ``HH:MM:SS``. Results are cached per (mon, day, hms, year).
    """
    key = (mon, day, hms, year)
    got = _cache.get(key, False)
    if got is not False:
        return got  # type: ignore[return-value]
    result: datetime | None
    month = MONTH_NUM.get(mon)
    try:
        if month is None:
            raise ValueError(mon)
        result = datetime(year, month, int(day), int(hms[0:2]), int(hms[3:5]), int(hms[6:8]))
    except ValueError:
        result = None
    if len(_cache) >= _CACHE_MAX:
        _cache.clear()
    _cache[key] = result
    return result
