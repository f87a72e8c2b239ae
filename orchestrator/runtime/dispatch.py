"""Handing work to whoever does it. Shell.

* :class:`CeleryDispatcher` (production) sends a Celery task per batch; workers call the
  :class:`~orchestrator.runtime.context.Runtime` methods.
* :class:`InlineDispatcher` does the work at once in the calling thread (tests, benchmarks).
* :class:`BackgroundDispatcher` (embedded mode) queues the work for one background thread, so
  the API answers at once and one user's work is still applied serially.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Callable, Sequence

from .context import Runtime

log = logging.getLogger(__name__)


class InlineDispatcher:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def process_users(self, user_ids: Sequence[str]) -> None:
        self.runtime.process_users(user_ids)

    def fire_timers(self, timer_ids: Sequence[int]) -> None:
        self.runtime.fire_timers(timer_ids)

    def send_messages(self, outbox_ids: Sequence[int]) -> None:
        self.runtime.send_messages(outbox_ids)


class BackgroundDispatcher:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._queue: queue.Queue[tuple[Callable[[Sequence[Any]], object], Sequence[Any]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="journey-worker", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, args = item
            try:
                fn(args)
            except Exception:  # noqa: BLE001 - the pump hands the work out again after the lease
                name = getattr(fn, "__name__", str(fn))
                log.exception("embedded worker: %s failed", name, extra={"task": name, "batch": len(args)})
            finally:
                self._queue.task_done()

    def process_users(self, user_ids: Sequence[str]) -> None:
        self._queue.put((self.runtime.process_users, list(user_ids)))

    def fire_timers(self, timer_ids: Sequence[int]) -> None:
        self._queue.put((self.runtime.fire_timers, list(timer_ids)))

    def send_messages(self, outbox_ids: Sequence[int]) -> None:
        self._queue.put((self.runtime.send_messages, list(outbox_ids)))

    def join(self) -> None:
        self._queue.join()

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)


class CeleryDispatcher:
    def __init__(self, app: Any, queue_name: str) -> None:
        self.app = app
        self.queue = queue_name

    def _send(self, task: str, args: Sequence[Any]) -> None:
        self.app.send_task(task, args=[list(args)], queue=self.queue)

    def process_users(self, user_ids: Sequence[str]) -> None:
        self._send("journey.process_users", user_ids)

    def fire_timers(self, timer_ids: Sequence[int]) -> None:
        self._send("journey.fire_timers", timer_ids)

    def send_messages(self, outbox_ids: Sequence[int]) -> None:
        self._send("journey.send_messages", outbox_ids)
