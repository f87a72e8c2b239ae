"""Delivery policy: run ended, channel choice and fallback, quiet hours, frequency caps."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from freezegun import freeze_time

from engine_helpers import (
    CART, LESSON, ORDER, UTC, Driver, Send, in_journey_user, of_type, renderer, shipped, utc,
)
from orchestrator.localtime import zone
from orchestrator.machine import Cap, Delivery
from orchestrator.engine import CONVERSION_STEP
from orchestrator.outbox import Prepared, prepare
from orchestrator.policies import Defer, Deliver, Sent, Skip, channel_order, decide

NOON = utc(2026, 5, 4, 16)  # 12:00 in New York (EDT), outside quiet hours
ALL = ("push", "email", "sms")
PLAIN = Delivery()  # no quiet hours, no caps, UTC
QUIET_NY = Delivery(quiet_hours=("21:00", "08:00"), timezone="America/New_York")
DAY = 86400


def user(**extra):
    base = {
        "id": "u1",
        "email": "u1@example.com",
        "phone": "+14155550100",
        "push_tokens": ["tok-1"],
    }
    base.update(extra)
    return base


def only(**contact):
    """A user with just the given fields (no default contact points)."""
    return {"id": "u1", **contact}


# -- channel order ---------------------------------------------------------------------------


def test_channels_in_step_order_when_not_preferring():
    assert decide(PLAIN, ALL, False, user(preferred_channel="sms"), [], NOON) == Deliver("push")
    assert decide(PLAIN, ("email", "push"), False, user(), [], NOON) == Deliver("email")


def test_preferred_channel_first():
    assert decide(PLAIN, ALL, True, user(preferred_channel="sms"), [], NOON) == Deliver("sms")
    assert decide(PLAIN, ALL, True, user(preferred_channel="email"), [], NOON) == Deliver("email")
    assert channel_order(ALL, True, user(preferred_channel="sms")) == ["sms", "push", "email"]


def test_preferred_channel_not_in_the_step_is_ignored():
    assert decide(PLAIN, ("push", "email"), True, user(preferred_channel="sms"), [], NOON) == Deliver("push")
    assert decide(PLAIN, ALL, True, user(preferred_channel="pigeon"), [], NOON) == Deliver("push")
    assert decide(PLAIN, ALL, True, user(preferred_channel=None), [], NOON) == Deliver("push")


def test_channel_order_does_not_mutate_its_input():
    channels = ["push", "email", "sms"]
    channel_order(channels, True, {"preferred_channel": "sms"})
    assert channels == ["push", "email", "sms"]


# -- fallback past missing contact points and opt-outs ---------------------------------------


@pytest.mark.parametrize(
    ("profile", "channels", "expected"),
    [
        # no push token at all, an empty token list, a None
        (only(email="a@example.com", phone="+1"), ALL, Deliver("email", ("push",))),
        (only(email="a@example.com", push_tokens=[]), ALL, Deliver("email", ("push",))),
        (only(email="a@example.com", push_tokens=None), ALL, Deliver("email", ("push",))),
        # no phone
        (only(email="a@example.com"), ("sms", "email"), Deliver("email", ("sms",))),
        (only(email="a@example.com", phone=""), ("sms", "email"), Deliver("email", ("sms",))),
        # no push and no email: falls all the way to sms
        (only(phone="+1", push_tokens=[]), ALL, Deliver("sms", ("push", "email"))),
        # unsubscribed from a channel
        (user(unsubscribed=["push"]), ALL, Deliver("email", ("push",))),
        (user(unsubscribed=["push", "email"]), ALL, Deliver("sms", ("push", "email"))),
        (user(unsubscribed="push"), ALL, Deliver("email", ("push",))),
        # a channel after the first usable one is not "passed over"
        (user(unsubscribed=["email"]), ALL, Deliver("push")),
    ],
)
def test_fallback(profile, channels, expected):
    assert decide(PLAIN, channels, False, profile, [], NOON) == expected


def test_preferred_channel_unusable_falls_back_to_the_step_order():
    profile = only(email="a@example.com", preferred_channel="sms")  # prefers sms, no phone
    assert decide(PLAIN, ALL, True, profile, [], NOON) == Deliver("email", ("sms", "push"))


@pytest.mark.parametrize("opt_out", [["all"], "all", ["email", "all"]])
def test_unsubscribed_from_all(opt_out):
    decision = decide(PLAIN, ALL, True, user(unsubscribed=opt_out), [], NOON)
    assert isinstance(decision, Skip) and decision.reason == "unsubscribed"


def test_skip_reasons():
    unsub = decide(PLAIN, ("push", "email"), False, user(unsubscribed=["push", "email"]), [], NOON)
    assert unsub.reason == "unsubscribed"
    assert "push: unsubscribed" in unsub.detail and "email: unsubscribed" in unsub.detail

    nothing = decide(PLAIN, ALL, False, only(), [], NOON)
    assert isinstance(nothing, Skip) and nothing.reason == "no_contact"
    assert "no push token" in nothing.detail and "no phone number" in nothing.detail
    assert "no email address" in nothing.detail

    mixed = decide(PLAIN, ("email", "sms"), False, only(email="a@example.com", unsubscribed=["email"]), [], NOON)
    assert isinstance(mixed, Skip) and mixed.reason == "no_reachable_channel"
    assert "email: unsubscribed" in mixed.detail and "sms: no phone number" in mixed.detail


# -- opt-in required ------------------------------------------------------------------------

SMS_OPT_IN = Delivery(opt_in_required=("sms",))


@pytest.mark.parametrize("consent", [{}, {"sms_opt_in": False}, {"sms_opt_in": None}])
def test_sms_without_opt_in_is_not_usable(consent):
    profile = user(preferred_channel="sms", **consent)
    # the preferred sms is passed over for the next channel in the step's order
    assert decide(SMS_OPT_IN, ALL, True, profile, [], NOON) == Deliver("push", ("sms",))
    assert decide(SMS_OPT_IN, ("sms", "email"), False, profile, [], NOON) == Deliver("email", ("sms",))
    # an sms-only step is skipped for want of consent
    assert decide(SMS_OPT_IN, ("sms",), False, profile, [], NOON) == Skip("no_consent", "sms: not opted in")


def test_sms_with_opt_in_is_usable():
    profile = user(preferred_channel="sms", sms_opt_in=True)
    assert decide(SMS_OPT_IN, ALL, True, profile, [], NOON) == Deliver("sms")
    assert decide(SMS_OPT_IN, ("sms",), False, profile, [], NOON) == Deliver("sms")


def test_opt_in_is_only_required_where_the_journey_says_so():
    assert decide(PLAIN, ("sms",), False, user(), [], NOON) == Deliver("sms")
    # sms listed, other channels need no opt-in
    assert decide(SMS_OPT_IN, ("email", "push"), False, user(), [], NOON) == Deliver("email")


def test_opt_in_must_be_literally_true():
    for value in ("true", "yes", 1):
        decision = decide(SMS_OPT_IN, ("sms",), False, user(sms_opt_in=value), [], NOON)
        assert decision == Skip("no_consent", "sms: not opted in"), value


def test_consent_skip_reasons():
    # unsubscribed from the other channels and not opted in to sms: all consent problems
    decision = decide(SMS_OPT_IN, ALL, False, user(unsubscribed=["push", "email"]), [], NOON)
    assert decision == Skip("no_consent", "push: unsubscribed; email: unsubscribed; sms: not opted in")
    # plain unsubscribes everywhere stay "unsubscribed", even where an opt-in is required
    decision = decide(SMS_OPT_IN, ALL, False, user(unsubscribed=["all"], sms_opt_in=False), [], NOON)
    assert decision == Skip("unsubscribed", "push: unsubscribed; email: unsubscribed; sms: unsubscribed")
    # an unsubscribe wins over a missing opt-in on the same channel
    decision = decide(SMS_OPT_IN, ("sms",), False, user(unsubscribed=["sms"]), [], NOON)
    assert decision == Skip("unsubscribed", "sms: unsubscribed")
    # missing opt-in and a missing contact point: a mix
    decision = decide(SMS_OPT_IN, ("email", "sms"), False, only(), [], NOON)
    assert decision == Skip("no_reachable_channel", "email: no email address; sms: not opted in")
    # opted in but no phone: a contact problem only
    decision = decide(SMS_OPT_IN, ("sms",), False, only(sms_opt_in=True), [], NOON)
    assert decision == Skip("no_contact", "sms: no phone number")


def test_opt_in_is_checked_before_quiet_hours():
    delivery = Delivery(quiet_hours=("21:00", "08:00"), timezone="America/New_York", opt_in_required=("sms",))
    night = utc(2026, 5, 5, 3, 30)
    assert decide(delivery, ("sms",), False, user(), [], night) == Skip("no_consent", "sms: not opted in")
    assert decide(delivery, ("sms",), False, user(sms_opt_in=True), [], night) == Defer(utc(2026, 5, 5, 12))


def test_opted_in_but_capped_sms_falls_back_with_the_cap_in_mind():
    delivery = Delivery(frequency_caps=(Cap(1, 12 * 3600, "sms"),), opt_in_required=("sms",))
    profile = user(preferred_channel="sms", sms_opt_in=True)
    history = [Sent("sms", T0)]
    assert decide(delivery, ("sms", "email"), True, profile, history, T0 + timedelta(hours=11)) == Deliver(
        "email", ("sms",)
    )
    assert decide(delivery, ("sms",), True, profile, history, T0 + timedelta(hours=11)) == Skip(
        "frequency_cap", "sms: capped at 1 per 12h"
    )


# -- the run ended ---------------------------------------------------------------------------


def test_run_ended_by_a_goal_or_exit_drops_the_message():
    assert decide(PLAIN, ALL, True, user(), [], NOON, "goal:order_completed") == Skip(
        "goal_reached", "order_completed"
    )
    assert decide(PLAIN, ALL, True, user(), [], NOON, "exit:profile_completed") == Skip(
        "exited", "profile_completed"
    )
    # checked first: even for a user who could not be reached anyway, or in quiet hours
    assert decide(QUIET_NY, ALL, True, only(), [], utc(2026, 5, 4, 3), "goal:x").reason == "goal_reached"


@pytest.mark.parametrize("reason", [None, "completed", "onboarding_finished", "loop_limit"])
def test_a_run_that_merely_finished_still_delivers(reason):
    assert decide(PLAIN, ALL, False, user(), [], NOON, reason) == Deliver("push")


def test_outbox_delivers_the_last_message_of_a_completed_run():
    """lesson_reminder's run completes in the same step that queues the reminder."""
    machine = shipped("lesson_reminder")
    d = Driver(machine)
    d.profiles["u1"] = user(timezone="America/New_York", first_name="Ana")
    (out,) = d.event("u1", "lesson_completed", utc(2026, 5, 4, 12), LESSON)
    fired = d.fire_current(out.run.run_id)
    assert fired.run.finished and fired.run.exit_reason == "completed"
    (send,) = of_type(fired.effects, Send)
    at = fired.run.finished_at
    prepared = prepare(machine, send, fired.run, d.profiles["u1"], [], at, renderer())
    assert prepared.action == "send" and prepared.channel == "push"


