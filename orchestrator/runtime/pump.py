"""The timer pump: one tick claims work that has come due and hands it to the dispatcher.
Shell. Run by the scheduler process every ``JOURNEY_TICK`` seconds (APScheduler), or by the
embedded runner.

A tick:
1. claims due timers in batches (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so two schedulers
   never claim the same row) and dispatches them to workers;
2. hands back timer claims older than the lease (their process died);
3. dispatches messages whose time has come (deferred by quiet hours, or a provider's "retry
   later") and messages stuck ``sending`` past the lease (they become ``unknown``);
4. re-dispatches events still pending after the lease (a lost task, a dead worker).

Re-dispatching is always safe: every work function re-reads its rows under the users' locks and
skips what is already done. A batch that fails on one user's data parks that user's events or
timers as ``failed`` with the error (see ``work``); nothing is retried in a loop.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, Sequence

from sqlalchemy import Engine, and_, func, or_, select, update

from ..store.schema import events, outbox, timers

log = logging.getLogger(__name__)


class Dispatcher(Protocol):
    def process_users(self, user_ids: Sequence[str]) -> None: ...
    def fire_timers(self, timer_ids: Sequence[int]) -> None: ...
    def send_messages(self, outbox_ids: Sequence[int]) -> None: ...


@dataclass
class Tick:
    timers: int = 0
    reclaimed: int = 0
    messages: int = 0
    events: int = 0


def chunks(items: Sequence[object], size: int) -> list[list[object]]:
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


class Pump:
    def __init__(self, engine: Engine, dispatcher: Dispatcher, *, batch: int = 200, lease: float = 60.0,
                 claim: int = 5000) -> None:
        self.engine = engine
        self.dispatcher = dispatcher
        self.batch = batch
        self.lease = timedelta(seconds=lease)
        self.claim = claim
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    def tick(self, now: datetime) -> Tick:
        t = Tick()
        t.reclaimed = self._reclaim(now)
        while True:
            claimed = self._claim_timers(now)
            if not claimed:
                break
            t.timers += len(claimed)
            for part in chunks([i for i, _ in claimed], self.batch):
                self.dispatcher.fire_timers(part)  # type: ignore[arg-type]
            if len(claimed) < self.claim:
                break
        t.messages = self._due_messages(now)
        t.events = self._stale_events(now)
        return t

    def _claim_timers(self, now: datetime) -> list[tuple[int, str]]:
        with self.engine.begin() as conn:
            due = (
                select(timers.c.id)
                .where(timers.c.status == "pending", timers.c.fire_at <= now)
                .order_by(timers.c.fire_at)
                .limit(self.claim)
                .with_for_update(skip_locked=True)
            )
            rows = conn.execute(
                update(timers)
                .where(timers.c.id.in_(due.scalar_subquery()))
                .values(status="claimed", claimed_at=now, claimed_by=self.name, attempts=timers.c.attempts + 1)
                .returning(timers.c.id, timers.c.user_id)
            ).all()
        # Keep a user's timers together so one task applies them in order.
        return sorted(((r.id, r.user_id) for r in rows), key=lambda r: (r[1], r[0]))

    def _reclaim(self, now: datetime) -> int:
        cutoff = now - self.lease
        with self.engine.begin() as conn:
            back = conn.execute(
                update(timers)
                .where(timers.c.status == "claimed", timers.c.claimed_at < cutoff)
                .values(status="pending", claimed_at=None, claimed_by=None)
            ).rowcount
        if back:
            log.warning("timer pump: %d timer claims handed back (their worker died or lags)", back,
                        extra={"timers": back})
        return back

    def _due_messages(self, now: datetime) -> int:
        cutoff = now - self.lease
        with self.engine.begin() as conn:
            due = (
                select(outbox.c.id)
                .where(or_(
                    and_(outbox.c.status == "pending", outbox.c.due_at <= now,
                         or_(outbox.c.claimed_at.is_(None), outbox.c.claimed_at < cutoff)),
                    and_(outbox.c.status == "sending", outbox.c.claimed_at < cutoff),
                ))
                .order_by(outbox.c.due_at)
                .limit(self.claim)
                .with_for_update(skip_locked=True)
            )
            ids = list(conn.execute(
                update(outbox).where(outbox.c.id.in_(due.scalar_subquery()), outbox.c.status == "pending")
                .values(claimed_at=now).returning(outbox.c.id)
            ).scalars())
            stuck = list(conn.execute(
                select(outbox.c.id).where(outbox.c.status == "sending", outbox.c.claimed_at < cutoff)
                .limit(self.claim)
            ).scalars())
        all_ids = sorted(set(ids) | set(stuck))
        for part in chunks(all_ids, self.batch):
            self.dispatcher.send_messages(part)  # type: ignore[arg-type]
        return len(all_ids)

    def _stale_events(self, now: datetime) -> int:
        cutoff = now - self.lease
        with self.engine.begin() as conn:
            stale = (
                select(events.c.id)
                .where(events.c.status == "pending",
                       func.coalesce(events.c.claimed_at, events.c.received_at) < cutoff)
                .limit(self.claim)
                .with_for_update(skip_locked=True)
            )
            users = conn.execute(
                update(events).where(events.c.id.in_(stale.scalar_subquery()))
                .values(claimed_at=now, attempts=events.c.attempts + 1)
                .returning(events.c.user_id)
            ).scalars()
            user_ids = sorted(set(users))
        for part in chunks(user_ids, self.batch):
            self.dispatcher.process_users(part)  # type: ignore[arg-type]
        return len(user_ids)
