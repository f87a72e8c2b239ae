"""What the three shipped journeys do to users and events written here, through the Simulator
(the dry-run's engine) and through the ``journey dry-run`` command."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.engine import CONVERSION_STEP

try:
    from dryrun_helpers import (
        START, UTC, cart, entries, ev, example, is_held_out, offer_variant, pick_user_id,
        run_cli_bytes, simulate, story, treated, user,
    )
except ImportError:  # tests/ imported as a package
    from tests.dryrun_helpers import (
        START, UTC, cart, entries, ev, example, is_held_out, offer_variant, pick_user_id,
        run_cli_bytes, simulate, story, treated, user,
    )

H = timedelta(hours=1)
D = timedelta(days=1)
ORDER = {"order_id": "o-1", "cart_id": "c-1", "total": 10.0, "currency": "USD"}
ONE = cart("c-1", ("MUG", "Blue mug", 10.0, 1))
TWO = cart("c-2", ("LAMP", "Desk lamp", 40.0, 1), ("BULB", "Spare bulb", 5.0, 2))
EMPTY = cart("c-1")  # the same cart, emptied
WINDOW = 3 * timedelta(days=1)  # cart_abandonment's conversion_window


def sends(result, uid: str) -> list:
    return entries(result, uid, "send")


def test_helper_ids_are_what_they_claim() -> None:
    # The ids below are chosen by the documented hash rules; check the choice really differs.
    held = pick_user_id("held", lambda u: is_held_out("cart_abandonment", u))
    assert is_held_out("cart_abandonment", held)
    assert not is_held_out("cart_abandonment", treated("x"))
    assert offer_variant(treated("d", "discount")) == "discount"
    assert offer_variant(treated("f", "free_shipping")) == "free_shipping"


# -- cart_abandonment -------------------------------------------------------------------------


def test_buyer_during_the_wait_gets_the_nudge_only_and_converts() -> None:
    uid = treated("buyer")
    r = simulate(
        "cart_abandonment",
        [user(uid)],
        [ev(uid, "cart_updated", START, ONE), ev(uid, "order_completed", START + 5 * H, ORDER)],
    )
    assert story(r, uid) == [
        ("enter", "wait_an_hour", None),
        ("send", "nudge", "push"),
        ("exit", "wait_for_order", None),
    ]
    enter, nudge, out = entries(r, uid)
    assert nudge.at == START + H
    assert "Blue mug" in (nudge.body or "")
    assert out.at == START + 5 * H
    assert out.reason == "goal:order_completed" and out.converted is True
    s = r.summary.to_dict()
    assert s["converted"] == 1 and s["sent_total"] == 1 and s["in_progress"] == 0
    assert s["variants"] == {}


@pytest.mark.parametrize("variant", ["discount", "free_shipping"])
def test_non_buyer_gets_nudge_then_exactly_one_offer(variant: str) -> None:
    uid = treated("nobuy", variant)
    r = simulate(
        "cart_abandonment", [user(uid, sms_opt_in=True)], [ev(uid, "cart_updated", START, ONE)]
    )
    step, channel = (
        ("discount_email", "email") if variant == "discount" else ("free_shipping_sms", "sms")
    )
    # After the offer the run stays in the conversion window (3 days from entry) and only
    # then leaves, not converted.
    assert story(r, uid) == [
        ("enter", "wait_an_hour", None),
        ("send", "nudge", "push"),
        ("send", step, channel),
        ("exit", CONVERSION_STEP, None),
    ]
    _, nudge, offer, out = entries(r, uid)
    assert nudge.at == START + H
    assert offer.at == START + H + 23 * H
    assert offer.variant == variant
    assert out.at == START + WINDOW
    assert out.reason == "completed" and out.converted is False
    s = r.summary.to_dict()
    assert s["variants"] == {"offer": {variant: 1}}
    assert s["exited"] == {"completed": 1} and s["converted"] == 0 and s["in_progress"] == 0


def test_offer_variant_is_deterministic_across_runs_and_restarts() -> None:
    uids = [f"det-{n}" for n in range(40)]
    uids = [u for u in uids if not is_held_out("cart_abandonment", u)]
    users = [user(u, sms_opt_in=True) for u in uids]  # so the free-shipping SMS goes out
    first = simulate("cart_abandonment", users, [ev(u, "cart_updated", START, ONE) for u in uids])
    again = simulate(
        "cart_abandonment",
        users,
        [ev(u, "cart_updated", START, ONE) for u in uids]
        + [ev(u, "cart_updated", START + 2 * H, TWO) for u in uids],  # every run restarts
    )
    v1 = {e.user: e.variant for e in first.timeline if e.action == "send" and e.variant}
    v2 = {e.user: e.variant for e in again.timeline if e.action == "send" and e.variant}
    assert v1 == v2 == {u: offer_variant(u) for u in uids}
    assert set(v1.values()) == {"discount", "free_shipping"}  # 40 users: both arms are used


def test_holdout_users_get_nothing() -> None:
    held = [u for u in (f"h-{n}" for n in range(200)) if is_held_out("cart_abandonment", u)][:3]
    assert len(held) == 3
    buyer = held[0]
    r = simulate(
        "cart_abandonment",
        [user(u) for u in held],
        [ev(u, "cart_updated", START, ONE) for u in held]
        + [ev(buyer, "order_completed", START + 2 * D, ORDER)],
    )
    for uid in held:
        actions = [e.action for e in entries(r, uid)]
        assert actions == ["enter", "exit"], uid
        assert entries(r, uid, "enter")[0].holdout is True
    assert entries(r, buyer, "exit")[0].reason == "goal:order_completed"
    assert entries(r, buyer, "exit")[0].at == START + 2 * D
    for uid in held[1:]:
        out = entries(r, uid, "exit")[0]
        assert out.reason == "holdout_window_ended" and out.at == START + 3 * D
    s = r.summary.to_dict()
    assert s["held_out"] == 3 and s["sent_total"] == 0 and s["skipped"] == {}
    assert s["converted"] == 1 and s["converted_held_out"] == 1


def test_newer_cart_restarts_the_run() -> None:
    uid = treated("again")
    r = simulate(
        "cart_abandonment",
        [user(uid)],
        [ev(uid, "cart_updated", START, ONE), ev(uid, "cart_updated", START + timedelta(minutes=30), TWO)],
    )
    newer = START + timedelta(minutes=30)
    enters = entries(r, uid, "enter")
    assert [(e.at, e.reason) for e in enters] == [(START, None), (newer, "restarted")]
    [nudge] = [e for e in sends(r, uid) if e.step == "nudge"]
    assert nudge.at == newer + H
    assert "Desk lamp" in (nudge.body or "") and "Blue mug" not in (nudge.body or "")
    offers = [e for e in sends(r, uid) if e.step != "nudge"]
    assert len(offers) == 1 and offers[0].at == newer + 24 * H
    assert r.summary.to_dict()["restarted"] == 1
    assert [e.action for e in entries(r, uid)].count("exit") == 1


def test_newer_cart_during_quiet_hours_still_gives_one_nudge() -> None:
    # 20:30 in New York: the nudge (21:30) is held until 08:00; a newer cart at 22:00 restarts
    # the run and its own nudge (23:00) is held too. At 08:00 only one nudge may go out, and it
    # shows the newer cart.
    uid = treated("nightowl")
    first = datetime(2026, 1, 6, 1, 30, tzinfo=UTC)  # 20:30 EST
    r = simulate(
        "cart_abandonment",
        [user(uid, timezone="America/New_York", sms_opt_in=True)],
        [ev(uid, "cart_updated", first, ONE), ev(uid, "cart_updated", first + 90 * timedelta(minutes=1), TWO)],
    )
    nudges = [e for e in sends(r, uid) if e.step == "nudge"]
    assert len(nudges) == 1, [e.to_dict() for e in entries(r, uid)]
    assert nudges[0].at == datetime(2026, 1, 6, 13, 0, tzinfo=UTC)  # 08:00 EST
    assert "Desk lamp" in (nudges[0].body or "")
    # The first start's held nudge is dropped, and the timeline says why.
    assert [(e.step, e.reason, e.at) for e in entries(r, uid, "skip")] == [
        ("nudge", "restarted", datetime(2026, 1, 6, 13, 0, tzinfo=UTC))
    ]
    assert len([e for e in sends(r, uid) if e.step != "nudge"]) == 1


def test_deferred_nudge_is_dropped_when_the_user_buys_before_8am() -> None:
    uid = treated("late")
    cart_at = datetime(2026, 1, 6, 1, 30, tzinfo=UTC)  # 20:30 in New York
    order_at = datetime(2026, 1, 6, 4, 0, tzinfo=UTC)  # 23:00 in New York
    r = simulate(
        "cart_abandonment",
        [user(uid, timezone="America/New_York")],
        [ev(uid, "cart_updated", cart_at, ONE), ev(uid, "order_completed", order_at, ORDER)],
    )
    assert [(e.action, e.step, e.reason) for e in entries(r, uid)] == [
        ("enter", "wait_an_hour", None),
        ("defer", "nudge", "quiet_hours"),
        ("exit", "wait_for_order", "goal:order_completed"),
        ("skip", "nudge", "goal_reached"),
    ]
    _, defer, out, skip = entries(r, uid)
    assert defer.at == cart_at + H
    assert defer.until == datetime(2026, 1, 6, 13, 0, tzinfo=UTC)  # 08:00 EST
    assert out.at == order_at and out.converted is True
    assert skip.at == defer.until
    assert skip.detail == "order_completed"
    assert sends(r, uid) == []


def test_empty_cart_does_not_enter() -> None:
    uid = treated("empty")
    r = simulate("cart_abandonment", [user(uid)], [ev(uid, "cart_updated", START, cart("c-0"))])
    assert entries(r, uid) == []
    assert r.summary.to_dict()["entered"] == 0


def test_cart_without_items_key_does_not_enter() -> None:
    uid = treated("noitems")
    r = simulate("cart_abandonment", [user(uid)], [ev(uid, "cart_updated", START, {"cart_id": "c"})])
    assert entries(r, uid) == []


def test_other_events_do_not_enter() -> None:
    uid = treated("other")
    r = simulate("cart_abandonment", [user(uid)], [ev(uid, "order_completed", START, ORDER)])
    assert entries(r, uid) == []


def test_preferred_channel_then_fallback_order() -> None:
    sms_fan, no_push, all_out, no_email = (treated(p) for p in ("smsfan", "nopush", "allout", "noemail"))
    r = simulate(
        "cart_abandonment",
        [
            user(sms_fan, preferred_channel="sms", sms_opt_in=True),
            user(no_push, push_tokens=[]),  # no preference: push first, then email
            user(all_out, unsubscribed=["all"]),
            user(no_email, preferred_channel="email", email=None, unsubscribed=["push"], sms_opt_in=True),
        ],
        [ev(u, "cart_updated", START, ONE) for u in (sms_fan, no_push, all_out, no_email)],
        days=0.5,
    )
    [n] = sends(r, sms_fan)
    assert n.channel == "sms" and n.detail is None and n.segments == 1
    [n] = sends(r, no_push)
    assert n.channel == "email" and n.detail == "fell back from push"
    [skip] = entries(r, all_out, "skip")
    assert skip.reason == "unsubscribed" and skip.step == "nudge"
    assert "push: unsubscribed" in (skip.detail or "")
    [n] = sends(r, no_email)
    assert n.channel == "sms" and n.detail == "fell back from email, push"


def test_sms_frequency_cap_reason_in_timeline() -> None:
    # Reachable by SMS only, so a capped SMS has nothing to fall back to. Three carts restart
    # the run: the nudges are due at 08:00, 10:00 and 20:00 UTC (no quiet hours in between).
    uid = treated("capped")
    morning = datetime(2026, 1, 5, 7, 0, tzinfo=UTC)
    r = simulate(
        "cart_abandonment",
        [user(uid, preferred_channel="sms", sms_opt_in=True, email=None, push_tokens=[])],
        [
            ev(uid, "cart_updated", morning, ONE),
            ev(uid, "cart_updated", morning + 2 * H, TWO),
            ev(uid, "cart_updated", morning + 12 * H, ONE),
        ],
        start=morning,
        days=0.6,
    )
    nudges = [e for e in entries(r, uid) if e.step == "nudge"]
    assert [(e.action, e.channel, e.at) for e in nudges] == [
        ("send", "sms", morning + H),
        ("skip", None, morning + 3 * H),  # 2h after the first SMS: inside the 12h window
        ("send", "sms", morning + 13 * H),  # exactly 12h later: the window has passed
    ]
    skip = nudges[1]
    assert skip.reason == "frequency_cap"
    assert skip.detail == "sms: capped at 1 per 12h"
    assert r.summary.to_dict()["skipped"] == {"frequency_cap": 1}


def test_free_shipping_sms_capped_after_a_nudge_held_past_12_hours() -> None:
    # The night New York falls back (2026-11-01) quiet hours last 12 hours: an SMS nudge due
    # at 21:00 EDT goes out at 08:00 EST, only 11 hours before the free-shipping SMS is due
    # (19:00 EST), so the 1-per-12h SMS cap holds the offer back.
    uid = treated("fallback", "free_shipping")
    cart_at = datetime(2026, 11, 1, 0, 0, tzinfo=UTC)  # 20:00 EDT on Oct 31
    r = simulate(
        "cart_abandonment",
        [user(uid, preferred_channel="sms", sms_opt_in=True, timezone="America/New_York")],
        [ev(uid, "cart_updated", cart_at, ONE)],
        start=cart_at,
        days=4,
    )
    assert [(e.action, e.step, e.channel, e.at) for e in entries(r, uid)] == [
        ("enter", "wait_an_hour", None, cart_at),
        ("defer", "nudge", None, cart_at + H),
        ("send", "nudge", "sms", datetime(2026, 11, 1, 13, 0, tzinfo=UTC)),  # 08:00 EST
        ("skip", "free_shipping_sms", None, cart_at + 24 * H),  # 19:00 EST
        ("exit", CONVERSION_STEP, None, cart_at + WINDOW),
    ]
    skip = entries(r, uid, "skip")[0]
    assert (skip.reason, skip.detail) == ("frequency_cap", "sms: capped at 1 per 12h")


def test_daily_cap_across_channels() -> None:
    # Four carts two hours apart: four nudges due within seven hours; the cap is 3 a day.
    uid = treated("busy")
    morning = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)  # all four nudges fall before 21:00 UTC
    r = simulate(
        "cart_abandonment",
        [user(uid)],
        [ev(uid, "cart_updated", morning + k * 2 * H, ONE) for k in range(4)],
        start=morning,
        days=0.5,
    )
    nudges = [e for e in entries(r, uid) if e.step == "nudge"]
    assert [(e.action, e.channel, e.at) for e in nudges] == [
        ("send", "push", morning + H),
        ("send", "push", morning + 3 * H),
        ("send", "push", morning + 5 * H),
        ("skip", None, morning + 7 * H),
    ]
    assert nudges[-1].reason == "frequency_cap"
    assert "capped at 3" in (nudges[-1].detail or "")


def test_unsubscribed_and_no_contact_reasons() -> None:
    gone, bare = treated("gone", "discount"), treated("bare", "discount")
    r = simulate(
        "cart_abandonment",
        [
            user(gone, unsubscribed=["email"], push_tokens=[], sms_opt_in=True),
            user(bare, email=None, phone=None, push_tokens=[], sms_opt_in=True),
        ],
        [ev(gone, "cart_updated", START, ONE), ev(bare, "cart_updated", START, ONE)],
    )
    # "gone" still gets the nudge by SMS, but not the discount email.
    assert [e.channel for e in sends(r, gone)] == ["sms"]
    [skip] = entries(r, gone, "skip")
    assert (skip.step, skip.reason, skip.variant) == ("discount_email", "unsubscribed", "discount")
    reasons = [(e.step, e.reason) for e in entries(r, bare, "skip")]
    assert reasons == [("nudge", "no_contact"), ("discount_email", "no_contact")]


# -- cart_abandonment: the conversion window after the steps ----------------------------------


def test_order_during_the_conversion_window_converts() -> None:
    # Two days in: the offer has gone out and the steps are done, but the run still counts
    # the order as a conversion.
    uid = treated("late-buyer", "discount")
    r = simulate(
        "cart_abandonment",
        [user(uid)],
        [ev(uid, "cart_updated", START, ONE), ev(uid, "order_completed", START + 2 * D, ORDER)],
    )
    assert story(r, uid) == [
        ("enter", "wait_an_hour", None),
        ("send", "nudge", "push"),
        ("send", "discount_email", "email"),
        ("exit", CONVERSION_STEP, None),
    ]
    out = entries(r, uid, "exit")[0]
    assert (out.at, out.reason, out.converted) == (START + 2 * D, "goal:order_completed", True)
    s = r.summary.to_dict()
    assert s["converted"] == 1 and s["converted_held_out"] == 0
    assert s["exited"] == {"goal:order_completed": 1}
    assert s["variants"] == {"offer": {"discount": 1}}


def test_order_after_the_conversion_window_is_not_counted() -> None:
    uid = treated("too-late", "discount")
    r = simulate(
        "cart_abandonment",
        [user(uid)],
        [ev(uid, "cart_updated", START, ONE), ev(uid, "order_completed", START + WINDOW + H, ORDER)],
    )
    [out] = entries(r, uid, "exit")
    assert (out.step, out.at, out.reason, out.converted) == (
        CONVERSION_STEP, START + WINDOW, "completed", False
    )
    assert entries(r, uid)[-1] is out  # the late order changes nothing
    assert r.summary.to_dict()["converted"] == 0


def test_offer_held_by_quiet_hours_is_dropped_when_the_order_comes_meanwhile() -> None:
    # A cart at 22:00 in New York: the offer falls due at 22:00 the next evening and is held
    # until 08:00. The steps are done, so the run is tracking conversions; an order at
    # midnight ends it as converted and the held offer is not sent after the purchase.
    uid = treated("midnight", "discount")
    cart_at = datetime(2026, 1, 6, 3, 0, tzinfo=UTC)  # 22:00 EST
    order_at = datetime(2026, 1, 7, 5, 0, tzinfo=UTC)  # 00:00 EST
    r = simulate(
        "cart_abandonment",
        [user(uid, timezone="America/New_York")],
        [ev(uid, "cart_updated", cart_at, ONE), ev(uid, "order_completed", order_at, ORDER)],
    )
    assert [(e.action, e.step, e.reason, e.at) for e in entries(r, uid)] == [
        ("enter", "wait_an_hour", None, cart_at),
        ("defer", "nudge", "quiet_hours", cart_at + H),
        ("send", "nudge", None, datetime(2026, 1, 6, 13, 0, tzinfo=UTC)),  # 08:00 EST
        ("defer", "discount_email", "quiet_hours", cart_at + 24 * H),
        ("exit", CONVERSION_STEP, "goal:order_completed", order_at),
        ("skip", "discount_email", "goal_reached", datetime(2026, 1, 7, 13, 0, tzinfo=UTC)),
    ]
    assert entries(r, uid, "exit")[0].converted is True
    assert entries(r, uid, "skip")[0].detail == "order_completed"
    assert [e.step for e in sends(r, uid)] == ["nudge"]


def test_new_cart_during_the_conversion_window_restarts_the_run() -> None:
    # A run tracking conversions still counts as in the journey: a newer cart restarts it
    # (re_entry: restart) instead of starting a second run, and the window starts over.
    uid = treated("returning")
    again = START + 2 * D
    r = simulate(
        "cart_abandonment",
        [user(uid, sms_opt_in=True)],
        [ev(uid, "cart_updated", START, ONE), ev(uid, "cart_updated", again, TWO)],
    )
    offer = "discount_email" if offer_variant(uid) == "discount" else "free_shipping_sms"
    assert [(e.at, e.reason) for e in entries(r, uid, "enter")] == [(START, None), (again, "restarted")]
    assert [(e.step, e.at) for e in sends(r, uid)] == [
        ("nudge", START + H),
        (offer, START + 24 * H),
        ("nudge", again + H),
        (offer, again + 24 * H),
    ]
    [out] = entries(r, uid, "exit")
    assert (out.step, out.at, out.reason) == (CONVERSION_STEP, again + WINDOW, "completed")
    assert r.summary.to_dict()["restarted"] == 1
    # The funnel counts both passes through the split, though the restart cleared the run's
    # variants: the offer was reached twice, as its message was.
    rows = {row.step: row for row in r.funnel.steps}
    assert rows["offer"].reached == 2 and dict(rows["offer"].variants) == {offer_variant(uid): 2}
    assert rows[offer].reached == 2


# -- cart_abandonment: an emptied cart ends the run -------------------------------------------


def test_emptied_cart_cancels_the_pending_nudge() -> None:
    uid = treated("emptied")
    r = simulate(
        "cart_abandonment",
        [user(uid)],
        [ev(uid, "cart_updated", START, ONE), ev(uid, "cart_updated", START + H / 2, EMPTY)],
    )
    assert [(e.action, e.step, e.reason, e.at) for e in entries(r, uid)] == [
        ("enter", "wait_an_hour", None, START),
        ("exit", "wait_an_hour", "exit:cart_updated", START + timedelta(minutes=30)),
    ]
    assert entries(r, uid, "exit")[0].converted is False
    s = r.summary.to_dict()
    assert s["sent_total"] == 0 and s["skipped"] == {} and s["in_progress"] == 0
    assert s["exited"] == {"exit:cart_updated": 1} and s["converted"] == 0


def test_emptied_cart_drops_a_nudge_held_by_quiet_hours() -> None:
    uid = treated("emptied-night")
    cart_at = datetime(2026, 1, 6, 1, 30, tzinfo=UTC)  # 20:30 EST: the nudge is held
    empty_at = datetime(2026, 1, 6, 3, 0, tzinfo=UTC)  # 22:00 EST
    r = simulate(
        "cart_abandonment",
        [user(uid, timezone="America/New_York")],
        [ev(uid, "cart_updated", cart_at, ONE), ev(uid, "cart_updated", empty_at, EMPTY)],
    )
    assert [(e.action, e.step, e.reason, e.at) for e in entries(r, uid)] == [
        ("enter", "wait_an_hour", None, cart_at),
        ("defer", "nudge", "quiet_hours", cart_at + H),
        ("exit", "wait_for_order", "exit:cart_updated", empty_at),
        ("skip", "nudge", "exited", datetime(2026, 1, 6, 13, 0, tzinfo=UTC)),
    ]
    assert entries(r, uid, "skip")[0].detail == "cart_updated"
    assert sends(r, uid) == []


def test_emptied_cart_after_the_nudge_means_no_offer() -> None:
    uid = treated("emptied-later")
    r = simulate(
        "cart_abandonment",
        [user(uid, sms_opt_in=True)],
        [ev(uid, "cart_updated", START, ONE), ev(uid, "cart_updated", START + 5 * H, EMPTY)],
    )
    assert story(r, uid) == [
        ("enter", "wait_an_hour", None),
        ("send", "nudge", "push"),
        ("exit", "wait_for_order", None),
    ]
    out = entries(r, uid, "exit")[0]
    assert (out.at, out.reason, out.converted) == (START + 5 * H, "exit:cart_updated", False)


def test_emptied_cart_during_the_conversion_window_exits_not_converted() -> None:
    uid = treated("emptied-after", "discount")
    r = simulate(
        "cart_abandonment",
        [user(uid)],
        [ev(uid, "cart_updated", START, ONE), ev(uid, "cart_updated", START + 2 * D, EMPTY)],
    )
    [out] = entries(r, uid, "exit")
    assert (out.step, out.at, out.reason, out.converted) == (
        CONVERSION_STEP, START + 2 * D, "exit:cart_updated", False
    )


def test_cart_update_without_items_neither_exits_nor_restarts() -> None:
    uid = treated("noitems-later")
    r = simulate(
        "cart_abandonment",
        [user(uid)],
        [
            ev(uid, "cart_updated", START, ONE),
            ev(uid, "cart_updated", START + H / 2, {"cart_id": "c-1"}),  # no items key at all
        ],
        days=0.5,
    )
    assert story(r, uid) == [("enter", "wait_an_hour", None), ("send", "nudge", "push")]


# -- cart_abandonment: SMS only with opt-in ---------------------------------------------------


def test_sms_needs_an_opt_in() -> None:
    missing, declined, agreed = (treated(p, "free_shipping") for p in ("optmissing", "optno", "optyes"))
    r = simulate(
        "cart_abandonment",
        [
            user(missing, preferred_channel="sms"),  # no sms_opt_in at all
            user(declined, preferred_channel="sms", sms_opt_in=False),
            user(agreed, preferred_channel="sms", sms_opt_in=True),
        ],
        [ev(u, "cart_updated", START, ONE) for u in (missing, declined, agreed)],
        days=2,
    )
    for uid in (missing, declined):
        # the nudge falls back from SMS to the next channel in the step's order
        [nudge] = sends(r, uid)
        assert (nudge.step, nudge.channel, nudge.detail) == ("nudge", "push", "fell back from sms")
        # the free-shipping offer can only go by SMS: skipped for want of consent
        [skip] = entries(r, uid, "skip")
        assert (skip.step, skip.reason, skip.detail, skip.at) == (
            "free_shipping_sms", "no_consent", "sms: not opted in", START + 24 * H
        )
    assert [(e.step, e.channel, e.detail) for e in sends(r, agreed)] == [
        ("nudge", "sms", None),
        ("free_shipping_sms", "sms", None),
    ]
    assert r.summary.to_dict()["skipped"] == {"no_consent": 2}


def test_opted_out_everywhere_else_and_not_opted_in_is_no_consent() -> None:
    uid = treated("noconsent", "discount")
    r = simulate(
        "cart_abandonment",
        [user(uid, unsubscribed=["push", "email"])],
        [ev(uid, "cart_updated", START, ONE)],
        days=2,
    )
    assert [(e.step, e.reason, e.detail) for e in entries(r, uid, "skip")] == [
        ("nudge", "no_consent", "push: unsubscribed; email: unsubscribed; sms: not opted in"),
        ("discount_email", "unsubscribed", "email: unsubscribed"),
    ]


# -- lesson_reminder --------------------------------------------------------------------------


def _lesson(n: int) -> dict[str, Any]:
    return {"course": "Italian", "lesson": f"Lesson {n}", "lesson_number": n, "streak": n + 1}


def test_only_the_last_lesson_gets_a_reminder() -> None:
    uid = "learner"
    r = simulate(
        "lesson_reminder",
        [user(uid)],
        [ev(uid, "lesson_completed", START + k * 10 * H, _lesson(k + 1)) for k in range(3)],
    )
    [reminder] = sends(r, uid)
    assert reminder.at == START + 20 * H + timedelta(hours=23, minutes=30)
    assert reminder.channel == "push"
    assert reminder.subject == "🔥 4-day streak!"
    assert "Italian" in (reminder.body or "")
    assert [e.reason for e in entries(r, uid, "enter")] == [None, "restarted", "restarted"]
    assert len(entries(r, uid, "exit")) == 1


def test_learner_without_push_token_gets_the_email() -> None:
    uid = "reader"
    r = simulate(
        "lesson_reminder",
        [user(uid, push_tokens=[])],
        [ev(uid, "lesson_completed", START, _lesson(7))],
    )
    [reminder] = sends(r, uid)
    assert reminder.channel == "email"
    assert reminder.detail == "fell back from push"
    assert reminder.subject == "Keep your 8-day streak going"
    assert "lesson 8" in (reminder.body or "")
    assert reminder.at == START + timedelta(hours=23, minutes=30)


def test_lesson_gap_longer_than_the_wait_gives_two_reminders() -> None:
    uid = "slow"
    r = simulate(
        "lesson_reminder",
        [user(uid)],
        [ev(uid, "lesson_completed", START, _lesson(1)), ev(uid, "lesson_completed", START + 2 * D, _lesson(2))],
    )
    assert [e.at for e in sends(r, uid)] == [
        START + timedelta(hours=23, minutes=30),
        START + 2 * D + timedelta(hours=23, minutes=30),
    ]


def test_a_journey_without_goals_ends_with_its_last_step() -> None:
    # lesson_reminder has no goals: no conversion window, the run ends as the reminder is
    # queued, and the next lesson starts a new run rather than restarting this one.
    uid = "brisk"
    due = START + timedelta(hours=23, minutes=30)
    r = simulate(
        "lesson_reminder",
        [user(uid)],
        [
            ev(uid, "lesson_completed", START, _lesson(1)),
            ev(uid, "lesson_completed", START + D, _lesson(2)),
        ],
    )
    assert [(e.action, e.step, e.at) for e in entries(r, uid)][:3] == [
        ("enter", "wait_after_lesson", START),
        ("send", "reminder", due),
        ("exit", "reminder", due),
    ]
    first_exit = entries(r, uid, "exit")[0]
    assert (first_exit.reason, first_exit.converted) == ("completed", False)
    assert [e.reason for e in entries(r, uid, "enter")] == [None, None]


# -- onboarding -------------------------------------------------------------------------------


def test_onboarding_paths() -> None:
    users = [
        user("fresh", sms_opt_in=True),  # profile incomplete, opted in, never bought
        user("done", profile_completed=True, sms_opt_in=True, has_purchased=True),
        user("quiet", profile_completed=True),  # sms_opt_in defaults to false
        user("buyer", sms_opt_in=True),
    ]
    installed = example("app_installed")
    r = simulate(
        "onboarding",
        users,
        [ev(u["id"], "app_installed", START, installed) for u in users]
        + [ev("buyer", "first_purchase", START + 2 * D, {"order_id": "o-9", "total": 19.0})],
    )
    assert [(e.at, e.step, e.channel) for e in sends(r, "fresh")] == [
        (START, "welcome", "email"),
        (START + D, "profile_nudge", "push"),
        (START + 3 * D, "first_order_sms", "sms"),
    ]
    assert [(e.step, e.channel) for e in sends(r, "done")] == [("welcome", "email")]
    assert [(e.step, e.channel) for e in sends(r, "quiet")] == [("welcome", "email")]
    for uid in ("fresh", "done", "quiet"):
        [out] = entries(r, uid, "exit")
        # the steps end on day 3; the run then waits out the 7-day conversion window
        assert (out.step, out.reason, out.at, out.converted) == (CONVERSION_STEP, "completed", START + 7 * D, False)
    assert [(e.at, e.step) for e in sends(r, "buyer")] == [
        (START, "welcome"),
        (START + D, "profile_nudge"),
    ]
    [out] = entries(r, "buyer", "exit")
    assert (out.reason, out.at, out.converted) == ("goal:first_purchase", START + 2 * D, True)
    assert r.summary.to_dict()["converted"] == 1


def test_onboarding_ignores_a_second_install() -> None:
    uid = "twice"
    r = simulate(
        "onboarding",
        [user(uid)],
        [ev(uid, "app_installed", START, {}), ev(uid, "app_installed", START + 5 * H, {})],
    )
    assert len(entries(r, uid, "enter")) == 1
    assert [e.step for e in sends(r, uid)] == ["welcome", "profile_nudge"]


def test_onboarding_welcome_waits_for_the_end_of_quiet_hours() -> None:
    uid = "tokyo"
    r = simulate("onboarding", [user(uid, timezone="Asia/Tokyo")], [ev(uid, "app_installed", START, {})])
    # 14:00 UTC is 23:00 in Tokyo: the welcome email waits for 08:00 local (23:00 UTC).
    defer, = entries(r, uid, "defer")[:1]
    assert defer.step == "welcome" and defer.at == START
    welcome = sends(r, uid)[0]
    assert welcome.step == "welcome" and welcome.at == datetime(2026, 1, 5, 23, 0, tzinfo=UTC)


# -- JSON output through the command ----------------------------------------------------------


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("dry")
    uid_buy, uid_cap = treated("jbuy"), treated("jcap", "free_shipping")
    uid_opt = treated("jopt", "free_shipping")
    held = pick_user_id("jheld", lambda u: is_held_out("cart_abandonment", u))
    users = [
        user(uid_buy, timezone="Europe/Berlin"),
        # reachable by SMS only: a capped SMS cannot fall back
        user(uid_cap, preferred_channel="sms", sms_opt_in=True, email=None, push_tokens=[],
             timezone="America/Denver"),
        user(held),
        user("j-none", unsubscribed=["all"]),
        user("j-empty"),
        user(uid_opt, preferred_channel="sms", sms_opt_in=False),  # prefers SMS, never said yes
    ]
    events = [
        {"user": uid_buy, "event": "cart_updated", "properties": TWO},
        {"user": uid_buy, "event": "order_completed", "at": "+3h", "properties": ORDER},
        {"user": uid_cap, "event": "cart_updated", "at": "2026-01-05T16:00:00Z", "properties": ONE},
        {"user": uid_cap, "event": "cart_updated", "at": "+2h30m", "properties": TWO},
        {"user": uid_cap, "event": "cart_updated", "at": "+4h", "properties": ONE},
        {"user": uid_opt, "event": "cart_updated", "properties": ONE},
        {"user": held, "event": "cart_updated", "at": "+1h", "properties": ONE},
        {"user": "j-none", "event": "cart_updated", "at": "2026-01-05T10:00:00-05:00", "properties": ONE},
        {"user": "j-empty", "event": "cart_updated", "at": "+1d", "properties": cart("c-0")},
    ]
    (d / "users.yaml").write_text(yaml.safe_dump({"users": users}, sort_keys=False), encoding="utf-8")
    (d / "events.yaml").write_text(yaml.safe_dump(events, sort_keys=False), encoding="utf-8")
    return {"users": d / "users.yaml", "events": d / "events.yaml", "dir": d}


def _dry_json(files: dict[str, Path]) -> bytes:
    proc = run_cli_bytes(
        "dry-run", "cart_abandonment", "--users", str(files["users"]),
        "--events", str(files["events"]), "--format", "json",
    )
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


def test_json_output_shape_and_determinism(cli_files) -> None:
    first = _dry_json(cli_files)
    second = _dry_json(cli_files)
    assert first == second  # byte-identical, in separate processes (separate hash seeds)
    data = json.loads(first)
    assert {"journey", "version", "timeline", "summary"} <= set(data)
    assert data["journey"] == "cart_abandonment"
    assert isinstance(data["version"], str) and len(data["version"]) == 16
    assert data["timeline"], "nothing happened"
    for e in data["timeline"]:
        assert {"user", "at", "action", "step"} <= set(e), e
        assert e["action"] in {"enter", "send", "skip", "defer", "exit"}
        datetime.strptime(e["at"], "%Y-%m-%dT%H:%M:%SZ")
        assert e["at"].endswith("Z")
        if "until" in e:
            assert e["until"].endswith("Z")
    ats = [e["at"] for e in data["timeline"]]
    assert ats == sorted(ats)  # the timeline is in time order
    users = {e["user"] for e in data["timeline"]}
    assert "j-empty" not in users
    s = data["summary"]
    assert s["users"] == 6 and s["entered"] == 7  # 5 users, one of them restarted twice
    assert s["restarted"] == 2 and s["held_out"] == 1
    assert s["converted"] == 1
    assert s["skipped"] == {"frequency_cap": 1, "no_consent": 1, "unsubscribed": 2}
    assert s["exited"] == {"completed": 3, "goal:order_completed": 1, "holdout_window_ended": 1}
    assert s["in_progress"] == 0


def test_json_timeline_tells_each_story(cli_files) -> None:
    data = json.loads(_dry_json(cli_files))
    by_user: dict[str, list[dict[str, Any]]] = {}
    for e in data["timeline"]:
        by_user.setdefault(e["user"], []).append(e)
    buy = by_user[treated("jbuy")]
    assert [(e["action"], e.get("channel"), e["at"]) for e in buy] == [
        ("enter", None, "2026-01-05T14:00:00Z"),
        ("send", "push", "2026-01-05T15:00:00Z"),
        ("exit", None, "2026-01-05T17:00:00Z"),
    ]
    assert buy[-1]["reason"] == "goal:order_completed" and buy[-1]["converted"] is True
    cap = by_user[treated("jcap", "free_shipping")]
    # Restarted at 16:30 UTC (09:30 in Denver): one nudge by SMS at 17:30. Restarted again at
    # 18:00: that nudge (19:00) is capped (1 SMS per 12h) and SMS is the only channel. The
    # offer 23 hours later is 24.5h after the last SMS, so it goes out; the run then waits out
    # the conversion window (3 days from the last restart).
    assert [(e["action"], e["step"], e.get("channel"), e["at"]) for e in cap] == [
        ("enter", "wait_an_hour", None, "2026-01-05T16:00:00Z"),
        ("enter", "wait_an_hour", None, "2026-01-05T16:30:00Z"),
        ("send", "nudge", "sms", "2026-01-05T17:30:00Z"),
        ("enter", "wait_an_hour", None, "2026-01-05T18:00:00Z"),
        ("skip", "nudge", None, "2026-01-05T19:00:00Z"),
        ("send", "free_shipping_sms", "sms", "2026-01-06T18:00:00Z"),
        ("exit", "__conversion_window__", None, "2026-01-08T18:00:00Z"),
    ]
    assert cap[1]["reason"] == cap[3]["reason"] == "restarted"
    assert (cap[4]["reason"], cap[4]["detail"]) == ("frequency_cap", "sms: capped at 1 per 12h")
    assert (cap[6]["reason"], cap[6]["converted"]) == ("completed", False)
    opt = by_user[treated("jopt", "free_shipping")]
    # Prefers SMS but never opted in: the nudge falls back to push, the SMS-only offer is
    # skipped for want of consent.
    assert [(e["action"], e["step"], e.get("channel"), e.get("reason"), e.get("detail")) for e in opt] == [
        ("enter", "wait_an_hour", None, None, None),
        ("send", "nudge", "push", None, "fell back from sms"),
        ("skip", "free_shipping_sms", None, "no_consent", "sms: not opted in"),
        ("exit", "__conversion_window__", None, "completed", None),
    ]
    none = by_user["j-none"]
    assert [(e["action"], e.get("reason")) for e in none if e["action"] == "skip"] == [
        ("skip", "unsubscribed"),
        ("skip", "unsubscribed"),
    ]
    assert none[0]["at"] == "2026-01-05T15:00:00Z"
