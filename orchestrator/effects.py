"""What the engine asks the outside world to do. Core: plain immutable data.

The engine never performs I/O; it returns these and a driver (the dry-run simulator or the
production runtime) applies them: write the run, schedule or cancel a timer row, queue a
message in the outbox, update the profile. ``Entered`` and ``Exited`` are facts a driver records
for the timeline and for statistics.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping, Union


@dataclass(frozen=True, slots=True)
class Entered:
    run_id: str
    step: str | None
    holdout: bool
    restarted: bool = False


@dataclass(frozen=True, slots=True)
class Send:
    """Queue one message; the channel is chosen at send time by the delivery policy."""

    run_id: str
    step: str
    template: str
    channels: tuple[str, ...]  # in order of preference
    prefer_user: bool  # try the user's preferred_channel first (if it is in ``channels``)
    generation: int
    variant: str | None = None


@dataclass(frozen=True, slots=True)
class StartTimer:
    run_id: str
    generation: int
    fire_at: datetime
    step: str


@dataclass(frozen=True, slots=True)
class CancelTimer:
    run_id: str
    generation: int


@dataclass(frozen=True, slots=True)
class UpdateProfile:
    user_id: str
    changes: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Exited:
    run_id: str
    step: str | None
    reason: str
    converted: bool


Effect = Union[Entered, Send, StartTimer, CancelTimer, UpdateProfile, Exited]
