"""Storing what arrives from outside: events and profile updates. Shell. The API calls these;
so do the benchmarks. An event is durably stored (committed) before the caller is told it was
accepted; a client-supplied ``event_id`` makes a retried delivery of the same event a no-op.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping, Sequence

from sqlalchemy import Engine, select, update

from ..store.rows import PROFILE_COLUMNS, ensure_profiles, set_consent, upsert_ignore
from ..store.schema import consents, events, profiles

CONSENT_STATES = ("subscribed", "opted_in", "unsubscribed", "bounced", "spam")


@dataclass(frozen=True)
class IncomingEvent:
    user_id: str
    name: str
    at: datetime
    properties: Mapping[str, Any]
    event_id: str | None = None


@dataclass(frozen=True)
class Stored:
    event_ids: tuple[str, ...]
    new: tuple[str, ...]  # the ids stored by this call (the rest were duplicates)
    user_ids: tuple[str, ...]  # users with new events: dispatch these


def store_events(engine: Engine, batch: Sequence[IncomingEvent], now: datetime) -> Stored:
    rows = []
    for ev in batch:
        rows.append({
            "event_id": ev.event_id or uuid.uuid4().hex, "user_id": ev.user_id, "name": ev.name,
            "at": ev.at, "properties": dict(ev.properties), "received_at": now,
            "status": "pending", "attempts": 0,
        })
    ids = [r["event_id"] for r in rows]
    with engine.begin() as conn:
        before = set(conn.execute(select(events.c.event_id).where(events.c.event_id.in_(ids))).scalars())
        ensure_profiles(conn, (r["user_id"] for r in rows), now)
        # An id repeated inside the batch is stored once, by its first occurrence.
        new = list({r["event_id"]: r for r in reversed(rows) if r["event_id"] not in before}.values())[::-1]
        upsert_ignore(conn, events, new, ["event_id"])
    return Stored(tuple(ids), tuple(r["event_id"] for r in new), tuple(sorted({r["user_id"] for r in new})))


def put_profile(
    engine: Engine,
    user_id: str,
    now: datetime,
    *,
    contact: Mapping[str, Any],
    attributes: Mapping[str, Any] | None,
    consent: Mapping[str, str],
    replace_attributes: bool = False,
) -> None:
    """Create or update a profile: contact points and time zone (``contact``), attributes
    (merged unless ``replace_attributes``), and per-channel consent."""
    with engine.begin() as conn:
        ensure_profiles(conn, [user_id], now)
        row = conn.execute(
            select(profiles.c.attributes, profiles.c.email, profiles.c.phone)
            .where(profiles.c.user_id == user_id).with_for_update()
        ).one()
        current = row.attributes
        values: dict[str, Any] = {k: v for k, v in contact.items() if k in PROFILE_COLUMNS}
        # A new address or number is not the one that bounced or was rejected: lift that
        # suppression (an explicit unsubscribe stays: it is the person's choice, not the address's).
        for key, channel in (("email", "email"), ("phone", "sms")):
            if key in values and values[key] != getattr(row, key) and channel not in consent:
                conn.execute(update(consents).where(
                    consents.c.user_id == user_id, consents.c.channel == channel,
                    consents.c.status.in_(("bounced", "rejected"))).values(
                    status="subscribed", source="new_contact_point", updated_at=now))
        if attributes is not None:
            merged = {} if replace_attributes else dict(current or {})
            merged.update(attributes)
            values["attributes"] = merged
        conn.execute(update(profiles).where(profiles.c.user_id == user_id).values(updated_at=now, **values))
        for channel, status in consent.items():
            set_consent(conn, user_id, channel, status, "api", now)


def get_profile(engine: Engine, user_id: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(select(profiles).where(profiles.c.user_id == user_id)).mappings().first()
        if row is None:
            return None
        cons = {c: s for c, s in conn.execute(
            select(consents.c.channel, consents.c.status).where(consents.c.user_id == user_id))}
    out = {k: row[k] for k in ("user_id", *PROFILE_COLUMNS, "attributes")}
    out["consent"] = cons
    return out
