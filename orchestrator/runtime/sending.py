"""Sending queued messages exactly once. Shell.

For each outbox row, under the user's lock: decide and render with the same
``outbox.prepare`` the dry-run uses (consent, quiet hours, caps, channel choice), then write
the delivery ledger row, keyed by (run, step, generation, channel), and commit *before* the
provider is called. After the call the row is marked sent, retry (the provider said "later"),
rejected (the contact point is dead: that channel is suppressed for the user) or unknown (the
request may have reached the provider: never resent). A ledger row found still ``sending``
after the lease belongs to a process that died mid-call: it becomes ``unknown``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Iterable, Mapping

from sqlalchemy import Engine, insert, select, update

from channels.base import Channel, OutboundMessage, Rejected, Retryable, load_channel

from ..effects import Send
from ..outbox import prepare
from ..policies import Sent
from ..render import Renderer
from ..store.rows import load_history, load_runs, lock_profiles, upsert_ignore
from ..store.schema import activity, consents, deliveries, outbox
from .journeys import JourneyRegistry

log = logging.getLogger(__name__)
HISTORY = timedelta(days=31)  # longest frequency-cap window honoured


class ChannelRouter:
    """Which adapter sends each channel (``JOURNEY_CHANNELS``), instantiated once per process."""

    def __init__(self, adapters: Mapping[str, str], instances: Mapping[str, Channel] | None = None) -> None:
        self.adapters = dict(adapters)
        self._instances: dict[str, Channel] = dict(instances or {})

    def get(self, channel: str) -> Channel:
        if channel not in self._instances:
            self._instances[channel] = load_channel(self.adapters.get(channel, "console"))
        return self._instances[channel]


@dataclass
class SendReport:
    sent: int = 0
    skipped: int = 0
    deferred: int = 0
    retry: int = 0
    rejected: int = 0
    unknown: int = 0
    failed: int = 0
    busy: int = 0
    details: list[tuple[int, str]] = field(default_factory=list)


def _address(channel: str, user: Mapping[str, Any]) -> str | tuple[str, ...]:
    if channel == "email":
        return str(user.get("email") or "")
    if channel == "sms":
        return str(user.get("phone") or "")
    if channel == "push":
        return tuple(user.get("push_tokens") or ())
    return str(user.get(f"{channel}_address") or user.get("id"))


def send_messages(
    engine: Engine,
    registry: JourneyRegistry,
    renderer: Renderer,
    router: ChannelRouter,
    outbox_ids: Iterable[int],
    now: datetime,
    *,
    lease: float = 60.0,
    max_attempts: int = 5,
    links_base: str = "http://127.0.0.1:8000",
) -> SendReport:
    ids = sorted(set(outbox_ids))
    result = SendReport()
    if not ids:
        return result
    calls: list[tuple[int, int, OutboundMessage, dict[str, Any]]] = []
    with engine.begin() as conn:
        users = conn.execute(
            select(outbox.c.user_id).where(outbox.c.id.in_(ids), outbox.c.status.in_(("pending", "sending")))
        ).scalars()
        views = lock_profiles(conn, users)
        rows = conn.execute(
            select(outbox).where(outbox.c.id.in_(ids), outbox.c.status.in_(("pending", "sending")))
            .order_by(outbox.c.due_at, outbox.c.id)
        ).mappings().all()
        if not rows:
            return result
        runs = load_runs(conn, (r["run_id"] for r in rows))
        history = load_history(conn, views, now - HISTORY)
        for row in rows:
            if row["status"] == "sending":
                if row["claimed_at"] is not None and row["claimed_at"] > now - timedelta(seconds=lease):
                    result.busy += 1  # another process is sending it right now
                    continue
                _mark_unknown(conn, row, now)
                result.unknown += 1
                continue
            if row["due_at"] > now:
                continue
            run = runs[row["run_id"]]
            machine = registry.machine(conn, row["version"])
            send = Send(row["run_id"], row["step"], row["template"], tuple(row["channels"]),
                        row["prefer_user"], row["generation"], row["variant"])
            user_history = history.setdefault(row["user_id"], [])
            p = prepare(machine, send, run, views[row["user_id"]], user_history, now, renderer, links_base)
            if p.action == "defer":
                assert p.until is not None
                conn.execute(update(outbox).where(outbox.c.id == row["id"]).values(
                    status="pending", due_at=p.until, claimed_at=None, reason=p.reason, updated_at=now))
                _activity(conn, row, now, "defer", None, p.reason, f"until {p.until.isoformat()}")
                result.deferred += 1
                continue
            if p.action == "skip":
                conn.execute(update(outbox).where(outbox.c.id == row["id"]).values(
                    status="skipped", channel=p.channel, reason=p.reason, detail=p.detail, updated_at=now))
                _activity(conn, row, now, "skip", p.channel, p.reason, p.detail)
                result.skipped += 1
                continue
            assert p.channel is not None and p.message is not None
            key = f"{row['run_id']}:{row['step']}:{row['generation']}:{p.channel}"
            prior = conn.execute(select(deliveries.c.id, deliveries.c.status).where(deliveries.c.key == key)).first()
            if prior is not None and prior.status != "retry":
                # Already sent, or possibly sent: never again.
                conn.execute(update(outbox).where(outbox.c.id == row["id"]).values(
                    status=prior.status if prior.status != "sending" else "unknown", updated_at=now))
                continue
            if prior is None:
                ledger_id = conn.execute(insert(deliveries).returning(deliveries.c.id), {
                    "key": key, "outbox_id": row["id"], "run_id": row["run_id"],
                    "user_id": row["user_id"], "journey": row["journey"], "step": row["step"],
                    "variant": row["variant"], "channel": p.channel, "status": "sending",
                    "segments": p.message.segments, "created_at": now, "updated_at": now,
                }).scalar_one()
            else:
                ledger_id = prior.id
                conn.execute(update(deliveries).where(deliveries.c.id == ledger_id).values(
                    status="sending", created_at=now, updated_at=now))
            conn.execute(update(outbox).where(outbox.c.id == row["id"]).values(
                status="sending", channel=p.channel, claimed_at=now, detail=p.detail, updated_at=now))
            user_history.append(Sent(p.channel, now))
            m = p.message
            message = OutboundMessage(
                delivery_id=key, channel=p.channel, to=_address(p.channel, views[row["user_id"]]),
                subject=m.subject, body=m.body, html=m.html, link=m.link,
                metadata={"journey": row["journey"], "step": row["step"], "variant": row["variant"],
                          "run_id": row["run_id"], "user_id": row["user_id"],
                          "segments": m.segments, "ledger_id": ledger_id},
            )
            calls.append((row["id"], ledger_id, message, dict(row)))
    # The ledger rows are committed: a crash from here on leaves them "sending" -> unknown.
    outcomes = []
    for outbox_id, ledger_id, message, row in calls:
        try:
            delivery = router.get(message.channel).send(message)
            outcomes.append((outbox_id, ledger_id, message, row, "sent", delivery.provider_id, None, None))
        except Retryable as exc:
            outcomes.append((outbox_id, ledger_id, message, row, "retry", None, str(exc), exc.after))
        except Rejected as exc:
            outcomes.append((outbox_id, ledger_id, message, row, "rejected", None, str(exc), None))
        except Exception as exc:  # noqa: BLE001 - may have reached the provider: unknown
            log.exception("delivery %s: outcome unknown", message.delivery_id)
            outcomes.append((outbox_id, ledger_id, message, row, "unknown", None, repr(exc), None))
    if not outcomes:
        return result
    with engine.begin() as conn:
        for outbox_id, ledger_id, message, row, status, provider_id, error, after in outcomes:
            ledger: dict[str, Any] = {"status": status, "error": error, "updated_at": now}
            box: dict[str, Any] = {"status": status, "updated_at": now}
            if status == "sent":
                ledger.update(provider_id=provider_id, sent_at=now)
                _activity(conn, row, now, "send", message.channel, None, None)
                result.sent += 1
            elif status == "retry":
                attempts = row["attempts"] + 1
                if attempts >= max_attempts:
                    box.update(status="failed", attempts=attempts, reason="provider_retries_exhausted", detail=error)
                    ledger["status"] = "failed"
                    result.failed += 1
                else:
                    delay = after if after is not None else 30 * 2 ** (attempts - 1)
                    box.update(status="pending", attempts=attempts, claimed_at=None,
                               due_at=now + timedelta(seconds=delay), detail=error)
                    result.retry += 1
            elif status == "rejected":
                box.update(reason="rejected", detail=error)
                upsert_ignore(conn, consents, [{"user_id": row["user_id"], "channel": message.channel,
                                                "status": "rejected", "source": "provider",
                                                "updated_at": now}], ["user_id", "channel"])
                conn.execute(update(consents).where(consents.c.user_id == row["user_id"],
                                                    consents.c.channel == message.channel)
                             .values(status="rejected", source="provider", updated_at=now))
                _activity(conn, row, now, "skip", message.channel, "rejected", error)
                result.rejected += 1
            else:
                box.update(reason="unknown_outcome", detail=error)
                result.unknown += 1
            conn.execute(update(deliveries).where(deliveries.c.id == ledger_id).values(**ledger))
            conn.execute(update(outbox).where(outbox.c.id == outbox_id).values(**box))
    return result


def _mark_unknown(conn: Any, row: Mapping[str, Any], now: datetime) -> None:
    conn.execute(
        update(deliveries)
        .where(deliveries.c.outbox_id == row["id"], deliveries.c.status == "sending")
        .values(status="unknown", error="the sending process stopped mid-call", updated_at=now)
    )
    conn.execute(update(outbox).where(outbox.c.id == row["id"]).values(
        status="unknown", reason="unknown_outcome", detail="the sending process stopped mid-call",
        updated_at=now))


def _activity(conn: Any, row: Mapping[str, Any], now: datetime, action: str, channel: str | None,
              reason: str | None, detail: str | None) -> None:
    conn.execute(insert(activity), {
        "at": now, "journey": row["journey"], "run_id": row["run_id"], "user_id": row["user_id"],
        "action": action, "step": row["step"], "channel": channel, "variant": row["variant"],
        "reason": reason, "detail": detail,
    })
