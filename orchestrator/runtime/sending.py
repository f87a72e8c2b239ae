"""Sending queued messages exactly once. Shell.

For each outbox row, under the user's lock: decide and render with the same
``outbox.prepare`` the dry-run uses (consent, quiet hours, caps, channel choice), then write
the delivery ledger row, keyed by (run, step, generation, channel), and commit *before* the
provider is called. After the call the row is marked sent, retry (the provider said "later"),
rejected (the contact point is dead: that channel is suppressed for the user) or unknown (the
request may have reached the provider: never resent). A ledger row found still ``sending``
after the lease belongs to a process that died mid-call: it becomes ``unknown``.

Each outcome is logged with the run id, the delivery key, the ledger id and the channel, never
the address (``sent`` and ``skipped`` at DEBUG, the rest at INFO or WARNING), and counted in
``journey_deliveries_total`` once its transaction has committed (``metrics``).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import quote

from sqlalchemy import Connection, Engine, bindparam, case, insert, literal, select, update

from channels.base import (
    Channel, DeliveryUnknown, Failed, OutboundMessage, Rejected, Retryable, load_channel,
)

from ..effects import Send
from ..outbox import prepare
from ..policies import Sent
from ..render import Renderer
from ..links import LinkSigner
from .ratelimit import RateLimiter
from ..store.rows import among, load_history, load_runs, lock_profiles, set_consent
from ..store.schema import activity, deliveries, outbox, profiles
from . import metrics
from .feedback import RANK
from .journeys import JourneyRegistry

log = logging.getLogger(__name__)
# Ledger states past "sent" that only provider webhooks set (runtime/feedback.py); the outcome of
# the send call, written after the whole batch, must not move a row back from them.
WEBHOOK_FINAL = tuple(sorted(s for s, rank in RANK.items() if rank > RANK["sent"]))
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
    # Outcomes by (channel, status) not yet in the metrics: counted once their transaction
    # has committed (``_counted``).
    tally: Counter[tuple[str, str]] = field(default_factory=Counter)


def _counted(report: SendReport) -> None:
    metrics.deliveries_recorded(report.tally)
    report.tally.clear()


OUTCOME_LEVEL = {"sent": logging.DEBUG, "retry": logging.INFO, "throttled": logging.INFO,
                 "rejected": logging.INFO, "failed": logging.WARNING, "unknown": logging.WARNING,
                 "skipped": logging.DEBUG}


def _ids(row: Mapping[str, Any]) -> dict[str, Any]:
    """The ids a log line about an outbox row carries (never the user's contact points)."""
    return {"run_id": row["run_id"], "journey": row["journey"], "step": row["step"],
            "outbox_id": row["id"]}


def _log_outcome(status: str, message: OutboundMessage, ledger_id: int, row: Mapping[str, Any],
                 error: str | None = None, **more: Any) -> None:
    level = OUTCOME_LEVEL[status]
    if log.isEnabledFor(level):
        log.log(level, "delivery %s: %s%s", message.delivery_id, status, f" ({error})" if error else "",
                extra={**_ids(row), "delivery_key": message.delivery_id, "delivery_id": ledger_id,
                       "channel": message.channel, "status": status, **more})


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
    signer: LinkSigner | None = None,
    limiter: RateLimiter | None = None,
) -> SendReport:
    ids = sorted(set(outbox_ids))
    result = SendReport()
    if not ids:
        return result
    with engine.begin() as conn:
        users = conn.execute(
            select(outbox.c.user_id).where(among(conn, outbox.c.id, ids), outbox.c.status.in_(("pending", "sending")))
        ).scalars()
        views = lock_profiles(conn, users)
        rows = conn.execute(
            select(outbox).where(among(conn, outbox.c.id, ids), outbox.c.status.in_(("pending", "sending")))
            .order_by(outbox.c.due_at, outbox.c.id)
        ).mappings().all()
        if not rows:
            return result
        calls = claim_rows(conn, registry, renderer, rows, views, now, result, lease=lease,
                           links_base=links_base, signer=signer)
    return deliver(engine, router, calls, now, result, max_attempts=max_attempts, limiter=limiter)


Call = tuple[int, int, OutboundMessage, dict[str, Any]]  # outbox id, ledger id, message, outbox row


