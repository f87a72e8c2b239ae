"""Funnel, attribution and experiments on synthetic histories with known answers, and the
significance figures checked against SciPy (an independent implementation)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from dryrun_helpers import machine
from scipy import integrate
from scipy import stats as sps

from orchestrator.engine import pick_variant
from orchestrator.machine import SplitState
from orchestrator.stats import journey_stats
from orchestrator.stats.attribution import attribute
from orchestrator.stats.experiments import Group, build_experiments, prob_beats, versus
from orchestrator.stats.facts import (
    ConversionFact,
    DeliveryFact,
    History,
    MessageFact,
    ReachFact,
    RunFact,
)
from orchestrator.stats.funnel import build_funnel
from orchestrator.stats.significance import compare, wilson

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
CART = "cart_abandonment"
WINDOW = timedelta(days=3)  # cart_abandonment's conversion_window


def run(rid: str, user: str | None = None, *, holdout: bool = False, converted: bool = False,
        variants: tuple[tuple[str, str], ...] = (), finished: bool = True,
        reason: str | None = None, step: str | None = None, at: datetime = T0,
        restarts: int = 0) -> RunFact:
    if reason is None:
        reason = "goal:order_completed" if converted else "completed"
    return RunFact(rid, user or rid, at, holdout, variants, finished, step, reason, converted,
                   restarts)


def delivery(rid: str, step: str, channel: str, at: datetime, *, user: str | None = None,
             journey: str = CART, status: str = "delivered", opened: bool = False,
             clicked: bool = False) -> DeliveryFact:
    return DeliveryFact(rid, user or rid, journey, step, channel, at, status, opened, clicked)


def conversion(rid: str, at: datetime, user: str | None = None, journey: str = CART) -> ConversionFact:
    return ConversionFact(rid, user or rid, journey, "order_completed", at)


# -- attribution -------------------------------------------------------------------------------

def test_conversion_credited_to_the_last_delivered_message_before_it() -> None:
    h = History(CART, runs=[run("r1", converted=True)],
                deliveries=[delivery("r1", "nudge", "push", T0 + timedelta(hours=1)),
                            delivery("r1", "discount_email", "email", T0 + timedelta(hours=24)),
                            # after the goal: cannot have caused it
                            delivery("r1", "free_shipping_sms", "sms", T0 + timedelta(hours=30))],
                conversions=[conversion("r1", T0 + timedelta(hours=25))])
    touch = attribute(h, WINDOW.total_seconds())["r1"]
    assert touch is not None and (touch.step, touch.channel) == ("discount_email", "email")


def test_bounced_failed_and_unknown_messages_get_no_credit() -> None:
    h = History(CART, runs=[run("r1", converted=True)],
                deliveries=[delivery("r1", "nudge", "push", T0 + timedelta(hours=1)),
                            delivery("r1", "discount_email", "email", T0 + timedelta(hours=24), status="bounced"),
                            delivery("r1", "free_shipping_sms", "sms", T0 + timedelta(hours=24, minutes=5), status="unknown")],
                conversions=[conversion("r1", T0 + timedelta(hours=25))])
    touch = attribute(h, WINDOW.total_seconds())["r1"]
    assert touch is not None and touch.step == "nudge"


def test_message_just_inside_and_just_outside_the_window() -> None:
    at = T0 + timedelta(days=5)
    inside = History(CART, runs=[run("r1", converted=True)],
                     deliveries=[delivery("r1", "nudge", "push", at - WINDOW)],
                     conversions=[conversion("r1", at)])
    outside = History(CART, runs=[run("r1", converted=True)],
                      deliveries=[delivery("r1", "nudge", "push", at - WINDOW - timedelta(seconds=1))],
                      conversions=[conversion("r1", at)])
    assert attribute(inside, WINDOW.total_seconds())["r1"] is not None
    assert attribute(outside, WINDOW.total_seconds())["r1"] is None


def test_conversion_with_no_message_is_credited_to_no_message() -> None:
    h = History(CART, runs=[run("h1", holdout=True, converted=True), run("t1", converted=True)],
                conversions=[conversion("h1", T0 + timedelta(hours=2)),
                             conversion("t1", T0 + timedelta(minutes=30))])
    f = build_funnel(machine(CART), h)
    assert f.converted == 2 and f.converted_held_out == 1
    assert f.credited_to_no_message == 2 and f.credited_to_messages == 0


def test_two_journeys_compete_for_one_conversion() -> None:
    """The user is in both journeys, both message them, then they buy: each journey counts its
    run as converted, but only the later message is credited."""
    buy = T0 + timedelta(hours=30)
    cart_run = run("c1", "u1", converted=True)
    deliveries = [
        delivery("c1", "nudge", "push", T0 + timedelta(hours=1), user="u1"),
        delivery("o1", "welcome", "email", T0 + timedelta(hours=29), user="u1", journey="onboarding"),
    ]
    cart = History(CART, runs=[cart_run], deliveries=deliveries, conversions=[conversion("c1", buy, "u1")])
    f = build_funnel(machine(CART), cart)
    assert f.converted == 1
    assert f.credited_to_messages == 0
    assert dict(f.credited_elsewhere) == {"onboarding": 1}
    onboarding = History("onboarding", runs=[run("o1", "u1", converted=True)], deliveries=deliveries,
                         conversions=[conversion("o1", buy, "u1", journey="onboarding")])
    credited = attribute(onboarding, 7 * 86400)["o1"]
    assert credited is not None and (credited.journey, credited.step) == ("onboarding", "welcome")


# -- funnel ------------------------------------------------------------------------------------

def _funnel_history() -> History:
    """Ten treated runs and two held-out ones through cart_abandonment, with known outcomes."""
    runs = [run("h1", holdout=True, converted=True, step="__holdout__"),
            run("h2", holdout=True, reason="holdout_window_ended", step="__holdout__")]
    messages: list[MessageFact] = []
    reaches: list[ReachFact] = []
    deliveries: list[DeliveryFact] = []
    conversions = [conversion("h1", T0 + timedelta(hours=3))]
    cm = machine(CART)
    split = cm.states["offer"]
    assert isinstance(split, SplitState)
    for i in range(10):
        rid = f"t{i}"
        reaches += [ReachFact(rid, "wait_an_hour"), ReachFact(rid, "nudge")]
        at = T0 + timedelta(hours=1)
        if i < 6:
            messages.append(MessageFact(rid, "nudge", at, "send", "push"))
            deliveries.append(delivery(rid, "nudge", "push", at, status="delivered" if i < 5 else "failed",
                                       opened=i < 3, clicked=i < 1))
        elif i < 8:
            messages.append(MessageFact(rid, "nudge", at, "defer", reason="quiet_hours"))
            messages.append(MessageFact(rid, "nudge", at + timedelta(hours=8), "skip", "sms", reason="no_consent"))
        else:
            messages.append(MessageFact(rid, "nudge", at, "skip", reason="no_contact"))
        if i == 0:  # bought right after the nudge
            runs.append(run(rid, converted=True, step="wait_for_order"))
            conversions.append(conversion(rid, at + timedelta(hours=2)))
            continue
        reaches.append(ReachFact(rid, "wait_for_order"))
        variant = pick_variant(CART, rid, "offer", split)[0]
        step = "discount_email" if variant == "discount" else "free_shipping_sms"
        sat = T0 + timedelta(hours=24)
        reaches.append(ReachFact(rid, step))
        channel = "email" if variant == "discount" else "sms"
        messages.append(MessageFact(rid, step, sat, "send", channel, variant))
        deliveries.append(delivery(rid, step, channel, sat, status="bounced" if i == 9 else "delivered"))
        converted = i in (1, 2)
        if converted:
            conversions.append(conversion(rid, sat + timedelta(hours=1)))
        runs.append(run(rid, converted=converted, variants=(("offer", variant),),
                        step=step if not converted else "__conversion_window__"))
    return History(CART, runs=runs, messages=messages, deliveries=deliveries, reaches=reaches,
                   conversions=conversions)


def test_funnel_counts_each_step() -> None:
    h = _funnel_history()
    f = build_funnel(machine(CART), h)
    steps = {s.step: s for s in f.steps}
    assert (f.runs, f.users, f.held_out, f.entries) == (12, 12, 2, 12)
    assert steps["wait_an_hour"].reached == 10
    nudge = steps["nudge"]
    assert nudge.reached == 10
    assert dict(nudge.sent) == {"push": 6}
    assert dict(nudge.skipped) == {"no_consent": 2, "no_contact": 2}
    assert nudge.deferred == 2
    assert (nudge.delivered, nudge.failed, nudge.opened, nudge.clicked) == (5, 1, 3, 1)
    assert dict(nudge.credited) == {"push": 1}  # t0 bought two hours after its push
    assert steps["wait_for_order"].reached == 9
    offer = steps["offer"]
    assert offer.reached == 9 and sum(offer.variants.values()) == 9
    emails = steps["discount_email"].reached or 0
    texts = steps["free_shipping_sms"].reached or 0
    assert emails + texts == 9 and emails == offer.variants["discount"]
    assert f.converted == 4 and f.converted_held_out == 1
    assert f.credited_to_messages == 3 and f.credited_to_no_message == 1
    assert f.exited["goal:order_completed"] == 4
    assert f.exited["holdout_window_ended"] == 1
    bounced = sum(s.bounced or 0 for s in f.steps)
    assert bounced == 1
    assert f.channels["push"].sent == 6 and f.channels["push"].credited == 1


def test_funnel_dict_shows_missing_feedback_as_none_in_a_dry_run() -> None:
    h = _funnel_history()
    h.simulated = True
    d = build_funnel(machine(CART), h).to_dict()
    nudge = next(s for s in d["steps"] if s["step"] == "nudge")
    assert nudge["delivered"] is None and nudge["opened"] is None
    assert d["channels"]["push"]["delivered"] is None


def test_branch_and_update_steps_have_no_reached_count() -> None:
    m = machine("onboarding")
    f = build_funnel(m, History("onboarding"))
    kinds = {s.step: (s.kind, s.reached) for s in f.steps}
    for step, (kind, reached) in kinds.items():
        assert (reached is None) == (kind in ("branch", "update_profile")), step


# -- experiments -------------------------------------------------------------------------------

def _population(n: int, rates: dict[str, float]) -> History:
    """``n`` users through cart_abandonment, 10% held out (as the journey says), each group
    converting at exactly the given rate (by position within the group, deterministic)."""
    cm = machine(CART)
    split = cm.states["offer"]
    assert isinstance(split, SplitState)
    runs = []
    seen: dict[str, int] = {}
    for i in range(n):
        uid = f"u{i}"
        held = i % 10 == 0
        group = "holdout" if held else pick_variant(CART, uid, "offer", split)[0]
        k = seen[group] = seen.get(group, 0) + 1
        rate = rates[group]
        converted = math.floor(k * rate) > math.floor((k - 1) * rate)
        variants = () if held else (("offer", group),)
        runs.append(run(uid, holdout=held, converted=converted, variants=variants))
    return History(CART, runs=runs)


def test_experiments_report_groups_and_the_significant_winner() -> None:
    h = _population(4000, {"holdout": 0.10, "discount": 0.20, "free_shipping": 0.11})
    exps = {e.kind + (e.step or ""): e for e in build_experiments(machine(CART), h)}
    split = exps["splitoffer"]
    groups = {g.name: g for g in split.groups}
    assert set(groups) == {"discount", "free_shipping", "holdout"}
    assert groups["holdout"].users == 400
    assert groups["discount"].users + groups["free_shipping"].users == 3600
    by = {(v.group, v.baseline): v for v in split.comparisons}
    d = by[("discount", "holdout")]
    assert d.enough_data and d.significant and d.comparison is not None
    assert d.comparison.difference > 0.09
    assert "'discount' converts better than 'holdout'" in d.verdict
    fs = by[("free_shipping", "holdout")]
    assert fs.enough_data and not fs.significant
    assert "no significant difference" in fs.verdict
    assert ("free_shipping", "discount") in by  # variants against each other too
    assert split.headline() == d.verdict
    holdout = exps["holdout"]
    assert [g.name for g in holdout.groups] == ["treated", "holdout"]
    assert holdout.comparisons[0].significant


def test_not_enough_data_below_the_minimum_sample() -> None:
    h = _population(300, {"holdout": 0.0, "discount": 0.5, "free_shipping": 0.5})
    split = next(e for e in build_experiments(machine(CART), h) if e.kind == "split")
    v = next(v for v in split.comparisons if v.baseline == "holdout")
    assert not v.enough_data and not v.significant
    assert v.verdict.startswith("not enough data yet: 'holdout' has 30 users, need 100")
    few = versus(Group("a", 500, 3, (0, 1)), Group("b", 500, 2, (0, 1)), confidence=0.95,
                 min_users=100, min_conversions=10)
    assert not few.enough_data and "5 conversions" in few.verdict


def test_users_who_never_reached_the_split_are_counted_in_their_assigned_variant() -> None:
    """Intent to treat: a user who bought before the split still counts in the variant the
    hash assigns them, so early buyers don't make the variants look worse than the holdout."""
    cm = machine(CART)
    split = cm.states["offer"]
    assert isinstance(split, SplitState)
    runs = [run(f"u{i}", converted=True) for i in range(50)]  # bought before the offer
    exps = build_experiments(cm, History(CART, runs=runs), min_users=1)
    e = next(e for e in exps if e.kind == "split")
    assert e.assigned_by_hash == 50
    expected = sum(pick_variant(CART, f"u{i}", "offer", split)[0] == "discount" for i in range(50))
    assert next(g for g in e.groups if g.name == "discount").users == expected


