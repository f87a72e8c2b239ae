"""Wall-clock arithmetic in a user's time zone: next_local_time, in_window, at_local, DST."""

from __future__ import annotations

from datetime import datetime, time, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine_helpers import UTC, utc
from orchestrator.localtime import at_local, in_window, next_local_time, parse_hhmm, zone

NY = zone("America/New_York")
PARIS = zone("Europe/Paris")
LORD_HOWE = zone("Australia/Lord_Howe")  # a 30-minute DST shift


def local(tz, *args) -> datetime:
    return datetime(*args, tzinfo=tz)


# -- zone, parse_hhmm ------------------------------------------------------------------------


def test_zone_falls_back_to_the_default_then_utc():
    assert zone("Europe/Paris").key == "Europe/Paris"
    assert zone(None, "America/New_York").key == "America/New_York"
    assert zone("", "America/New_York").key == "America/New_York"
    assert zone("Not/AZone", "America/New_York").key == "America/New_York"
    assert zone("Not/AZone", "Also/Bad").key == "UTC"
    assert zone(None).key == "UTC"


def test_parse_hhmm():
    assert parse_hhmm("08:00") == time(8, 0)
    assert parse_hhmm("21:30") == time(21, 30)
    assert parse_hhmm("0:05") == time(0, 5)


# -- at_local --------------------------------------------------------------------------------


def test_at_local_ordinary_day():
    assert at_local(local(NY, 2026, 5, 4, 15), time(9, 0), NY) == utc(2026, 5, 4, 13)
    assert at_local(local(NY, 2026, 1, 5, 1), time(9, 0), NY) == utc(2026, 1, 5, 14)
    assert at_local(local(PARIS, 2026, 7, 1, 23, 59), time(0, 0), PARIS) == utc(2026, 6, 30, 22)


def test_at_local_in_the_spring_forward_gap_moves_forward():
    # 2026-03-08: New York clocks jump from 02:00 EST to 03:00 EDT; 02:30 does not exist.
    got = at_local(local(NY, 2026, 3, 8, 12), time(2, 30), NY)
    assert got == utc(2026, 3, 8, 7, 30)
    assert got.astimezone(NY).time() == time(3, 30)
    assert got.astimezone(NY).utcoffset() == timedelta(hours=-4)
    # just outside the gap
    assert at_local(local(NY, 2026, 3, 8, 12), time(1, 59), NY) == utc(2026, 3, 8, 6, 59)
    assert at_local(local(NY, 2026, 3, 8, 12), time(3, 0), NY) == utc(2026, 3, 8, 7, 0)
    # Europe/Paris jumps 02:00 -> 03:00 on 2026-03-29
    assert at_local(local(PARIS, 2026, 3, 29, 12), time(2, 15), PARIS) == utc(2026, 3, 29, 1, 15)
    assert at_local(local(PARIS, 2026, 3, 29, 12), time(2, 15), PARIS).astimezone(PARIS).time() == time(3, 15)


def test_at_local_in_a_repeated_hour_is_the_first_occurrence():
    # 2026-11-01: New York clocks go back from 02:00 EDT to 01:00 EST; 01:30 happens twice.
    got = at_local(local(NY, 2026, 11, 1, 12), time(1, 30), NY)
    assert got == utc(2026, 11, 1, 5, 30)  # 01:30 EDT, not 01:30 EST (06:30 UTC)
    assert got.astimezone(NY).utcoffset() == timedelta(hours=-4)
    # outside the repeated hour, one answer
    assert at_local(local(NY, 2026, 11, 1, 12), time(0, 30), NY) == utc(2026, 11, 1, 4, 30)
    assert at_local(local(NY, 2026, 11, 1, 12), time(2, 30), NY) == utc(2026, 11, 1, 7, 30)


# -- next_local_time -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "clock", "expected"),
    [
        (utc(2026, 5, 4, 12), "08:00", utc(2026, 5, 5, 12)),  # 08:00 EDT now: strictly after
        (utc(2026, 5, 4, 11, 59), "08:00", utc(2026, 5, 4, 12)),
        (utc(2026, 5, 4, 12, 0, 1), "08:00", utc(2026, 5, 5, 12)),
        (utc(2026, 5, 5, 3, 30), "08:00", utc(2026, 5, 5, 12)),  # 23:30 EDT on the 4th
        (utc(2026, 5, 4, 4, 30), "08:00", utc(2026, 5, 4, 12)),  # 00:30 EDT
        # spring forward: 23:30 EST on 03-07 -> 08:00 EDT on 03-08 (7.5h, not 8.5h)
        (utc(2026, 3, 8, 4, 30), "08:00", utc(2026, 3, 8, 12)),
        # fall back: 23:30 EDT on 10-31 -> 08:00 EST on 11-01 (9.5h)
        (utc(2026, 11, 1, 3, 30), "08:00", utc(2026, 11, 1, 13)),
        # a clock time in the gap: 02:30 on 2026-03-08 is shown as 03:30 EDT
        (utc(2026, 3, 8, 5), "02:30", utc(2026, 3, 8, 7, 30)),
        (utc(2026, 3, 8, 7, 30), "02:30", utc(2026, 3, 9, 6, 30)),
        # a repeated clock time: from before it, its first occurrence
        (utc(2026, 11, 1, 4), "01:30", utc(2026, 11, 1, 5, 30)),
        # from inside the repeated hour, after the first 01:30 EDT: the second, 01:30 EST
        (utc(2026, 11, 1, 5, 45), "01:30", utc(2026, 11, 1, 6, 30)),
        # after both: tomorrow
        (utc(2026, 11, 1, 6, 30), "01:30", utc(2026, 11, 2, 6, 30)),
    ],
)
def test_next_local_time_new_york(now, clock, expected):
    assert next_local_time(now, parse_hhmm(clock), NY) == expected


