"""A Hypothesis state machine driving ``route_event``/``advance`` on the shipped journeys.

A few users receive random events (carts with and without items, orders, lessons, events no
journey cares about) while the clock jumps forward by random amounts, firing due timers in
order; timers that already fired are fired again. After every step the invariants a
production driver relies on are checked, and at the end the whole input sequence is replayed
on a fresh world and must give identical outputs.
"""

from __future__ import annotations

import heapq
from datetime import timedelta
from typing import Any

from hypothesis import event as note
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from engine_helpers import (
    CART,
    EMPTY_CART,
    LESSON,
    ORDER,
    CancelTimer,
    Entered,
    Event,
    Exited,
    Send,
    StartTimer,
    TimerFired,
    held_out_user,
    in_journey_user,
    shipped,
    utc,
)
from orchestrator.engine import CONVERSION_STEP, HOLDOUT_STEP, Outcome, Run, advance, route_event

JOURNEYS = ("cart_abandonment", "lesson_reminder", "onboarding")
MACHINES = {name: shipped(name) for name in JOURNEYS}
CART_MACHINE = MACHINES["cart_abandonment"]
# one user in the cart journey, one held out of it, one more with a full profile
USERS = (
    in_journey_user(CART_MACHINE, prefix="in"),
    held_out_user(CART_MACHINE, prefix="out"),
    "carol",
)
PROFILES = {
    USERS[0]: {"id": USERS[0], "email": "a@example.com", "timezone": "America/New_York"},
    USERS[1]: {"id": USERS[1], "push_tokens": ["t"], "timezone": "Europe/Paris"},
    "carol": {"id": "carol", "sms_opt_in": True, "profile_completed": True, "phone": "+1"},
}
EVENTS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("cart_updated", CART),
    ("cart_updated", EMPTY_CART),
    ("order_completed", ORDER),
    ("lesson_completed", LESSON),
    ("lesson_completed", {**LESSON, "lesson_number": 13, "streak": 6}),
    ("app_installed", {"platform": "ios", "app_version": "4.2.0"}),  # only onboarding cares
    ("first_purchase", {"order_id": "o-1", "total": 19.0}),
    ("profile_completed", {}),  # no journey cares
)
START = utc(2026, 3, 6, 12)  # the run crosses the New York DST change of 2026-03-08
REENTRY_SINGLE = {name for name, m in MACHINES.items() if m.re_entry in ("restart", "ignore")}


class World:
    """A deterministic in-memory driver; ``log`` is everything the engine returned."""

    def __init__(self) -> None:
        self.now = START
        self.runs: dict[str, tuple[str, Run]] = {}  # run_id -> (journey, run)
        self.agenda: list[tuple[Any, int, str, StartTimer]] = []  # (fire_at, seq, journey, timer)
        self.fired: list[tuple[str, StartTimer]] = []
        self.seq = 0
        self.counter = 0
        self.log: list[tuple[str, str, Outcome]] = []  # (kind, journey, outcome)

    def runs_of(self, journey: str, user: str, include_finished: bool) -> list[Run]:
        return [
            r
            for j, r in self.runs.values()
            if j == journey and r.user_id == user and (include_finished or not r.finished)
        ]

    def event(self, user: str, index: int, include_finished: bool) -> list[tuple[str, Run | None, Outcome]]:
        name, props = EVENTS[index]
        ev = Event(user, name, self.now, dict(props))
        results = []
        for journey in JOURNEYS:
            self.counter += 1
            new_id = f"{journey}:{user}:{self.counter}"
            runs = self.runs_of(journey, user, include_finished)
            before = {r.run_id: r for r in runs}
            for out in route_event(MACHINES[journey], runs, PROFILES[user], ev, self.now, new_id):
                results.append((journey, before.get(out.run.run_id), out))
                self._apply("event", journey, out)
        return results

    def fire(self, journey: str, timer: StartTimer) -> tuple[Run, Outcome]:
        _, run = self.runs[timer.run_id]
        out = advance(
            MACHINES[journey],
            run,
            TimerFired(timer.run_id, timer.generation),
            PROFILES[run.user_id],
            self.now,
        )
        self._apply("timer", journey, out)
        return run, out

    def _apply(self, kind: str, journey: str, out: Outcome) -> None:
        self.log.append((kind, journey, out))
        self.runs[out.run.run_id] = (journey, out.run)
        for effect in out.effects:
            if isinstance(effect, StartTimer):
                self.seq += 1
                heapq.heappush(self.agenda, (effect.fire_at, self.seq, journey, effect))

    def due(self, until) -> tuple[str, StartTimer] | None:
        if self.agenda and self.agenda[0][0] <= until:
            fire_at, _, journey, timer = heapq.heappop(self.agenda)
            self.now = fire_at
            self.fired.append((journey, timer))
            return journey, timer
        return None


