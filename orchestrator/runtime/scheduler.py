"""The scheduler process: an APScheduler job that runs the timer pump every ``JOURNEY_TICK``
seconds and hands due work to the Celery workers. Shell. Safe to run two: claims use
``FOR UPDATE SKIP LOCKED``. Start with ``journey scheduler`` (see the Procfile)."""

from __future__ import annotations

import logging
import signal
from typing import Any

from apscheduler.schedulers.blocking import BlockingScheduler

from .config import Settings
from .context import utcnow
from .dispatch import CeleryDispatcher
from .pump import Pump

log = logging.getLogger(__name__)


def make_pump(settings: Settings) -> Pump:
    from ..store.database import make_engine
    from .celery_app import app

    return Pump(make_engine(settings.database_url), CeleryDispatcher(app, settings.queue),
                batch=settings.batch, lease=settings.lease)


def run(settings: Settings | None = None) -> None:
    settings = settings or Settings.from_env()
    pump = make_pump(settings)
    scheduler = BlockingScheduler(timezone="UTC")

    def tick() -> None:
        t = pump.tick(utcnow())
        if t.timers or t.messages or t.events or t.reclaimed:
            log.info("tick: %s", t, extra={"timers": t.timers, "messages": t.messages, "events": t.events,
                                            "reclaimed": t.reclaimed})

    scheduler.add_job(tick, "interval", seconds=settings.tick, id="timer-pump", max_instances=1,
                      coalesce=True, misfire_grace_time=None)

    def stop(*_: Any) -> None:
        scheduler.shutdown(wait=False)

    signal.signal(signal.SIGTERM, stop)
    log.info("scheduler: pump every %ss on %s", settings.tick, settings.database_url.split("@")[-1])
    tick()  # at once: timers that came due while no scheduler ran
    scheduler.start()
