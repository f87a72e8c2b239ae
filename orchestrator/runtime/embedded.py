"""Embedded mode: the whole service in one process on SQLite, for trying it on a laptop.
Shell. The API, the timer pump (APScheduler in a background thread) and the work itself (one
background thread) run together; no broker. The code paths are the production ones: the same
``Runtime`` work functions behind the dispatcher interface, the same ``Pump``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler

from ..store.database import upgrade
from .config import Settings
from .context import Runtime, utcnow
from .dispatch import BackgroundDispatcher
from .pump import Pump

log = logging.getLogger(__name__)


@dataclass
class Embedded:
    runtime: Runtime
    dispatcher: BackgroundDispatcher
    pump: Pump
    scheduler: BackgroundScheduler

    def stop(self) -> None:
        self.scheduler.shutdown(wait=True)
        self.dispatcher.stop()
        self.runtime.engine.dispose()


def start(settings: Settings) -> Embedded:
    """Migrate, deploy the journeys, start the worker thread and the pump."""
    upgrade(settings.database_url)
    runtime = Runtime.create(settings)
    runtime.deploy()
    dispatcher = BackgroundDispatcher(runtime)
    pump = Pump(runtime.engine, dispatcher, batch=settings.batch, lease=settings.lease)
    scheduler = BackgroundScheduler(timezone="UTC")
    scheduler.add_job(lambda: pump.tick(utcnow()), "interval", seconds=settings.tick,
                      id="timer-pump", max_instances=1, coalesce=True)
    scheduler.start()
    return Embedded(runtime, dispatcher, pump, scheduler)


def serve(settings: Settings, host: str, port: int) -> None:
    import uvicorn

    from ..api import create_app

    embedded = start(settings)
    app: Any = create_app(embedded.runtime, embedded.dispatcher)
    try:
        # log_config=None: uvicorn's loggers go through ours (``journey serve`` configured them).
        uvicorn.run(app, host=host, port=port, log_level="info", log_config=None)
    finally:
        embedded.stop()
