"""Reading the dry-run's users and events files."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import InputError
from orchestrator.inputs import parse_instant, read_events, read_users

UTC = timezone.utc
START = datetime(2026, 1, 5, 14, 0, tzinfo=UTC)

# The same two users in every format.
EXPECTED = [
    {
        "id": "u-1",
        "first_name": "Ana",
        "email": "ana@example.com",
        "phone": "+14155550101",
        "push_tokens": ["tok-a", "tok-b"],
        "timezone": "America/Los_Angeles",
        "sms_opt_in": True,
        "has_purchased": False,
        "streak_days": 4,
        "score": 2.5,
        "unsubscribed": ["sms"],
    },
    {
        "id": "007",
        "email": "bond@example.com",
        "push_tokens": [],
        "sms_opt_in": False,
        "streak_days": 0,
        "unsubscribed": [],
    },
]

YAML_LIST = """\
# two users
- id: u-1
  first_name: Ana
  email: ana@example.com
  phone: "+14155550101"
  push_tokens: [tok-a, tok-b]
  timezone: America/Los_Angeles
  sms_opt_in: true
  has_purchased: false
  streak_days: 4
  score: 2.5
  unsubscribed: [sms]
- id: "007"
  email: bond@example.com
  sms_opt_in: false
  streak_days: 0
