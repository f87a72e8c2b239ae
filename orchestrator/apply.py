"""Applying an engine :class:`Outcome` to a store. Core: talks only to the ``EffectSink``
protocol; the dry-run's in-memory store and the production database store implement it.

One outcome is applied as a unit (production wraps this in one transaction): save the run,
then each effect in order.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping, Protocol

from .effects import Assigned, CancelTimer, Entered, Exited, Send, StartTimer, UpdateProfile
from .engine import Outcome, Run


class EffectSink(Protocol):
    def save_run(self, run: Run) -> None: ...
    def schedule_timer(self, run: Run, timer: StartTimer) -> None: ...
    def cancel_timer(self, run: Run, timer: CancelTimer) -> None: ...
    def queue_message(self, run: Run, send: Send, now: datetime) -> None: ...
    def update_profile(self, user_id: str, changes: Mapping[str, Any]) -> None: ...
    def record_entry(self, run: Run, entered: Entered, now: datetime) -> None: ...
    def record_exit(self, run: Run, exited: Exited, now: datetime) -> None: ...
    def record_assignment(self, run: Run, assigned: Assigned, now: datetime) -> None: ...


def apply_outcome(sink: EffectSink, outcome: Outcome, now: datetime) -> None:
    run = outcome.run
    sink.save_run(run)
    for effect in outcome.effects:
        # Most frequent first; the effect types are disjoint, so the order changes nothing else.
        match effect:
            case Send():
                sink.queue_message(run, effect, now)
            case StartTimer():
                sink.schedule_timer(run, effect)
            case Exited():
                sink.record_exit(run, effect, now)
            case Entered():
                sink.record_entry(run, effect, now)
            case CancelTimer():
                sink.cancel_timer(run, effect)
            case UpdateProfile():
                sink.update_profile(effect.user_id, effect.changes)
            case Assigned():
                sink.record_assignment(run, effect, now)
