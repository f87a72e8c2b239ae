"""The journey engine: a pure step function. Core: no I/O, no clock, no randomness.

Rules (the whole semantics of a journey run, in one place):

1. ``route_event`` is the single entry point for an event about a user. It first offers the
   event to each of the user's active runs of this journey (goals, exits, ``wait_for``), then,
   if the event is the journey's trigger and its conditions hold, applies the re-entry rule:
   ``ignore`` (a user already in the journey stays where they are), ``restart`` (the run starts
   over with the new trigger; its pending timer becomes stale) or ``parallel`` (a second run).
2. A goal or ``exit_on`` event ends a run wherever it is, waiting included, and cancels its
   timer. Goals are checked before ``wait_for``. A goal converts only within
   ``conversion_window`` of entry (or of the last restart).
3. A run executes steps until it reaches a wait (``wait``, ``wait_for``) or the end. Entering a
   wait increments the run's ``generation``; the timer carries it. A timer whose generation
   is not the run's current one, or that fires for a finished run, does nothing.
4. Splits and the holdout are decided by a hash of (journey, user, step): the same user gets
   the same variant in a dry-run and in production, on every restart.
5. Holdout runs receive nothing: they wait out the conversion window, ending early as
   converted if a goal arrives. A run that finishes its steps (without an ``exit`` step) in a
   journey with goals does the same for the rest of its window, so the two groups are
   measured alike; it counts as in the journey for re-entry until then.
6. ``update_profile`` is an effect, and the run sees its own change at once.
7. A run that takes more than ``MAX_STEPS_PER_ADVANCE`` steps without waiting exits with the
   reason ``loop_limit``; the compiler rejects such journeys, so this is a safety net.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Mapping, NamedTuple, Sequence

from .effects import (
    Assigned,
    CancelTimer,
    Effect,
    Entered,
    Exited,
    Send,
    StartTimer,
    UpdateProfile,
    quick_init,
)
from .localtime import next_local_time, parse_hhmm, zone
from .machine import (
    BranchState,
    ExitState,
    Machine,
    Match,
    SendState,
    SplitState,
    UpdateProfileState,
    WaitForState,
    WaitState,
)
from .render import Conditions

HOLDOUT_STEP = "__holdout__"
CONVERSION_STEP = "__conversion_window__"
PSEUDO_STEPS = frozenset({HOLDOUT_STEP, CONVERSION_STEP})
MAX_STEPS_PER_ADVANCE = 1000
_conditions = Conditions()


@quick_init
@dataclass(frozen=True, slots=True)
class Event:
    user_id: str
    name: str
    at: datetime
    properties: Mapping[str, Any]


@quick_init
@dataclass(frozen=True, slots=True)
class TimerFired:
    run_id: str
    generation: int


class Run(NamedTuple):
    """A user's journey through one machine version. Immutable: ``_replace`` makes the next."""

    run_id: str
    journey: str
    version: str
    user_id: str
    entered_at: datetime
    trigger: Mapping[str, Any]
    status: str = "active"  # active | waiting | finished
    step: str | None = None
    generation: int = 0
    wake_at: datetime | None = None
    holdout: bool = False
    variants: tuple[tuple[str, str], ...] = ()
    exit_reason: str | None = None
    converted: bool = False
    finished_at: datetime | None = None
    # ``generation`` when the run last (re)started: a message queued with an older generation
    # belongs to the superseded start and must not go out (see outbox.prepare).
    started_generation: int = 0

    @property
    def finished(self) -> bool:
        return self.status == "finished"


@quick_init
@dataclass(frozen=True, slots=True)
class Outcome:
    run: Run
    effects: tuple[Effect, ...]


