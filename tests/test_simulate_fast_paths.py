"""The dry-run's fast paths change nothing but speed.

* ``Simulator`` caches ``user_view`` per profile until ``UpdateProfile`` changes it;
* it keeps the users' events out of its heap (merged back in exactly the heap's order);
* it pauses the cyclic garbage collector during ``run`` and restores it afterwards;
* ``quick_init`` gives the engine's frozen records a faster, equivalent ``__init__``;
* quiet hours and ``wait: until`` use cached occurrences of a clock time on a local date.
"""

from __future__ import annotations

import dataclasses
import gc
import heapq
import pickle
import random
from datetime import datetime, time, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dryrun_helpers import START, ev, machine, renderer, user
from engine_helpers import UTC, compile_yaml, utc
from orchestrator import effects, engine, outbox, policies, simulate
from orchestrator.engine import user_view
from orchestrator.localtime import at_local, in_window, next_local_time, window_end, zone
from orchestrator.simulate import Simulator

# -- user_view cache -------------------------------------------------------------------------

UPDATE_THEN_WAIT = """
trigger: {event: app_installed}
steps:
  - id: hello
    send: {channel: push, template: complete_profile}
  - id: mark
    update_profile: {plan: pro}
  - id: pause
    wait: 1h
  - id: check
    branch:
      cases:
        - when: "user.plan == 'pro'"
          next: seen
      else: unseen
  - id: unseen
    send: {channel: push, template: complete_profile}
    next: end
  - id: seen
    send: {channel: email, template: welcome}
"""


class UncachedSimulator(Simulator):
    """The reference: a fresh ``user_view`` every time, as before the cache."""

    def _view(self, user_id: str) -> dict[str, Any]:
        return user_view(self.machine, self.profiles[user_id])


def _timeline(sim_class: type[Simulator], m: Any, users: list[dict[str, Any]], events: list[Any],
              days: float = 3) -> list[dict[str, Any]]:
    sim = sim_class(m, renderer(), [dict(u) for u in users])
    return [e.to_dict() for e in sim.run(events, START, START + timedelta(days=days)).timeline]


def test_a_profile_update_is_seen_by_later_steps_and_messages():
    m = compile_yaml(UPDATE_THEN_WAIT)
    users = [user(f"u{i}", plan="free", email=f"u{i}@example.com") for i in range(6)]
    events = [ev(u["id"], "app_installed", START + timedelta(minutes=i)) for i, u in enumerate(users)]
    events += [ev("u0", "app_installed", START + timedelta(hours=5))]  # a second run, after
    cached = _timeline(Simulator, m, users, events)
    assert cached == _timeline(UncachedSimulator, m, users, events)
    sent = [(e["user"], e["step"]) for e in cached if e["action"] == "send"]
    assert ("u1", "seen") in sent and not any(step == "unseen" for _, step in sent)


def test_the_view_cache_matches_a_fresh_view_on_a_shipped_journey():
    m = machine("cart_abandonment")
    users = [user(f"c{i}", preferred_channel=["push", "email", "sms", None][i % 4]) for i in range(40)]
    cart = {"cart_id": "c", "items": [{"sku": "A", "name": "A", "price": 5.0, "quantity": 1,
                                       "image_url": "https://x/a.jpg"}], "total": 5.0,
            "currency": "USD"}
    events = [ev(u["id"], "cart_updated", START + timedelta(minutes=17 * i), cart)
              for i, u in enumerate(users)]
    events += [ev(u["id"], "order_completed", START + timedelta(hours=3 + i), {"order_id": "o"})
               for i, u in enumerate(users[::3])]
    assert _timeline(Simulator, m, users, events, 5) == _timeline(UncachedSimulator, m, users, events, 5)


# -- the agenda ------------------------------------------------------------------------------