def test_user_is_the_unit_a_restarted_or_repeated_user_counts_once() -> None:
    runs = [run("r1", "u1", at=T0), run("r2", "u1", converted=True, at=T0 + timedelta(days=4)),
            run("r3", "u2", at=T0)]
    e = build_experiments(machine(CART), History(CART, runs=runs), min_users=1)[0]
    treated = e.groups[0]
    assert (treated.users, treated.conversions) == (2, 1)


# -- significance against SciPy ----------------------------------------------------------------

@pytest.mark.parametrize("k,n", [(0, 10), (1, 10), (5, 10), (10, 10), (37, 412), (1203, 10000)])
@pytest.mark.parametrize("confidence", [0.90, 0.95, 0.99])
def test_wilson_interval_matches_scipy(k: int, n: int, confidence: float) -> None:
    expected = sps.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    low, high = wilson(k, n, confidence)
    assert low == pytest.approx(expected.low, abs=1e-9)
    assert high == pytest.approx(expected.high, abs=1e-9)


@pytest.mark.parametrize("a,b", [((45, 400), (30, 400)), ((200, 1800), (20, 200)),
                                 ((12, 150), (14, 160)), ((520, 4000), (40, 400))])
def test_two_proportion_z_test_matches_scipy_chi_squared(a: tuple[int, int], b: tuple[int, int]) -> None:
    (ka, na), (kb, nb) = a, b
    c = compare(ka, na, kb, nb)
    table = [[ka, na - ka], [kb, nb - kb]]
    chi2, p, _, _ = sps.chi2_contingency(table, correction=False)
    assert c.p_value == pytest.approx(p, rel=1e-9)
    assert c.z is not None and c.z**2 == pytest.approx(chi2, rel=1e-9)
    pa, pb = ka / na, kb / nb
    # Newcombe's hybrid score interval, built here from SciPy's Wilson intervals
    wa = sps.binomtest(ka, na).proportion_ci(method="wilson")
    wb = sps.binomtest(kb, nb).proportion_ci(method="wilson")
    assert c.difference_ci[0] == pytest.approx(pa - pb - math.hypot(pa - wa.low, wb.high - pb))
    assert c.difference_ci[1] == pytest.approx(pa - pb + math.hypot(wa.high - pa, pb - wb.low))
    assert c.lift == pytest.approx((pa - pb) / pb)