def test_outbox_skips_a_message_queued_before_a_restart():
    machine = shipped("cart_abandonment")
    uid = in_journey_user(machine)
    d = Driver(machine)
    d.profiles[uid] = user(id=uid)
    t0 = utc(2026, 5, 4, 14)
    (out,) = d.event(uid, "cart_updated", t0, CART)
    rid = out.run.run_id
    (old,) = of_type(d.fire_current(rid).effects, Send)  # the nudge, queued (say, held) at gen 1
    (again,) = d.event(uid, "cart_updated", t0 + timedelta(hours=2), CART)  # restart
    assert again.run.started_generation == 2 > old.generation
    prepared = prepare(machine, old, again.run, d.profiles[uid], [], t0 + timedelta(hours=3), renderer())
    assert prepared == Prepared("skip", reason="restarted", detail="a newer trigger restarted the run")
    # the restarted run's own nudge goes out
    (new,) = of_type(d.fire_current(rid).effects, Send)
    assert new.generation == 3 >= again.run.started_generation
    fresh = prepare(machine, new, d.runs[rid], d.profiles[uid], [], t0 + timedelta(hours=3), renderer())
    assert fresh.action == "send" and fresh.channel == "push"


def test_outbox_drops_the_last_message_when_the_goal_comes_in_the_window():
    """The offer is queued as the steps end; the run then tracks its conversion window. A goal
    meanwhile drops the (e.g. quiet-hours-held) offer; the window merely ending does not."""
    machine = shipped("cart_abandonment")
    uid = in_journey_user(machine)
    t0 = utc(2026, 5, 4, 14)
    later = t0 + timedelta(days=1, hours=2)
    for goal, action in ((True, "skip"), (False, "send")):
        d = Driver(machine)
        d.profiles[uid] = user(id=uid, sms_opt_in=True)
        (out,) = d.event(uid, "cart_updated", t0, CART)
        rid = out.run.run_id
        d.fire_current(rid)
        (offer,) = of_type(d.fire_current(rid).effects, Send)
        assert d.runs[rid].step == CONVERSION_STEP
        if goal:
            d.event(uid, "order_completed", t0 + timedelta(days=1, hours=1), ORDER)
        else:
            d.fire_current(rid)  # the window ends: completed
        run = d.runs[rid]
        assert run.finished
        prepared = prepare(machine, offer, run, d.profiles[uid], [], later, renderer())
        assert prepared.action == action, goal
        if goal:
            assert (prepared.reason, prepared.detail) == ("goal_reached", "order_completed")