def test_a_run_in_two_windows_equals_one_run():
    """Events after the first window's end wait for the next ``run``, in their order."""
    m = machine("cart_abandonment")
    users = [user(f"w{i}") for i in range(12)]
    cart = {"cart_id": "c", "items": [{"sku": "A", "name": "A", "price": 5.0, "quantity": 1,
                                       "image_url": "https://x/a.jpg"}], "total": 5.0,
            "currency": "USD"}
    # several events at the very same instant, and events before the start
    events = [ev(u["id"], "cart_updated", START + timedelta(hours=7 * (i % 4)), cart)
              for i, u in enumerate(users)]
    events.append(ev("w0", "cart_updated", START - timedelta(hours=2), cart))
    end, middle = START + timedelta(days=4), START + timedelta(hours=13)
    whole = Simulator(m, renderer(), users).run(events, START, end)
    split = Simulator(m, renderer(), users)
    split.run(events, START, middle)
    second = split.run([], middle, end)
    assert [e.to_dict() for e in second.timeline] == [e.to_dict() for e in whole.timeline]
    assert second.summary.to_dict() == whole.summary.to_dict()


def test_the_agenda_pops_in_time_kind_arrival_order():
    """_push/_pop against the plain heap they replace, with pushes while draining a time."""
    rng = random.Random(5)
    sim = Simulator(machine("cart_abandonment"), renderer(), [])
    reference: list[tuple[datetime, int, int, int]] = []
    popped, expected = [], []
    times = [START + timedelta(minutes=rng.randint(0, 30)) for _ in range(12)]
    for seq in range(3000):
        if rng.random() < 0.55 or not reference:
            at = rng.choice(times)
            if rng.random() < 0.2:
                at = at.astimezone(zone("Asia/Tokyo"))  # the same instant, another zone
            kind = rng.choice([simulate._TIMER, simulate._MESSAGE])
            sim._push(at, kind, seq)
            heapq.heappush(reference, (at, kind, seq, seq))
        else:
            at, kind, item = sim._pop()
            popped.append((at, at.tzinfo, kind, item))
            ref_at, ref_kind, _, ref_item = heapq.heappop(reference)
            expected.append((ref_at, ref_at.tzinfo, ref_kind, ref_item))
    assert popped == expected


# -- garbage collector -----------------------------------------------------------------------


@pytest.fixture
def gc_state():
    state = (gc.isenabled(), gc.get_threshold(), gc.get_freeze_count())
    yield
    gc.enable() if state[0] else gc.disable()
    gc.set_threshold(*state[1])
    assert gc.get_freeze_count() == state[2]


def _tiny_run(renderer_: Any = None) -> None:
    m = machine("cart_abandonment")
    sim = Simulator(m, renderer_ or renderer(), [user("g1")])
    seen = []
    sim.on_progress = lambda n: seen.append(gc.isenabled())
    cart = {"cart_id": "c", "items": [{"sku": "A", "name": "A", "price": 5.0, "quantity": 1,
                                       "image_url": "https://x/a.jpg"}], "total": 5.0,
            "currency": "USD"}
    sim.run([ev("g1", "cart_updated", START, cart)], START, START + timedelta(days=2))
    assert seen == [False]  # off during the run


@pytest.mark.usefixtures("gc_state")
@pytest.mark.parametrize("enabled", [True, False])
def test_run_restores_the_collector(enabled):
    gc.enable() if enabled else gc.disable()
    gc.set_threshold(1234, 5, 6)
    _tiny_run()
    assert gc.isenabled() is enabled
    assert gc.get_threshold() == (1234, 5, 6)
    assert gc.get_freeze_count() == 0


@pytest.mark.usefixtures("gc_state")
def test_run_restores_the_collector_after_an_error_and_leaves_frozen_objects_alone():
    class Broken:
        def render(self, *args: Any) -> Any:
            raise ValueError("boom")

    gc.enable()
    gc.freeze()
    frozen = gc.get_freeze_count()
    try:
        with pytest.raises(ValueError):
            _tiny_run(Broken())
        assert gc.isenabled()
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()


# -- quick_init --------------------------------------------------------------------------------

RECORDS = [
    effects.Entered, effects.Send, effects.StartTimer, effects.CancelTimer, effects.UpdateProfile,
    effects.Exited, engine.Event, engine.TimerFired, engine.Outcome, policies.Deliver,
    policies.Skip, policies.Defer, policies.Sent, outbox.Prepared,
]


