"""The pure journey engine: every transition of a run, driven with an injected clock."""

from __future__ import annotations

import copy
from collections import Counter
from datetime import timedelta

import pytest

from engine_helpers import (
    CART,
    EMPTY_CART,
    LESSON,
    ORDER,
    CancelTimer,
    Driver,
    Entered,
    Event,
    Exited,
    Send,
    StartTimer,
    TimerFired,
    UpdateProfile,
    compile_yaml,
    held_out_user,
    in_journey_user,
    is_held_out,
    of_type,
    shipped,
    users_where,
    utc,
)
from orchestrator.engine import CONVERSION_STEP, HOLDOUT_STEP, Outcome, advance, enter, route_event

T0 = utc(2026, 5, 4, 12)  # a Monday, no DST change anywhere near
HOUR = timedelta(hours=1)
WINDOW = timedelta(days=3)  # cart_abandonment's conversion_window


@pytest.fixture(scope="module")
def cart():
    return shipped("cart_abandonment")


@pytest.fixture(scope="module")
def lesson():
    return shipped("lesson_reminder")


@pytest.fixture(scope="module")
def onboarding():
    return shipped("onboarding")


# -- entry -----------------------------------------------------------------------------------


def test_entry_emits_entered_and_starts_the_first_wait(cart):
    user = in_journey_user(cart)
    d = Driver(cart)
    (out,) = d.event(user, "cart_updated", T0, CART)
    run = out.run
    assert out.effects == (
        Entered(run.run_id, "wait_an_hour", holdout=False, restarted=False),
        StartTimer(run.run_id, 1, T0 + HOUR, "wait_an_hour"),
    )
    assert run.status == "waiting"
    assert run.step == "wait_an_hour"
    assert run.generation == 1
    assert run.wake_at == T0 + HOUR
    assert run.entered_at == T0
    assert run.user_id == user
    assert run.journey == "cart_abandonment"
    assert run.version == cart.version
    assert dict(run.trigger) == CART
    assert not run.holdout and not run.finished


def test_cart_abandonment_full_path_without_an_order(cart):
    user = in_journey_user(cart)
    d = Driver(cart)
    (out,) = d.event(user, "cart_updated", T0, CART)
    rid = out.run.run_id

    after_hour = d.fire_current(rid)
    assert after_hour.effects == (
        Send(rid, "nudge", "cart_nudge", ("push", "email", "sms"), True, 1, None),
        StartTimer(rid, 2, T0 + HOUR + 23 * HOUR, "wait_for_order"),
    )
    assert after_hour.run.step == "wait_for_order"

    timeout = d.fire_current(rid)
    variant = timeout.run.variants
    assert len(variant) == 1 and variant[0][0] == "offer"
    name = variant[0][1]
    expected_step = {"discount": "discount_email", "free_shipping": "free_shipping_sms"}[name]
    sends = of_type(timeout.effects, Send)
    assert [(s.step, s.variant, s.generation) for s in sends] == [(expected_step, name, 2)]
    # The steps are done, but the journey has a goal: the run waits out the conversion window
    # (3 days from entry) before it leaves.
    assert timeout.effects[-1] == StartTimer(rid, 3, T0 + WINDOW, CONVERSION_STEP)
    assert of_type(timeout.effects, Exited) == []
    assert timeout.run.status == "waiting" and timeout.run.step == CONVERSION_STEP
    assert timeout.run.wake_at == T0 + WINDOW and timeout.run.variants == variant

    window_end = d.fire_current(rid)
    assert window_end.effects == (Exited(rid, CONVERSION_STEP, "completed", False),)
    assert window_end.run.finished and window_end.run.finished_at == T0 + WINDOW
    assert window_end.run.exit_reason == "completed" and not window_end.run.converted
    assert window_end.run.variants == variant
    assert len(d.sends()) == 2


def test_trigger_condition_false_starts_no_run(cart):
    user = in_journey_user(cart)
    d = Driver(cart)
    assert d.event(user, "cart_updated", T0, EMPTY_CART) == []
    assert d.event(user, "cart_updated", T0, {"cart_id": "c"}) == []  # no items at all
    assert d.runs == {}
    # the same user with a non-empty cart does enter: the condition, not the user, said no
    assert len(d.event(user, "cart_updated", T0, CART)) == 1


def test_other_events_start_no_run(cart):
    d = Driver(cart)
    user = in_journey_user(cart)
    assert d.event(user, "order_completed", T0, ORDER) == []
    assert d.event(user, "lesson_completed", T0, LESSON) == []
    assert d.runs == {}


AUDIENCE = """
trigger:
  event: app_installed
  when: "event.platform == 'ios'"
  audience: "user.country == 'FR'"
steps:
  - id: hello
    send: {channel: email, template: welcome}
"""


def test_audience_condition_on_the_profile():
    m = compile_yaml(AUDIENCE)
    d = Driver(m)
    d.profiles["fr"] = {"id": "fr", "country": "FR", "email": "fr@example.com"}
    d.profiles["us"] = {"id": "us", "country": "US"}
    d.profiles["none"] = {"id": "none"}
    ios = {"platform": "ios", "app_version": "1"}
    (out,) = d.event("fr", "app_installed", T0, ios)
    assert of_type(out.effects, Send)[0].step == "hello"
    assert d.event("us", "app_installed", T0, ios) == []
    assert d.event("none", "app_installed", T0, ios) == []  # missing attribute: not in audience
    # audience holds but the trigger's own condition does not
    assert d.event("fr", "app_installed", T0, {"platform": "android", "app_version": "1"}) == []


