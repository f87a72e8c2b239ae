"""The dry-run driver: the real engine, policies and templates on a virtual clock with an
in-memory store. Core: no I/O beyond reading templates; time only moves when the simulator
moves it.

Everything that happens is put on one agenda ordered by (time, arrival order): the users'
events, the timers the engine starts, and messages deferred by quiet hours. The simulator pops
the earliest item, hands it to the same functions production uses (``route_event``,
``advance``, ``apply_outcome``, ``outbox.prepare``) and records a timeline entry for each
entry, message, skip, deferral and exit. Same input, same output: nothing depends on the
wall clock, on hash seeds or on dict ordering beyond insertion.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

from .apply import apply_outcome
from .effects import Assigned, CancelTimer, Entered, Exited, Send, StartTimer
from .engine import PSEUDO_STEPS, Event, Run, TimerFired, advance, route_event, user_view
from .gcpause import gc_paused
from .machine import Machine
from .outbox import prepare
from .policies import Sent
from .render import Renderer
from .stats import JourneyStats, journey_stats
from .stats.facts import ConversionFact, DeliveryFact, History, MessageFact, ReachFact, RunFact
from .stats.funnel import Funnel, build_funnel

_UTC = UTC


@dataclass(slots=True)
class Entry:
    """One line of a user's timeline."""

    user: str
    at: datetime
    action: str  # enter | send | skip | defer | exit
    step: str | None
    channel: str | None = None
    subject: str | None = None
    body: str | None = None
    segments: int | None = None
    variant: str | None = None
    reason: str | None = None
    detail: str | None = None
    until: datetime | None = None
    holdout: bool | None = None
    converted: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "user": self.user,
            "at": iso(self.at),
            "action": self.action,
            "step": self.step,
        }
        for key in ("channel", "subject", "body", "segments", "variant", "reason", "detail"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.until is not None:
            out["until"] = iso(self.until)
        if self.holdout is not None:
            out["holdout"] = self.holdout
        if self.converted is not None:
            out["converted"] = self.converted
        return out


def iso(moment: datetime) -> str:
    return moment.astimezone(_UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Summary:
    """The dry-run's totals, in the shape ``journey dry-run`` prints. Derived from the
    :class:`~orchestrator.stats.funnel.Funnel`: the dry-run counts with the same code as
    ``journey stats`` does in production."""

    users: int = 0
    entered: int = 0
    restarted: int = 0
    held_out: int = 0
    sent: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    skipped: Counter[str] = field(default_factory=Counter)
    deferred: int = 0
    exited: Counter[str] = field(default_factory=Counter)
    converted: int = 0
    converted_held_out: int = 0
    variants: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    in_progress: int = 0

    @classmethod
    def from_funnel(cls, funnel: Funnel, users: int) -> Summary:
        s = cls(users=users, entered=funnel.entries, restarted=funnel.restarts,
                held_out=funnel.held_out_entries, skipped=Counter(funnel.skipped),
                deferred=funnel.deferred, exited=Counter(funnel.exited),
                converted=funnel.converted, converted_held_out=funnel.converted_held_out,
                in_progress=funnel.in_progress)
        for row in funnel.steps:
            if row.sent:
                s.sent[row.step] = Counter(row.sent)
            if row.variants:
                s.variants[row.step] = Counter(row.variants)
        return s

    def to_dict(self) -> dict[str, Any]:
        return {
            "users": self.users,
            "entered": self.entered,
            "restarted": self.restarted,
            "held_out": self.held_out,
            "sent": {step: dict(sorted(c.items())) for step, c in sorted(self.sent.items())},
            "sent_total": sum(sum(c.values()) for c in self.sent.values()),
            "skipped": dict(sorted(self.skipped.items())),
            "deferred": self.deferred,
            "exited": dict(sorted(self.exited.items())),
            "converted": self.converted,
            "converted_held_out": self.converted_held_out,
            "variants": {s: dict(sorted(c.items())) for s, c in sorted(self.variants.items())},
            "in_progress": self.in_progress,
        }


@dataclass
class Result:
    machine: Machine
    start: datetime
    until: datetime
    timeline: list[Entry]
    summary: Summary
    users: dict[str, dict[str, Any]]
    history: History
    funnel: Funnel

    def stats(self, **options: Any) -> JourneyStats:
        """Funnel, experiments and conversions per day of this dry-run, as ``journey stats``
        computes them in production."""
        return journey_stats(self.machine, self.history, **options)

    def to_dict(self) -> dict[str, Any]:
        return {
            "journey": self.machine.journey,
            "version": self.machine.version,
            "start": iso(self.start),
            "until": iso(self.until),
            "timeline": [e.to_dict() for e in self.timeline],
            "summary": self.summary.to_dict(),
        }


# Agenda item kinds, in the order they run when due at the same instant (events wait in a
# list of their own, see Simulator._run; timers and deferred messages in Simulator._due).
_EVENT, _TIMER, _MESSAGE = 0, 1, 2
_time_of = itemgetter(0)
_Queue = deque[tuple[datetime, Any]]  # (due time, timer or deferred message), in arrival order


class Simulator:
    """Plays one journey for many users. Implements :class:`apply.EffectSink` in memory."""

    def __init__(
        self,
        machine: Machine,
        renderer: Renderer,
        users: Iterable[Mapping[str, Any]],
        *,
        keep_bodies: bool = True,
        keep_timeline: bool = True,
        preview_chars: int | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        self.machine = machine
        self.renderer = renderer
        self.profiles: dict[str, dict[str, Any]] = {str(u["id"]): dict(u) for u in users}
        # user_view(profile) per user, built on first use and dropped by update_profile.
        self._views: dict[str, dict[str, Any]] = {}
        self.keep_bodies = keep_bodies
        self.keep_timeline = keep_timeline
        self.preview_chars = preview_chars
        self.on_progress = on_progress
        self.runs: dict[str, Run] = {}
        self.active: dict[str, list[str]] = defaultdict(list)
        self.history: dict[str, list[Sent]] = defaultdict(list)
        self.timeline: list[Entry] = []
        # Facts for the funnel (orchestrator.stats), collected whether or not the timeline is
        # kept: the summary is computed from them with the code ``journey stats`` uses.
        self.messages: list[MessageFact] = []
        self.reaches: list[ReachFact] = []
        self.conversions: list[ConversionFact] = []
        self.restarts: Counter[str] = Counter()
        # Timers and deferred messages: a heap of the distinct times they are due at, and for
        # each time its timers and its messages in arrival order (see _push and _pop).
        self._due_times: list[datetime] = []
        self._due: dict[datetime, tuple[_Queue, _Queue]] = {}
        self._events_left: list[tuple[datetime, Event]] = []  # events after a run's ``until``
        self._run_counter = 0
        self.steps_handled = 0  # agenda items: events, timers and deferred messages
        self._now = datetime.min.replace(tzinfo=_UTC)

    # -- the agenda -------------------------------------------------------------------------
    def _push(self, at: datetime, kind: int, item: Any) -> None:
        """Schedule a timer or a deferred message. Items due at the same time run timers
        first, each kind in arrival order: the order of one heap keyed on (time, kind,
        arrival). But many items share a time (timers fire whole minutes or hours after
        events that come at whole minutes, deferred messages wait for the same end of quiet
        hours), so the heap only holds the distinct times and stays small."""
        slot = self._due.get(at)
        if slot is None:
            slot = self._due[at] = (deque(), deque())
            heapq.heappush(self._due_times, at)
        slot[kind - _TIMER].append((at, item))

    def _pop(self) -> tuple[datetime, int, Any]:
        """The earliest timer or deferred message (the agenda must not be empty)."""
        first = self._due_times[0]
        timers, messages = self._due[first]
        if timers:
            at, item = timers.popleft()
            kind = _TIMER
        else:
            at, item = messages.popleft()
            kind = _MESSAGE
        if not timers and not messages:
            heapq.heappop(self._due_times)
            del self._due[first]
        return at, kind, item

    def run(self, events: Iterable[Event], start: datetime, until: datetime) -> Result:
        with gc_paused():
            return self._run(events, start, until)

    def _run(self, events: Iterable[Event], start: datetime, until: datetime) -> Result:
        self._now = start
        # The users' events are known up front, so they wait in a list sorted by time (stably:
        # input order at equal times) rather than with what the run schedules (timers and
        # deferred messages, see _push). The two are merged as one agenda ordered exactly as
        # (time, kind, arrival): at equal times an event first.
        events_due = sorted(
            [*self._events_left, *((max(ev.at, start), ev) for ev in events)], key=_time_of
        )
        due = self._due_times
        next_event = 0
        processed = 0
        while True:
            if next_event < len(events_due) and (
                not due or events_due[next_event][0] <= due[0]
            ):
                at, ev = events_due[next_event]
                if at > until:
                    break
                next_event += 1
                self._now = at
                self.steps_handled += 1
                self._on_event(ev)
                processed += 1
                if self.on_progress and processed % 1000 == 0:
                    self.on_progress(processed)
            elif due and due[0] <= until:
                at, kind, item = self._pop()
                self._now = at
                self.steps_handled += 1
                if kind == _TIMER:
                    self._on_timer(item)
                else:
                    run_id, send = item
                    self._deliver(self.runs[run_id], send)
            else:
                break
        self._events_left = events_due[next_event:]  # after ``until``: for a later run()
        if self.on_progress:
            self.on_progress(processed)
        history = self.facts(start, until)
        funnel = build_funnel(self.machine, history)
        summary = Summary.from_funnel(funnel, len(self.profiles))
        return Result(self.machine, start, until, self.timeline, summary, self.profiles, history, funnel)

    def facts(self, since: datetime | None = None, until: datetime | None = None) -> History:
        """What has happened so far, as the facts ``orchestrator.stats`` counts."""
        runs = [
            RunFact(r.run_id, r.user_id, r.entered_at, r.holdout, r.variants, r.finished,
                    r.step if r.finished else None, r.exit_reason, r.converted,
                    self.restarts[r.run_id])
            for r in self.runs.values()
        ]
        # Deliveries only matter for attribution, so only those of users who converted are
        # made (from the messages sent; a dry-run's provider accepts everything).
        converting = {c.user_id for c in self.conversions}
        journey = self.machine.journey
        deliveries = [
            DeliveryFact(m.run_id, user, journey, m.step, m.channel, m.at, "sent")
            for m in self.messages
            if m.action == "send" and m.channel is not None
            and (user := self.runs[m.run_id].user_id) in converting
        ]
        return History(self.machine.journey, runs, list(self.messages), deliveries,
                       list(self.reaches), list(self.conversions), since, until, simulated=True)

    def _on_event(self, ev: Event) -> None:
        profile = self.profiles.get(ev.user_id)
        if profile is None:
            return
        runs = [self.runs[r] for r in self.active.get(ev.user_id, ())]
        self._run_counter += 1
        new_id = f"{self.machine.journey}:{ev.user_id}:{self._run_counter}"
        view = self._view(ev.user_id)
        for outcome in route_event(self.machine, runs, profile, ev, self._now, new_id, view=view):
            apply_outcome(self, outcome, self._now)

    def _on_timer(self, timer: TimerFired) -> None:
        run = self.runs.get(timer.run_id)
        if run is None:
            return
        profile, view = self.profiles[run.user_id], self._view(run.user_id)
        outcome = advance(self.machine, run, timer, profile, self._now, view=view)
        if not outcome.effects and outcome.run is run:
            return  # a stale timer (the run moved on): applying it would change nothing
        apply_outcome(self, outcome, self._now)

    # -- EffectSink -------------------------------------------------------------------------
    def save_run(self, run: Run) -> None:
        self.runs[run.run_id] = run
        active = self.active[run.user_id]
        if run.finished:
            if run.run_id in active:
                active.remove(run.run_id)
        elif run.run_id not in active:
            active.append(run.run_id)

    def schedule_timer(self, run: Run, timer: StartTimer) -> None:
        if timer.step not in PSEUDO_STEPS:
            self.reaches.append(ReachFact(run.run_id, timer.step))
        self._push(timer.fire_at, _TIMER, TimerFired(timer.run_id, timer.generation))

    def cancel_timer(self, run: Run, timer: CancelTimer) -> None:
        """Stale timers are no-ops in the engine; the agenda simply lets them fire."""

    def update_profile(self, user_id: str, changes: Mapping[str, Any]) -> None:
        self.profiles[user_id].update(changes)
        self._views.pop(user_id, None)

    def _view(self, user_id: str) -> dict[str, Any]:
        """``user_view(machine, profile)`` for ``user_id``, built once per profile state.

        Safe to share: the simulator owns ``self.profiles`` and changes one only in
        :meth:`update_profile`, which drops its view; nothing else mutates a view (the engine
        copies it before applying its own profile update, and conditions and templates run in
        an immutable sandbox), so a new view is built for every profile state and an old one
        never changes under a message context that holds it.
        """
        view = self._views.get(user_id)
        if view is None:
            view = self._views[user_id] = user_view(self.machine, self.profiles[user_id])
        return view

    def record_entry(self, run: Run, entered: Entered, now: datetime) -> None:
        if entered.restarted:
            self.restarts[run.run_id] += 1
        self._log(
            Entry(
                run.user_id,
                now,
                "enter",
                entered.step,
                reason="restarted" if entered.restarted else None,
                holdout=True if entered.holdout else None,
            )
        )

    def record_exit(self, run: Run, exited: Exited, now: datetime) -> None:
        if exited.converted:
            self.conversions.append(ConversionFact(
                run.run_id, run.user_id, run.journey, exited.reason.removeprefix("goal:"), now))
        self._log(
            Entry(
                run.user_id,
                now,
                "exit",
                exited.step,
                reason=exited.reason,
                converted=exited.converted,
            )
        )

    def record_assignment(self, run: Run, assigned: Assigned, now: datetime) -> None:
        self.reaches.append(ReachFact(run.run_id, assigned.step, assigned.variant))

    def queue_message(self, run: Run, send: Send, now: datetime) -> None:
        self.reaches.append(ReachFact(run.run_id, send.step))
        self._deliver(run, send)

    # -- the outbox -------------------------------------------------------------------------
    def _deliver(self, run: Run, send: Send) -> None:
        """Decide and render ``send`` now for ``run`` (the run as it is now, not as it was when
        the message was queued: it may have ended or restarted since)."""
        history = self.history[run.user_id]
        p = prepare(
            self.machine,
            send,
            run,
            self.profiles[run.user_id],
            history,
            self._now,
            self.renderer,
            view=self._view(run.user_id),
        )
        if p.action == "defer":
            assert p.until is not None
            self.messages.append(MessageFact(run.run_id, send.step, self._now, "defer", None,
                                             send.variant, p.reason))
            self._push(p.until, _MESSAGE, (run.run_id, send))
            self._log(
                Entry(run.user_id, self._now, "defer", send.step, reason=p.reason,
                      until=p.until, variant=send.variant)
            )
            return
        if p.action == "skip":
            self.messages.append(MessageFact(run.run_id, send.step, self._now, "skip", p.channel,
                                             send.variant, p.reason or "unknown"))
            self._log(
                Entry(run.user_id, self._now, "skip", send.step, channel=p.channel,
                      reason=p.reason, detail=p.detail, variant=send.variant)
            )
            return
        assert p.channel is not None and p.message is not None
        history.append(Sent(p.channel, self._now))
        self.messages.append(MessageFact(run.run_id, send.step, self._now, "send", p.channel,
                                         send.variant))
        if not self.keep_timeline:
            return
        body = p.message.body if self.keep_bodies else None
        if body is not None and self.preview_chars is not None and len(body) > self.preview_chars:
            body = body[: self.preview_chars - 1] + "…"
        self._log(
            Entry(
                run.user_id,
                self._now,
                "send",
                send.step,
                channel=p.channel,
                subject=p.message.subject if self.keep_bodies else None,
                body=body,
                segments=p.message.segments,
                variant=send.variant,
                detail=p.detail,
            )
        )

    def _log(self, entry: Entry) -> None:
        if self.keep_timeline:
            self.timeline.append(entry)


def default_events(
    machine: Machine, users: Iterable[Mapping[str, Any]], start: datetime, example: Mapping[str, Any]
) -> list[Event]:
    """Every user fires the journey's trigger at ``start`` with the catalog's example."""
    return [Event(str(u["id"]), machine.trigger_event, start, dict(example)) for u in users]
