"""What providers tell us after a send: delivery status, bounces, spam reports, opt-outs,
opens and clicks. Shell. The webhook routes verify signatures and turn each provider's format
into :class:`ProviderEvent`; this module applies them.

Rules:
* each provider event is applied once (its provider event id is unique in ``delivery_events``);
* a delivery's status only moves forward (``sent`` -> ``delivered`` -> never back to ``sent``,
  whatever order the webhooks arrive in); a failure (bounce, undelivered) is final;
* a bounce, a spam report or an unsubscribe stops that channel for the user in every journey at
  once (``consents``), including messages already queued (sending re-reads consent).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping, Sequence

from sqlalchemy import Engine, or_, select, update

from ..store.rows import insert_ignore_returning, set_consent
from ..store.schema import deliveries, delivery_events, profiles

# How far along a delivery is; a webhook never moves a delivery to a lower rank.
RANK = {"sending": 0, "unknown": 0, "retry": 0, "sent": 1, "delivered": 2, "failed": 3, "bounced": 3,
        "rejected": 3}
# Delivery status each event moves to (events not listed only get recorded: opened, clicked).
STATUS = {"processed": "sent", "sent": "sent", "delivered": "delivered", "bounced": "bounced",
          "dropped": "failed", "failed": "failed", "undelivered": "failed"}
# Consent each event sets for the delivery's channel.
CONSENT = {"bounced": "bounced", "spamreport": "spam", "unsubscribe": "unsubscribed"}


@dataclass(frozen=True)
class ProviderEvent:
    provider: str  # sendgrid | twilio
    event_id: str  # the provider's id for this event (dedupe key)
    event: str  # processed | delivered | bounced | dropped | deferred | failed | undelivered |
    # spamreport | unsubscribe | opened | clicked | sent
    at: datetime
    delivery_key: str | None = None
    provider_id: str | None = None
    payload: Mapping[str, Any] = field(default_factory=dict)
    dead_number: bool = False  # an SMS failure code meaning the number can never work


@dataclass
class Applied:
    applied: int = 0
    duplicates: int = 0
    unmatched: int = 0


def apply_events(engine: Engine, batch: Sequence[ProviderEvent], now: datetime) -> Applied:
    result = Applied()
    with engine.begin() as conn:
        for ev in batch:
            new = insert_ignore_returning(conn, delivery_events, {
                "provider": ev.provider, "provider_event_id": f"{ev.provider}:{ev.event_id}",
                "delivery_key": ev.delivery_key, "provider_id": ev.provider_id, "event": ev.event,
                "at": ev.at, "received_at": now, "payload": dict(ev.payload),
            }, ["provider_event_id"])
            if new is None:
                result.duplicates += 1
                continue
            conds = []
            if ev.delivery_key:
                conds.append(deliveries.c.key == ev.delivery_key)
            if ev.provider_id:
                conds.append(deliveries.c.provider_id == ev.provider_id)
            row = conn.execute(
                select(deliveries.c.id, deliveries.c.status, deliveries.c.user_id, deliveries.c.channel)
                .where(or_(*conds)).with_for_update()
            ).first() if conds else None
            if row is None:
                result.unmatched += 1
                continue
            result.applied += 1
            target = STATUS.get(ev.event)
            if target is not None and RANK.get(target, 0) > RANK.get(row.status, 0):
                conn.execute(update(deliveries).where(deliveries.c.id == row.id)
                             .values(status=target, updated_at=now))
            consent = CONSENT.get(ev.event) or ("rejected" if ev.dead_number else None)
            if consent is not None:
                set_consent(conn, row.user_id, row.channel, consent, ev.provider, now)
    return result


STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"})
START_WORDS = frozenset({"START", "UNSTOP", "YES", "OPTIN"})
HELP_WORDS = frozenset({"HELP", "INFO"})


def inbound_sms(engine: Engine, phone: str, body: str, now: datetime) -> str | None:
    """Apply an inbound SMS keyword for every profile with this number; returns ``stop``,
    ``start``, ``help`` or None (not a keyword)."""
    word = body.strip().upper().rstrip(".!")
    kind = "stop" if word in STOP_WORDS else "start" if word in START_WORDS else "help" if word in HELP_WORDS else None
    if kind in ("stop", "start"):
        with engine.begin() as conn:
            users = conn.execute(select(profiles.c.user_id).where(profiles.c.phone == phone)).scalars().all()
            for uid in users:
                set_consent(conn, uid, "sms", "unsubscribed" if kind == "stop" else "opted_in", "sms_keyword", now)
    return kind


def unsubscribe(engine: Engine, user_id: str, channel: str, now: datetime, source: str = "link") -> None:
    with engine.begin() as conn:
        set_consent(conn, user_id, channel, "unsubscribed", source, now)