# -- re-entry --------------------------------------------------------------------------------


def test_re_entry_ignore_leaves_the_run_alone(onboarding):
    d = Driver(onboarding)
    (first,) = d.event("u1", "app_installed", T0, {"platform": "ios"})
    rid = first.run.run_id
    assert onboarding.re_entry == "ignore"
    assert first.run.status == "waiting" and first.run.generation == 1
    assert d.event("u1", "app_installed", T0 + 2 * HOUR, {"platform": "ios"}) == []
    assert list(d.runs) == [rid]
    assert d.runs[rid] == first.run
    # the original timer still drives the run
    nxt = d.fire_current(rid)
    assert of_type(nxt.effects, Send)[0].step == "profile_nudge"


def test_re_entry_restart_lesson_reminder(lesson):
    assert lesson.re_entry == "restart"
    d = Driver(lesson)
    (first,) = d.event("u1", "lesson_completed", T0, LESSON)
    rid = first.run.run_id
    old_timer = d.last_timer(rid)
    assert old_timer == StartTimer(rid, 1, T0 + timedelta(hours=23, minutes=30), "wait_after_lesson")

    second_at = T0 + 10 * HOUR
    second_lesson = {**LESSON, "lesson_number": 13, "streak": 6}
    (again,) = d.event("u1", "lesson_completed", second_at, second_lesson)
    assert again.run.run_id == rid
    assert again.effects == (
        CancelTimer(rid, 1),
        Entered(rid, "wait_after_lesson", holdout=False, restarted=True),
        StartTimer(rid, 2, second_at + timedelta(hours=23, minutes=30), "wait_after_lesson"),
    )
    assert again.run.entered_at == second_at
    # the superseded start's generations are recognisable (the outbox drops their messages)
    assert again.run.started_generation == 1
    assert dict(again.run.trigger) == second_lesson
    assert len(d.active("u1")) == 1

    stale = d.fire(old_timer)
    assert stale.effects == ()
    assert stale.run == again.run

    done = d.fire_current(rid)
    assert [s.step for s in of_type(done.effects, Send)] == ["reminder"]
    assert done.effects[-1] == Exited(rid, "reminder", "completed", False)
    # replaying the old timer once more, after the run finished: still nothing
    assert d.fire(old_timer).effects == ()
    assert len(d.sends()) == 1
    assert d.sends()[0].generation == 2 >= done.run.started_generation


def test_restart_after_the_run_finished_starts_a_new_run(lesson):
    d = Driver(lesson)
    (first,) = d.event("u1", "lesson_completed", T0, LESSON)
    d.fire_current(first.run.run_id)
    assert d.runs[first.run.run_id].finished
    (second,) = d.event("u1", "lesson_completed", T0 + 30 * HOUR, LESSON)
    assert second.run.run_id != first.run.run_id
    assert second.effects[0] == Entered(second.run.run_id, "wait_after_lesson", False, False)


PARALLEL = """
trigger: {event: app_installed}
re_entry: parallel
goals: [first_purchase]
steps:
  - id: later
    wait: 2h
  - id: hello
    send: {channel: email, template: welcome}
"""


def test_re_entry_parallel_runs_side_by_side():
    m = compile_yaml(PARALLEL)
    d = Driver(m)
    (a,) = d.event("u1", "app_installed", T0, {"platform": "ios"})
    (b,) = d.event("u1", "app_installed", T0 + HOUR, {"platform": "android"})
    assert a.run.run_id != b.run.run_id
    assert b.effects == (
        Entered(b.run.run_id, "later", holdout=False, restarted=False),
        StartTimer(b.run.run_id, 1, T0 + 3 * HOUR, "later"),
    )
    assert {r.run_id for r in d.active("u1")} == {a.run.run_id, b.run.run_id}
    first_done = d.fire_current(a.run.run_id)
    assert [s.run_id for s in of_type(first_done.effects, Send)] == [a.run.run_id]
    # run a's steps are done; it waits out its conversion window (default 3d)
    assert first_done.run.step == CONVERSION_STEP and first_done.run.status == "waiting"
    assert first_done.run.wake_at == T0 + WINDOW
    assert d.runs[b.run.run_id].status == "waiting"
    # a goal ends every active run of the user, the one tracking its window included
    outs = d.event("u1", "first_purchase", T0 + 2 * HOUR, {"order_id": "o", "total": 1.0})
    assert [(o.run.run_id, o.run.step, o.run.exit_reason, o.run.converted) for o in outs] == [
        (a.run.run_id, CONVERSION_STEP, "goal:first_purchase", True),
        (b.run.run_id, "later", "goal:first_purchase", True),
    ]
    assert d.active("u1") == []


# -- goals and exits -------------------------------------------------------------------------


def test_goal_while_waiting_ends_the_run_converted(cart):
    user = in_journey_user(cart)
    d = Driver(cart)
    (out,) = d.event(user, "cart_updated", T0, CART)
    rid = out.run.run_id
    timer = d.last_timer(rid)
    (goal,) = d.event(user, "order_completed", T0 + timedelta(minutes=30), ORDER)
    assert goal.effects == (
        CancelTimer(rid, 1),
        Exited(rid, "wait_an_hour", "goal:order_completed", True),
    )
    assert goal.run.finished and goal.run.converted
    assert goal.run.exit_reason == "goal:order_completed"
    assert goal.run.finished_at == T0 + timedelta(minutes=30)
    assert goal.run.wake_at is None
    stale = d.fire(timer)
    assert stale.effects == () and stale.run == goal.run
    assert d.sends() == []


