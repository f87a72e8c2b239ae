"""Shared helpers for the engine, policy and state-machine tests.

Machines are compiled from small YAML journeys (or the shipped ones) with the repository's own
catalog and templates. Time is always an explicit, timezone-aware UTC ``datetime``: the engine
never reads the clock, so neither do these helpers.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping

from orchestrator.catalog import Catalog, load_catalog
from orchestrator.compiler import compile_journey, compile_text
from orchestrator.effects import CancelTimer, Effect, Entered, Exited, Send, StartTimer, UpdateProfile
from orchestrator.engine import (
    HOLDOUT_STEP,
    Event,
    Outcome,
    Run,
    TimerFired,
    advance,
    bucket,
    route_event,
)
from orchestrator.machine import Machine
from orchestrator.render import Renderer

ROOT = Path(__file__).resolve().parents[1]
UTC = timezone.utc

CART_ITEMS = [
    {"sku": "TEE-BLK-M", "name": "Black tee (M)", "price": 25.0, "quantity": 2,
     "image_url": "https://cdn.example.com/p/tee-blk.jpg"},
]
CART = {"cart_id": "cart-1", "items": CART_ITEMS, "total": 50.0, "currency": "USD"}
EMPTY_CART = {"cart_id": "cart-1", "items": [], "total": 0.0, "currency": "USD"}
LESSON = {"course": "Spanish", "lesson": "Ordering food", "lesson_number": 12, "streak": 5}
ORDER = {"order_id": "ord-1", "cart_id": "cart-1", "total": 50.0, "currency": "USD"}


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


@lru_cache(maxsize=1)
def catalog() -> Catalog:
    return load_catalog(ROOT / "catalog.yaml")


@lru_cache(maxsize=1)
def renderer() -> Renderer:
    return Renderer(ROOT / "templates")


def compile_yaml(text: str, name: str = "t") -> Machine:
    """A machine from a small journey written in the test (dedented)."""
    return compile_text(textwrap.dedent(text), "t.yaml", name, catalog(), renderer())


@lru_cache(maxsize=None)
def shipped(name: str) -> Machine:
    """One of the journeys in journeys/ (machines are immutable, so caching is safe)."""
    return compile_journey(ROOT / "journeys" / f"{name}.yaml")


def is_held_out(machine: Machine, user_id: str) -> bool:
    return machine.holdout > 0 and bucket(machine.journey, user_id, HOLDOUT_STEP) * 100 < machine.holdout


def users_where(machine: Machine, held_out: bool, count: int = 1, prefix: str = "u") -> list[str]:
    """The first ``count`` user ids ``prefix0, prefix1, ...`` that are (not) held out."""
    found: list[str] = []
    i = 0
    while len(found) < count:
        uid = f"{prefix}{i}"
        if is_held_out(machine, uid) == held_out:
            found.append(uid)
        i += 1
    return found


def in_journey_user(machine: Machine, prefix: str = "u") -> str:
    """A user id that is not held out of ``machine``."""
    return users_where(machine, held_out=False, prefix=prefix)[0]


def held_out_user(machine: Machine, prefix: str = "u") -> str:
    return users_where(machine, held_out=True, prefix=prefix)[0]


def of_type(effects: Iterable[Effect], kind: type) -> list[Any]:
    return [e for e in effects if isinstance(e, kind)]


def all_effects(outcomes: Iterable[Outcome]) -> list[Effect]:
    return [e for o in outcomes for e in o.effects]


@dataclass
class Driver:
    """A minimal in-memory driver around ``route_event``/``advance`` for one machine.

    It keeps every run, applies ``UpdateProfile`` to the profiles, remembers every timer ever
    started (stale ones included, as a real timer table might still fire them) and logs every
    effect. Nothing here reads the clock: callers pass the time of each stimulus.
    """

    machine: Machine
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: dict[str, Run] = field(default_factory=dict)
    timers: list[StartTimer] = field(default_factory=list)
    log: list[Effect] = field(default_factory=list)
    counter: int = 0

    def profile(self, user_id: str) -> dict[str, Any]:
        return self.profiles.setdefault(user_id, {"id": user_id})

    def active(self, user_id: str) -> list[Run]:
        return [r for r in self.runs.values() if r.user_id == user_id and not r.finished]

    def runs_of(self, user_id: str) -> list[Run]:
        return [r for r in self.runs.values() if r.user_id == user_id]

    def apply(self, outcome: Outcome) -> Outcome:
        self.runs[outcome.run.run_id] = outcome.run
        for effect in outcome.effects:
            self.log.append(effect)
            if isinstance(effect, StartTimer):
                self.timers.append(effect)
            elif isinstance(effect, UpdateProfile):
                self.profile(effect.user_id).update(effect.changes)
        return outcome

    def event(
        self, user_id: str, name: str, at: datetime, props: Mapping[str, Any] | None = None
    ) -> list[Outcome]:
        self.counter += 1
        run_id = f"{self.machine.journey}:{user_id}:{self.counter}"
        ev = Event(user_id, name, at, dict(props or {}))
        outcomes = route_event(
            self.machine, self.active(user_id), self.profile(user_id), ev, at, run_id
        )
        return [self.apply(o) for o in outcomes]

    def fire(self, timer: StartTimer, at: datetime | None = None) -> Outcome:
        """Fire ``timer`` (at its own time unless ``at`` is given), stale or not."""
        run = self.runs[timer.run_id]
        out = advance(
            self.machine,
            run,
            TimerFired(timer.run_id, timer.generation),
            self.profile(run.user_id),
            at or timer.fire_at,
        )
        return self.apply(out)

    def last_timer(self, run_id: str) -> StartTimer:
        return [t for t in self.timers if t.run_id == run_id][-1]

    def fire_current(self, run_id: str) -> Outcome:
        """Fire the timer of the run's current wait."""
        run = self.runs[run_id]
        timer = next(t for t in self.timers if t.run_id == run_id and t.generation == run.generation)
        return self.fire(timer)

    def sends(self) -> list[Send]:
        return of_type(self.log, Send)


__all__ = [
    "CART",
    "CART_ITEMS",
    "EMPTY_CART",
    "LESSON",
    "ORDER",
    "ROOT",
    "UTC",
    "CancelTimer",
    "Driver",
    "Entered",
    "Event",
    "Exited",
    "Send",
    "StartTimer",
    "TimerFired",
    "UpdateProfile",
    "all_effects",
    "catalog",
    "compile_yaml",
    "held_out_user",
    "in_journey_user",
    "is_held_out",
    "of_type",
    "renderer",
    "shipped",
    "users_where",
    "utc",
]