def bucket(*parts: str) -> float:
    """A stable number in [0, 1) for ``parts``: the same on every machine and every run."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def user_view(machine: Machine, profile: Mapping[str, Any]) -> dict[str, Any]:
    """The profile as conditions and templates see it: every attribute the catalog knows is
    present (its default, or ``None``), so ``user.locale or 'en'`` works for everyone."""
    view = {**machine.profile_defaults, **profile}
    for key, value in profile.items():
        if value is None:
            view[key] = machine.profile_defaults.get(key)
    return view


def _holds(source: str | None, context: Mapping[str, Any]) -> bool:
    return source is None or _conditions.evaluate(source, context)


def _context(
    machine: Machine, user: Mapping[str, Any], event: Mapping[str, Any], trigger: Mapping[str, Any], now: datetime
) -> dict[str, Any]:
    return {
        "user": user,
        "event": event,
        "trigger": trigger,
        "journey": {"name": machine.journey, "version": machine.version},
        "now": now,
    }


def triggers(machine: Machine, user: Mapping[str, Any], event: Event) -> bool:
    """Whether ``event`` starts (or restarts) this journey for ``user``."""
    if event.name != machine.trigger_event:
        return False
    ctx = _context(machine, user, event.properties, event.properties, event.at)
    return _holds(machine.trigger_when, ctx) and _holds(machine.audience, ctx)


def route_event(
    machine: Machine,
    active_runs: Sequence[Run],
    profile: Mapping[str, Any],
    event: Event,
    now: datetime,
    new_run_id: str,
    allow_entry: bool = True,
    *,
    view: Mapping[str, Any] | None = None,
) -> list[Outcome]:
    """Everything ``event`` does to this journey for one user (see rule 1). With
    ``allow_entry=False`` the event can move, end or restart ``active_runs`` but never starts a
    new run (production routes runs pinned to an older version of the journey this way).
    ``view``: ``user_view(machine, profile)`` if the caller already has it (the dry-run keeps
    one per profile until the profile changes); computed here otherwise."""
    user = view if view is not None else user_view(machine, profile)
    outcomes: list[Outcome] = []
    still_active: list[Run] = []
    for run in active_runs:
        if run.finished:
            continue
        out = _on_event(machine, run, user, event, now)
        if out is not None:
            outcomes.append(out)
            run = out.run
        if not run.finished:
            still_active.append(run)
    if not triggers(machine, user, event):
        return outcomes
    if still_active and machine.re_entry == "ignore":
        return outcomes
    if still_active and machine.re_entry == "restart":
        by_run = {o.run.run_id: o for o in outcomes}
        for run in still_active:
            prior = by_run.pop(run.run_id, None)
            earlier = list(prior.effects) if prior else []
            by_run[run.run_id] = _restart(machine, run, user, event, now, earlier)
        return list(by_run.values())
    if not allow_entry:
        return outcomes
    outcomes.append(_enter(machine, user, event, now, new_run_id))
    return outcomes


def enter(
    machine: Machine, profile: Mapping[str, Any], event: Event, now: datetime, run_id: str
) -> Outcome:
    """A new run for ``event``'s user (the caller has checked :func:`triggers`)."""
    return _enter(machine, user_view(machine, profile), event, now, run_id)


def _enter(
    machine: Machine, user: Mapping[str, Any], event: Event, now: datetime, run_id: str
) -> Outcome:
    run = Run(
        run_id=run_id,
        journey=machine.journey,
        version=machine.version,
        user_id=event.user_id,
        entered_at=now,
        trigger=dict(event.properties),
    )
    return _begin(machine, run, user, now, restarted=False, effects=[])


def _restart(
    machine: Machine,
    run: Run,
    user: Mapping[str, Any],
    event: Event,
    now: datetime,
    effects: list[Effect],
) -> Outcome:
    if run.status == "waiting":
        effects.append(CancelTimer(run.run_id, run.generation))
    fresh = run._replace(
        started_generation=run.generation,
        entered_at=now,
        trigger=dict(event.properties),
        status="active",
        step=None,
        wake_at=None,
        variants=(),
    )
    return _begin(machine, fresh, user, now, restarted=True, effects=effects)


def _begin(
    machine: Machine, run: Run, user: Mapping[str, Any], now: datetime, *, restarted: bool, effects: list[Effect]
) -> Outcome:
    held_out = machine.holdout > 0 and bucket(machine.journey, run.user_id, HOLDOUT_STEP) * 100 < machine.holdout
    if held_out:
        effects.append(Entered(run.run_id, None, holdout=True, restarted=restarted))
        run = run._replace(holdout=True)
        return _wait(run, HOLDOUT_STEP, now + timedelta(seconds=machine.conversion_window), effects)
    effects.append(Entered(run.run_id, machine.start, holdout=False, restarted=restarted))
    return _execute(machine, run, machine.start, user, now, effects)