@dataclass
class Claimed:
    """Messages decided and written to the ledger inside a batch's transaction
    (:func:`claim_queued`); :func:`deliver` sends them once that transaction has committed."""

    calls: list[Call]
    report: SendReport


def claim_queued(
    conn: Connection,
    registry: JourneyRegistry,
    renderer: Renderer,
    outbox_ids: Iterable[int],
    views: Mapping[str, dict[str, Any]],
    now: datetime,
    *,
    lease: float = 60.0,
    links_base: str = "http://127.0.0.1:8000",
    signer: LinkSigner | None = None,
) -> Claimed:
    """Decide and claim the messages a batch has just queued, in the batch's own transaction,
    which already holds their users' profile locks (``views``, as the batch left them): the
    same decisions :func:`send_messages` makes, without locking and loading the users again.
    The caller commits, then calls :func:`deliver`."""
    result = SendReport()
    ids = sorted(set(outbox_ids))
    if not ids:
        return Claimed([], result)
    rows = conn.execute(
        select(outbox).where(among(conn, outbox.c.id, ids), outbox.c.status.in_(("pending", "sending")))
        .order_by(outbox.c.due_at, outbox.c.id)
    ).mappings().all()
    calls = claim_rows(conn, registry, renderer, rows, views, now, result, lease=lease,
                       links_base=links_base, signer=signer)
    return Claimed(calls, result)