def _reference(cls: type) -> type:
    """The same fields as ``cls`` with the ``__init__`` dataclasses writes."""
    fields = [(f.name, f.type, dataclasses.field(default=f.default)) for f in dataclasses.fields(cls)]
    return dataclasses.make_dataclass(cls.__name__, fields, frozen=True, slots=True)


@pytest.mark.parametrize("cls", RECORDS, ids=lambda c: c.__name__)
def test_quick_init_builds_the_same_frozen_record(cls):
    ref = _reference(cls)
    fields = dataclasses.fields(cls)
    values = [f"v{i}" for i in range(len(fields))]
    for n_positional in range(len(fields) + 1):
        required = [f for f in fields if f.default is dataclasses.MISSING]
        if n_positional < len(required):
            kwargs = {f.name: values[i] for i, f in enumerate(fields) if i >= n_positional
                      and f.default is dataclasses.MISSING}
        else:
            kwargs = {}
        got, want = cls(*values[:n_positional], **kwargs), ref(*values[:n_positional], **kwargs)
        assert dataclasses.astuple(got) == dataclasses.astuple(want)
    obj = cls(*values)
    assert obj == cls(**{f.name: v for f, v in zip(fields, values)})
    assert hash(obj) == hash(cls(*values))
    assert repr(obj).replace(cls.__qualname__, "X") == repr(ref(*values)).replace(ref.__qualname__, "X")
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(obj, fields[0].name, "changed")
    assert dataclasses.replace(obj, **{fields[0].name: "r"}) == cls("r", *values[1:])
    assert pickle.loads(pickle.dumps(obj)) == obj
    with pytest.raises(TypeError):
        cls(*values, "one too many")
    with pytest.raises(TypeError):
        cls(**{f.name: v for f, v in zip(fields, values)}, unknown=1)


def test_quick_init_refuses_what_it_cannot_copy():
    @dataclasses.dataclass(frozen=True)
    class WithFactory:
        items: list[int] = dataclasses.field(default_factory=list)

    @dataclasses.dataclass(frozen=True)
    class WithPostInit:
        x: int

        def __post_init__(self) -> None:
            pass

    for cls in (WithFactory, WithPostInit):
        with pytest.raises(TypeError):
            effects.quick_init(cls)


# -- quiet hours and wait-until: cached occurrences ---------------------------------------------


def _next_local_time_uncached(now: datetime, clock: time, tz: Any) -> datetime:
    """next_local_time as first written: no cache, one conversion per candidate."""
    local_now = now.astimezone(tz)
    for days in range(0, 3):
        day = local_now + timedelta(days=days)
        candidate = at_local(day, clock, tz)
        if candidate > now:
            return candidate
        repeat = datetime.combine(day.date(), clock, tzinfo=tz).replace(fold=1).astimezone(UTC)
        if repeat > now:
            return repeat
    raise AssertionError("unreachable")


ZONES = ["America/New_York", "Europe/Paris", "Australia/Lord_Howe", "Asia/Kolkata", "UTC",
         "America/Sao_Paulo", "Pacific/Chatham"]


@settings(max_examples=300, deadline=None)
@given(
    tz_name=st.sampled_from(ZONES),
    minutes=st.integers(min_value=0, max_value=2 * 366 * 24 * 60),
    seconds=st.integers(min_value=0, max_value=59),
    start=st.times().map(lambda t: t.replace(second=0, microsecond=0)),
    end=st.times().map(lambda t: t.replace(second=0, microsecond=0)),
)
def test_window_end_and_next_local_time_match_the_uncached_arithmetic(tz_name, minutes, seconds,
                                                                       start, end):
    tz = zone(tz_name)
    now = utc(2026, 1, 1) + timedelta(minutes=minutes, seconds=seconds)
    for same_instant in (now, now.astimezone(tz)):
        assert next_local_time(same_instant, end, tz) == _next_local_time_uncached(now, end, tz)
        expected = _next_local_time_uncached(now, end, tz) if in_window(now, start, end, tz) else None
        assert window_end(same_instant, start, end, tz) == expected
    assert next_local_time(now, end.replace(fold=1), tz) == _next_local_time_uncached(
        now, end.replace(fold=1), tz
    )
