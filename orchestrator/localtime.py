"""Wall-clock arithmetic in a user's time zone, DST included. Core: pure functions of their
arguments (``now`` is always passed in, never read)."""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

UTC = timezone.utc


@lru_cache(maxsize=1024)
def zone(name: str | None, default: str = "UTC") -> ZoneInfo:
    """The user's zone; an unknown or missing name falls back to ``default``."""
    for candidate in (name, default, "UTC"):
        if candidate:
            try:
                return ZoneInfo(candidate)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


@lru_cache(maxsize=256)
def parse_hhmm(text: str) -> time:
    h, m = text.split(":")
    return time(int(h), int(m))


def at_local(day: datetime, clock: time, tz: ZoneInfo) -> datetime:
    """``clock`` on the local calendar date of ``day``, as UTC.

    A time that does not exist on that date (skipped by a spring-forward change) is moved
    forward by the gap, the way a wall clock would show it: 02:30 becomes 03:30. A time that
    happens twice (fall back) is its first occurrence.
    """
    # fold=0: a skipped time takes the offset from before the gap (02:30 -> 03:30 new time);
    # a repeated time (fall back) means its first occurrence.
    return datetime.combine(day.date(), clock, tzinfo=tz).astimezone(UTC)


def next_local_time(now: datetime, clock: time, tz: ZoneInfo) -> datetime:
    """The first instant strictly after ``now`` at which the local clock in ``tz`` shows ``clock``."""
    local_now = now.astimezone(tz)
    for days in range(0, 3):
        day = local_now + timedelta(days=days)
        candidate = at_local(day, clock, tz)
        if candidate > now:
            return candidate
        # A repeated time (fall back) shows a second time, an hour or so later: from inside
        # the repeated hour, that second occurrence is the next one, not tomorrow's.
        repeat = datetime.combine(day.date(), clock, tzinfo=tz).replace(fold=1).astimezone(UTC)
        if repeat > now:
            return repeat
    raise AssertionError("unreachable: a clock time recurs every day")


def in_window(now: datetime, start: time, end: time, tz: ZoneInfo) -> bool:
    """Whether local time in ``tz`` lies in [start, end); the window may wrap midnight."""
    t = now.astimezone(tz).time().replace(tzinfo=None)
    if start < end:
        return start <= t < end
    return t >= start or t < end