def test_z_test_is_undefined_when_nobody_or_everybody_converts() -> None:
    assert compare(0, 100, 0, 100).p_value is None
    assert compare(100, 100, 50, 50).z is None


@pytest.mark.parametrize("a,b", [((45, 400), (30, 400)), ((200, 1800), (20, 200)), ((12, 150), (14, 160))])
def test_probability_to_beat_matches_exact_beta_integral(a: tuple[int, int], b: tuple[int, int]) -> None:
    (ka, na), (kb, nb) = a, b
    pa, pb = sps.beta(1 + ka, 1 + na - ka), sps.beta(1 + kb, 1 + nb - kb)
    # P(A > B) = integral of pdf_A(x) * cdf_B(x) dx
    exact, _ = integrate.quad(lambda x: pa.pdf(x) * pb.cdf(x), 0, 1, limit=200, points=[ka / na, kb / nb])
    assert prob_beats(ka, na, kb, nb) == pytest.approx(exact, abs=1e-6)


def test_journey_stats_bundles_everything_as_plain_data() -> None:
    h = _population(2000, {"holdout": 0.05, "discount": 0.12, "free_shipping": 0.06})
    for r in h.runs:
        if r.converted:
            h.conversions.append(conversion(r.run_id, T0 + timedelta(days=1)))
    s = journey_stats(machine(CART), h)
    d = s.to_dict()
    assert d["funnel"]["converted"] == sum(r.converted for r in h.runs)
    assert [e["kind"] for e in d["experiments"]] == ["holdout", "split"]
    days = d["daily"]
    assert days[0]["day"] == "2026-03-02" and days[1]["day"] == "2026-03-03"
    assert days[0]["entries"]["holdout"] == 200 and days[1]["conversions"]["treated"] > 0
    import json
    json.dumps(d)  # serialisable as is