# -- quiet hours -----------------------------------------------------------------------------


def ny(*args) -> datetime:
    """A New York wall-clock time, as UTC."""
    return datetime(*args, tzinfo=zone("America/New_York")).astimezone(UTC)


@pytest.mark.parametrize(
    ("now", "until"),
    [
        (ny(2026, 5, 4, 21, 0), ny(2026, 5, 5, 8, 0)),  # at the start: quiet
        (ny(2026, 5, 4, 23, 30), ny(2026, 5, 5, 8, 0)),  # before midnight -> tomorrow 08:00
        (ny(2026, 5, 5, 0, 30), ny(2026, 5, 5, 8, 0)),  # after midnight -> today 08:00
        (ny(2026, 5, 5, 7, 59), ny(2026, 5, 5, 8, 0)),
    ],
)
def test_quiet_hours_defer_to_the_next_local_end(now, until):
    decision = decide(QUIET_NY, ALL, False, user(), [], now)
    assert decision == Defer(until, "quiet_hours")


def test_quiet_hours_exact_utc_instants():
    # 23:30 EDT on May 4th is 03:30 UTC on May 5th; 08:00 EDT is 12:00 UTC
    assert decide(QUIET_NY, ALL, False, user(), [], utc(2026, 5, 5, 3, 30)) == Defer(utc(2026, 5, 5, 12))
    # 00:30 EDT on May 5th = 04:30 UTC
    assert decide(QUIET_NY, ALL, False, user(), [], utc(2026, 5, 5, 4, 30)) == Defer(utc(2026, 5, 5, 12))
    # in January (EST) 08:00 local is 13:00 UTC
    assert decide(QUIET_NY, ALL, False, user(), [], utc(2026, 1, 15, 4, 30)) == Defer(utc(2026, 1, 15, 13))


