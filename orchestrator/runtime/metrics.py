"""Operations metrics for Prometheus (``GET /metrics``). Shell.

Owns the metric names, what each counts, and the exposition. The code doing the work records
through the functions here, once its transaction has committed:

* ``journey_steps_applied_total{journey}``: engine outcomes applied by workers, events routed
  and timers fired (``work``);
* ``journey_timer_lateness_seconds``: ``fired_at - fire_at`` of each timer fired (``work``);
* ``journey_deliveries_total{channel,status}``: what became of each message: sent, retry,
  throttled (our own rate limit), rejected, failed, unknown or skipped (``sending``);
* ``journey_webhook_failures_total{provider,reason}``: provider webhooks refused (``webhooks``).

:class:`QueueCollector` counts the queues in the database at scrape time (pending events, due
and waiting timers, due outbox messages, parked work, ledger rows in flight or unknown).

Workers are separate processes. With ``PROMETHEUS_MULTIPROC_DIR`` set before a process starts,
prometheus_client keeps its counters in files there and :func:`exposition` sums every
process's files (multiprocess mode); otherwise it shows this process's own. See
docs/operations.md, "Monitoring".
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import ParamSpec

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Before prometheus_client is imported, which picks multiprocess mode when the variable merely
# exists: set but empty (``PROMETHEUS_MULTIPROC_DIR=`` in .env) means off, not "the current
# folder". When set, the folder must exist before the first counter is touched.
if not os.environ.get(MULTIPROC_ENV, "x").strip():
    del os.environ[MULTIPROC_ENV]
if os.environ.get(MULTIPROC_ENV):
    os.makedirs(os.environ[MULTIPROC_ENV], exist_ok=True)

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from sqlalchemy import Connection, Engine, func, literal_column, select
from sqlalchemy.exc import SQLAlchemyError

from ..store.schema import deliveries, events, outbox, timers

log = logging.getLogger(__name__)

STEPS = Counter("journey_steps_applied", "Engine outcomes applied by workers (events routed, timers fired)",
                ["journey"])
DELIVERIES = Counter("journey_deliveries", "Messages by outcome: sent, retry, throttled, rejected, "
                     "failed, unknown, skipped", ["channel", "status"])
LATENESS = Histogram("journey_timer_lateness_seconds", "Seconds between a timer's fire_at and its firing",
                     buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600))
WEBHOOK_FAILURES = Counter("journey_webhook_failures", "Provider webhook requests refused",
                           ["provider", "reason"])
# Ledger states worth a gauge: in flight, waiting to retry, or unknown (look at those after an
# incident). Final states grow for ever; their rates are journey_deliveries_total.
OPEN_LEDGER = ("sending", "retry", "unknown")


P = ParamSpec("P")


def _harmless(record: Callable[P, None]) -> Callable[P, None]:
    """Counting runs after the work has committed and before its messages are sent: a metrics
    failure (the multiprocess folder gone, say) is logged, never raised into the work."""

    @functools.wraps(record)
    def safe(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            record(*args, **kwargs)
        except Exception:
            log.exception("metrics: %s could not be recorded", record.__name__)

    return safe


@_harmless
def steps_applied(by_journey: Mapping[str, int]) -> None:
    for journey, n in by_journey.items():
        STEPS.labels(journey).inc(n)


@_harmless
def timers_fired(lateness: Iterable[float]) -> None:
    for seconds in lateness:
        LATENESS.observe(max(seconds, 0.0))


@_harmless
def deliveries_recorded(tally: Mapping[tuple[str, str], int]) -> None:
    """Count outcomes, keyed ``(channel, status)``."""
    for (channel, status), n in tally.items():
        DELIVERIES.labels(channel, status).inc(n)


@_harmless
def webhook_refused(provider: str, reason: str) -> None:
    WEBHOOK_FAILURES.labels(provider, reason).inc()


@_harmless
def mark_dead(pid: int) -> None:
    """A worker process exits (multiprocess mode): drop its live-gauge files."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def _count(conn: Connection, table: object, *where: object) -> int:
    return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())  # type: ignore[arg-type]


class QueueCollector(Collector):
    """Queue depths, counted in the database each time Prometheus scrapes. Every query is a
    COUNT over an index on (status, ...): cheap on SQLite and PostgreSQL alike."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime]) -> None:
        self.engine = engine
        self.clock = clock

    def collect(self) -> Iterable[Metric]:
        now = self.clock()
        try:
            with self.engine.connect() as conn:
                counts = {
                    "pending_events": _count(conn, events, events.c.status == "pending"),
                    "due_timers": _count(conn, timers, timers.c.status == "pending", timers.c.fire_at <= now),
                    "waiting_timers": _count(conn, timers, timers.c.status == "pending"),
                    "outbox_pending": _count(conn, outbox, outbox.c.status == "pending", outbox.c.due_at <= now),
                }
                parked = {"events": _count(conn, events, events.c.status == "failed"),
                          "timers": _count(conn, timers, timers.c.status == "failed")}
                # Literal states, so that SQLite matches the partial index ix_deliveries_open.
                ledger = conn.execute(
                    select(deliveries.c.channel, deliveries.c.status, func.count())
                    .where(deliveries.c.status.in_([literal_column(f"'{s}'") for s in OPEN_LEDGER]))
                    .group_by(deliveries.c.status, deliveries.c.channel)
                ).all()
        except SQLAlchemyError:
            log.exception("metrics: the queue counts could not be read")
            yield GaugeMetricFamily("journey_database_up", "1 when the queue counts could be read", value=0)
            return
        yield GaugeMetricFamily("journey_database_up", "1 when the queue counts could be read", value=1)
        yield GaugeMetricFamily("journey_pending_events", "Events stored and not yet applied",
                                value=counts["pending_events"])
        yield GaugeMetricFamily("journey_due_timers", "Pending timers whose fire_at has passed",
                                value=counts["due_timers"])
        yield GaugeMetricFamily("journey_waiting_timers", "Pending timers, due or not",
                                value=counts["waiting_timers"])
        yield GaugeMetricFamily("journey_outbox_pending", "Queued messages due now and not yet sent",
                                value=counts["outbox_pending"])
        g = GaugeMetricFamily("journey_parked", "Work parked as failed with its error", labels=["kind"])
        for kind, n in parked.items():
            g.add_metric([kind], n)
        yield g
        g = GaugeMetricFamily("journey_ledger_deliveries", "Delivery ledger rows in flight (sending), "
                              "waiting to retry or of unknown outcome", labels=["channel", "status"])
        for channel, status, n in ledger:
            g.add_metric([channel, status], n)
        yield g


class _ThisProcess(Collector):
    """This process's own metrics: the default registry."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def exposition(engine: Engine, clock: Callable[[], datetime]) -> tuple[bytes, str]:
    """The ``/metrics`` body and its content type: every process's counters in multiprocess
    mode (else this process's), and the queue gauges."""
    registry = CollectorRegistry(auto_describe=False)
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        multiprocess.MultiProcessCollector(registry, path)  # type: ignore[no-untyped-call]
    else:
        registry.register(_ThisProcess())
    registry.register(QueueCollector(engine, clock))
    return generate_latest(registry), CONTENT_TYPE_LATEST

