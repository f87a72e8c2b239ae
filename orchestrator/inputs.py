"""Reading the dry-run's users and events files (YAML, JSON, JSONL or CSV). Shell: file I/O.

Users: a list of mappings, each with ``id`` and any of ``email``, ``phone``, ``push_tokens``,
``timezone``, ``locale``, ``first_name``, ``unsubscribed``, ``preferred_channel`` and further
attributes. In CSV, list fields (``push_tokens``, ``unsubscribed``) separate items with ``;``
and ``true``/``false`` and numbers are read as such.

Events: a list of ``{user, event, at, properties}``; ``at`` is ISO 8601 (UTC if it has no
offset) or an offset from the start such as ``+5h`` or ``+1d2h``.

Every problem is an :class:`InputError` naming the file, the entry and the fix.
"""

from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .durations import parse_duration
from .engine import Event
from .errors import InputError, JourneyError
from .loader import load_text

LIST_FIELDS = ("push_tokens", "unsubscribed")
# Text even when it looks like a number: "+14155550101" keeps its "+", id "007" stays "007".
TEXT_FIELDS = ("id", "email", "phone", "timezone", "locale", "first_name", "preferred_channel")
CHANNEL_NAMES = ("email", "sms", "push", "all")


def _records(path: Path) -> list[tuple[int, Any]]:
    """``(line, record)`` pairs from any supported format."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read: {exc}") from None
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        out = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    out.append((n, json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise InputError(f"{path}:{n}: invalid JSON: {exc.msg}") from None
        return out
    if suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        return [(n + 2, _csv_row(row)) for n, row in enumerate(reader)]
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
        positions = [0] * (len(data) if isinstance(data, list) else 0)
    elif suffix in (".yaml", ".yml"):
        try:
            data = load_text(text, str(path))
        except JourneyError as exc:
            raise InputError(str(exc)) from None
        positions = [p[0] for p in getattr(data, "item_positions", [])]
    else:
        raise InputError(f"{path}: unknown format '{suffix}'; expected .yaml, .json, .jsonl or .csv")
    if isinstance(data, dict):
        for key in ("users", "events"):
            if isinstance(data.get(key), list):
                positions = [p[0] for p in getattr(data[key], "item_positions", [])]
                data = data[key]
                break
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a list of entries")
    return [(positions[i] if i < len(positions) else 0, item) for i, item in enumerate(data)]


# Spreadsheets write booleans as TRUE/FALSE, people as yes/no: all mean the same.
_CSV_BOOLEANS = {"true": True, "false": False, "yes": True, "no": False}


def _csv_value(key: str, value: str | None) -> Any:
    if value is None or value == "":
        return [] if key in LIST_FIELDS else None
    if key in LIST_FIELDS:
        return [v.strip() for v in value.split(";") if v.strip()]
    if key in TEXT_FIELDS:
        return value
    lowered = value.strip().lower()
    if lowered in _CSV_BOOLEANS:
        return _CSV_BOOLEANS[lowered]
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def _csv_row(row: dict[str, str | None]) -> dict[str, Any]:
    return {k: _csv_value(k, v) for k, v in row.items() if k and _csv_value(k, v) is not None}


def _where(path: Path, line: int, index: int) -> str:
    return f"{path}:{line}" if line else f"{path}: entry #{index + 1}"


def read_users(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    users: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for i, (line, rec) in enumerate(_records(p)):
        where = _where(p, line, i)
        if not isinstance(rec, dict):
            raise InputError(f"{where}: a user must be a mapping with at least an 'id'")
        user = _plain(rec)
        if user.get("id") in (None, ""):
            raise InputError(f"{where}: user has no 'id'")
        user["id"] = str(user["id"])
        if user["id"] in seen:
            raise InputError(f"{where}: user id '{user['id']}' is already used at {seen[user['id']]}")
        seen[user["id"]] = where
        if isinstance(user.get("phone"), (int, float)) and not isinstance(user["phone"], bool):
            raise InputError(
                f"{where}: phone {user['phone']} was read as a number and would lose its '+' "
                f"and leading zeros; quote it: phone: \"+{user['phone']}\""
            )
        for key in TEXT_FIELDS:
            if isinstance(user.get(key), (int, float)) and not isinstance(user[key], bool):
                user[key] = str(user[key])
        for key in LIST_FIELDS:
            value = user.get(key)
            if value is None:
                user[key] = []
            elif isinstance(value, str):
                user[key] = [value]
            elif not isinstance(value, list):
                raise InputError(f"{where}: '{key}' must be a list (got {value!r})")
        for channel in user["unsubscribed"]:
            if channel not in CHANNEL_NAMES:
                raise InputError(
                    f"{where}: unsubscribed lists '{channel}'; expected email, sms, push or all"
                )
        tz = user.get("timezone")
        if tz is not None:
            try:
                ZoneInfo(str(tz))
            except (ZoneInfoNotFoundError, ValueError):
                raise InputError(
                    f"{where}: unknown time zone '{tz}'; expected an IANA name such as Europe/Paris"
                ) from None
        users.append(user)
    return users


def parse_instant(text: Any, start: datetime) -> datetime:
    """ISO 8601 (naive = UTC) or ``+DURATION`` after ``start``."""
    if isinstance(text, datetime):
        return text.astimezone(timezone.utc) if text.tzinfo else text.replace(tzinfo=timezone.utc)
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"expected an ISO 8601 time or an offset such as +5h (got {text!r})")
    s = text.strip()
    if s.startswith("+"):
        return start + timedelta(seconds=parse_duration(s[1:]))
    try:
        moment = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"'{s}' is not a time; expected ISO 8601 such as 2026-01-05T09:00:00Z or an "
            "offset such as +5h"
        ) from None
    # Always UTC: the timeline and its "UTC" column print these instants as they are.
    return moment.astimezone(timezone.utc) if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def read_events(path: str | Path, start: datetime, user_ids: set[str]) -> list[Event]:
    p = Path(path)
    events: list[Event] = []
    for i, (line, rec) in enumerate(_records(p)):
        where = _where(p, line, i)
        if not isinstance(rec, dict):
            raise InputError(f"{where}: an event must be a mapping with user, event and at")
        unknown = set(rec) - {"user", "event", "at", "properties"}
        if unknown:
            raise InputError(
                f"{where}: unknown key(s) {', '.join(sorted(unknown))}; an event has user, "
                "event, at and properties"
            )
        for key in ("user", "event"):
            if rec.get(key) in (None, ""):
                raise InputError(f"{where}: event has no '{key}'")
        user = str(rec["user"])
        if user not in user_ids:
            raise InputError(f"{where}: event for user '{user}', who is not in the users file")
        raw = rec.get("at")
        try:
            at = start if raw in (None, "") else parse_instant(raw, start)
        except ValueError as exc:
            raise InputError(f"{where}: {exc}") from None
        props = rec.get("properties") or {}
        if not isinstance(props, dict):
            raise InputError(f"{where}: properties must be a mapping (got {props!r})")
        events.append(Event(user, str(rec["event"]), at, _plain(props)))
    return events


def _plain(value: Any) -> Any:
    """Located YAML containers to plain dicts and lists (they are kept in run state)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