def test_goal_during_wait_for_beats_on_event(cart):
    """order_completed is both the goal and the awaited event: the goal wins (rule 2)."""
    user = in_journey_user(cart)
    d = Driver(cart)
    (out,) = d.event(user, "cart_updated", T0, CART)
    rid = out.run.run_id
    d.fire_current(rid)  # nudge sent, now in wait_for_order at generation 2
    (goal,) = d.event(user, "order_completed", T0 + 5 * HOUR, ORDER)
    assert goal.effects == (
        CancelTimer(rid, 2),
        Exited(rid, "wait_for_order", "goal:order_completed", True),
    )
    assert d.fire(d.last_timer(rid)).effects == ()


GOAL_WHEN = """
trigger: {event: app_installed}
goals:
  - {event: order_completed, when: "event.total >= 20"}
exit_on:
  - profile_completed
steps:
  - id: hold
    wait: 1d
  - id: hello
    send: {channel: email, template: welcome}
"""


def test_goal_whose_condition_fails_does_not_end_the_run():
    m = compile_yaml(GOAL_WHEN)
    d = Driver(m)
    (out,) = d.event("u1", "app_installed", T0, {})
    rid = out.run.run_id
    small = {**ORDER, "total": 10.0}
    assert d.event("u1", "order_completed", T0 + HOUR, small) == []
    assert d.runs[rid] == out.run
    assert d.event("u1", "order_completed", T0 + HOUR, {"order_id": "x"}) == []  # no total
    (goal,) = d.event("u1", "order_completed", T0 + 2 * HOUR, {**ORDER, "total": 25.0})
    assert goal.run.converted and goal.run.exit_reason == "goal:order_completed"


def test_exit_on_ends_the_run_not_converted():
    m = compile_yaml(GOAL_WHEN)
    d = Driver(m)
    (out,) = d.event("u1", "app_installed", T0, {})
    rid = out.run.run_id
    (ex,) = d.event("u1", "profile_completed", T0 + HOUR, {})
    assert ex.effects == (CancelTimer(rid, 1), Exited(rid, "hold", "exit:profile_completed", False))
    assert ex.run.finished and not ex.run.converted
    assert d.fire(d.last_timer(rid)).effects == ()
    assert d.sends() == []


def _through_the_steps(d: Driver, user: str):
    """Enter the cart journey at T0 and run it to the end of its steps (the offer)."""
    (out,) = d.event(user, "cart_updated", T0, CART)
    rid = out.run.run_id
    d.fire_current(rid)  # the nudge, then wait_for_order
    done = d.fire_current(rid)  # the offer, then the conversion window
    assert done.run.step == CONVERSION_STEP and done.run.generation == 3
    return rid, done


# -- the conversion window after the steps ---------------------------------------------------


def test_goal_during_the_conversion_window_converts(cart):
    user = in_journey_user(cart)
    d = Driver(cart)
    rid, done = _through_the_steps(d, user)
    (goal,) = d.event(user, "order_completed", T0 + 2 * 24 * HOUR, ORDER)
    assert goal.effects == (
        CancelTimer(rid, 3),
        Exited(rid, CONVERSION_STEP, "goal:order_completed", True),
    )
    assert goal.run.finished and goal.run.converted
    assert goal.run.finished_at == T0 + 2 * 24 * HOUR
    assert goal.run.variants == done.run.variants  # the arm is still attributed
    assert d.fire(d.last_timer(rid)).effects == ()  # the window's timer is stale now


def test_goal_at_the_very_end_of_the_window_still_converts(cart):
    user = in_journey_user(cart)
    d = Driver(cart)
    rid, _ = _through_the_steps(d, user)
    (goal,) = d.event(user, "order_completed", T0 + WINDOW, ORDER)
    assert goal.run.converted and goal.run.exit_reason == "goal:order_completed"


def test_window_end_without_a_goal_exits_completed_and_a_later_goal_does_nothing(cart):
    user = in_journey_user(cart)
    d = Driver(cart)
    rid, _ = _through_the_steps(d, user)
    end = d.fire_current(rid)
    assert end.effects == (Exited(rid, CONVERSION_STEP, "completed", False),)
    assert end.run.finished_at == T0 + WINDOW
    assert d.event(user, "order_completed", T0 + WINDOW + HOUR, ORDER) == []
    assert d.runs[rid] == end.run


def test_run_in_its_conversion_window_is_restarted_by_a_new_cart(cart):
    user = in_journey_user(cart)
    d = Driver(cart)
    rid, _ = _through_the_steps(d, user)
    later = T0 + 2 * 24 * HOUR
    (again,) = d.event(user, "cart_updated", later, CART)
    assert again.run.run_id == rid  # the same run, not a second one
    assert again.effects == (
        CancelTimer(rid, 3),
        Entered(rid, "wait_an_hour", holdout=False, restarted=True),
        StartTimer(rid, 4, later + HOUR, "wait_an_hour"),
    )
    assert again.run.entered_at == later and again.run.started_generation == 3
    assert again.run.variants == ()
    assert len(d.runs_of(user)) == 1


