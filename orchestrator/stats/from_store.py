"""Reading a journey's :class:`~orchestrator.stats.facts.History` from the production store.
Shell (SQLAlchemy Core, SQLite and PostgreSQL alike).

The runs are the journey's (every version) whose ``entered_at`` (their last start, a restart
included) lies in ``[since, until)``; everything else is what happened to those runs, however
long after ``until`` it happened, so a cohort is always counted whole:

* ``RunFact``: one per run; ``restarts`` counts its ``enter`` activity rows with the reason
  ``restarted``; ``exit_step`` is the step the run ended at;
* ``MessageFact``: its ``send``, ``skip`` and ``defer`` activity rows;
* ``ReachFact``: one per outbox row (a send step reached) and one per timer (a wait or a
  wait_for reached; the holdout's and the conversion window's pseudo steps are not steps);
* ``DeliveryFact``: the delivery ledger rows of those runs, with ``opened`` / ``clicked`` from
  the provider events (``delivery_events`` matched by delivery key or provider id), and the
  deliveries of *any* journey to the users who converted, up to their last conversion and no
  further back than the conversion window (they compete for the credit, see ``attribution``);
* ``ConversionFact``: the ``conversions`` rows of those runs.

A fixed number of statements, whatever the number of runs: every table is joined to the runs
selected by journey and entry time (never a list of ids). Rows are
read as plain tuples and times converted once each (``_utc``): reading 100,000 runs is mostly
building the facts in Python.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Text, and_, cast, func, or_, select, type_coerce, union
from sqlalchemy.types import NullType

from ..engine import PSEUDO_STEPS
from ..gcpause import gc_paused
from ..store.schema import (
    activity,
    conversions,
    deliveries,
    delivery_events,
    journey_versions,
    outbox,
    runs,
    timers,
)
from .facts import ConversionFact, DeliveryFact, History, MessageFact, ReachFact, RunFact

MESSAGE_ACTIONS = ("send", "skip", "defer")
ENGAGEMENT = ("opened", "clicked")


def load_history(
    engine: Engine,
    journey: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    lookback: timedelta | None = None,
) -> History:
    """Everything the store knows about ``journey``'s runs entered in ``[since, until)``.

    ``lookback``: how far before a conversion a delivery can still get the credit (the
    conversion window); older deliveries of other journeys are not loaded. Default: the
    longest conversion window of the journey's deployed versions (no limit if none is
    recorded)."""
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise ValueError(f"{name}: pass an aware datetime, got {value!r}")
    with gc_paused(), engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            # One snapshot for every statement below: a run finishing meanwhile is counted
            # consistently (its exit, its conversion and its messages, or none of them).
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            conn.exec_driver_sql("SET LOCAL TIME ZONE 'UTC'")  # times arrive in UTC
        cohort = _run_conditions(journey, since, until)
        utc = _utc
        text = _json_text(conn)
        parsed: dict[str, tuple[tuple[str, str], ...]] = {}

        def variants_of(raw: str) -> tuple[tuple[str, str], ...]:
            found = parsed.get(raw)
            if found is None:  # few distinct values: each parsed once
                found = parsed[raw] = tuple((str(v[0]), str(v[1])) for v in json.loads(raw) or ())
            return found

        restarts: Counter[str] = Counter()
        messages: list[MessageFact] = []
        splits: list[ReachFact] = []
        for run_id, step, at, action, channel, variant, reason in conn.execute(
            select(activity.c.run_id, activity.c.step, _raw(activity.c.at), activity.c.action,
                   activity.c.channel, activity.c.variant, activity.c.reason)
            .join(runs, runs.c.run_id == activity.c.run_id)
            .where(*cohort, activity.c.journey == journey,
                   or_(activity.c.action.in_((*MESSAGE_ACTIONS, "split")),
                       and_(activity.c.action == "enter", activity.c.reason == "restarted")))
            .order_by(activity.c.id)
        ).all():
            if action == "enter":
                restarts[run_id] += 1
            elif action == "split":
                splits.append(ReachFact(run_id, step, variant))
            else:
                messages.append(MessageFact(run_id, step, utc(at), action, channel, variant, reason))

        run_facts = [
            RunFact(run_id, user_id, utc(entered_at), bool(holdout), variants_of(variants),
                    status == "finished", step if status == "finished" else None,
                    exit_reason, bool(converted), restarts[run_id])
            for run_id, user_id, entered_at, holdout, variants, status, step, exit_reason, converted
            in conn.execute(
                select(runs.c.run_id, runs.c.user_id, _raw(runs.c.entered_at), runs.c.holdout,
                       text(runs.c.variants), runs.c.status, runs.c.step, runs.c.exit_reason,
                       runs.c.converted)
                .where(*cohort)
                .order_by(runs.c.entered_at, runs.c.run_id)
            ).all()
        ]

        reaches = [ReachFact(run_id, step) for run_id, step in conn.execute(
            select(outbox.c.run_id, outbox.c.step)
            .join(runs, runs.c.run_id == outbox.c.run_id)
            .where(*cohort, outbox.c.journey == journey)
        ).all()]
        reaches += splits
        reaches += [ReachFact(run_id, step) for run_id, step in conn.execute(
            select(timers.c.run_id, timers.c.step)
            .join(runs, runs.c.run_id == timers.c.run_id)
            .where(*cohort, timers.c.step.notin_(sorted(PSEUDO_STEPS)))
        ).all()]

        conversion_facts = [
            ConversionFact(run_id, user_id, journey, goal, utc(at))
            for run_id, user_id, goal, at in conn.execute(
                select(conversions.c.run_id, conversions.c.user_id, conversions.c.goal,
                       _raw(conversions.c.at))
                .join(runs, runs.c.run_id == conversions.c.run_id)
                .where(*cohort, conversions.c.journey == journey)
                .order_by(conversions.c.at, conversions.c.run_id)
            ).all()
        ]

        delivery_facts = _deliveries(conn, journey, cohort, conversion_facts, lookback)

    return History(journey, run_facts, messages, delivery_facts, reaches, conversion_facts,
                   since, until, simulated=False)


def _raw(column: Any) -> Any:
    """A time column read as the driver returns it (``_utc`` converts it): SQLAlchemy's own
    conversion of SQLite's text costs more than everything else done per row."""
    return type_coerce(column, NullType()).label(column.name)