def claim_rows(
    conn: Connection,
    registry: JourneyRegistry,
    renderer: Renderer,
    rows: Sequence[Mapping[str, Any]],
    views: Mapping[str, dict[str, Any]],
    now: datetime,
    result: SendReport,
    *,
    lease: float,
    links_base: str,
    signer: LinkSigner | None,
) -> list[Call]:
    """Under the users' locks: decide each outbox row, write the ledger rows and claim the
    outbox rows ("sending"). Returns the provider calls to make once this commits."""
    calls: list[Call] = []
    notes: list[dict[str, Any]] = []  # activity rows, written with one statement per transaction
    runs = load_runs(conn, (r["run_id"] for r in rows))
    history = load_history(conn, {r["user_id"] for r in rows}, now - HISTORY)
    # Ledger rows already written for any channel these messages may go to (one query).
    priors = _ledger_rows(conn, [_key(r, c) for r in rows if r["status"] == "pending" for c in r["channels"]])
    to_send: list[tuple[dict[str, Any], Any, str, int | None]] = []
    for row in rows:
        if row["status"] == "sending":
            if row["claimed_at"] is not None and row["claimed_at"] > now - timedelta(seconds=lease):
                result.busy += 1  # another process is sending it right now
                continue
            _mark_unknown(conn, row, now)
            log.warning("outbox %s: outcome unknown (the sending process stopped mid-call)", row["id"],
                        extra={**_ids(row), "channel": row["channel"], "status": "unknown"})
            result.unknown += 1
            result.tally[(row["channel"] or "none", "unknown")] += 1
            continue
        if row["due_at"] > now:
            continue
        user_history = history.setdefault(row["user_id"], [])
        try:
            run = runs[row["run_id"]]
            machine = registry.machine(conn, row["version"])
            send = Send(row["run_id"], row["step"], row["template"], tuple(row["channels"]),
                        row["prefer_user"], row["generation"], row["variant"])
            p = prepare(machine, send, run, views[row["user_id"]], user_history, now, renderer,
                        links_base, signer.unsubscribe_url if signer else None)
        except Exception as exc:  # noqa: BLE001 - one user's data: park this message, not the batch
            log.exception("outbox %s: parked", row["id"], extra={**_ids(row), "status": "failed"})
            conn.execute(update(outbox).where(outbox.c.id == row["id"]).values(
                status="failed", reason="error", detail=f"{type(exc).__name__}: {exc}", updated_at=now))
            result.failed += 1
            result.tally[("none", "failed")] += 1
            continue
        if p.action == "defer":
            assert p.until is not None
            conn.execute(update(outbox).where(outbox.c.id == row["id"]).values(
                status="pending", due_at=p.until, claimed_at=None, reason=p.reason, updated_at=now))
            notes.append(_note(row, now, "defer", None, p.reason, f"until {p.until.isoformat()}"))
            result.deferred += 1
            continue
        if p.action == "skip":
            conn.execute(update(outbox).where(outbox.c.id == row["id"]).values(
                status="skipped", channel=p.channel, reason=p.reason, detail=p.detail, updated_at=now))
            notes.append(_note(row, now, "skip", p.channel, p.reason, p.detail))
            log.log(OUTCOME_LEVEL["skipped"], "outbox %s: skipped: %s", row["id"], p.reason,
                    extra={**_ids(row), "channel": p.channel, "status": "skipped", "reason": p.reason})
            result.skipped += 1
            result.tally[(p.channel or "none", "skipped")] += 1
            continue
        assert p.channel is not None and p.message is not None
        key = _key(row, p.channel)
        if key not in priors:  # a channel outside the row's list: look it up on its own
            priors.update(_ledger_rows(conn, [key]))
        prior = priors.get(key)
        if prior is not None and prior[1] != "retry":
            # Already sent, or possibly sent: never again.
            conn.execute(update(outbox).where(outbox.c.id == row["id"]).values(
                status=prior[1] if prior[1] != "sending" else "unknown", updated_at=now))
            continue
        user_history.append(Sent(p.channel, now))
        to_send.append((dict(row), p, key, prior[0] if prior is not None else None))
    # The ledger rows and the outbox claims, a few statements for the whole batch.
    new = [(row, p, key) for row, p, key, ledger_id in to_send if ledger_id is None]
    new_ids: list[int] = []
    if new:
        new_ids = list(conn.execute(
            insert(deliveries).returning(deliveries.c.id, sort_by_parameter_order=True),
            [{"key": key, "outbox_id": row["id"], "run_id": row["run_id"], "user_id": row["user_id"],
              "journey": row["journey"], "step": row["step"], "variant": row["variant"],
              "channel": p.channel, "status": "sending", "segments": p.message.segments,
              "created_at": now, "updated_at": now} for row, p, key in new],
        ).scalars())
    retried = [ledger_id for _, _, _, ledger_id in to_send if ledger_id is not None]
    if retried:
        conn.execute(update(deliveries).where(among(conn, deliveries.c.id, retried)).values(
            status="sending", created_at=now, updated_at=now))
    if to_send:
        conn.execute(
            update(outbox).where(outbox.c.id == bindparam("b_id")).values(
                status="sending", channel=bindparam("b_channel"), claimed_at=now,
                detail=bindparam("b_detail"), updated_at=now),
            [{"b_id": row["id"], "b_channel": p.channel, "b_detail": p.detail} for row, p, _, _ in to_send],
        )
    fresh = iter(new_ids)
    for row, p, key, ledger_id in to_send:
        if ledger_id is None:
            ledger_id = next(fresh)
        m = p.message
        message = OutboundMessage(
            delivery_id=key, channel=p.channel, to=_address(p.channel, views[row["user_id"]]),
            subject=m.subject, body=m.body, html=m.html, link=m.link,
            metadata={"journey": row["journey"], "step": row["step"], "variant": row["variant"],
                      "run_id": row["run_id"], "user_id": row["user_id"],
                      "segments": m.segments, "ledger_id": ledger_id},
            unsubscribe_url=signer.unsubscribe_url(row["user_id"], p.channel) if signer else None,
            status_callback=f"{links_base}/v1/webhooks/twilio/status?d={quote(key, safe='')}",
        )
        calls.append((row["id"], ledger_id, message, row))
    _write_notes(conn, notes)
    return calls