@pytest.mark.parametrize(
    "now",
    [
        ny(2026, 5, 4, 20, 59, 59),  # just before the start
        ny(2026, 5, 4, 8, 0),  # exactly at the end
        ny(2026, 5, 4, 12, 0),
    ],
)
def test_not_quiet_just_before_start_and_at_end(now):
    assert decide(QUIET_NY, ALL, False, user(), [], now) == Deliver("push")


def test_quiet_hours_across_spring_forward():
    # 23:30 EST on 2026-03-07 (04:30 UTC) -> 08:00 EDT on 03-08 = 12:00 UTC (not 13:00)
    assert decide(QUIET_NY, ALL, False, user(), [], utc(2026, 3, 8, 4, 30)) == Defer(utc(2026, 3, 8, 12))
    # 01:30 EST, in the night of the change (06:30 UTC): same end
    assert decide(QUIET_NY, ALL, False, user(), [], utc(2026, 3, 8, 6, 30)) == Defer(utc(2026, 3, 8, 12))
    # 07:30 EDT (11:30 UTC): half an hour to go
    assert decide(QUIET_NY, ALL, False, user(), [], utc(2026, 3, 8, 11, 30)) == Defer(utc(2026, 3, 8, 12))
    assert decide(QUIET_NY, ALL, False, user(), [], utc(2026, 3, 8, 12)) == Deliver("push")