REENTRY_IGNORE_WITH_GOAL = """
trigger: {event: app_installed}
re_entry: ignore
goals: [first_purchase]
conversion_window: 2d
steps:
  - id: hello
    send: {channel: email, template: welcome}
"""


def test_run_in_its_conversion_window_counts_as_in_the_journey_for_ignore():
    m = compile_yaml(REENTRY_IGNORE_WITH_GOAL)
    d = Driver(m)
    (first,) = d.event("u1", "app_installed", T0, {})
    rid = first.run.run_id
    assert first.effects == (
        Entered(rid, "hello", holdout=False, restarted=False),
        Send(rid, "hello", "welcome", ("email",), False, 0, None),
        StartTimer(rid, 1, T0 + 48 * HOUR, CONVERSION_STEP),
    )
    assert d.event("u1", "app_installed", T0 + 24 * HOUR, {}) == []  # still in the journey
    assert d.fire_current(rid).effects == (Exited(rid, CONVERSION_STEP, "completed", False),)
    (second,) = d.event("u1", "app_installed", T0 + 49 * HOUR, {})
    assert second.run.run_id != rid
    assert second.effects[0] == Entered(second.run.run_id, "hello", holdout=False, restarted=False)


SHORT_WINDOW = """
trigger: {event: app_installed}
re_entry: restart
goals: [first_purchase]
conversion_window: 1h
steps:
  - id: hold
    wait: 2h
  - id: hello
    send: {channel: email, template: welcome}
"""
PURCHASE = {"order_id": "o-1", "total": 19.0}


@pytest.fixture(scope="module")
def short_window():
    return compile_yaml(SHORT_WINDOW)


def test_goal_after_the_conversion_window_ends_the_run_not_converted(short_window):
    d = Driver(short_window)
    (out,) = d.event("u1", "app_installed", T0, {})
    rid = out.run.run_id
    (goal,) = d.event("u1", "first_purchase", T0 + 90 * timedelta(minutes=1), PURCHASE)
    assert goal.effects == (CancelTimer(rid, 1), Exited(rid, "hold", "goal:first_purchase", False))
    assert goal.run.finished and not goal.run.converted
    assert goal.run.exit_reason == "goal:first_purchase"
    assert d.fire(d.last_timer(rid)).effects == ()
    assert d.sends() == []


def test_goal_exactly_at_the_end_of_a_short_window_converts(short_window):
    d = Driver(short_window)
    d.event("u1", "app_installed", T0, {})
    (goal,) = d.event("u1", "first_purchase", T0 + HOUR, PURCHASE)
    assert goal.run.converted


def test_conversion_window_counts_from_the_last_restart(short_window):
    d = Driver(short_window)
    (out,) = d.event("u1", "app_installed", T0, {})
    d.event("u1", "app_installed", T0 + 90 * timedelta(minutes=1), {})  # restart
    # 2h after the first entry, 30 minutes after the restart: inside the window
    (goal,) = d.event("u1", "first_purchase", T0 + 2 * HOUR, PURCHASE)
    assert goal.run.run_id == out.run.run_id
    assert goal.run.converted and goal.run.exit_reason == "goal:first_purchase"


def test_steps_ending_after_the_window_exit_at_once(short_window):
    d = Driver(short_window)
    (out,) = d.event("u1", "app_installed", T0, {})
    rid = out.run.run_id
    done = d.fire_current(rid)  # 2h in: the 1h window is already over
    assert done.effects == (
        Send(rid, "hello", "welcome", ("email",), False, 1, None),
        Exited(rid, "hello", "completed", False),
    )
    assert done.run.finished and done.run.finished_at == T0 + 2 * HOUR


# -- exit_on: an emptied cart ----------------------------------------------------------------


def test_emptied_cart_exits_before_the_nudge(cart):
    user = in_journey_user(cart)
    d = Driver(cart)
    (out,) = d.event(user, "cart_updated", T0, CART)
    rid = out.run.run_id
    (ex,) = d.event(user, "cart_updated", T0 + HOUR / 2, EMPTY_CART)
    assert ex.effects == (CancelTimer(rid, 1), Exited(rid, "wait_an_hour", "exit:cart_updated", False))
    assert ex.run.finished and not ex.run.converted
    assert d.fire(d.last_timer(rid)).effects == ()  # the pending nudge never comes
    assert d.sends() == []


def test_emptied_cart_exits_while_waiting_for_the_order_and_in_the_window(cart):
    user = in_journey_user(cart)
    d = Driver(cart)
    (out,) = d.event(user, "cart_updated", T0, CART)
    rid = out.run.run_id
    d.fire_current(rid)
    (ex,) = d.event(user, "cart_updated", T0 + 5 * HOUR, EMPTY_CART)
    assert ex.effects == (CancelTimer(rid, 2), Exited(rid, "wait_for_order", "exit:cart_updated", False))
    assert d.fire(d.last_timer(rid)).effects == ()
    assert [s.step for s in d.sends()] == ["nudge"]  # no offer

    d2 = Driver(cart)
    rid2, _ = _through_the_steps(d2, user)
    (ex2,) = d2.event(user, "cart_updated", T0 + 2 * 24 * HOUR, EMPTY_CART)
    assert ex2.effects == (CancelTimer(rid2, 3), Exited(rid2, CONVERSION_STEP, "exit:cart_updated", False))