def advance(
    machine: Machine,
    run: Run,
    stimulus: Event | TimerFired,
    profile: Mapping[str, Any],
    now: datetime,
    *,
    view: Mapping[str, Any] | None = None,
) -> Outcome:
    """Apply one event or timer to one run. Unrelated or stale stimuli return no effects.
    ``view`` as in :func:`route_event`."""
    if run.finished:
        return Outcome(run, ())
    user = view if view is not None else user_view(machine, profile)
    if isinstance(stimulus, TimerFired):
        return _on_timer(machine, run, stimulus, user, now)
    out = _on_event(machine, run, user, stimulus, now)
    return out if out is not None else Outcome(run, ())


def _on_timer(machine: Machine, run: Run, timer: TimerFired, user: Mapping[str, Any], now: datetime) -> Outcome:
    if run.status != "waiting" or timer.generation != run.generation:
        return Outcome(run, ())  # stale: the run moved on or restarted
    if run.step == HOLDOUT_STEP:
        return _finish(run, HOLDOUT_STEP, "holdout_window_ended", False, now, [])
    if run.step == CONVERSION_STEP:
        return _finish(run, CONVERSION_STEP, "completed", False, now, [])
    assert run.step is not None
    state = machine.states[run.step]
    if isinstance(state, WaitState):
        return _execute(machine, run, state.next, user, now, [])
    if isinstance(state, WaitForState):
        return _execute(machine, run, state.on_timeout, user, now, [])
    raise AssertionError(f"run waiting at a {state.kind} step")


def _matches(
    machine: Machine, matches: Sequence[Match], run: Run, user: Mapping[str, Any], event: Event
) -> Match | None:
    for m in matches:
        if m.event == event.name and _holds(
            m.when, _context(machine, user, event.properties, run.trigger, event.at)
        ):
            return m
    return None


def _on_event(machine: Machine, run: Run, user: Mapping[str, Any], event: Event, now: datetime) -> Outcome | None:
    cancel: list[Effect] = (
        [CancelTimer(run.run_id, run.generation)] if run.status == "waiting" else []
    )
    goal = _matches(machine, machine.goals, run, user, event)
    if goal is not None:
        # A goal always ends the run; it counts as a conversion only inside the window.
        in_window = now - run.entered_at <= timedelta(seconds=machine.conversion_window)
        return _finish(run, run.step, f"goal:{goal.event}", in_window, now, cancel)
    exit_ = _matches(machine, machine.exits, run, user, event)
    if exit_ is not None:
        return _finish(run, run.step, f"exit:{exit_.event}", False, now, cancel)
    if run.status == "waiting" and run.step is not None and run.step not in PSEUDO_STEPS:
        state = machine.states[run.step]
        if (
            isinstance(state, WaitForState)
            and state.event == event.name
            and _holds(state.when, _context(machine, user, event.properties, run.trigger, event.at))
        ):
            return _execute(machine, run, state.on_event, user, now, cancel)
    return None


def _wait(
    run: Run,
    step: str,
    fire_at: datetime,
    effects: list[Effect],
    variants: tuple[tuple[str, str], ...] | None = None,
) -> Outcome:
    generation = run.generation + 1
    run = _waiting(run, step, generation, fire_at, run.variants if variants is None else variants)
    effects.append(StartTimer(run.run_id, generation, fire_at, step))
    return Outcome(run, tuple(effects))


def _finish(
    run: Run,
    step: str | None,
    reason: str,
    converted: bool,
    now: datetime,
    effects: list[Effect],
    variants: tuple[tuple[str, str], ...] | None = None,
) -> Outcome:
    variants = run.variants if variants is None else variants
    run = _finished(run, step, reason, converted, now, variants)
    effects.append(Exited(run.run_id, step, reason, converted))
    return Outcome(run, tuple(effects))


# ``_waiting`` and ``_finished`` are ``run._replace(...)`` spelled out: one of them runs for
# every step a run takes, and NamedTuple's generic ``_replace`` costs twice as much. Unpacking
# ``run`` field by field fails loudly if ``Run`` ever gains a field.