def test_quiet_hours_across_fall_back():
    # 23:30 EDT on 2026-10-31 (03:30 UTC) -> 08:00 EST on 11-01 = 13:00 UTC (not 12:00)
    assert decide(QUIET_NY, ALL, False, user(), [], utc(2026, 11, 1, 3, 30)) == Defer(utc(2026, 11, 1, 13))
    # both 01:30s of the repeated hour
    assert decide(QUIET_NY, ALL, False, user(), [], utc(2026, 11, 1, 5, 30)) == Defer(utc(2026, 11, 1, 13))
    assert decide(QUIET_NY, ALL, False, user(), [], utc(2026, 11, 1, 6, 30)) == Defer(utc(2026, 11, 1, 13))
    # 07:30 EST is 12:30 UTC: still quiet although 12:30 UTC would be 08:30 EDT the day before
    assert decide(QUIET_NY, ALL, False, user(), [], utc(2026, 11, 1, 12, 30)) == Defer(utc(2026, 11, 1, 13))
    assert decide(QUIET_NY, ALL, False, user(), [], utc(2026, 11, 1, 13)) == Deliver("push")


def test_quiet_hours_ending_inside_a_repeated_hour():
    """Quiet until 01:30: at 01:15 EST, the second pass through the repeated hour, the window
    ends at 01:30 EST a quarter of an hour later, not a day later."""
    delivery = Delivery(quiet_hours=("22:00", "01:30"), timezone="America/New_York")
    assert decide(delivery, ALL, False, user(), [], utc(2026, 11, 1, 5, 15)) == Defer(utc(2026, 11, 1, 5, 30))
    assert decide(delivery, ALL, False, user(), [], utc(2026, 11, 1, 6, 15)) == Defer(utc(2026, 11, 1, 6, 30))


def test_users_without_timezone_use_the_journey_default():
    now = utc(2026, 5, 4, 2)  # 22:00 New York, 04:00 Paris, 11:00 Tokyo
    assert decide(QUIET_NY, ALL, False, user(), [], now) == Defer(utc(2026, 5, 4, 12))
    assert decide(QUIET_NY, ALL, False, user(timezone=None), [], now) == Defer(utc(2026, 5, 4, 12))
    assert decide(QUIET_NY, ALL, False, user(timezone="Europe/Paris"), [], now) == Defer(utc(2026, 5, 4, 6))
    assert decide(QUIET_NY, ALL, False, user(timezone="Asia/Tokyo"), [], now) == Deliver("push")
    # a journey without a zone means UTC: 02:00 UTC is quiet until 08:00 UTC
    utc_quiet = Delivery(quiet_hours=("21:00", "08:00"))
    assert decide(utc_quiet, ALL, False, user(), [], now) == Defer(utc(2026, 5, 4, 8))


