"""Converting between table rows and the engine's values, and the queries every work function
needs (locking a batch of users, loading their profiles, runs and message history). Shell."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Iterable, Mapping, Sequence

from sqlalchemy import Connection, ColumnElement, any_, insert, literal, select
from sqlalchemy.dialects.postgresql import ARRAY

from ..engine import Run
from ..policies import Sent
from .schema import consents, deliveries, profiles, runs

# Consent states that stop a channel for every journey.
STOPPED = frozenset({"unsubscribed", "bounced", "spam", "rejected"})
PROFILE_COLUMNS = ("email", "phone", "push_tokens", "timezone", "locale")
# Ledger states that count as "a message went (or may have gone) out" for frequency caps;
# "delivered" too: a provider's delivery report must not free a message's place under a cap.
COUNTS_AS_SENT = ("sending", "sent", "unknown", "delivered")


def run_from_row(row: Mapping[str, Any]) -> Run:
    return Run(
        run_id=row["run_id"],
        journey=row["journey"],
        version=row["version"],
        user_id=row["user_id"],
        entered_at=row["entered_at"],
        trigger=row["trigger"],
        status=row["status"],
        step=row["step"],
        generation=row["generation"],
        wake_at=row["wake_at"],
        holdout=row["holdout"],
        variants=tuple(tuple(v) for v in row["variants"]),  # type: ignore[misc]
        exit_reason=row["exit_reason"],
        converted=row["converted"],
        finished_at=row["finished_at"],
        started_generation=row["started_generation"],
    )


def run_to_row(run: Run, exclusive: bool, now: datetime) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "journey": run.journey,
        "version": run.version,
        "user_id": run.user_id,
        "status": run.status,
        "step": run.step,
        "generation": run.generation,
        "started_generation": run.started_generation,
        "wake_at": run.wake_at,
        "holdout": run.holdout,
        "variants": [list(v) for v in run.variants],
        "trigger": dict(run.trigger),
        "entered_at": run.entered_at,
        "finished_at": run.finished_at,
        "exit_reason": run.exit_reason,
        "converted": run.converted,
        "exclusive": exclusive,
        "updated_at": now,
    }


def upsert_ignore(conn: Connection, table: Any, rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING, on PostgreSQL and SQLite."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        conn.execute(pg_insert(table).on_conflict_do_nothing(index_elements=list(keys)), list(rows))
    elif conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        conn.execute(sqlite_insert(table).on_conflict_do_nothing(index_elements=list(keys)), list(rows))
    else:  # pragma: no cover - other databases are not supported
        conn.execute(insert(table).prefix_with("IGNORE"), list(rows))


def among(conn: Connection, column: Any, values: Iterable[Any]) -> ColumnElement[bool]:
    """``column IN (values)``; on PostgreSQL ``column = ANY(:array)``: one parameter whatever the
    number of values, so the statement text is the same for every batch (psycopg caches its
    conversion and prepares it; an ``IN`` list of 200 is re-parsed on every execution)."""
    values = list(values)
    if conn.dialect.name == "postgresql":
        return column == any_(literal(values, ARRAY(column.type)))
    return column.in_(values)


def ensure_profiles(conn: Connection, user_ids: Iterable[str], now: datetime) -> None:
    rows = [
        {"user_id": u, "push_tokens": [], "attributes": {}, "created_at": now, "updated_at": now}
        for u in sorted(set(user_ids))
    ]
    upsert_ignore(conn, profiles, rows, ["user_id"])


def lock_profiles(conn: Connection, user_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Lock the users' profile rows, always in the same order (so two batches sharing users
    cannot deadlock), and return them. This lock is what applies one user's events, timers
    and messages serially across every worker."""
    ids = sorted(set(user_ids))
    if not ids:
        return {}
    rows = conn.execute(
        select(profiles).where(among(conn, profiles.c.user_id, ids)).order_by(profiles.c.user_id).with_for_update()
    ).mappings()
    found = {r["user_id"]: dict(r) for r in rows}
    cons: dict[str, dict[str, str]] = {}
    for c in conn.execute(select(consents).where(among(conn, consents.c.user_id, ids))).mappings():
        cons.setdefault(c["user_id"], {})[c["channel"]] = c["status"]
    return {uid: profile_view(row, cons.get(uid, {})) for uid, row in found.items()}


