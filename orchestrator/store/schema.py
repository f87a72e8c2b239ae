"""The tables. Shell (SQLAlchemy Core). Alembic migrations in ``store/migrations`` create them;
``metadata`` is their single definition.

Times are stored as UTC. The database is the source of truth for all work: Celery messages are
only nudges ("look at these users / timers / messages"), so a lost or duplicated task can delay
work but never lose or repeat it.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

Json = JSON().with_variant(JSONB(), "postgresql")
Id = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER keys only


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware datetime")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


profiles = Table(
    "profiles",
    metadata,
    Column("user_id", String(200), primary_key=True),
    Column("email", String(320)),
    Column("phone", String(32)),
    Column("push_tokens", Json, nullable=False, default=list),
    Column("timezone", String(64)),
    Column("locale", String(35)),
    Column("attributes", Json, nullable=False, default=dict),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# Per-channel consent. ``status``: subscribed | opted_in | unsubscribed | bounced | spam |
# rejected. The last four stop every journey from using the channel from the moment they land.
consents = Table(
    "consents",
    metadata,
    Column("user_id", String(200), primary_key=True),
    Column("channel", String(32), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("source", String(64)),
    Column("updated_at", UTCDateTime, nullable=False),
)

# Every accepted event, stored before the API answers 2xx. ``status``: pending | processed |
# failed (parked with its ``error`` when applying it raised). ``attempts`` counts how often the
# pump handed it out again (a lost task or a dead worker).
events = Table(
    "events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("event_id", String(200), nullable=False, unique=True),
    Column("user_id", String(200), nullable=False),
    Column("name", String(200), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("properties", Json, nullable=False, default=dict),
    Column("received_at", UTCDateTime, nullable=False),
    Column("status", String(16), nullable=False, default="pending"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("claimed_at", UTCDateTime),
    Column("processed_at", UTCDateTime),
    Column("error", Text),
    Index("ix_events_pending", "status", "received_at"),
    Index("ix_events_user_status", "user_id", "status"),
)

journey_versions = Table(
    "journey_versions",
    metadata,
    Column("version", String(64), primary_key=True),
    Column("journey", String(200), nullable=False),
    Column("machine", Json, nullable=False),
    Column("deployed_at", UTCDateTime, nullable=False),
    Column("current", Boolean, nullable=False, default=False),
    Index("ix_journey_versions_journey_current", "journey", "current"),
)

runs = Table(
    "runs",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("journey", String(200), nullable=False),
    Column("version", String(64), nullable=False),
    Column("user_id", String(200), nullable=False),
    Column("status", String(16), nullable=False),  # active | waiting | finished
    Column("step", String(200)),
    Column("generation", Integer, nullable=False),
    Column("started_generation", Integer, nullable=False),
    Column("wake_at", UTCDateTime),
    Column("holdout", Boolean, nullable=False),
    Column("variants", Json, nullable=False),
    Column("trigger", Json, nullable=False),
    Column("entered_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    Column("exit_reason", String(200)),
    Column("converted", Boolean, nullable=False),
    # Journeys whose re-entry rule is not "parallel": at most one unfinished run per user,
    # enforced by the database as well as by the per-user lock.
    Column("exclusive", Boolean, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_runs_user_status", "user_id", "status"),
    Index("ix_runs_journey_entered_at", "journey", "entered_at"),  # journey stats: the cohort
    Index(
        "uq_runs_one_unfinished",
        "journey",
        "user_id",
        unique=True,
        postgresql_where=text("exclusive AND status <> 'finished'"),
        sqlite_where=text("exclusive AND status <> 'finished'"),
    ),
)

# Durable waits. ``status``: pending | claimed | done | cancelled | failed.
timers = Table(
    "timers",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("run_id", String(64), nullable=False),
    Column("user_id", String(200), nullable=False),
    Column("generation", Integer, nullable=False),
    Column("step", String(200), nullable=False),
    Column("fire_at", UTCDateTime, nullable=False),
    Column("status", String(16), nullable=False, default="pending"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("claimed_by", String(100)),
    Column("claimed_at", UTCDateTime),
    Column("fired_at", UTCDateTime),
    Column("error", Text),
    UniqueConstraint("run_id", "generation"),
    Index("ix_timers_due", "status", "fire_at"),
)

# Messages the engine queued. ``status``: pending | sending | sent | skipped | failed |
# unknown | rejected. ``due_at`` moves when quiet hours defer a message or a provider says
# "retry later".
outbox = Table(
    "outbox",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("run_id", String(64), nullable=False),
    Column("user_id", String(200), nullable=False),
    Column("journey", String(200), nullable=False),
    Column("version", String(64), nullable=False),
    Column("step", String(200), nullable=False),
    Column("generation", Integer, nullable=False),
    Column("template", String(200), nullable=False),
    Column("channels", Json, nullable=False),
    Column("prefer_user", Boolean, nullable=False),
    Column("variant", String(200)),
    Column("due_at", UTCDateTime, nullable=False),
    Column("status", String(16), nullable=False, default="pending"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("claimed_at", UTCDateTime),
    Column("channel", String(32)),
    Column("reason", String(64)),
    Column("detail", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("run_id", "step", "generation"),
    Index("ix_outbox_due", "status", "due_at"),
)

# The delivery ledger: one row per (run, step, generation, channel), written before the
# provider is called and marked after. ``status``: sending | sent | retry | failed | unknown |
# rejected. A row left in ``sending`` by a dead process becomes ``unknown``, never resent.
deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("key", String(400), nullable=False, unique=True),
    Column("outbox_id", BigInteger().with_variant(Integer(), "sqlite"), nullable=False),
    Column("run_id", String(64), nullable=False),
    Column("user_id", String(200), nullable=False),
    Column("journey", String(200), nullable=False),
    Column("step", String(200), nullable=False),
    Column("variant", String(200)),
    Column("channel", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("provider_id", String(200)),
    Column("segments", Integer),
    Column("error", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("sent_at", UTCDateTime),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_deliveries_user_created", "user_id", "created_at"),
    Index("ix_deliveries_run_id", "run_id"),  # journey stats: a cohort's deliveries
    # Rows in flight, waiting to retry or of unknown outcome: the metrics count them at every
    # scrape. Partial, so rows leave it once sent and it stays small.
    Index(
        "ix_deliveries_open",
        "status",
        "channel",
        postgresql_where=text("status IN ('sending', 'retry', 'unknown')"),
        sqlite_where=text("status IN ('sending', 'retry', 'unknown')"),
    ),
)

conversions = Table(
    "conversions",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("journey", String(200), nullable=False),
    Column("version", String(64), nullable=False),
    Column("user_id", String(200), nullable=False),
    Column("goal", String(200), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("holdout", Boolean, nullable=False),
    Column("variants", Json, nullable=False),
)

# What happened, for the timeline and statistics: enter, send, skip, defer, exit.
activity = Table(
    "activity",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime, nullable=False),
    Column("journey", String(200), nullable=False),
    Column("run_id", String(64), nullable=False),
    Column("user_id", String(200), nullable=False),
    Column("action", String(16), nullable=False),
    Column("step", String(200)),
    Column("channel", String(32)),
    Column("variant", String(200)),
    Column("reason", String(200)),
    Column("detail", Text),
    Index("ix_activity_journey_at", "journey", "at"),
    Index("ix_activity_run", "run_id"),
)

# What providers reported about deliveries (webhooks): delivered, bounced, opened, clicked...
# ``provider_event_id`` makes a repeated webhook a no-op.
delivery_events = Table(
    "delivery_events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("provider", String(32), nullable=False),
    Column("provider_event_id", String(200), nullable=False, unique=True),
    Column("delivery_key", String(400)),
    Column("provider_id", String(200)),
    Column("event", String(32), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    Column("payload", Json, nullable=False),
    Index("ix_delivery_events_key", "delivery_key"),
)

Index("ix_deliveries_provider_id", deliveries.c.provider_id)
Index("ix_profiles_phone", profiles.c.phone)