def test_next_local_time_accepts_any_aware_now():
    now_utc = utc(2026, 5, 4, 12)
    for same_instant in (now_utc, now_utc.astimezone(NY), now_utc.astimezone(PARIS)):
        assert next_local_time(same_instant, time(9, 0), PARIS) == utc(2026, 5, 5, 7)


ZONES = ["America/New_York", "Europe/Paris", "Australia/Lord_Howe", "Asia/Kolkata", "UTC"]


@settings(max_examples=150, deadline=None)
@given(
    tz_name=st.sampled_from(ZONES),
    minutes=st.integers(min_value=0, max_value=366 * 24 * 60),
    seconds=st.integers(min_value=0, max_value=59),
    clock=st.times().map(lambda t: t.replace(second=0, microsecond=0)),
)
def test_next_local_time_is_the_first_instant_the_wall_clock_shows_it(tz_name, minutes, seconds, clock):
    tz = zone(tz_name)
    now = utc(2026, 1, 1) + timedelta(minutes=minutes, seconds=seconds)
    got = next_local_time(now, clock, tz)
    assert got > now
    assert got - now <= timedelta(hours=26)
    shown = got.astimezone(tz).time().replace(tzinfo=None)
    if shown != clock:
        # only when the clock time does not exist that day: moved forward by the gap
        assert at_local(got.astimezone(tz), clock, tz) == got
        naive = datetime.combine(got.astimezone(tz).date(), clock)
        assert naive.replace(tzinfo=tz).astimezone(UTC).astimezone(tz).replace(tzinfo=None) != naive
    # no whole minute strictly between now and the answer shows the clock time
    t = (now + timedelta(minutes=1)).replace(second=0, microsecond=0)
    while t < got:
        assert t.astimezone(tz).time().replace(tzinfo=None) != clock, (t, got)
        t += timedelta(minutes=1)


# -- in_window -------------------------------------------------------------------------------

Q_START, Q_END = time(21, 0), time(8, 0)


@pytest.mark.parametrize(
    ("local_clock", "inside"),
    [
        ((20, 59), False),
        ((21, 0), True),  # start is inside
        ((23, 30), True),
        ((0, 0), True),
        ((0, 30), True),
        ((7, 59), True),
        ((8, 0), False),  # end is outside
        ((12, 0), False),
    ],
)
def test_in_window_wrapping_midnight(local_clock, inside):
    now = local(NY, 2026, 5, 4, *local_clock).astimezone(UTC)
    assert in_window(now, Q_START, Q_END, NY) is inside


@pytest.mark.parametrize(
    ("local_clock", "inside"),
    [((8, 59), False), ((9, 0), True), ((16, 59), True), ((17, 0), False), ((23, 0), False)],
)
def test_in_window_same_day(local_clock, inside):
    now = local(PARIS, 2026, 5, 4, *local_clock).astimezone(UTC)
    assert in_window(now, time(9, 0), time(17, 0), PARIS) is inside


def test_in_window_uses_the_zone_not_utc():
    now = utc(2026, 5, 4, 2)  # 02:00 UTC = 22:00 EDT = 04:00 Paris = 11:00 Tokyo
    assert in_window(now, Q_START, Q_END, NY)
    assert in_window(now, Q_START, Q_END, PARIS)
    assert not in_window(now, Q_START, Q_END, zone("Asia/Tokyo"))


def test_in_window_across_dst_changes():
    # 20:30 local either side of a change: outside; 21:30 local: inside, whatever the offset
    assert not in_window(utc(2026, 3, 8, 0, 30), Q_START, Q_END, NY)  # 19:30 EST on 03-07
    assert in_window(utc(2026, 3, 8, 2, 30), Q_START, Q_END, NY)  # 21:30 EST
    assert in_window(utc(2026, 3, 8, 11, 59), Q_START, Q_END, NY)  # 07:59 EDT
    assert not in_window(utc(2026, 3, 8, 12), Q_START, Q_END, NY)  # 08:00 EDT
    assert in_window(utc(2026, 11, 1, 12, 59), Q_START, Q_END, NY)  # 07:59 EST
    assert not in_window(utc(2026, 11, 1, 13), Q_START, Q_END, NY)  # 08:00 EST
    assert in_window(utc(2026, 11, 1, 5, 30), Q_START, Q_END, NY)  # 01:30 EDT
    assert in_window(utc(2026, 11, 1, 6, 30), Q_START, Q_END, NY)  # 01:30 EST


def test_zone_names_that_are_directories_or_too_long_fall_back() -> None:
    from orchestrator.localtime import zone

    assert str(zone("America", "Europe/Paris")) == "Europe/Paris"
    assert str(zone("x" * 300)) == "UTC"