def test_quiet_hours_do_not_apply_to_an_unreachable_user():
    decision = decide(QUIET_NY, ALL, False, only(), [], utc(2026, 5, 4, 2))
    assert isinstance(decision, Skip) and decision.reason == "no_contact"


def test_shipped_cart_journey_delivery_policy():
    delivery = shipped("cart_abandonment").delivery
    assert delivery.quiet_hours == ("21:00", "08:00")
    assert delivery.timezone == "America/New_York"
    assert delivery.frequency_caps == (Cap(3, DAY), Cap(1, 12 * 3600, "sms"))
    assert delivery.opt_in_required == ("sms",)
    assert decide(delivery, ALL, True, user(), [], utc(2026, 5, 5, 3, 30)) == Defer(utc(2026, 5, 5, 12))


# -- frequency caps --------------------------------------------------------------------------

CAP_3_PER_DAY = Delivery(frequency_caps=(Cap(3, DAY),))
T0 = utc(2026, 5, 4, 14)  # 10:00 in New York


def three_sends(channel="email"):
    return [Sent(channel, T0), Sent(channel, T0 + timedelta(hours=1)), Sent(channel, T0 + timedelta(hours=2))]


def test_cap_counts_over_a_rolling_window():
    history = three_sends()
    assert decide(CAP_3_PER_DAY, ("email",), False, user(), history[:2], T0 + timedelta(hours=3)) == Deliver("email")
    capped = decide(CAP_3_PER_DAY, ("email",), False, user(), history, T0 + timedelta(hours=3))
    assert isinstance(capped, Skip) and capped.reason == "frequency_cap"
    # still within 24h of the first send
    assert decide(CAP_3_PER_DAY, ("email",), False, user(), history, T0 + timedelta(hours=23, minutes=59)).reason == "frequency_cap"
    # just after 24h the first send has left the window
    assert decide(CAP_3_PER_DAY, ("email",), False, user(), history, T0 + timedelta(days=1, seconds=1)) == Deliver("email")


def test_global_cap_counts_every_channel():
    history = [Sent("email", T0), Sent("push", T0 + timedelta(hours=1)), Sent("sms", T0 + timedelta(hours=2))]
    decision = decide(CAP_3_PER_DAY, ALL, False, user(), history, T0 + timedelta(hours=3))
    assert isinstance(decision, Skip) and decision.reason == "frequency_cap"
    for channel in ALL:
        assert channel in decision.detail


def test_per_channel_cap_falls_back_to_the_next_usable_channel():
    delivery = Delivery(frequency_caps=(Cap(3, DAY), Cap(1, DAY, "sms")))
    history = [Sent("sms", T0)]
    now = T0 + timedelta(hours=5)
    assert decide(delivery, ("sms", "email"), False, user(), history, now) == Deliver("email", ("sms",))
    # sms not usable (no phone) and the next one capped: both are reported as passed over
    assert decide(delivery, ("push", "sms", "email"), False, user(push_tokens=[]), history, now) == Deliver(
        "email", ("push", "sms")
    )
    # other channels' messages do not count towards the sms cap
    assert decide(delivery, ("sms",), False, user(), [Sent("email", T0)], now) == Deliver("sms")
    # a day later the sms cap has cleared
    assert decide(delivery, ("sms", "email"), False, user(), history, T0 + timedelta(days=1, seconds=1)) == Deliver("sms")


