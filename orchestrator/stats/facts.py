"""The facts every statistic is computed from. Core: plain immutable data, no I/O.

Production reads them from the database (``stats.from_store``), the dry-run collects them while
it simulates (``simulate.Simulator``); the funnel, attribution and experiment code in this
package only ever sees a :class:`History`, so a preview and production count alike.

Vocabulary:
* a *run* is one user's pass through one journey (``RunFact``);
* a *message* is one outcome of a send step for a run: ``send`` (handed to a provider),
  ``skip`` (not sent, with the reason) or ``defer`` (held by quiet hours, decided again later);
* a *delivery* is a message a provider accepted, with what the provider told us later
  (delivered, bounced, opened, clicked);
* a *reach* is a run arriving at a step that does something observable (a send, a wait, or a
  split, with the variant taken);
* a *conversion* is a goal event inside the journey's conversion window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from ..effects import quick_init


@quick_init
@dataclass(frozen=True, slots=True)
class RunFact:
    run_id: str
    user_id: str
    entered_at: datetime
    holdout: bool
    variants: tuple[tuple[str, str], ...]  # (split step, variant) the run went through
    finished: bool
    exit_step: str | None
    exit_reason: str | None  # goal:EVENT | exit:EVENT | completed | holdout_window_ended | ...
    converted: bool
    restarts: int = 0


@quick_init
@dataclass(frozen=True, slots=True)
class MessageFact:
    run_id: str
    step: str
    at: datetime
    action: str  # send | skip | defer
    channel: str | None = None
    variant: str | None = None
    reason: str | None = None  # why a skip or a deferral


# Delivery statuses (the delivery ledger's, moved forward by provider webhooks).
DELIVERED_STATUSES = frozenset({"sent", "delivered"})  # the message reached the provider or the user
FAILED_STATUSES = frozenset({"bounced", "failed", "rejected"})


@quick_init
@dataclass(frozen=True, slots=True)
class DeliveryFact:
    run_id: str
    user_id: str
    journey: str
    step: str
    channel: str
    at: datetime  # when it was handed to the provider
    status: str  # sent | delivered | bounced | failed | rejected | unknown
    opened: bool = False
    clicked: bool = False

    @property
    def counts_for_attribution(self) -> bool:
        """Whether this message can have moved the user: it went out and did not fail."""
        return self.status in DELIVERED_STATUSES


@quick_init
@dataclass(frozen=True, slots=True)
class ReachFact:
    run_id: str
    step: str
    variant: str | None = None  # at a split: the variant taken


@quick_init
@dataclass(frozen=True, slots=True)
class ConversionFact:
    run_id: str
    user_id: str
    journey: str
    goal: str
    at: datetime


@dataclass
class History:
    """Everything known about one journey's runs (optionally since a moment).

    ``deliveries`` holds every delivery to these users that can compete for a conversion:
    this journey's and other journeys' (attribution credits the last one before the goal)."""

    journey: str
    runs: list[RunFact] = field(default_factory=list)
    messages: list[MessageFact] = field(default_factory=list)
    deliveries: list[DeliveryFact] = field(default_factory=list)
    reaches: list[ReachFact] = field(default_factory=list)
    conversions: list[ConversionFact] = field(default_factory=list)
    since: datetime | None = None
    until: datetime | None = None
    simulated: bool = False  # a dry-run: no provider feedback (delivered/opened) exists