def deliver(
    engine: Engine,
    router: ChannelRouter,
    calls: Sequence[Call],
    now: datetime,
    result: SendReport,
    *,
    max_attempts: int = 5,
    limiter: RateLimiter | None = None,
) -> SendReport:
    """Call the providers for claimed messages (their ledger rows committed), then record the
    outcomes in one transaction."""
    _counted(result)  # what the claim decided (skips...): committed by now
    # The ledger rows are committed: a crash from here on leaves them "sending" -> unknown.
    outcomes = []
    dead_tokens: list[tuple[str, tuple[str, ...]]] = []
    budget = [THROTTLE_BUDGET]  # seconds this batch may still sleep for rate-limit tokens
    for outbox_id, ledger_id, message, row in calls:
        wait = _throttle(limiter, message.channel, budget)
        if wait:
            outcomes.append((outbox_id, ledger_id, message, row, "throttled", None, "provider rate limit", wait))
            continue
        try:
            delivery = router.get(message.channel).send(message)
            outcomes.append((outbox_id, ledger_id, message, row, "sent", delivery.provider_id, None, None))
            if delivery.dead_tokens:
                dead_tokens.append((row["user_id"], delivery.dead_tokens))
        except Retryable as exc:
            outcomes.append((outbox_id, ledger_id, message, row, "retry", None, str(exc), exc.after))
        except Rejected as exc:
            outcomes.append((outbox_id, ledger_id, message, row, "rejected", None, str(exc), None))
            if exc.dead_tokens:
                dead_tokens.append((row["user_id"], exc.dead_tokens))
        except Failed as exc:
            outcomes.append((outbox_id, ledger_id, message, row, "failed", None, str(exc), None))
        except DeliveryUnknown as exc:
            outcomes.append((outbox_id, ledger_id, message, row, "unknown", None, str(exc), None))
        except Exception as exc:  # noqa: BLE001 - may have reached the provider: unknown
            log.exception("delivery %s: the adapter raised", message.delivery_id,
                          extra={**_ids(row), "delivery_key": message.delivery_id,
                                 "delivery_id": ledger_id, "channel": message.channel})
            outcomes.append((outbox_id, ledger_id, message, row, "unknown", None, repr(exc), None))
    if not outcomes:
        return result
    notes = []
    with engine.begin() as conn:
        sent_ledger: list[dict[str, Any]] = []
        sent_box: list[int] = []
        for outbox_id, ledger_id, message, row, status, provider_id, error, after in outcomes:
            if status == "sent":
                # The common case, written below with one statement per table.
                sent_ledger.append({"b_id": ledger_id, "b_provider_id": provider_id})
                sent_box.append(outbox_id)
                notes.append(_note(row, now, "send", message.channel, None, None))
                result.sent += 1
                result.tally[(message.channel, "sent")] += 1
                _log_outcome("sent", message, ledger_id, row, provider_id=provider_id)
                continue
            ledger: dict[str, Any] = {"status": status, "error": error, "updated_at": now}
            box: dict[str, Any] = {"status": status, "updated_at": now}
            counted, more = status, dict[str, Any]()
            if status == "throttled":  # our own rate limit: not an attempt, the provider saw nothing
                ledger["status"] = "retry"
                box.update(status="pending", claimed_at=None, due_at=now + timedelta(seconds=after or 1))
                result.retry += 1
                more = {"retry_after": after or 1}
            elif status == "retry":
                attempts = row["attempts"] + 1
                if attempts >= max_attempts:
                    box.update(status="failed", attempts=attempts, reason="provider_retries_exhausted", detail=error)
                    ledger["status"] = "failed"
                    result.failed += 1
                    counted, more = "failed", {"attempts": attempts, "reason": "provider_retries_exhausted"}
                else:
                    delay = after if after is not None else 30 * 2 ** (attempts - 1)
                    box.update(status="pending", attempts=attempts, claimed_at=None,
                               due_at=now + timedelta(seconds=delay), detail=error)
                    result.retry += 1
                    more = {"attempts": attempts, "retry_after": delay}
            elif status == "rejected":
                box.update(reason="rejected", detail=error)
                if message.channel != "push":
                    # The address or number is dead: suppress that contact point. (Dead push
                    # tokens are removed from the profile below instead.)
                    set_consent(conn, row["user_id"], message.channel, "rejected", "provider", now)
                notes.append(_note(row, now, "skip", message.channel, "rejected", error))
                result.rejected += 1
            elif status == "failed":
                box.update(reason="provider_refused", detail=error)
                notes.append(_note(row, now, "skip", message.channel, "provider_refused", error))
                result.failed += 1
            else:
                box.update(reason="unknown_outcome", detail=error)
                result.unknown += 1
            result.tally[(message.channel, counted)] += 1
            _log_outcome(counted, message, ledger_id, row, error, **more)
            # A provider webhook may already have moved the row on (delivered, bounced): keep that.
            conn.execute(update(deliveries).where(deliveries.c.id == ledger_id,
                                                  deliveries.c.status.notin_(WEBHOOK_FINAL)).values(**ledger))
            conn.execute(update(outbox).where(outbox.c.id == outbox_id).values(**box))
        if sent_ledger:
            conn.execute(
                update(deliveries).where(deliveries.c.id == bindparam("b_id")).values(
                    # "delivered" or "bounced" from a webhook that beat this write: never back to
                    # "sent" (literal() binds: executemany cannot take an expanding IN)
                    status=case((deliveries.c.status.in_([literal(s) for s in WEBHOOK_FINAL]),
                                 deliveries.c.status), else_="sent"),
                    error=None, updated_at=now, provider_id=bindparam("b_provider_id"), sent_at=now),
                sent_ledger,
            )
            conn.execute(update(outbox).where(among(conn, outbox.c.id, sent_box)).values(status="sent", updated_at=now))
        for user_id, tokens in dead_tokens:
            _remove_push_tokens(conn, user_id, tokens, now)
        _write_notes(conn, notes)
    _counted(result)
    return result