def profile_view(row: Mapping[str, Any], consent: Mapping[str, str]) -> dict[str, Any]:
    """The profile as the engine and policies see it (the same shape as a dry-run user)."""
    view: dict[str, Any] = dict(row["attributes"] or {})
    view["id"] = row["user_id"]
    for key in PROFILE_COLUMNS:
        if row[key] is not None:
            view[key] = row[key]
    # A list of channels (or "all"); one channel may come as a plain string, as the policies
    # read it. Anything else (a stray value in the attributes) lists nothing.
    opted = view.get("unsubscribed") or ()
    opted = [opted] if isinstance(opted, str) else opted if isinstance(opted, (list, tuple)) else ()
    stopped = {c for c in opted if isinstance(c, str)}
    for channel, status in consent.items():
        if status in STOPPED:
            stopped.add(channel)
        else:
            stopped.discard(channel)
        if status == "opted_in":
            view[f"{channel}_opt_in"] = True
    view["unsubscribed"] = sorted(stopped)
    return view


def load_unfinished_runs(conn: Connection, user_ids: Iterable[str]) -> dict[str, list[Run]]:
    out: dict[str, list[Run]] = {}
    ids = sorted(set(user_ids))
    if not ids:
        return out
    q = (
        select(runs)
        .where(among(conn, runs.c.user_id, ids), runs.c.status != "finished")
        .order_by(runs.c.entered_at, runs.c.run_id)
    )
    for row in conn.execute(q).mappings():
        out.setdefault(row["user_id"], []).append(run_from_row(row))
    return out


def load_runs(conn: Connection, run_ids: Iterable[str]) -> dict[str, Run]:
    ids = sorted(set(run_ids))
    if not ids:
        return {}
    rows = conn.execute(select(runs).where(among(conn, runs.c.run_id, ids))).mappings()
    return {r["run_id"]: run_from_row(r) for r in rows}


def load_history(conn: Connection, user_ids: Iterable[str], since: datetime) -> dict[str, list[Sent]]:
    """Messages sent (or possibly sent) to each user since ``since``, across all journeys."""
    out: dict[str, list[Sent]] = {}
    ids = sorted(set(user_ids))
    if not ids:
        return out
    q = select(deliveries.c.user_id, deliveries.c.channel, deliveries.c.created_at).where(
        among(conn, deliveries.c.user_id, ids),
        deliveries.c.created_at > since,
        deliveries.c.status.in_(COUNTS_AS_SENT),
    ).order_by(deliveries.c.created_at)
    for uid, channel, at in conn.execute(q):
        out.setdefault(uid, []).append(Sent(channel, at))
    return out


def history_window(max_cap_seconds: float) -> timedelta:
    return timedelta(seconds=max(max_cap_seconds, 1.0))


def set_consent(conn: Connection, user_id: str, channel: str, status: str, source: str, now: datetime) -> None:
    """Record a user's consent state for one channel (insert or overwrite)."""
    from sqlalchemy import update

    upsert_ignore(conn, consents, [{"user_id": user_id, "channel": channel, "status": status,
                                    "source": source, "updated_at": now}], ["user_id", "channel"])
    conn.execute(update(consents).where(consents.c.user_id == user_id, consents.c.channel == channel)
                 .values(status=status, source=source, updated_at=now))


def insert_ignore_returning(conn: Connection, table: Any, row: Mapping[str, Any], keys: Sequence[str]) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING RETURNING the primary key: ``None`` for a duplicate."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert  # type: ignore[assignment]
    stmt = dialect_insert(table).values(**row).on_conflict_do_nothing(index_elements=list(keys))
    pk = list(table.primary_key.columns)[0]
    return conn.execute(stmt.returning(pk)).scalar()
