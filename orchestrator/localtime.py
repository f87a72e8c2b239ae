"""Wall-clock arithmetic in a user's time zone, DST included. Core: pure functions of their
arguments (``now`` is always passed in, never read)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone, tzinfo
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
            except (ZoneInfoNotFoundError, ValueError, OSError):  # "America" is a directory
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
    return _next_from(now, now.astimezone(tz).date(), clock, tz)


def _next_from(now: datetime, local_date: date, clock: time, tz: ZoneInfo) -> datetime:
    """:func:`next_local_time`, given the local calendar date of ``now`` in ``tz``."""
    day = local_date
    for _ in range(3):
        # The first occurrence of ``clock`` that day, then its repeat if the clock shows it
        # twice (fall back): from inside the repeated hour, that second occurrence is the next
        # one, not tomorrow's.
        for candidate in _occurrences(day, clock, clock.fold, tz):
            if candidate > now:
                return candidate
        day += _ONE_DAY
    raise AssertionError("unreachable: a clock time recurs every day")


_ONE_DAY = timedelta(days=1)


@lru_cache(maxsize=4096)
def _occurrences(day: date, clock: time, fold: int, tz: tzinfo) -> tuple[datetime, datetime]:
    """``clock`` on ``day`` in ``tz`` as UTC: its first occurrence (:func:`at_local`) and the
    same wall time with ``fold=1`` (its repeat on a fall-back day, else the same instant).

    Cached because quiet hours and ``wait: until`` ask for the same few (day, clock, zone)
    over and over. Safe: the result is a pure function of the key, which holds only
    immutable values (``fold`` is part of the key because ``time`` equality ignores it).
    """
    first = datetime.combine(day, clock, tzinfo=tz).astimezone(UTC)
    repeat = datetime.combine(day, clock, tzinfo=tz).replace(fold=1).astimezone(UTC)
    return first, repeat


def in_window(now: datetime, start: time, end: time, tz: ZoneInfo) -> bool:
    """Whether local time in ``tz`` lies in [start, end); the window may wrap midnight."""
    return _clock_in_window(now.astimezone(tz).time(), start, end)


def window_end(now: datetime, start: time, end: time, tz: ZoneInfo) -> datetime | None:
    """``next_local_time(now, end, tz)`` if ``in_window(now, start, end, tz)``, else ``None``;
    converts ``now`` to local time once for both questions."""
    local_now = now.astimezone(tz)
    if not _clock_in_window(local_now.time(), start, end):
        return None
    return _next_from(now, local_now.date(), end, tz)


def _clock_in_window(t: time, start: time, end: time) -> bool:
    """``t`` (a naive local clock time) in [start, end), wrapping midnight if start >= end."""
    if start < end:
        return start <= t < end
    return t >= start or t < end