MAX_THROTTLE_WAIT = 2.0  # seconds a worker waits for one rate-limit token before deferring
# Seconds one batch may sleep for tokens in all: well inside any sensible lease, so a batch of
# rate-limited messages never outlives its claim (the rest go back to the outbox instead).
THROTTLE_BUDGET = 10.0


def _throttle(limiter: RateLimiter | None, channel: str, budget: list[float]) -> float:
    """0 when a token was taken (after waiting up to MAX_THROTTLE_WAIT, within the batch's
    ``budget``); else the delay after which the message should be tried again."""
    if limiter is None:
        return 0.0
    while True:
        wait = limiter.take(channel)
        if wait <= 0:
            return 0.0
        if wait > min(MAX_THROTTLE_WAIT, budget[0]):
            return max(wait, 0.001)
        time.sleep(wait)
        budget[0] -= wait


def _remove_push_tokens(conn: Any, user_id: str, tokens: tuple[str, ...], now: datetime) -> None:
    current = conn.execute(
        select(profiles.c.push_tokens).where(profiles.c.user_id == user_id).with_for_update()
    ).scalar()
    if current is None:
        return
    kept = [t for t in current if t not in set(tokens)]
    if kept != list(current):
        conn.execute(update(profiles).where(profiles.c.user_id == user_id).values(push_tokens=kept, updated_at=now))


def _key(row: Mapping[str, Any], channel: str) -> str:
    """The delivery ledger key: one delivery per (run, step, generation, channel)."""
    return f"{row['run_id']}:{row['step']}:{row['generation']}:{channel}"


def _ledger_rows(conn: Any, keys: list[str]) -> dict[str, tuple[int, str] | None]:
    """Ledger rows by key; every key asked about is in the result (``None``: no row yet)."""
    found: dict[str, tuple[int, str] | None] = dict.fromkeys(keys)
    if keys:
        for key, ledger_id, status in conn.execute(
            select(deliveries.c.key, deliveries.c.id, deliveries.c.status).where(among(conn, deliveries.c.key, sorted(set(keys))))
        ):
            found[key] = (ledger_id, status)
    return found


def _mark_unknown(conn: Any, row: Mapping[str, Any], now: datetime) -> None:
    conn.execute(
        update(deliveries)
        .where(deliveries.c.outbox_id == row["id"], deliveries.c.status == "sending")
        .values(status="unknown", error="the sending process stopped mid-call", updated_at=now)
    )
    conn.execute(update(outbox).where(outbox.c.id == row["id"]).values(
        status="unknown", reason="unknown_outcome", detail="the sending process stopped mid-call",
        updated_at=now))


def _note(row: Mapping[str, Any], now: datetime, action: str, channel: str | None,
          reason: str | None, detail: str | None) -> dict[str, Any]:
    return {"at": now, "journey": row["journey"], "run_id": row["run_id"], "user_id": row["user_id"],
            "action": action, "step": row["step"], "channel": channel, "variant": row["variant"],
            "reason": reason, "detail": detail}


def _write_notes(conn: Any, notes: list[dict[str, Any]]) -> None:
    """The activity rows, in the order they happened, with one multi-row statement."""
    if notes:
        conn.execute(insert(activity), notes)
