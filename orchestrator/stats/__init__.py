"""Measurement: funnels, conversion attribution and experiments over a :class:`History`.
Core (pure). ``from_store`` (shell) reads a History from the database; the dry-run builds one
while it simulates. Everything a report shows comes from :func:`journey_stats`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..machine import Machine
from .daily import Day, by_day
from .experiments import MIN_CONVERSIONS, MIN_USERS, Experiment, build_experiments
from .facts import History
from .funnel import Funnel, build_funnel


@dataclass
class JourneyStats:
    journey: str
    version: str
    history: History
    funnel: Funnel
    experiments: list[Experiment]
    daily: list[Day]
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        h = self.history
        return {
            "journey": self.journey,
            "version": self.version,
            "simulated": h.simulated,
            "since": h.since.isoformat() if h.since else None,
            "until": h.until.isoformat() if h.until else None,
            "confidence": self.confidence,
            "funnel": self.funnel.to_dict(),
            "experiments": [e.to_dict() for e in self.experiments],
            "daily": [d.to_dict() for d in self.daily],
        }


def journey_stats(machine: Machine, history: History, *, confidence: float = 0.95,
                  min_users: int = MIN_USERS, min_conversions: int = MIN_CONVERSIONS) -> JourneyStats:
    return JourneyStats(
        machine.journey, machine.version, history, build_funnel(machine, history),
        build_experiments(machine, history, confidence=confidence, min_users=min_users,
                          min_conversions=min_conversions),
        by_day(history), confidence,
    )


__all__ = ["Day", "Experiment", "Funnel", "History", "JourneyStats", "journey_stats"]