def test_all_usable_channels_capped_is_a_skip():
    delivery = Delivery(frequency_caps=(Cap(3, DAY), Cap(1, DAY, "sms")))
    history = [Sent("sms", T0), Sent("email", T0 + timedelta(hours=1)), Sent("email", T0 + timedelta(hours=2))]
    decision = decide(delivery, ("sms", "email"), False, user(), history, T0 + timedelta(hours=3))
    assert isinstance(decision, Skip) and decision.reason == "frequency_cap"
    # each channel names the first cap that holds it back: here the global one for both
    assert decision.detail == "sms: capped at 3 per 1d; email: capped at 3 per 1d"
    # per-channel caps only: each channel reports its own cap
    per_channel = Delivery(frequency_caps=(Cap(2, DAY, "email"), Cap(1, DAY, "sms")))
    decision = decide(per_channel, ("sms", "email"), False, user(), history, T0 + timedelta(hours=3))
    assert isinstance(decision, Skip) and decision.reason == "frequency_cap"
    sms_why, email_why = decision.detail.split("; ")
    assert sms_why == "sms: capped at 1 per 1d"
    assert email_why == "email: capped at 2 per 1d"
    # with push still free, it is used instead
    assert decide(per_channel, ("sms", "email", "push"), False, user(), history, T0 + timedelta(hours=3)) == Deliver(
        "push", ("sms", "email")
    )


@pytest.mark.parametrize(
    ("per", "text"),
    [(12 * 3600, "12h"), (DAY, "1d"), (90 * 60, "1h30m"), (7 * DAY, "1w"), (DAY + 6 * 3600, "1d6h")],
)
def test_cap_detail_names_the_window_as_a_duration(per, text):
    delivery = Delivery(frequency_caps=(Cap(1, per, "sms"),))
    decision = decide(delivery, ("sms",), False, user(), [Sent("sms", T0)], T0 + timedelta(minutes=1))
    assert decision == Skip("frequency_cap", f"sms: capped at 1 per {text}")


def test_twelve_hour_sms_cap_is_a_rolling_window():
    delivery = shipped("cart_abandonment").delivery
    profile = user(sms_opt_in=True, timezone="UTC")  # 08:00-21:00 UTC is outside quiet hours
    first = utc(2026, 5, 4, 8)
    history = [Sent("sms", first)]
    capped = decide(delivery, ("sms",), False, profile, history, first + timedelta(hours=11, minutes=59))
    assert capped == Skip("frequency_cap", "sms: capped at 1 per 12h")
    # exactly 12h later the first SMS has left the window (a 1-per-day cap would still hold)
    assert decide(delivery, ("sms",), False, profile, history, first + timedelta(hours=12)) == Deliver("sms")


def test_quiet_hours_are_decided_before_caps():
    delivery = Delivery(quiet_hours=("21:00", "08:00"), timezone="America/New_York", frequency_caps=(Cap(1, DAY),))
    history = [Sent("email", utc(2026, 5, 4, 1))]
    assert decide(delivery, ("email",), False, user(), history, utc(2026, 5, 4, 3)) == Defer(utc(2026, 5, 4, 12))


# -- decisions depend only on the `now` passed in --------------------------------------------


@pytest.mark.parametrize("wall_clock", ["2031-07-15 13:00:00", "2026-05-04 03:00:00", "1999-12-31 23:59:59"])
def test_decisions_do_not_read_the_wall_clock(wall_clock):
    delivery = Delivery(quiet_hours=("21:00", "08:00"), timezone="America/New_York", frequency_caps=(Cap(3, DAY),))
    cases = [
        (utc(2026, 5, 5, 3, 30), []),  # quiet
        (NOON, []),  # deliver
        (T0 + timedelta(hours=3), three_sends()),  # capped
        (T0 + timedelta(days=1, seconds=1), three_sends()),  # cap cleared
    ]
    expected = [decide(delivery, ALL, True, user(), h, now) for now, h in cases]
    assert [type(e) for e in expected] == [Defer, Deliver, Skip, Deliver]
    with freeze_time(wall_clock):
        assert datetime.now().isoformat(sep=" ") == wall_clock  # the wall clock is elsewhere
        frozen = [decide(delivery, ALL, True, user(), h, now) for now, h in cases]
    assert frozen == expected