"""

CSV = (
    "id,first_name,email,phone,push_tokens,timezone,sms_opt_in,has_purchased,streak_days,score,unsubscribed\n"
    "u-1,Ana,ana@example.com,+14155550101,tok-a;tok-b,America/Los_Angeles,true,false,4,2.5,sms\n"
    "007,,bond@example.com,,,,false,,0,,\n"
)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def _json_users() -> list[dict[str, Any]]:
    rows = json.loads(json.dumps(EXPECTED))
    del rows[1]["push_tokens"], rows[1]["unsubscribed"]  # defaults apply
    rows[0]["push_tokens"] = ["tok-a", "tok-b"]
    return rows


def test_yaml_top_level_list(tmp_path: Path) -> None:
    assert read_users(_write(tmp_path, "users.yaml", YAML_LIST)) == EXPECTED


def test_yaml_users_key(tmp_path: Path) -> None:
    text = "users:\n" + "".join(f"  {line}\n" for line in YAML_LIST.splitlines())
    assert read_users(_write(tmp_path, "users.yml", text)) == EXPECTED


def test_json(tmp_path: Path) -> None:
    path = _write(tmp_path, "users.json", json.dumps(_json_users(), indent=2))
    assert read_users(path) == EXPECTED
    wrapped = _write(tmp_path, "wrapped.json", json.dumps({"users": _json_users()}))
    assert read_users(wrapped) == EXPECTED


def test_jsonl(tmp_path: Path) -> None:
    text = "\n".join(json.dumps(u) for u in _json_users()) + "\n\n"
    assert read_users(_write(tmp_path, "users.jsonl", text)) == EXPECTED


def test_csv(tmp_path: Path) -> None:
    assert read_users(_write(tmp_path, "users.csv", CSV)) == EXPECTED


def test_csv_keeps_contact_points_and_ids_as_text(tmp_path: Path) -> None:
    # A phone number is not a number: "+1415..." must keep its "+" (E.164), and an id such as
    # "007" must not become "7" (it would collide with a user "7").
    users = read_users(_write(tmp_path, "u.csv", "id,phone\n007,+14155550101\n7,0044123\n"))
    assert [u["id"] for u in users] == ["007", "7"]
    assert users[0]["phone"] == "+14155550101"
    assert users[1]["phone"] == "0044123"


def test_csv_lists_booleans_and_numbers(tmp_path: Path) -> None:
    text = "id,push_tokens,unsubscribed,vip,visits,ratio,city\nu-1,a;b, sms ; push ,true,12,0.5,Paris\n"
    [u] = read_users(_write(tmp_path, "u.csv", text))
    assert u["push_tokens"] == ["a", "b"]
    assert u["unsubscribed"] == ["sms", "push"]
    assert u["vip"] is True
    assert u["visits"] == 12 and isinstance(u["visits"], int)
    assert u["ratio"] == 0.5
    assert u["city"] == "Paris"


def test_same_users_in_every_format(tmp_path: Path) -> None:
    files = [
        _write(tmp_path, "a.yaml", YAML_LIST),
        _write(tmp_path, "b.json", json.dumps(_json_users())),
        _write(tmp_path, "c.jsonl", "\n".join(json.dumps(u) for u in _json_users())),
        _write(tmp_path, "d.csv", CSV),
    ]
    results = [read_users(f) for f in files]
    assert all(r == results[0] for r in results)


def test_single_string_list_field_becomes_a_list(tmp_path: Path) -> None:
    [u] = read_users(_write(tmp_path, "u.yaml", "- {id: u-1, push_tokens: tok, unsubscribed: all}\n"))
    assert u["push_tokens"] == ["tok"] and u["unsubscribed"] == ["all"]


def test_numeric_id_becomes_text(tmp_path: Path) -> None:
    [u] = read_users(_write(tmp_path, "u.json", '[{"id": 42}]'))
    assert u["id"] == "42"


# -- user file errors: each names the file and the line ---------------------------------------


def _error(path: Path) -> str:
    with pytest.raises(InputError) as info:
        read_users(path)
    return str(info.value)


def test_missing_id_yaml(tmp_path: Path) -> None:
    p = _write(tmp_path, "u.yaml", "- id: u-1\n- email: x@example.com\n  first_name: X\n")
    msg = _error(p)
    assert msg.startswith(f"{p}:2:")
    assert "no 'id'" in msg


def test_missing_id_under_users_key(tmp_path: Path) -> None:
    p = _write(tmp_path, "u.yaml", "users:\n  - id: u-1\n\n  - id: ''\n")
    assert _error(p).startswith(f"{p}:4:")


def test_missing_id_csv_and_jsonl(tmp_path: Path) -> None:
    p = _write(tmp_path, "u.csv", "id,email\nu-1,a@x\n,b@x\n")
    msg = _error(p)
    assert msg.startswith(f"{p}:3:") and "no 'id'" in msg
    q = _write(tmp_path, "u.jsonl", '{"id": "u-1"}\n\n{"email": "b@x"}\n')
    msg = _error(q)
    assert msg.startswith(f"{q}:3:") and "no 'id'" in msg


def test_duplicate_id(tmp_path: Path) -> None:
    p = _write(tmp_path, "u.yaml", "- id: u-1\n- id: u-2\n- id: u-1\n")
    msg = _error(p)
    assert msg.startswith(f"{p}:3:")
    assert "'u-1'" in msg and "already used" in msg and f"{p}:1" in msg


def test_duplicate_id_csv(tmp_path: Path) -> None:
    p = _write(tmp_path, "u.csv", "id\nu-1\nu-2\nu-1\n")
    msg = _error(p)
    assert msg.startswith(f"{p}:4:") and f"{p}:2" in msg


def test_duplicate_id_json_names_the_entry(tmp_path: Path) -> None:
    p = _write(tmp_path, "u.json", '[{"id": "a"}, {"id": "a"}]')
    msg = _error(p)
    assert str(p) in msg and "#2" in msg and "'a'" in msg


def test_bad_time_zone(tmp_path: Path) -> None:
    p = _write(tmp_path, "u.yaml", "- id: u-1\n  timezone: Europe/Pariss\n")
    msg = _error(p)
    assert msg.startswith(f"{p}:1:")
    assert "Europe/Pariss" in msg and "IANA" in msg


def test_unknown_unsubscribed_channel(tmp_path: Path) -> None:
    p = _write(tmp_path, "u.yaml", "- id: u-1\n- id: u-2\n  unsubscribed: [email, whatsapp]\n")
    msg = _error(p)
    assert msg.startswith(f"{p}:2:")
    assert "'whatsapp'" in msg and "email, sms, push or all" in msg


def test_unknown_unsubscribed_channel_csv(tmp_path: Path) -> None:
    p = _write(tmp_path, "u.csv", "id,unsubscribed\nu-1,sms;fax\n")
    msg = _error(p)
    assert msg.startswith(f"{p}:2:") and "'fax'" in msg


def test_unknown_format(tmp_path: Path) -> None:
    p = _write(tmp_path, "users.txt", "id\nu-1\n")
    msg = _error(p)
    assert str(p) in msg and "unknown format" in msg and ".csv" in msg


def test_invalid_json_line_in_jsonl(tmp_path: Path) -> None:
    p = _write(tmp_path, "u.jsonl", '{"id": "u-1"}\n{"id": "u-2"}\n{"id": "u-3",}\n')
    msg = _error(p)
    assert msg.startswith(f"{p}:3:") and "invalid JSON" in msg


def test_invalid_json_file_names_the_line(tmp_path: Path) -> None:
    p = _write(tmp_path, "u.json", '[\n  {"id": "u-1"},\n  {"id": }\n]\n')
    assert _error(p).startswith(f"{p}:3:")


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    p = _write(tmp_path, "u.yaml", "- id: u-1\n- id: [unclosed\n")
    assert str(p) in _error(p)


def test_missing_file(tmp_path: Path) -> None:
    msg = _error(tmp_path / "nope.yaml")
    assert "nope.yaml" in msg and "not found" in msg


def test_not_a_list(tmp_path: Path) -> None:
    assert "list" in _error(_write(tmp_path, "u.yaml", "id: u-1\n"))


def test_user_not_a_mapping(tmp_path: Path) -> None:
    p = _write(tmp_path, "u.yaml", "- id: u-1\n- just-a-string\n")
    msg = _error(p)
    assert msg.startswith(f"{p}:2:") and "mapping" in msg


# -- events -----------------------------------------------------------------------------------

IDS = {"u-1", "u-2"}


def _events(tmp_path: Path, text: str, name: str = "events.yaml"):
    return read_events(_write(tmp_path, name, text), START, IDS)


@pytest.mark.parametrize(
    "at, expected",
    [
        ("2026-01-05T09:00:00Z", datetime(2026, 1, 5, 9, 0, tzinfo=UTC)),
        ("2026-01-05T10:00:00+01:00", datetime(2026, 1, 5, 9, 0, tzinfo=UTC)),
        ("2026-01-05T04:00:00-05:00", datetime(2026, 1, 5, 9, 0, tzinfo=UTC)),
        ("2026-01-06T01:30:00+05:30", datetime(2026, 1, 5, 20, 0, tzinfo=UTC)),
        ("2026-01-05T09:00:00", datetime(2026, 1, 5, 9, 0, tzinfo=UTC)),
        ("2026-01-05 09:00", datetime(2026, 1, 5, 9, 0, tzinfo=UTC)),
        ("+5h", START + timedelta(hours=5)),
        ("+30m", START + timedelta(minutes=30)),
        ("+1d2h", START + timedelta(hours=26)),
        ("+1d", START + timedelta(days=1)),
        ("+23h30m", START + timedelta(hours=23, minutes=30)),
    ],
)
def test_parse_instant(at: str, expected: datetime) -> None:
    got = parse_instant(at, START)
    assert got == expected
    # Normalised to UTC, not merely aware: the timeline prints these under a "UTC" heading.
    assert got.utcoffset() == timedelta(0)
    assert got.isoformat() == expected.isoformat()


@pytest.mark.parametrize("at", ["tomorrow", "+5", "+", "", "2026-13-01T00:00:00Z", "+1h1d"])
def test_parse_instant_rejects(at: str) -> None:
    with pytest.raises(ValueError):
        parse_instant(at, START)


def test_read_events_yaml(tmp_path: Path) -> None:
    evs = _events(
        tmp_path,
        """\