def test_emptied_cart_ends_a_held_out_run_too(cart):
    user = held_out_user(cart)
    d = Driver(cart)
    (out,) = d.event(user, "cart_updated", T0, CART)
    rid = out.run.run_id
    (ex,) = d.event(user, "cart_updated", T0 + HOUR, EMPTY_CART)
    assert ex.effects == (CancelTimer(rid, 1), Exited(rid, HOLDOUT_STEP, "exit:cart_updated", False))


def test_cart_update_without_items_key_is_neither_exit_nor_trigger(cart):
    user = in_journey_user(cart)
    d = Driver(cart)
    (out,) = d.event(user, "cart_updated", T0, CART)
    assert d.event(user, "cart_updated", T0 + HOUR / 2, {"cart_id": "cart-1"}) == []
    assert d.runs[out.run.run_id] == out.run


# -- wait_for --------------------------------------------------------------------------------

WAIT_FOR = """
trigger: {event: app_installed}
steps:
  - id: await_lesson
    wait_for:
      event: lesson_completed
      when: "event.lesson_number > 5"
      timeout: 1d
      on_event: thanks
      on_timeout: nudge
  - id: nudge
    send: {channel: push, template: complete_profile}
    next: end
  - id: thanks
    send: {channel: email, template: welcome}
"""


@pytest.fixture(scope="module")
def wait_for_machine():
    return compile_yaml(WAIT_FOR)


def test_wait_for_event_goes_to_on_event(wait_for_machine):
    d = Driver(wait_for_machine)
    (out,) = d.event("u1", "app_installed", T0, {})
    rid = out.run.run_id
    assert out.effects[-1] == StartTimer(rid, 1, T0 + 24 * HOUR, "await_lesson")
    (got,) = d.event("u1", "lesson_completed", T0 + HOUR, {**LESSON, "lesson_number": 7})
    assert got.effects == (
        CancelTimer(rid, 1),
        Send(rid, "thanks", "welcome", ("email",), False, 1, None),
        Exited(rid, "thanks", "completed", False),
    )
    assert d.fire(d.last_timer(rid)).effects == ()  # the timeout is stale now


def test_wait_for_timeout_goes_to_on_timeout(wait_for_machine):
    d = Driver(wait_for_machine)
    (out,) = d.event("u1", "app_installed", T0, {})
    rid = out.run.run_id
    timed_out = d.fire_current(rid)
    assert timed_out.effects == (
        Send(rid, "nudge", "complete_profile", ("push",), False, 1, None),
        Exited(rid, "nudge", "completed", False),
    )
    # the awaited event after the timeout: the run is over
    assert d.event("u1", "lesson_completed", T0 + 25 * HOUR, {**LESSON, "lesson_number": 9}) == []


def test_wait_for_event_whose_condition_fails_keeps_waiting(wait_for_machine):
    d = Driver(wait_for_machine)
    (out,) = d.event("u1", "app_installed", T0, {})
    rid = out.run.run_id
    assert d.event("u1", "lesson_completed", T0 + HOUR, {**LESSON, "lesson_number": 3}) == []
    assert d.event("u1", "order_completed", T0 + HOUR, ORDER) == []  # not awaited at all
    assert d.runs[rid] == out.run
    (got,) = d.event("u1", "lesson_completed", T0 + 2 * HOUR, {**LESSON, "lesson_number": 6})
    assert [s.step for s in of_type(got.effects, Send)] == ["thanks"]


def test_wait_for_event_for_another_user_is_not_routed(wait_for_machine):
    d = Driver(wait_for_machine)
    d.event("u1", "app_installed", T0, {})
    assert d.event("u2", "lesson_completed", T0 + HOUR, {**LESSON, "lesson_number": 9}) == []
    assert d.active("u1")[0].status == "waiting"


# -- wait until a local clock time -----------------------------------------------------------

WAIT_UNTIL = """
trigger: {event: app_installed}
delivery: {timezone: America/New_York}
steps:
  - id: morning
    wait: {until: "09:00"}
  - id: hello
    send: {channel: email, template: welcome}
"""


@pytest.fixture(scope="module")
def wait_until_machine():
    return compile_yaml(WAIT_UNTIL)


@pytest.mark.parametrize(
    ("timezone", "now", "expected"),
    [
        # Paris is UTC+2 in May: 12:00 local has passed 09:00, so tomorrow 09:00 = 07:00 UTC
        ("Europe/Paris", utc(2026, 5, 4, 10), utc(2026, 5, 5, 7)),
        # 08:00 local: today's 09:00
        ("Europe/Paris", utc(2026, 5, 4, 6), utc(2026, 5, 4, 7)),
        # exactly 09:00 local: strictly after now, so tomorrow
        ("Europe/Paris", utc(2026, 5, 4, 7), utc(2026, 5, 5, 7)),
        ("Asia/Tokyo", utc(2026, 5, 4, 10), utc(2026, 5, 5, 0)),
        # no time zone: the journey's America/New_York (06:00 EDT -> 09:00 EDT = 13:00 UTC)
        (None, utc(2026, 5, 4, 10), utc(2026, 5, 4, 13)),
        # an unknown zone falls back to the journey's default too
        ("Mars/Olympus_Mons", utc(2026, 5, 4, 10), utc(2026, 5, 4, 13)),
        # DST starts in New York on 2026-03-08: noon EST on the 7th -> 09:00 EDT on the 8th
        ("America/New_York", utc(2026, 3, 7, 17), utc(2026, 3, 8, 13)),
        # DST ends on 2026-11-01: noon EDT on 10-31 -> 09:00 EST on 11-01
        ("America/New_York", utc(2026, 10, 31, 16), utc(2026, 11, 1, 14)),
        (None, utc(2026, 10, 31, 16), utc(2026, 11, 1, 14)),
    ],
)
def test_wait_until_local_clock_time(wait_until_machine, timezone, now, expected):
    d = Driver(wait_until_machine)
    d.profiles["u1"] = {"id": "u1", "timezone": timezone}
    (out,) = d.event("u1", "app_installed", now, {})
    assert out.effects[-1] == StartTimer(out.run.run_id, 1, expected, "morning")
    fired = d.fire_current(out.run.run_id)
    assert [s.step for s in of_type(fired.effects, Send)] == ["hello"]


