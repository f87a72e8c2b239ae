"""The YAML loader: marketer-friendly scalars, duplicate keys, syntax errors, positions."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from orchestrator.errors import JourneyError, Location
from orchestrator.loader import (
    LocatedDict,
    LocatedList,
    key_location,
    load_file,
    load_text,
    locate,
)

LOCATION_PREFIX = re.compile(r"^(?P<path>[^:]+):(?P<line>\d+):(?P<col>\d+): error: YAML syntax: ")


def _syntax_error(text: str, path: str = "journeys/x.yaml") -> JourneyError:
    with pytest.raises(JourneyError) as info:
        load_text(text, path)
    return info.value


@pytest.mark.parametrize("word", ["yes", "no", "on", "off", "Yes", "NO", "On", "OFF", "y", "n"])
def test_yaml_11_booleans_stay_strings(word: str) -> None:
    data = load_text(f"value: {word}\n", "x.yaml")
    assert data["value"] == word
    assert isinstance(data["value"], str)


@pytest.mark.parametrize("word, expected", [("true", True), ("false", False), ("True", True)])
def test_only_true_and_false_are_booleans(word: str, expected: bool) -> None:
    assert load_text(f"value: {word}\n", "x.yaml")["value"] is expected


@pytest.mark.parametrize("clock", ["21:00", "08:00", "8:30", "23:59"])
def test_clock_times_stay_strings(clock: str) -> None:
    # YAML 1.1 reads 21:00 as the sexagesimal number 1260.
    data = load_text(f"start: {clock}\n", "x.yaml")
    assert data["start"] == clock


@pytest.mark.parametrize("text", ["1h", "30m", "23.5h", "23h30m", "2d", "1w", "90s", "10%"])
def test_durations_and_percentages_stay_strings(text: str) -> None:
    assert load_text(f"wait: {text}\n", "x.yaml")["wait"] == text


def test_numbers_null_and_dates() -> None:
    data = load_text(
        "i: 5\nneg: -3\nf: 1.5\nnull1: null\nnull2: ~\nempty:\nday: 2024-01-01\nhexa: 0x1F\n",
        "x.yaml",
    )
    assert data["i"] == 5 and isinstance(data["i"], int)
    assert data["neg"] == -3
    assert data["f"] == 1.5
    assert data["null1"] is None and data["null2"] is None and data["empty"] is None
    # Dates and exotic number notations stay text.
    assert data["day"] == "2024-01-01"
    assert data["hexa"] == "0x1F"


def test_duplicate_key_is_an_error_at_the_duplicate() -> None:
    err = _syntax_error("trigger: {event: a}\nsteps: []\nre_entry: ignore\ntrigger: {event: b}\n")
    assert err.location == Location("journeys/x.yaml", 4, 1)
    assert "duplicate key 'trigger'" in err.message
    assert "first defined on line 1" in err.message
    assert str(err).startswith("journeys/x.yaml:4:1: error: ")


def test_duplicate_key_in_a_nested_flow_mapping() -> None:
    err = _syntax_error("steps:\n  - id: a\n    send: {channel: email, channel: sms}\n")
    assert (err.location.line, err.location.col) == (3, 28)  # type: ignore[union-attr]
    assert "duplicate key 'channel'" in err.message
    assert "first defined on line 3" in err.message


def test_duplicate_key_in_a_step() -> None:
    text = "steps:\n  - id: a\n    wait: 1h\n    id: b\n"
    err = _syntax_error(text)
    assert (err.location.line, err.location.col) == (4, 5)  # type: ignore[union-attr]
    assert "duplicate key 'id'" in err.message
    assert "first defined on line 2" in err.message


@pytest.mark.parametrize(
    "text, line, col, words",
    [
        ("a: b: c\n", 1, 5, "mapping values are not allowed"),
        ("a:\n  b: 1\n c: 2\n", 3, 2, "expected <block end>"),
        ("steps:\n  - id: a\n    send: {channel: email\n", 4, 1, "flow mapping"),
        ("a: 'unterminated\n", 2, 1, "quoted scalar"),
        ("\tb: 1\n", 1, 1, "'\\t'"),
        ("a: &x 1\nb: *y\n", 2, 4, "undefined alias 'y'"),
        ("a: 1\n---\nb: 2\n", 2, 1, "single document"),
        ("a: !!python/object:os.system x\n", 1, 4, "constructor"),
    ],
)
def test_syntax_errors_have_path_line_col(text: str, line: int, col: int, words: str) -> None:
    err = _syntax_error(text)
    m = LOCATION_PREFIX.match(str(err))
    assert m, str(err)
    assert m["path"] == "journeys/x.yaml"
    assert (int(m["line"]), int(m["col"])) == (line, col), str(err)
    assert words in err.message


@pytest.mark.parametrize(
    "text, line, col, code",
    [("\x00\x01 binary", 1, 1, "#x0000"), ("a: 1\nb: x\x07y\n", 2, 5, "#x0007")],
)
def test_control_characters_are_one_line_errors(text: str, line: int, col: int, code: str) -> None:
    err = _syntax_error(text)
    assert str(err) == (
        f"journeys/x.yaml:{line}:{col}: error: YAML syntax: unacceptable character {code}: "
        "special characters are not allowed"
    )


def test_too_deep_nesting_is_an_error() -> None:
    err = _syntax_error("a: " + "[" * 500 + "]" * 500 + "\n")
    assert "nesting too deep" in err.message
    assert str(err).startswith("journeys/x.yaml: error: ")


def test_complex_key_is_an_error() -> None:
    err = _syntax_error("? [1, 2]\n: 3\n")
    assert "a key must be plain text" in err.message
    assert err.location is not None and err.location.line == 1


def test_numeric_keys_become_text() -> None:
    data = load_text("1: a\n2.5: b\n", "x.yaml")
    assert list(data) == ["1", "2.5"]


def test_empty_document_is_none() -> None:
    assert load_text("", "x.yaml") is None
    assert load_text("# only a comment\n", "x.yaml") is None


def test_positions_of_keys_and_values() -> None:
    text = (
        "trigger:\n"  # 1
        "  event: cart_updated\n"  # 2
        "steps:\n"  # 3
        "  - id: first\n"  # 4
        "    wait: 1h\n"  # 5
        "  - id: second\n"  # 6
        "    send: {channel: email, template: welcome}\n"  # 7
    )
    data = load_text(text, "x.yaml")
    assert isinstance(data, LocatedDict)
    assert data.position == (1, 1)
    assert data.key_positions == {"trigger": (1, 1), "steps": (3, 1)}
    assert data.value_positions["trigger"] == (2, 3)
    trigger = data["trigger"]
    assert isinstance(trigger, LocatedDict)
    assert trigger.key_positions["event"] == (2, 3)
    assert trigger.value_positions["event"] == (2, 10)

    steps = data["steps"]
    assert isinstance(steps, LocatedList)
    assert steps.position == (4, 3)
    assert steps.item_positions == [(4, 5), (6, 5)]
    second = steps[1]
    assert second.position == (6, 5)
    assert second.key_positions["send"] == (7, 5)
    send = second["send"]
    assert isinstance(send, LocatedDict)
    assert send.position == (7, 11)
    assert send.key_positions["template"] == (7, 28)
    assert send.value_positions["template"] == (7, 38)


def test_positions_in_flow_sequences() -> None:
    data = load_text("fallback: [push, email,\n   sms]\n", "x.yaml")
    lst = data["fallback"]
    assert isinstance(lst, LocatedList)
    assert lst == ["push", "email", "sms"]
    assert lst.position == (1, 11)
    assert lst.item_positions == [(1, 12), (1, 18), (2, 4)]


def test_locate_and_key_location() -> None:
    text = "steps:\n  - id: a\n    sned: {channel: email}\n    wait:\n      duration: 5\n"
    data = load_text(text, "j.yaml")
    # The value of steps[0].wait.duration.
    assert locate(data, ("steps", 0, "wait", "duration"), "j.yaml") == Location("j.yaml", 5, 17)
    # The key 'sned' itself, not its value.
    assert key_location(data, ("steps", 0, "sned"), "j.yaml") == Location("j.yaml", 3, 5)
    assert locate(data, ("steps", 0, "sned"), "j.yaml") == Location("j.yaml", 3, 11)
    # A path that goes nowhere stops at the deepest part found.
    assert locate(data, ("steps", 0, "nothing", "x"), "j.yaml") == Location("j.yaml", 2, 5)
    assert locate(data, ("steps", 7), "j.yaml") == Location("j.yaml", 2, 3)
    assert locate(data, (), "j.yaml") == Location("j.yaml", 1, 1)


def test_load_file_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(JourneyError) as info:
        load_file(missing)
    assert "file not found" in str(info.value)
    assert str(info.value).startswith(str(missing))

    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(JourneyError) as info:
        load_file(binary)
    assert "cannot read file" in str(info.value)

    ok = tmp_path / "ok.yaml"
    ok.write_text("a: on\n", encoding="utf-8")
    assert load_file(ok) == {"a": "on"}


def test_syntax_error_from_load_file_names_the_file(tmp_path: Path) -> None:
    f = tmp_path / "broken.yaml"
    f.write_text("a: 1\nb: [\n", encoding="utf-8")
    with pytest.raises(JourneyError) as info:
        load_file(f)
    assert str(info.value).startswith(f"{f}:3:1: error: YAML syntax:")
