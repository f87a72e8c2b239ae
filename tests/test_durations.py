"""Durations, clock times and percentages as a marketer writes them."""

from __future__ import annotations

from datetime import time

import pytest

from orchestrator.durations import format_duration, parse_clock, parse_duration, parse_percent


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("30m", 1800),
        ("1h", 3600),
        ("23.5h", 84600),
        ("23h30m", 84600),
        ("23h 30m", 84600),
        ("2d", 172800),
        ("90s", 90),
        ("1w", 604800),
        ("1w2d3h4m5s", 604800 + 2 * 86400 + 3 * 3600 + 4 * 60 + 5),
        ("1.5m", 90),
        (" 1H ", 3600),
        ("0.5d", 43200),
    ],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds
    assert isinstance(parse_duration(text), int)


def test_23_and_a_half_hours_three_ways() -> None:
    assert parse_duration("23.5h") == parse_duration("23h30m") == 84600


@pytest.mark.parametrize(
    "value, words",
    [
        ("", "empty duration"),
        ("   ", "empty duration"),
        ("5", "'5' is not a duration"),
        (5, "has no unit"),
        ("1x", "'1x' is not a duration"),
        ("h1", "'h1' is not a duration"),
        ("1h-30m", "is not a duration"),
        ("30m1h", "largest unit first"),
        ("1h1h", "repeats or reorders units"),
        ("0m", "longer than zero"),
        ("0s", "longer than zero"),
        ("1.5s", "not a whole number of seconds"),
        ("0.01m", "not a whole number of seconds"),
        ("1.0001h", "not a whole number of seconds"),
        (None, "expected a duration"),
        (True, "expected a duration"),
        (1.5, "expected a duration"),
        (["1h"], "expected a duration"),
    ],
)
def test_parse_duration_errors(value: object, words: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(value)
    assert words in str(info.value)


def test_decimal_durations_are_exact() -> None:
    # 4.1 * 60 is 245.99999999999997 in binary floating point; the duration is 246 s.
    assert parse_duration("4.1m") == 246
    assert parse_duration("0.1m") == 6
    assert parse_duration("1.1h") == 3960
    for tenths in range(1, 1000):
        text = f"{tenths // 10}.{tenths % 10}m"
        assert parse_duration(text) == tenths * 6, text
    for hundredths in range(1, 1000):
        text = f"{hundredths // 100}.{hundredths % 100:02d}h"
        assert parse_duration(text) == hundredths * 36, text


def test_duration_error_says_what_is_expected() -> None:
    with pytest.raises(ValueError) as info:
        parse_duration("soon")
    assert "30m, 1h, 23.5h, 23h30m or 2d" in str(info.value)


@pytest.mark.parametrize("seconds", [1, 59, 60, 90, 3600, 84600, 86400, 90061, 2 * 86400 + 5])
def test_format_duration_round_trips(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


def test_format_duration() -> None:
    assert format_duration(84600) == "23h30m"
    assert format_duration(0) == "0s"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("21:00", time(21, 0)),
        ("08:00", time(8, 0)),
        ("8:30", time(8, 30)),
        ("00:00", time(0, 0)),
        ("23:59", time(23, 59)),
        (" 07:05 ", time(7, 5)),
    ],
)
def test_parse_clock(text: str, expected: time) -> None:
    assert parse_clock(text) == expected


@pytest.mark.parametrize(
    "value", ["24:00", "21:60", "2100", "21:0", "9pm", "", "21:00:00", "-1:00", 1260, None, "ab:cd"]
)
def test_parse_clock_errors(value: object) -> None:
    with pytest.raises(ValueError) as info:
        parse_clock(value)
    assert "24-hour clock time such as 08:00" in str(info.value)
    assert repr(value) in str(info.value)


@pytest.mark.parametrize(
    "value, expected",
    [("10%", 10.0), ("10", 10.0), (10, 10.0), (12.5, 12.5), ("0%", 0.0), ("100%", 100.0), (" 50 % ", 50.0)],
)
def test_parse_percent(value: object, expected: float) -> None:
    assert parse_percent(value) == expected


@pytest.mark.parametrize(
    "value, words",
    [
        ("abc", "expected a percentage such as 10%"),
        ("%", "expected a percentage"),
        (True, "expected a percentage"),
        (None, "expected a percentage"),
        ("-1%", "between 0% and 100%"),
        ("101%", "between 0% and 100%"),
        (150, "between 0% and 100%"),
        ("nan", "between 0% and 100%"),
    ],
)
def test_parse_percent_errors(value: object, words: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_percent(value)
    assert words in str(info.value)