def test_wait_until_across_dst_is_not_a_fixed_24h(wait_until_machine):
    """Waiting from 09:00 local to the next 09:00 local takes 23h on spring-forward day and
    25h on fall-back day."""
    d = Driver(wait_until_machine)
    d.profiles["u1"] = {"id": "u1", "timezone": "America/New_York"}
    (spring,) = d.event("u1", "app_installed", utc(2026, 3, 7, 14), {})  # 09:00 EST
    assert spring.run.wake_at - utc(2026, 3, 7, 14) == timedelta(hours=23)
    d2 = Driver(wait_until_machine)
    d2.profiles["u1"] = {"id": "u1", "timezone": "America/New_York"}
    (fall,) = d2.event("u1", "app_installed", utc(2026, 10, 31, 13), {})  # 09:00 EDT
    assert fall.run.wake_at - utc(2026, 10, 31, 13) == timedelta(hours=25)


# -- branches and profile defaults -----------------------------------------------------------


def test_branch_uses_catalog_default_for_missing_attribute(onboarding):
    d = Driver(onboarding)
    (out,) = d.event("u1", "app_installed", T0, {"platform": "ios"})
    rid = out.run.run_id
    assert [s.step for s in of_type(out.effects, Send)] == ["welcome"]
    day1 = d.fire_current(rid)  # no profile_completed: the default false -> nudge
    assert [s.step for s in of_type(day1.effects, Send)] == ["profile_nudge"]
    assert day1.effects[-1] == StartTimer(rid, 2, T0 + 3 * 24 * HOUR, "day_3")
    day3 = d.fire_current(rid)  # sms_opt_in defaults to false -> the steps are done
    assert of_type(day3.effects, Send) == []
    # ... and the run waits out the 7-day conversion window, as the holdout group does
    assert day3.effects == (StartTimer(rid, 3, T0 + 7 * 24 * HOUR, CONVERSION_STEP),)


def test_branch_follows_profile_attributes(onboarding):
    d = Driver(onboarding)
    d.profiles["u2"] = {"id": "u2", "profile_completed": True, "sms_opt_in": True}
    (out,) = d.event("u2", "app_installed", T0, {"platform": "ios"})
    rid = out.run.run_id
    day1 = d.fire_current(rid)
    assert of_type(day1.effects, Send) == []
    day3 = d.fire_current(rid)  # has_purchased defaults to false -> the SMS offer
    assert [s.step for s in of_type(day3.effects, Send)] == ["first_order_sms"]
    assert day3.effects[-1] == StartTimer(rid, 3, T0 + 7 * 24 * HOUR, CONVERSION_STEP)
    # the branch reads the profile as it is when the timer fires
    d.profiles["u3"] = {"id": "u3", "sms_opt_in": True}
    (out3,) = d.event("u3", "app_installed", T0, {"platform": "ios"})
    d.fire_current(out3.run.run_id)
    d.profiles["u3"]["has_purchased"] = True
    day3b = d.fire_current(out3.run.run_id)
    assert of_type(day3b.effects, Send) == []


# -- split -----------------------------------------------------------------------------------

SPLIT = """
trigger: {event: app_installed}
re_entry: restart
steps:
  - id: pause
    wait: 1h
  - id: ab
    split:
      - {name: a, weight: 20%, next: send_a}
      - {name: b, weight: 30%, next: send_b}
      - {name: c, weight: 50%, next: send_c}
  - id: send_a
    send: {channel: email, template: welcome}
    next: end
  - id: send_b
    send: {channel: push, template: complete_profile}
    next: end
  - id: send_c
    send: {channel: sms, template: first_order_offer}
"""


@pytest.fixture(scope="module")
def split_machine():
    return compile_yaml(SPLIT)


def _variant_after_split(d: Driver, user: str, at) -> tuple[str, Send]:
    (out,) = d.event(user, "app_installed", at, {})
    fired = d.fire_current(out.run.run_id)
    (send,) = of_type(fired.effects, Send)
    assert fired.run.variants == (("ab", send.variant),)
    return send.variant, send


def test_split_is_deterministic_per_user(split_machine):
    for user in ("alice", "bob", "carol", "dave"):
        v1, s1 = _variant_after_split(Driver(split_machine), user, T0)
        v2, s2 = _variant_after_split(Driver(split_machine), user, T0 + 1000 * HOUR)
        assert v1 == v2 and s1.step == s2.step == f"send_{v1}"