def test_difference_interval_agrees_with_the_test_on_a_lopsided_comparison() -> None:
    """20/1000 against 0/100: not significant (p = 0.15), so the interval must include 0 (a Wald
    interval, [+1.1, +2.9] points, would claim otherwise)."""
    c = compare(20, 1000, 0, 100)
    assert c.p_value is not None and c.p_value > 0.05
    assert c.difference_ci[0] < 0 < c.difference_ci[1]


def test_tiny_p_values_are_shown_as_a_bound_not_zero() -> None:
    v = versus(Group("a", 2000, 1900, (0, 1)), Group("b", 2000, 10, (0, 1)), confidence=0.95,
               min_users=100, min_conversions=10)
    assert "p < 1e-16" in v.verdict and "p = 0," not in v.verdict


def test_exit_steps_marked_converted_do_not_count_in_experiments() -> None:
    """Only treated runs can reach an exit step: counting its 'converted' would make any
    journey beat its holdout. The funnel still shows it as converted."""
    runs = [run(f"t{i}", converted=True, reason="bought_in_app", step="end_step") for i in range(180)]
    runs += [run(f"h{i}", holdout=True, reason="holdout_window_ended") for i in range(120)]
    h = History(CART, runs=runs)
    e = build_experiments(machine(CART), h)[0]
    treated = e.groups[0]
    assert treated.conversions == 0
    assert not e.comparisons[0].significant
    assert build_funnel(machine(CART), h).converted == 180
