"""The work a worker does, as plain functions over the store: apply users' pending events,
fire due timers. Shell around the pure engine: each call locks the users it touches, loads
their state, calls the same ``route_event`` / ``advance`` / ``apply_outcome`` the dry-run
calls, and writes the result in one transaction. Celery tasks and the embedded runner both
call these; neither knows journey semantics.

A failure that belongs to one user (say a condition that blows up on their data) parks that
user's events as ``failed`` with the error and lets the rest of the batch through.
"""

from __future__ import annotations

import logging
import traceback
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Iterable, Mapping

from sqlalchemy import Connection, Engine, select, update

from ..apply import apply_outcome
from ..engine import Event, Run, TimerFired, advance, route_event
from ..machine import Machine
from ..store.rows import among, load_runs, load_unfinished_runs, lock_profiles
from ..store.schema import events, timers
from . import metrics
from .journeys import JourneyRegistry
from .sink import BatchSink

log = logging.getLogger(__name__)


@dataclass
class Done:
    """What a batch did; ``messages`` are outbox ids queued by it, to send now; ``claimed``
    what ``claim`` returned for them (already claimed in the batch's transaction); ``steps``
    the engine outcomes applied per journey; ``lateness`` seconds each fired timer was late."""

    applied: int = 0
    skipped: int = 0
    failed: int = 0
    messages: tuple[int, ...] = ()
    claimed: Any = None
    steps: Counter[str] = field(default_factory=Counter)
    lateness: list[float] = field(default_factory=list)


def _counted(done: Done) -> Done:
    """Record a committed batch in the metrics."""
    metrics.steps_applied(done.steps)
    metrics.timers_fired(done.lateness)
    return done


# Called inside a batch's transaction, under its users' locks, with the outbox ids the batch
# queued and the users' profiles as the batch left them (see ``sending.claim_queued``).
Claim = Callable[[Connection, list[int], Mapping[str, dict[str, Any]]], Any]


def new_run_id() -> str:
    return uuid.uuid4().hex


def process_users(engine: Engine, registry: JourneyRegistry, user_ids: Iterable[str], now: datetime,
                  claim: Claim | None = None) -> Done:
    """Apply every pending event of these users, oldest first."""
    return _counted(_process_users(engine, registry, user_ids, now, claim))


def _process_users(engine: Engine, registry: JourneyRegistry, user_ids: Iterable[str], now: datetime,
                   claim: Claim | None) -> Done:
    with engine.begin() as conn:
        views = lock_profiles(conn, user_ids)
        if not views:
            return Done()
        pending = conn.execute(
            select(events.c.id, events.c.user_id, events.c.name, events.c.at, events.c.properties)
            .where(among(conn, events.c.user_id, sorted(views)), events.c.status == "pending")
            .order_by(events.c.at, events.c.id)
        ).all()
        if not pending:
            return Done()
        machines = registry.current(conn)
        unfinished = load_unfinished_runs(conn, views)
        known = {r.run_id for rs in unfinished.values() for r in rs}
        batch = _sink(machines, now, known)
        by_user: dict[str, list[Any]] = {}
        for row in pending:
            by_user.setdefault(row.user_id, []).append(row)
        done, failed = [], []
        steps: Counter[str] = Counter()
        for uid, rows in by_user.items():
            sink = _sink(machines, now, known)
            sink.profiles[uid] = views[uid]
            user_steps: Counter[str] = Counter()
            try:
                active = list(unfinished.get(uid, []))
                for row in rows:
                    ev = Event(uid, row.name, row.at, row.properties)
                    active = _route(conn, registry, machines, active, views[uid], ev, now, sink, user_steps)
            except Exception:  # noqa: BLE001 - parked with its error, never retried in a loop
                log.exception("user %s: %d events parked", uid, len(rows),
                              extra={"user_id": uid, "event_ids": [r.id for r in rows],
                                     "run_ids": [r.run_id for r in unfinished.get(uid, [])]})
                failed.append(([r.id for r in rows], traceback.format_exc(limit=5)))
                continue
            batch.absorb(sink)
            steps.update(user_steps)
            done += [r.id for r in rows]
        ids = batch.flush(conn)
        if done:
            conn.execute(
                update(events).where(among(conn, events.c.id, done)).values(status="processed", processed_at=now)
            )
        for ids_failed, error in failed:
            conn.execute(
                update(events).where(among(conn, events.c.id, ids_failed)).values(status="failed", error=error)
            )
        claimed = claim(conn, ids, views) if claim is not None and ids else None
        return Done(applied=len(done), failed=sum(len(i) for i, _ in failed), messages=tuple(ids),
                    claimed=claimed, steps=steps)


def _sink(machines: dict[str, Machine], now: datetime, known: set[str]) -> BatchSink:
    return BatchSink(now, {j: m.re_entry != "parallel" for j, m in machines.items()}, known)


