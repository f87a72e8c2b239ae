"""The one Celery app and its three thin tasks. Shell.

Tasks carry batches of ids and do nothing but call the runtime (see ``work`` and ``sending``),
which re-reads everything under the users' locks: a task delivered twice does its work once.
``acks_late`` with ``reject_on_worker_lost`` off: a task whose worker dies is not redelivered
by the broker in a loop; the timer pump hands its work out again after the lease. Database
hiccups are retried a bounded number of times with backoff; anything else is logged and left
to the pump (the work functions park a user's events or timers that fail on their data).

Logging is ours (``orchestrator.logs``: JSON lines unless ``JOURNEY_LOG_FORMAT=text``, email
addresses and phone numbers redacted), set up through Celery's ``setup_logging`` signal. In
Prometheus multiprocess mode each pool process marks itself dead when it exits.

Start a worker with ``celery -A orchestrator.runtime.celery_app worker`` (see the Procfile).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Celery
from celery.signals import (
    celeryd_init,
    setup_logging,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
)
from sqlalchemy.exc import DBAPIError, OperationalError

from ..logs import configure_from, keep
from . import metrics
from .config import Settings
from .context import Runtime

log = logging.getLogger(__name__)
settings = Settings.from_env()

app = Celery("journey", broker=settings.broker_url)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_acks_late=True,
    task_reject_on_worker_lost=False,
    worker_prefetch_multiplier=1,
    task_default_queue=settings.queue,
    broker_connection_retry_on_startup=True,
    broker_transport_options={"visibility_timeout": 3600},
    worker_hijack_root_logger=False,
)

_runtime: Runtime | None = None
_pid: int | None = None


def runtime() -> Runtime:
    """This process's runtime, created after the fork (connections are not shared)."""
    global _runtime, _pid
    if _runtime is None or _pid != os.getpid():
        _runtime = Runtime.create(settings)
        _pid = os.getpid()
    return _runtime


@worker_process_init.connect
def _fresh_runtime(**_: Any) -> None:
    """A forked pool process must not use the parent's pooled connections."""
    global _runtime
    if _runtime is not None:
        _runtime.engine.dispose(close=False)
    _runtime = None


@celeryd_init.connect  # type: ignore[untyped-decorator]
def _node_name(sender: str | None = None, **_: Any) -> None:
    """The worker's node name (``name@host``) looks like an email address: keep it in logs."""
    keep(sender or "")


@setup_logging.connect  # type: ignore[untyped-decorator]
def _logging(loglevel: int | str | None = None, **_: Any) -> None:
    """Our handler instead of Celery's (``worker_hijack_root_logger`` stays off)."""
    configure_from(settings.log_format, settings.log_level, default_level=loglevel or "INFO")


@worker_process_shutdown.connect  # type: ignore[untyped-decorator]
def _process_gone(pid: int | None = None, **_: Any) -> None:
    metrics.mark_dead(pid or os.getpid())


@worker_ready.connect
def _deploy_on_start(**_: Any) -> None:
    if os.environ.get("JOURNEY_DEPLOY_ON_START", "1") == "1":
        deployed = runtime().deploy()
        log.info("journeys deployed: %s", deployed)


RETRY = dict(autoretry_for=(OperationalError, DBAPIError), retry_backoff=1, retry_backoff_max=5,
             max_retries=5, retry_jitter=True)


@app.task(name="journey.process_users", **RETRY)
def process_users(user_ids: list[str]) -> dict[str, int]:
    done = runtime().process_users(user_ids)
    return {"applied": done.applied, "failed": done.failed}


@app.task(name="journey.fire_timers", **RETRY)
def fire_timers(timer_ids: list[int]) -> dict[str, int]:
    done = runtime().fire_timers(timer_ids)
    return {"applied": done.applied, "skipped": done.skipped, "failed": done.failed}


@app.task(name="journey.send_messages", **RETRY)
def send_messages(outbox_ids: list[int]) -> dict[str, int]:
    report = runtime().send_messages(outbox_ids)
    return {"sent": report.sent, "skipped": report.skipped}


@app.task(name="journey.noop")
def noop(_: Any = None) -> None:
    """Does nothing: the baseline of the throughput benchmark."""