def test_split_variant_survives_a_restart(cart):
    user = in_journey_user(cart)
    d = Driver(cart)
    (out,) = d.event(user, "cart_updated", T0, CART)
    rid = out.run.run_id
    d.fire_current(rid)
    first = d.fire_current(rid).run.variants
    d2 = Driver(cart)
    (o2,) = d2.event(user, "cart_updated", T0, CART)
    d2.fire_current(o2.run.run_id)  # in wait_for_order
    (restarted,) = d2.event(user, "cart_updated", T0 + 2 * HOUR, CART)
    assert restarted.run.variants == ()
    d2.fire_current(rid2 := restarted.run.run_id)
    again = d2.fire_current(rid2).run.variants
    assert again == first


def test_split_shares_follow_the_weights(split_machine):
    counts: Counter[str] = Counter()
    d = Driver(split_machine)
    n = 2000
    for i in range(n):
        variant, _ = _variant_after_split(d, f"user-{i}", T0)
        counts[variant] += 1
    assert sum(counts.values()) == n
    for name, weight in (("a", 0.20), ("b", 0.30), ("c", 0.50)):
        assert abs(counts[name] / n - weight) < 0.03, counts


def test_cart_split_is_roughly_even(cart):
    counts: Counter[str] = Counter()
    users = users_where(cart, held_out=False, count=2000, prefix="shopper")
    for user in users:
        d = Driver(cart)
        (out,) = d.event(user, "cart_updated", T0, CART)
        d.fire_current(out.run.run_id)
        counts[d.fire_current(out.run.run_id).run.variants[0][1]] += 1
    assert abs(counts["discount"] / 2000 - 0.5) < 0.03, counts


# -- holdout ---------------------------------------------------------------------------------


def test_holdout_share_is_about_ten_percent(cart):
    assert cart.holdout == 10.0
    held = 0
    for i in range(2000):
        outs = route_event(cart, [], {"id": f"u{i}"}, Event(f"u{i}", "cart_updated", T0, CART), T0, f"r{i}")
        (out,) = outs
        held += out.run.holdout
        assert out.run.holdout == is_held_out(cart, f"u{i}")
    assert 0.08 <= held / 2000 <= 0.12


def test_held_out_run_waits_out_the_conversion_window(cart):
    user = held_out_user(cart)
    d = Driver(cart)
    (out,) = d.event(user, "cart_updated", T0, CART)
    rid = out.run.run_id
    window = timedelta(seconds=cart.conversion_window)
    assert window == timedelta(days=3)
    assert out.effects == (
        Entered(rid, None, holdout=True, restarted=False),
        StartTimer(rid, 1, T0 + window, HOLDOUT_STEP),
    )
    assert out.run.holdout
    done = d.fire_current(rid)
    assert done.effects == (Exited(rid, HOLDOUT_STEP, "holdout_window_ended", False),)
    assert done.run.finished and not done.run.converted
    assert done.run.finished_at == T0 + window
    assert d.sends() == []


def test_held_out_run_converts_on_a_goal(cart):
    user = held_out_user(cart)
    d = Driver(cart)
    (out,) = d.event(user, "cart_updated", T0, CART)
    rid = out.run.run_id
    (goal,) = d.event(user, "order_completed", T0 + 30 * HOUR, ORDER)
    assert goal.effects == (
        CancelTimer(rid, 1),
        Exited(rid, HOLDOUT_STEP, "goal:order_completed", True),
    )
    assert goal.run.converted and goal.run.holdout
    assert d.fire(d.last_timer(rid)).effects == ()


def test_held_out_user_never_gets_a_send(cart):
    for user in users_where(cart, held_out=True, count=20):
        d = Driver(cart)
        at = T0
        d.event(user, "cart_updated", at, CART)
        d.event(user, "cart_updated", at + 2 * HOUR, CART)  # restart: still held out
        (run,) = d.active(user)
        assert run.holdout and run.generation == 2
        for timer in list(d.timers):
            d.fire(timer)
        assert d.runs[run.run_id].exit_reason == "holdout_window_ended"
        d.event(user, "cart_updated", at + 100 * HOUR, CART)
        d.event(user, "order_completed", at + 101 * HOUR, ORDER)
        assert d.sends() == [], user
        entered = of_type(d.log, Entered)
        assert entered and all(e.holdout and e.step is None for e in entered)


# -- update_profile, exit --------------------------------------------------------------------

UPDATE = """
trigger: {event: app_installed}
steps:
  - id: mark
    update_profile: {onboarding_nudged: true, plan: pro}
  - id: check
    branch:
      cases:
        - when: "user.onboarding_nudged and user.plan == 'pro'"
          next: seen
      else: unseen
  - id: unseen
    send: {channel: push, template: complete_profile}
    next: end
  - id: seen
    send: {channel: email, template: welcome}
"""


def test_update_profile_is_an_effect_the_run_sees_at_once():
    m = compile_yaml(UPDATE)
    profile = {"id": "u1", "plan": "free"}
    before = copy.deepcopy(profile)
    (out,) = route_event(m, [], profile, Event("u1", "app_installed", T0, {}), T0, "r1")
    assert out.effects == (
        Entered("r1", "mark", holdout=False, restarted=False),
        UpdateProfile("u1", {"onboarding_nudged": True, "plan": "pro"}),
        Send("r1", "seen", "welcome", ("email",), False, 0, None),
        Exited("r1", "seen", "completed", False),
    )
    assert profile == before  # the engine asks; the driver applies


EXIT_STEP = """
trigger: {event: app_installed}
steps:
  - id: hello
    send: {channel: email, template: welcome}
  - id: done
    exit: {reason: welcomed, converted: true}
"""