def _waiting(
    run: Run, step: str, generation: int, wake_at: datetime, variants: tuple[tuple[str, str], ...]
) -> Run:
    """``run._replace(status="waiting", step=, generation=, wake_at=, variants=)``."""
    (run_id, journey, version, user_id, entered_at, trigger, _status, _step, _generation,
     _wake_at, holdout, _variants, exit_reason, converted, finished_at, started_generation) = run
    return tuple.__new__(Run, (
        run_id, journey, version, user_id, entered_at, trigger, "waiting", step, generation,
        wake_at, holdout, variants, exit_reason, converted, finished_at, started_generation,
    ))


def _finished(
    run: Run,
    step: str | None,
    reason: str,
    converted: bool,
    now: datetime,
    variants: tuple[tuple[str, str], ...],
) -> Run:
    """``run._replace(status="finished", step=, wake_at=None, exit_reason=, converted=,
    finished_at=now, variants=)``."""
    (run_id, journey, version, user_id, entered_at, trigger, _status, _step, generation,
     _wake_at, holdout, _variants, _reason, _converted, _finished_at, started_generation) = run
    return tuple.__new__(Run, (
        run_id, journey, version, user_id, entered_at, trigger, "finished", step, generation,
        None, holdout, variants, reason, converted, now, started_generation,
    ))


def _execute(
    machine: Machine,
    run: Run,
    step: str | None,
    user: Mapping[str, Any],
    now: datetime,
    effects: list[Effect],
) -> Outcome:
    """Run steps from ``step`` until a wait or the end."""
    last: str | None = run.step
    variants = run.variants
    for _ in range(MAX_STEPS_PER_ADVANCE):
        if step is None:
            break
        state = machine.states[step]
        last = step
        match state:
            case SendState():
                effects.append(
                    Send(
                        run.run_id,
                        step,
                        state.template,
                        state.channels,
                        state.prefer_user,
                        run.generation,
                        variants[-1][1] if variants else None,
                    )
                )
                step = state.next
            case WaitState():
                if state.seconds is not None:
                    fire_at = now + timedelta(seconds=state.seconds)
                else:
                    assert state.until is not None
                    tz = zone(user.get("timezone"), machine.delivery.timezone)
                    fire_at = next_local_time(now, parse_hhmm(state.until), tz)
                return _wait(run, step, fire_at, effects, variants)
            case WaitForState():
                fire_at = now + timedelta(seconds=state.timeout)
                return _wait(run, step, fire_at, effects, variants)
            case BranchState():
                ctx = _context(machine, user, run.trigger, run.trigger, now)
                step = next(
                    (target for cond, target in state.cases if _holds(cond, ctx)), state.otherwise
                )
            case SplitState():
                name, target = pick_variant(machine.journey, run.user_id, step, state)
                variants = (*variants, (step, name))
                effects.append(Assigned(run.run_id, step, name))
                step = target
            case UpdateProfileState():
                effects.append(UpdateProfile(run.user_id, dict(state.changes)))
                user = {**user, **state.changes}
                step = state.next
            case ExitState():
                return _finish(run, step, state.reason, state.converted, now, effects, variants)
    else:
        return _finish(run, last, "loop_limit", False, now, effects, variants)
    window_end = run.entered_at + timedelta(seconds=machine.conversion_window)
    if machine.goals and now < window_end:
        # Steps done: the run stays to count a goal within the conversion window, exactly as
        # a held-out run does, so both groups are measured alike (and a message still held
        # by quiet hours is dropped if the user converts meanwhile).
        return _wait(run, CONVERSION_STEP, window_end, effects, variants)
    return _finish(run, last, "completed", False, now, effects, variants)


def pick_variant(journey: str, user_id: str, step: str, state: SplitState) -> tuple[str, str | None]:
    """The variant of split ``step`` this user gets (and its next step): the same on every
    machine and every restart. Statistics use it to place every entered user in the variant
    they were assigned, whether or not they reached the split (intent to treat)."""
    point = bucket(journey, user_id, step) * sum(w for _, w, _ in state.variants)
    for name, weight, target in state.variants:
        if point < weight:
            return name, target
        point -= weight
    name, _, target = state.variants[-1]
    return name, target