def _utc(value: Any) -> datetime:
    if isinstance(value, str):  # SQLite: "2026-03-02 15:00:00.000000", stored in UTC
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    if value.tzinfo is UTC:
        return value  # type: ignore[no-any-return]
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)  # type: ignore[no-any-return]


def _run_conditions(journey: str, since: datetime | None, until: datetime | None) -> list[Any]:
    conds: list[Any] = [runs.c.journey == journey]
    if since is not None:
        conds.append(runs.c.entered_at >= since)
    if until is not None:
        conds.append(runs.c.entered_at < until)
    return conds


def _json_text(conn: Connection) -> Any:
    """A JSON column read as its text (parsed by the caller, once per distinct value):
    psycopg's own decoding of JSONB costs more than the rest of the row."""
    if conn.dialect.name == "postgresql":
        return lambda column: cast(column, Text).label(column.name)
    return _raw


def _deliveries(
    conn: Connection,
    journey: str,
    cohort: list[Any],
    conversion_facts: list[ConversionFact],
    lookback: timedelta | None,
) -> list[DeliveryFact]:
    utc = _utc
    cols = (deliveries.c.id, deliveries.c.run_id, deliveries.c.user_id, deliveries.c.journey,
            deliveries.c.step, deliveries.c.channel, deliveries.c.status,
            _raw(deliveries.c.sent_at), _raw(deliveries.c.created_at))
    mine = (*cohort, deliveries.c.journey == journey)
    in_cohort = runs.c.run_id == deliveries.c.run_id
    rows: dict[int, tuple[Any, ...]] = {
        r[0]: tuple(r) for r in conn.execute(select(*cols).join(runs, in_cohort).where(*mine)).all()}

    # Engagement (provider webhooks) for this journey's deliveries, matched as feedback.py
    # matches them: by our delivery key or by the provider's message id (each an indexed join).
    opened: set[int] = set()
    clicked: set[int] = set()
    if rows:
        engaged = (delivery_events.c.event.in_(ENGAGEMENT),)
        by_key = (select(deliveries.c.id, delivery_events.c.event).join(runs, in_cohort)
                  .join(delivery_events, delivery_events.c.delivery_key == deliveries.c.key)
                  .where(*mine, *engaged))
        by_pid = (select(deliveries.c.id, delivery_events.c.event).join(runs, in_cohort)
                  .join(delivery_events, delivery_events.c.provider_id == deliveries.c.provider_id)
                  .where(*mine, *engaged))
        for did, name in conn.execute(union(by_key, by_pid)).all():
            (opened if name == "opened" else clicked).add(did)

    # Deliveries that compete for the credit of a conversion: any journey's, to the users who
    # converted, sent before their last conversion and within the window of their first.
    if conversion_facts:
        if lookback is None:
            lookback = _longest_window(conn, journey)
        first: dict[str, datetime] = {}
        for c in conversion_facts:
            if c.user_id not in first or c.at < first[c.user_id]:
                first[c.user_id] = c.at
        converted = (
            select(conversions.c.user_id, func.max(conversions.c.at).label("last"))
            .join(runs, runs.c.run_id == conversions.c.run_id)
            .where(*cohort, conversions.c.journey == journey)
            .group_by(conversions.c.user_id)
            .subquery()
        )
        q = (select(*cols).join(converted, deliveries.c.user_id == converted.c.user_id)
             .where(deliveries.c.created_at <= converted.c.last))
        if lookback is not None:
            q = q.where(func.coalesce(deliveries.c.sent_at, deliveries.c.created_at)
                        >= min(first.values()) - lookback)
        for other in conn.execute(q).all():
            if other[0] in rows:
                continue
            if lookback is None or utc(other[7] or other[8]) >= first[other[2]] - lookback:
                rows[other[0]] = tuple(other)

    # In no particular order: attribution sorts each user's deliveries itself.
    return [
        DeliveryFact(run_id, user_id, journey_, step, channel, utc(sent_at or created_at), status,
                     did in opened, did in clicked)
        for did, run_id, user_id, journey_, step, channel, status, sent_at, created_at
        in rows.values()
    ]


def _longest_window(conn: Connection, journey: str) -> timedelta | None:
    windows = [
        m.get("conversion_window") for m in conn.execute(
            select(journey_versions.c.machine).where(journey_versions.c.journey == journey)
        ).scalars()
        if isinstance(m, dict)
    ]
    seconds = [w for w in windows if isinstance(w, (int, float))]
    return timedelta(seconds=max(seconds)) if seconds else None