def test_exit_step_with_converted():
    m = compile_yaml(EXIT_STEP)
    d = Driver(m)
    (out,) = d.event("u1", "app_installed", T0, {})
    rid = out.run.run_id
    assert out.effects[-1] == Exited(rid, "done", "welcomed", True)
    assert out.run.finished and out.run.converted
    assert out.run.exit_reason == "welcomed" and out.run.step == "done"


# -- finished runs, stale timers -------------------------------------------------------------


def test_finished_runs_ignore_everything(cart):
    user = in_journey_user(cart)
    d = Driver(cart)
    (out,) = d.event(user, "cart_updated", T0, CART)
    rid = out.run.run_id
    timer = d.last_timer(rid)
    (goal,) = d.event(user, "order_completed", T0 + HOUR / 2, ORDER)
    finished = goal.run
    profile = {"id": user}
    for stimulus in (
        TimerFired(rid, 1),
        TimerFired(rid, 2),
        Event(user, "order_completed", T0 + HOUR, ORDER),
        Event(user, "cart_updated", T0 + HOUR, CART),
        Event(user, "lesson_completed", T0 + HOUR, LESSON),
    ):
        assert advance(cart, finished, stimulus, profile, T0 + HOUR) == Outcome(finished, ())
    # route_event skips finished runs, even when a caller passes them
    assert route_event(cart, [finished], profile, Event(user, "order_completed", T0 + HOUR, ORDER), T0 + HOUR, "new") == []
    # ... and a trigger starts a fresh run instead of restarting the finished one
    (fresh,) = route_event(cart, [finished], profile, Event(user, "cart_updated", T0 + HOUR, CART), T0 + HOUR, "new")
    assert fresh.run.run_id == "new" and fresh.effects[0] == Entered("new", "wait_an_hour", False, False)
    assert d.fire(timer).effects == ()


def test_stale_generation_timers_are_no_ops(cart):
    user = in_journey_user(cart)
    d = Driver(cart)
    (out,) = d.event(user, "cart_updated", T0, CART)
    rid = out.run.run_id
    first = d.last_timer(rid)
    d.fire(first)
    run = d.runs[rid]
    assert run.generation == 2
    for gen in (0, 1, 3, 99):
        assert advance(cart, run, TimerFired(rid, gen), {"id": user}, T0 + 2 * HOUR) == Outcome(run, ())
    assert d.fire(first, at=T0 + 5 * HOUR).effects == ()  # the same timer delivered twice
    assert d.runs[rid] == run


def test_advance_with_an_unrelated_event_changes_nothing(cart):
    user = in_journey_user(cart)
    (out,) = route_event(cart, [], {"id": user}, Event(user, "cart_updated", T0, CART), T0, "r1")
    unrelated = Event(user, "app_installed", T0 + HOUR, {"platform": "ios"})
    assert advance(cart, out.run, unrelated, {"id": user}, T0 + HOUR) == Outcome(out.run, ())


# -- purity ----------------------------------------------------------------------------------


def _fire_all(d: Driver, at=None) -> None:
    """Fire every timer ever started, in order, including ones started while firing."""
    i = 0
    while i < len(d.timers):
        d.fire(d.timers[i], at=at)
        i += 1


def _scenario(machine, user: str) -> tuple[list, dict]:
    """Triggers, goals, unrelated events and every timer (stale ones too) for one user."""
    d = Driver(machine)
    d.profiles[user] = {"id": user, "timezone": "America/New_York", "email": "x@example.com"}
    d.event(user, "cart_updated", T0, CART)
    d.event(user, "lesson_completed", T0 + HOUR / 4, LESSON)
    d.event(user, "app_installed", T0 + HOUR / 2, {"platform": "ios"})
    d.event(user, "app_installed", T0 + HOUR, {"platform": "ios"})
    _fire_all(d)
    d.event(user, "cart_updated", T0 + 30 * HOUR, CART)
    d.event(user, "lesson_completed", T0 + 31 * HOUR, LESSON)
    d.event(user, "order_completed", T0 + 32 * HOUR, ORDER)
    _fire_all(d, at=T0 + 200 * HOUR)
    return d.log, d.runs


def test_the_machine_is_not_mutated(cart, lesson, onboarding):
    for machine in (cart, lesson, onboarding, compile_yaml(UPDATE), compile_yaml(SPLIT)):
        before_json = machine.to_json()
        before = copy.deepcopy(machine)
        states = dict(machine.states)
        for user in ("u1", held_out_user(cart), in_journey_user(cart)):
            log, _ = _scenario(machine, user)
            assert log
        assert machine.to_json() == before_json
        assert machine == before
        assert dict(machine.states) == states


def test_same_inputs_give_equal_outputs(cart):
    for machine in (cart, shipped("lesson_reminder"), shipped("onboarding")):
        for user in (in_journey_user(cart), held_out_user(cart)):
            log1, runs1 = _scenario(machine, user)
            log2, runs2 = _scenario(machine, user)
            assert log1 == log2 and log1
            assert runs1 == runs2
    ev = Event("u1", "cart_updated", T0, CART)
    assert route_event(cart, [], {"id": "u1"}, ev, T0, "r") == route_event(cart, [], {"id": "u1"}, ev, T0, "r")
    assert enter(cart, {"id": "u1"}, ev, T0, "r") == enter(cart, {"id": "u1"}, ev, T0, "r")