def replay(ops: list[tuple]) -> list[tuple[str, str, Outcome]]:
    world = World()
    for op in ops:
        if op[0] == "event":
            world.event(*op[1:])
        elif op[0] == "clock":
            target = world.now + timedelta(minutes=op[1])
            while (item := world.due(target)) is not None:
                world.fire(*item)
            world.now = target
        elif world.fired:
            journey, timer = world.fired[op[1] % len(world.fired)]
            world.fire(journey, timer)
    return world.log


class EngineStateMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.world = World()
        self.ops: list[tuple] = []
        self.ledger: set[tuple[str, str, int]] = set()  # (run_id, step, generation) of every Send
        self.started: set[tuple[str, int]] = set()  # (run_id, generation) of every StartTimer
        self.ever_finished: set[str] = set()
        self.sent_generations: dict[str, list[int]] = {}  # run_id -> generation of each Send

    # -- checks on each outcome ------------------------------------------------------------
    def check_outcome(self, before: Run | None, out: Outcome, kind: str, journey: str) -> None:
        run = out.run
        machine = MACHINES[journey]
        window = timedelta(seconds=machine.conversion_window)
        effects = out.effects
        now = self.world.now
        if before is not None and before.finished:
            assert effects == () and run == before, "a finished run emitted effects"
        if run.run_id in self.ever_finished:
            assert effects == (), "a finished run came back to life"
        assert run.status in ("waiting", "finished"), run.status
        entered_at = next((i for i, e in enumerate(effects) if isinstance(e, Entered)), -1)
        for i, send in enumerate(effects):
            if not isinstance(send, Send):
                continue
            key = (send.run_id, send.step, send.generation)
            assert key not in self.ledger, f"duplicate ledger key {key}"
            self.ledger.add(key)
            self.sent_generations.setdefault(run.run_id, []).append(send.generation)
            assert not run.holdout, "a held-out run sent a message"
            # a message of the current start is never mistaken for one of a superseded start
            if i > entered_at:
                assert send.generation >= run.started_generation
        timers = [e for e in effects if isinstance(e, StartTimer)]
        assert len(timers) <= 1
        for t in timers:
            assert t.fire_at > now
            assert (t.run_id, t.generation) not in self.started
            self.started.add((t.run_id, t.generation))
            assert run.status == "waiting" and t.generation == run.generation
            assert run.wake_at == t.fire_at and t.step == run.step
        if run.status == "waiting":
            assert (run.run_id, run.generation) in self.started
        exits = [e for e in effects if isinstance(e, Exited)]
        assert len(exits) == (1 if run.finished and effects else 0)
        if exits:
            assert effects[-1] is exits[0]
            assert exits[0].reason == run.exit_reason and exits[0].converted == run.converted
        entered = [e for e in effects if isinstance(e, Entered)]
        assert len(entered) <= 1
        if entered:
            assert kind == "event"
            assert entered[0].restarted == (before is not None)
        if kind == "event" and before is not None and before.status == "waiting":
            left_wait = run.finished or run.generation != before.generation
            if left_wait:
                assert CancelTimer(run.run_id, before.generation) in effects
        if run.finished and run.run_id not in self.ever_finished:
            self.ever_finished.add(run.run_id)
            note(f"exit {run.exit_reason}")
        if entered and entered[0].restarted:
            note("restart")
            # every message of the superseded start is recognisably older
            sends = self.sent_generations.get(run.run_id, [])
            of_new_start = sum(1 for e in effects[entered_at + 1 :] if isinstance(e, Send))
            earlier = sends[: len(sends) - of_new_start]
            assert all(g < run.started_generation for g in earlier)
        if any(isinstance(e, Send) for e in effects):
            note("send")
        # the conversion window: only journeys with goals track one, it ends at entry + window,
        # and a goal converts only inside it
        if run.status == "waiting" and run.step == CONVERSION_STEP:
            note("conversion window")
            assert machine.goals, "a journey without goals tracks a conversion window"
            assert run.wake_at == run.entered_at + window
        if run.status == "waiting" and run.step == HOLDOUT_STEP:
            assert run.wake_at == run.entered_at + window
        if exits and exits[0].converted and exits[0].reason.startswith("goal:"):
            assert run.finished_at is not None and run.finished_at - run.entered_at <= window
        if exits and exits[0].reason.startswith("goal:") and not exits[0].converted:
            note("goal after the window")
            assert run.finished_at is not None and run.finished_at - run.entered_at > window
        if kind == "timer" and before is not None and before.step == CONVERSION_STEP and effects:
            assert effects == (Exited(run.run_id, CONVERSION_STEP, "completed", False),)

    # -- rules -----------------------------------------------------------------------------
    @rule(
        user=st.sampled_from(USERS),
        index=st.integers(min_value=0, max_value=len(EVENTS) - 1),
        include_finished=st.booleans(),
    )
    def event(self, user: str, index: int, include_finished: bool) -> None:
        self.ops.append(("event", user, index, include_finished))
        for journey, before, out in self.world.event(user, index, include_finished):
            self.check_outcome(before, out, "event", journey)

    @rule(minutes=st.integers(min_value=0, max_value=40 * 60))
    def clock(self, minutes: int) -> None:
        self.ops.append(("clock", minutes))
        target = self.world.now + timedelta(minutes=minutes)
        while (item := self.world.due(target)) is not None:
            journey, timer = item
            _, current = self.world.runs[timer.run_id]
            stale = current.finished or current.status != "waiting" or current.generation != timer.generation
            before, out = self.world.fire(journey, timer)
            if stale:
                note("stale timer fired")
                assert out.effects == () and out.run == before, "a stale timer did something"
            else:
                assert out.effects, "a live timer did nothing"
            self.check_outcome(before, out, "timer", journey)
        self.world.now = target

    @rule(index=st.integers(min_value=0, max_value=10_000))
    def refire(self, index: int) -> None:
        """Deliver a timer that already fired once more: always stale."""
        self.ops.append(("refire", index))
        if not self.world.fired:
            return
        journey, timer = self.world.fired[index % len(self.world.fired)]
        before, out = self.world.fire(journey, timer)
        assert out.effects == () and out.run == before
        self.check_outcome(before, out, "timer", journey)

    # -- invariants ------------------------------------------------------------------------
    @invariant()
    def one_pending_timer_per_run(self) -> None:
        pending: dict[str, int] = {}
        for _, _, _, timer in self.world.agenda:
            _, run = self.world.runs[timer.run_id]
            if not run.finished and run.generation == timer.generation:
                pending[run.run_id] = pending.get(run.run_id, 0) + 1
        for run_id, (_, run) in self.world.runs.items():
            expected = 1 if run.status == "waiting" else 0
            assert pending.get(run_id, 0) == expected, (run, pending.get(run_id))

    @invariant()
    def one_active_run_per_user(self) -> None:
        for journey in REENTRY_SINGLE:
            for user in USERS:
                assert len(self.world.runs_of(journey, user, include_finished=False)) <= 1

    @invariant()
    def sends_only_in_the_ledger(self) -> None:
        sends = [
            (e.run_id, e.step, e.generation)
            for _, _, out in self.world.log
            for e in out.effects
            if isinstance(e, Send)
        ]
        assert len(sends) == len(set(sends)) == len(self.ledger)

    def teardown(self) -> None:
        assert replay(self.ops) == self.world.log, "same inputs gave different outputs"


EngineStateMachine.TestCase.settings = settings(
    max_examples=50, stateful_step_count=40, deadline=None
)
TestEngineStateMachine = EngineStateMachine.TestCase
