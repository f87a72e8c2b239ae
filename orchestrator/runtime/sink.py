"""Collects what the engine asks for while a batch is processed, then writes it with
multi-row statements inside the batch's transaction. Shell. Implements
:class:`orchestrator.apply.EffectSink`, the same interface the dry-run's simulator implements.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping

from sqlalchemy import Connection, and_, bindparam, insert, or_, update

from ..effects import Assigned, CancelTimer, Entered, Exited, Send, StartTimer
from ..engine import Run
from ..store.rows import PROFILE_COLUMNS, run_to_row
from ..store.schema import activity, conversions, outbox, profiles, runs, timers


class BatchSink:
    def __init__(self, now: datetime, exclusive: Mapping[str, bool], known_runs: set[str]) -> None:
        self.now = now
        self.exclusive = exclusive  # journey -> at most one unfinished run per user
        self.known_runs = known_runs  # runs that already have a row
        self.runs: dict[str, Run] = {}
        self.timers: list[dict[str, Any]] = []
        self.cancels: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []
        self.profile_changes: dict[str, dict[str, Any]] = {}
        self.activity: list[dict[str, Any]] = []
        self.conversions: list[dict[str, Any]] = []
        self.profiles: dict[str, dict[str, Any]] = {}  # live views, updated by UpdateProfile
        # When the event being applied happened (None for timers): a goal's conversion is
        # recorded at that time, not when a worker got to it, so a message sent meanwhile
        # cannot take its credit (the dry-run applies events at their own time too).
        self.event_at: datetime | None = None

    def absorb(self, other: "BatchSink") -> None:
        """Take over another sink's writes (one user's work, kept apart until it succeeded)."""
        self.runs.update(other.runs)
        self.timers += other.timers
        self.cancels += other.cancels
        self.messages += other.messages
        for uid, changes in other.profile_changes.items():
            self.profile_changes.setdefault(uid, {}).update(changes)
        self.activity += other.activity
        self.conversions += other.conversions

    # -- EffectSink -------------------------------------------------------------------------
    def save_run(self, run: Run) -> None:
        self.runs[run.run_id] = run

    def schedule_timer(self, run: Run, timer: StartTimer) -> None:
        self.timers.append(
            {"run_id": run.run_id, "user_id": run.user_id, "generation": timer.generation,
             "step": timer.step, "fire_at": timer.fire_at, "status": "pending", "attempts": 0}
        )

    def cancel_timer(self, run: Run, timer: CancelTimer) -> None:
        self.cancels.append({"c_run_id": timer.run_id, "c_generation": timer.generation})

    def queue_message(self, run: Run, send: Send, now: datetime) -> None:
        self.messages.append(
            {"run_id": run.run_id, "user_id": run.user_id, "journey": run.journey,
             "version": run.version, "step": send.step, "generation": send.generation,
             "template": send.template, "channels": list(send.channels),
             "prefer_user": send.prefer_user, "variant": send.variant, "due_at": now,
             "status": "pending", "attempts": 0,
             # Claimed by whoever queued it: it sends the message right after commit; the
             # pump takes over only if that process dies (after the lease).
             "claimed_at": now, "created_at": now, "updated_at": now}
        )

    def update_profile(self, user_id: str, changes: Mapping[str, Any]) -> None:
        self.profile_changes.setdefault(user_id, {}).update(changes)
        if user_id in self.profiles:
            self.profiles[user_id].update(changes)

    def record_entry(self, run: Run, entered: Entered, now: datetime) -> None:
        self.activity.append(
            {"at": now, "journey": run.journey, "run_id": run.run_id, "user_id": run.user_id,
             "action": "enter", "step": entered.step, "channel": None, "variant": None,
             "reason": "holdout" if entered.holdout else ("restarted" if entered.restarted else None),
             "detail": None}
        )

    def record_assignment(self, run: Run, assigned: Assigned, now: datetime) -> None:
        self.activity.append(
            {"at": now, "journey": run.journey, "run_id": run.run_id, "user_id": run.user_id,
             "action": "split", "step": assigned.step, "channel": None,
             "variant": assigned.variant, "reason": None, "detail": None}
        )

    def record_exit(self, run: Run, exited: Exited, now: datetime) -> None:
        self.activity.append(
            {"at": now, "journey": run.journey, "run_id": run.run_id, "user_id": run.user_id,
             "action": "exit", "step": exited.step, "channel": None, "variant": None,
             "reason": exited.reason, "detail": "converted" if exited.converted else None}
        )
        if exited.converted:
            self.conversions.append(
                {"run_id": run.run_id, "journey": run.journey, "version": run.version,
                 "user_id": run.user_id, "goal": exited.reason.removeprefix("goal:"),
                 "at": min(self.event_at, now) if self.event_at is not None else now,
                 "holdout": run.holdout, "variants": [list(v) for v in run.variants]}
            )

    # -- writing ----------------------------------------------------------------------------
    def flush(self, conn: Connection) -> list[int]:
        """Write everything; returns the ids of the messages queued (due now)."""
        new = [r for r in self.runs.values() if r.run_id not in self.known_runs]
        old = [r for r in self.runs.values() if r.run_id in self.known_runs]
        # Finished runs first, so a new run never meets its predecessor in the unique index.
        if old:
            params = [{**self._run_row(r), "b_run_id": r.run_id} for r in old]
            cols = {k: bindparam(k) for k in params[0] if k not in ("b_run_id", "run_id")}
            conn.execute(update(runs).where(runs.c.run_id == bindparam("b_run_id")).values(cols), params)
        if new:
            conn.execute(insert(runs), [self._run_row(r) for r in new])
            self.known_runs.update(r.run_id for r in new)
        if self.timers:
            conn.execute(insert(timers), self.timers)
        if self.cancels:
            conn.execute(
                update(timers)
                .where(and_(timers.c.run_id == bindparam("c_run_id"),
                            timers.c.generation == bindparam("c_generation"),
                            # not IN (...): an expanding parameter cannot run as executemany
                            or_(timers.c.status == "pending", timers.c.status == "claimed")))
                .values(status="cancelled"),
                self.cancels,
            )
        ids: list[int] = []
        if self.messages:
            ids = list(conn.execute(insert(outbox).returning(outbox.c.id), self.messages).scalars())
        for uid, changes in self.profile_changes.items():
            self._write_profile(conn, uid, changes)
        if self.activity:
            conn.execute(insert(activity), self.activity)
        if self.conversions:
            conn.execute(insert(conversions), self.conversions)
        return ids

    def _run_row(self, run: Run) -> dict[str, Any]:
        return run_to_row(run, self.exclusive.get(run.journey, True), self.now)

    def _write_profile(self, conn: Connection, uid: str, changes: Mapping[str, Any]) -> None:
        from sqlalchemy import select

        row = conn.execute(select(profiles.c.attributes).where(profiles.c.user_id == uid)).one()
        attributes = dict(row.attributes or {})
        columns: dict[str, Any] = {}
        for key, value in changes.items():
            if key in PROFILE_COLUMNS:
                columns[key] = value
            else:
                attributes[key] = value
        conn.execute(
            update(profiles)
            .where(profiles.c.user_id == uid)
            .values(attributes=attributes, updated_at=self.now, **columns)
        )