def _route(
    conn: Connection,
    registry: JourneyRegistry,
    machines: dict[str, Machine],
    active: list[Run],
    profile: dict[str, Any],
    ev: Event,
    now: datetime,
    sink: BatchSink,
    steps: Counter[str],
) -> list[Run]:
    """One event against every journey for one user; returns the user's unfinished runs."""
    sink.event_at = ev.at
    by_journey: dict[str, list[Run]] = {}
    for run in active:
        by_journey.setdefault(run.journey, []).append(run)
    result: list[Run] = []
    for journey in sorted(set(machines) | set(by_journey)):
        runs = by_journey.get(journey, [])
        current = machines.get(journey)
        pinned: dict[str, list[Run]] = {}
        for run in runs:
            pinned.setdefault(run.version, []).append(run)
        still: list[Run] = []
        # Runs on older versions: routed with the machine they entered with; never a new entry.
        for version, group in pinned.items():
            if current is not None and version == current.version:
                continue
            machine = registry.machine(conn, version)
            if ev.name in machine.listens_to():
                outcomes = route_event(machine, group, profile, ev, now, "", allow_entry=False)
                group = _apply(outcomes, group, sink, now, steps)
            still += group
        if current is not None:
            group = pinned.get(current.version, [])
            if ev.name in current.listens_to():
                allow = current.re_entry == "parallel" or not still
                outcomes = route_event(current, group, profile, ev, now, new_run_id(), allow_entry=allow)
                group = _apply(outcomes, group, sink, now, steps)
            still += group
        result += [r for r in still if not r.finished]
    return result


def _apply(outcomes: list[Any], group: list[Run], sink: BatchSink, now: datetime,
           steps: Counter[str]) -> list[Run]:
    latest = {r.run_id: r for r in group}
    for outcome in outcomes:
        apply_outcome(sink, outcome, now)
        steps[outcome.run.journey] += 1
        latest[outcome.run.run_id] = outcome.run
    return list(latest.values())


def fire_timers(engine: Engine, registry: JourneyRegistry, timer_ids: Iterable[int], now: datetime,
                claim: Claim | None = None) -> Done:
    """Fire these timers. A timer whose run moved on (newer generation, finished) is a no-op."""
    return _counted(_fire_timers(engine, registry, timer_ids, now, claim))


def _fire_timers(engine: Engine, registry: JourneyRegistry, timer_ids: Iterable[int], now: datetime,
                 claim: Claim | None) -> Done:
    ids = sorted(set(timer_ids))
    if not ids:
        return Done()
    with engine.begin() as conn:
        users = conn.execute(
            select(timers.c.user_id).where(among(conn, timers.c.id, ids), timers.c.status.in_(("pending", "claimed")))
        ).scalars()
        views = lock_profiles(conn, users)
        # Read again under the users' locks: another worker may have fired some meanwhile.
        due = conn.execute(
            select(timers.c.id, timers.c.run_id, timers.c.generation, timers.c.fire_at)
            .where(among(conn, timers.c.id, ids), timers.c.status.in_(("pending", "claimed")))
            .order_by(timers.c.fire_at, timers.c.id)
        ).all()
        if not due:
            return Done()
        runs = load_runs(conn, (t.run_id for t in due))
        sink = BatchSink(now, {}, set(runs))
        applied = skipped = 0
        steps: Counter[str] = Counter()
        failed: list[tuple[int, str]] = []
        for t in due:
            run = sink.runs.get(t.run_id) or runs.get(t.run_id)
            if run is None or run.finished or run.generation != t.generation:
                skipped += 1
                continue
            try:
                machine = registry.machine(conn, run.version)
                sink.exclusive[run.journey] = machine.re_entry != "parallel"
                sink.profiles[run.user_id] = views[run.user_id]
                outcome = advance(machine, run, TimerFired(t.run_id, t.generation), views[run.user_id], now)
            except Exception:  # noqa: BLE001 - parked with its error, never retried in a loop
                log.exception("timer %s of run %s: parked", t.id, t.run_id,
                              extra={"timer_id": t.id, "run_id": t.run_id, "journey": run.journey,
                                     "generation": t.generation})
                failed.append((t.id, traceback.format_exc(limit=5)))
                continue
            apply_outcome(sink, outcome, now)
            steps[run.journey] += 1
            applied += 1
        bad = {i for i, _ in failed}
        conn.execute(
            update(timers)
            .where(among(conn, timers.c.id, [t.id for t in due if t.id not in bad]))
            .values(status="done", fired_at=now)
        )
        for timer_id, error in failed:
            conn.execute(update(timers).where(timers.c.id == timer_id).values(status="failed", error=error))
        messages = sink.flush(conn)
        claimed = claim(conn, messages, views) if claim is not None and messages else None
        # Every timer marked done above (fired, or a no-op for a run that moved on) was this late.
        lateness = [(now - t.fire_at).total_seconds() for t in due if t.id not in bad]
        return Done(applied=applied, skipped=skipped, failed=len(failed), messages=tuple(messages),
                    claimed=claimed, steps=steps, lateness=lateness)