- {user: u-1, event: cart_updated, at: 2026-01-05T09:00:00Z, properties: {cart_id: c-1, items: []}}
- {user: u-1, event: order_completed, at: "2026-01-05T10:00:00+01:00"}
- {user: u-2, event: order_completed, at: 2026-01-05T09:00:00}
- {user: u-2, event: order_completed, at: +5h}
- {user: u-2, event: order_completed, at: +1d2h}
- {user: u-2, event: order_completed}
""",
    )
    assert [e.at for e in evs] == [
        datetime(2026, 1, 5, 9, 0, tzinfo=UTC),
        datetime(2026, 1, 5, 9, 0, tzinfo=UTC),
        datetime(2026, 1, 5, 9, 0, tzinfo=UTC),
        START + timedelta(hours=5),
        START + timedelta(hours=26),
        START,
    ]
    assert evs[0].user_id == "u-1" and evs[0].name == "cart_updated"
    assert evs[0].properties == {"cart_id": "c-1", "items": []}
    assert type(evs[0].properties) is dict
    assert evs[1].properties == {}
    assert all(e.at.utcoffset() == timedelta(0) for e in evs)


def test_read_events_under_events_key_and_json(tmp_path: Path) -> None:
    evs = _events(tmp_path, "events:\n  - {user: u-1, event: x, at: +1h}\n")
    assert evs[0].at == START + timedelta(hours=1)
    j = _events(tmp_path, json.dumps([{"user": "u-2", "event": "x", "at": "+2h"}]), "e.json")
    assert j[0].at == START + timedelta(hours=2)
    jl = _events(tmp_path, '{"user": "u-2", "event": "x"}\n', "e.jsonl")
    assert jl[0].at == START


def _event_error(tmp_path: Path, text: str) -> str:
    p = _write(tmp_path, "ev.yaml", text)
    with pytest.raises(InputError) as info:
        read_events(p, START, IDS)
    msg = str(info.value)
    assert str(p) in msg
    return msg


def test_event_for_unknown_user(tmp_path: Path) -> None:
    msg = _event_error(tmp_path, "- {user: u-1, event: x}\n- {user: u-zed, event: x}\n")
    assert "'u-zed'" in msg and ":2:" in msg


def test_event_unknown_key(tmp_path: Path) -> None:
    msg = _event_error(tmp_path, "- {user: u-1, event: x, time: +1h}\n")
    assert "unknown key" in msg and "time" in msg and ":1:" in msg


def test_event_properties_not_a_mapping(tmp_path: Path) -> None:
    msg = _event_error(tmp_path, "- {user: u-1, event: x}\n- {user: u-1, event: x, properties: [1, 2]}\n")
    assert "properties must be a mapping" in msg and ":2:" in msg


def test_event_bad_time(tmp_path: Path) -> None:
    msg = _event_error(tmp_path, "- {user: u-1, event: x, at: next tuesday}\n")
    assert "next tuesday" in msg and ":1:" in msg


def test_event_without_name_or_user(tmp_path: Path) -> None:
    assert "'event'" in _event_error(tmp_path, "- {user: u-1}\n")
    assert "'user'" in _event_error(tmp_path, "- {event: x}\n")


def test_sample_users_consent_flags_are_real_booleans() -> None:
    # cart_abandonment texts only users whose sms_opt_in is exactly true, so the sample file
    # must carry booleans (not "yes" or "true" strings) for its stories to mean what they say.
    users = read_users(Path(__file__).resolve().parents[1] / "samples" / "users.yaml")
    flags = {u["id"]: u.get("sms_opt_in") for u in users}
    assert all(v is None or isinstance(v, bool) for v in flags.values()), flags
    assert {uid for uid, v in flags.items() if v is True} == {"u-ana", "u-bruno", "u-dev", "u-gus", "u-ivan"}
    assert flags["u-jo"] is False


def test_csv_booleans_as_spreadsheets_write_them(tmp_path: Path) -> None:
    text = "id,sms_opt_in,vip,beta\nu-1,TRUE,No,yes\nu-2,False,YES,maybe\n"
    u1, u2 = read_users(_write(tmp_path, "u.csv", text))
    assert (u1["sms_opt_in"], u1["vip"], u1["beta"]) == (True, False, True)
    assert (u2["sms_opt_in"], u2["vip"], u2["beta"]) == (False, True, "maybe")
