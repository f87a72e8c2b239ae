"""The funnel of one journey: how many entered, were held out, reached each step, were sent
or skipped (and why), were delivered, opened, clicked, converted, and how runs ended. Core:
pure counting over a :class:`History`; the dry-run summary and ``journey stats`` both use it.

Counting rules:
* ``entries`` counts every start, restarts included; ``runs`` counts runs, ``users`` people.
* A step's ``reached`` counts arrivals at steps that do something observable: a message
  queued at a send step, a timer started at a wait, a run assigned a variant at a split, a run
  ending at an exit step. Branch and update_profile steps pass runs straight on; their runs are
  counted at the step they lead to (``reached`` is ``None`` for them).
* ``sent`` counts messages handed to a provider; ``skipped`` counts messages not sent, by
  reason; ``deferred`` counts how often quiet hours held a message (it is then sent or skipped
  later, and counted there too).
* ``delivered``, ``bounced``, ``failed``, ``opened`` and ``clicked`` come from provider
  webhooks; a dry-run has none (they are ``None``).
* ``converted`` counts runs whose goal came inside the conversion window, held-out runs
  included; ``credited`` says which message got the credit (see ``attribution``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..machine import ExitState, Machine, SendState, SplitState, WaitForState, WaitState
from .attribution import Touch, attribute
from .facts import FAILED_STATUSES, History

OBSERVED_KINDS = (SendState, WaitState, WaitForState, SplitState, ExitState)


@dataclass
class StepRow:
    step: str
    kind: str
    reached: int | None = None
    sent: Counter[str] = field(default_factory=Counter)  # by channel
    skipped: Counter[str] = field(default_factory=Counter)  # by reason
    deferred: int = 0
    delivered: int | None = None
    bounced: int | None = None
    failed: int | None = None
    opened: int | None = None
    clicked: int | None = None
    credited: Counter[str] = field(default_factory=Counter)  # conversions credited, by channel
    variants: Counter[str] = field(default_factory=Counter)  # split steps: runs per variant

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"step": self.step, "kind": self.kind, "reached": self.reached}
        if self.kind == "send":
            out |= {
                "sent": dict(sorted(self.sent.items())),
                "sent_total": sum(self.sent.values()),
                "skipped": dict(sorted(self.skipped.items())),
                "deferred": self.deferred,
                "delivered": self.delivered,
                "bounced": self.bounced,
                "failed": self.failed,
                "opened": self.opened,
                "clicked": self.clicked,
                "credited": dict(sorted(self.credited.items())),
            }
        if self.kind == "split":
            out["variants"] = dict(sorted(self.variants.items()))
        return out


@dataclass
class ChannelRow:
    sent: int = 0
    delivered: int | None = None
    bounced: int | None = None
    failed: int | None = None
    opened: int | None = None
    clicked: int | None = None
    credited: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Funnel:
    journey: str
    simulated: bool
    users: int = 0
    runs: int = 0
    entries: int = 0
    restarts: int = 0
    held_out: int = 0
    steps: list[StepRow] = field(default_factory=list)
    channels: dict[str, ChannelRow] = field(default_factory=dict)
    skipped: Counter[str] = field(default_factory=Counter)
    deferred: int = 0
    converted: int = 0
    converted_held_out: int = 0
    credited_to_messages: int = 0
    credited_to_no_message: int = 0
    credited_elsewhere: Counter[str] = field(default_factory=Counter)  # other journey -> n
    exited: Counter[str] = field(default_factory=Counter)
    in_progress: int = 0

    held_out_entries: int = 0  # entries (restarts included) that were held out

    @property
    def sent_total(self) -> int:
        return sum(c.sent for c in self.channels.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "journey": self.journey,
            "simulated": self.simulated,
            "users": self.users,
            "runs": self.runs,
            "entries": self.entries,
            "restarts": self.restarts,
            "held_out": self.held_out,
            "held_out_entries": self.held_out_entries,
            "steps": [s.to_dict() for s in self.steps],
            "channels": {ch: row.to_dict() for ch, row in sorted(self.channels.items())},
            "sent_total": self.sent_total,
            "skipped": dict(sorted(self.skipped.items())),
            "deferred": self.deferred,
            "converted": self.converted,
            "converted_held_out": self.converted_held_out,
            "credited": {
                "messages": self.credited_to_messages,
                "no_message": self.credited_to_no_message,
                "other_journeys": dict(sorted(self.credited_elsewhere.items())),
            },
            "exited": dict(sorted(self.exited.items())),
            "in_progress": self.in_progress,
        }


def build_funnel(machine: Machine, history: History) -> Funnel:
    f = Funnel(history.journey, history.simulated)
    feedback = not history.simulated
    runs = {r.run_id: r for r in history.runs}
    f.runs = len(runs)
    f.users = len({r.user_id for r in runs.values()})
    f.restarts = sum(r.restarts for r in runs.values())
    f.entries = f.runs + f.restarts
    f.held_out = sum(1 for r in runs.values() if r.holdout)
    f.held_out_entries = sum(1 + r.restarts for r in runs.values() if r.holdout)
    f.in_progress = sum(1 for r in runs.values() if not r.finished)
    f.exited = Counter(r.exit_reason or "unknown" for r in runs.values() if r.finished)
    f.converted = sum(1 for r in runs.values() if r.converted)
    f.converted_held_out = sum(1 for r in runs.values() if r.converted and r.holdout)

    rows: dict[str, StepRow] = {}
    for name, state in machine.states.items():
        row = rows[name] = StepRow(name, state.kind)
        if isinstance(state, OBSERVED_KINDS):
            row.reached = 0
        if isinstance(state, SendState) and feedback:
            row.delivered = row.bounced = row.failed = row.opened = row.clicked = 0
    f.steps = list(rows.values())

    # Counted by key first: one pass in C over hundreds of thousands of facts, then a loop over
    # the few distinct keys.
    for (step, variant), n in Counter((r.step, r.variant) for r in history.reaches).items():
        hit = rows.get(step)
        if hit is None or hit.reached is None:
            continue
        if hit.kind in ("send", "wait", "wait_for"):
            hit.reached += n
        elif hit.kind == "split" and variant is not None:
            hit.reached += n
            hit.variants[variant] += n
    assigned = {r.step for r in history.reaches if r.variant is not None}
    for r in runs.values():
        for step, variant in r.variants:
            split = rows.get(step)
            if split is not None and split.kind == "split" and step not in assigned:
                # History written before splits were recorded: the runs' latest variants.
                assert split.reached is not None
                split.reached += 1
                split.variants[variant] += 1
        if r.finished and r.exit_step in rows:
            state = machine.states[r.exit_step]
            if isinstance(state, ExitState) and r.exit_reason == state.reason:
                row = rows[r.exit_step]
                assert row.reached is not None
                row.reached += 1

    def channel(name: str) -> ChannelRow:
        if name not in f.channels:
            f.channels[name] = ChannelRow()
            if feedback:
                c = f.channels[name]
                c.delivered = c.bounced = c.failed = c.opened = c.clicked = 0
        return f.channels[name]

    outcomes = Counter(
        (m.step, m.action, m.channel if m.action == "send" else m.reason)
        for m in history.messages if m.run_id in runs
    )
    for (step, action, detail), n in outcomes.items():
        if step not in rows:
            continue
        row = rows[step]
        if action == "send" and detail:
            row.sent[detail] += n
            channel(detail).sent += n
        elif action == "skip":
            row.skipped[detail or "unknown"] += n
            f.skipped[detail or "unknown"] += n
        elif action == "defer":
            row.deferred += n
            f.deferred += n

    if feedback:
        for d in history.deliveries:
            if d.journey != history.journey or d.run_id not in runs or d.step not in rows:
                continue
            row, c = rows[d.step], channel(d.channel)
            delivered = d.status == "delivered" or d.opened or d.clicked
            for target in (row, c):
                assert target.delivered is not None and target.bounced is not None
                assert target.failed is not None and target.opened is not None
                assert target.clicked is not None
                target.delivered += delivered
                target.bounced += d.status == "bounced"
                target.failed += d.status in FAILED_STATUSES and d.status != "bounced"
                target.opened += d.opened or d.clicked
                target.clicked += d.clicked

    credited = attribute(history, machine.conversion_window)
    for conv in history.conversions:
        if conv.run_id not in runs:
            continue
        touch: Touch | None = credited.get(conv.run_id)
        if touch is None:
            f.credited_to_no_message += 1
        elif touch.journey != history.journey:
            f.credited_elsewhere[touch.journey] += 1
        else:
            f.credited_to_messages += 1
            if touch.step in rows:
                rows[touch.step].credited[touch.channel] += 1
            channel(touch.channel).credited += 1
    return f
