"""Statistics read from the production store (``orchestrator.stats.from_store``) and the
``journey stats`` / ``journey report`` commands, on the real in-process runtime (SQLite and
PostgreSQL), with answers known in advance.

* A scenario with one user per case: a conversion just inside and one just outside the
  conversion window, a conversion before any message and one by a held-out user, two
  journeys competing for one purchase, skips for each reason, a quiet-hours deferral, a
  restart, and provider webhooks (delivered, opened, clicked, bounced) through the real
  feedback path: exact figures from ``load_history`` + ``build_funnel``.
* The acceptance test: the shipped cart abandonment journey for thousands of shoppers whose
  purchases depend on the variant they were sent, then ``journey stats`` (JSON and tables) and
  ``journey report`` run in-process, checked against the figures the test computes itself.
* The commands' error paths: an unknown journey, a bad ``--since``, a database that cannot be
  reached.
"""

from __future__ import annotations

import json
import random
import time
from datetime import datetime, timedelta
from itertools import count
from pathlib import Path
from typing import Any, Callable

import pytest
from click.testing import CliRunner
from scipy import stats as sps
from sqlalchemy import event

from orchestrator.cli import cli
from orchestrator.compiler import compile_journey
from orchestrator.engine import HOLDOUT_STEP, bucket, pick_variant
from orchestrator.machine import SplitState
from orchestrator.project import Project
from orchestrator.runtime.feedback import ProviderEvent, apply_events
from orchestrator.runtime.ingest import IncomingEvent, store_events
from orchestrator.stats.from_store import load_history
from orchestrator.stats.funnel import build_funnel
from orchestrator.store.schema import deliveries

from .conftest import CART, LESSON, ManualClock
from .harness import Harness, make_harness, only_journeys  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]

PROMO = """
trigger:
  event: cart_updated
  when: "event['items'] | length > 0"
re_entry: ignore
holdout: 50%
goals: [order_completed]
conversion_window: 20s
delivery:
  quiet_hours: {start: "21:00", end: "08:00"}
  opt_in_required: [sms]
steps:
  - id: wait_a_bit
    wait: 2s
  - id: nudge
    send: {channel: email, template: cart_nudge}
  - id: text
    send: {channel: sms, template: cart_nudge}
  - id: linger
    wait: 30s
"""

LESSONS = """
trigger: {event: lesson_completed}
re_entry: restart
goals: [order_completed]
conversion_window: 1m
steps:
  - id: reminder
    send: {channel: email, template: streak_reminder}
"""


def user(journey: str, prefix: str, *, held: bool, percent: float = 50) -> str:
    """The first id ``prefix-N`` that the journey's holdout hash puts in (or out of) the holdout."""
    for i in count():
        uid = f"{prefix}-{i}"
        if (bucket(journey, uid, HOLDOUT_STEP) * 100 < percent) == held:
            return uid
    raise AssertionError("unreachable")


def order(h: Harness, uid: str) -> None:
    h.track(uid, "order_completed", {"order_id": f"o-{uid}", "total": 89.0, "currency": "USD"})


class Statements:
    """Counts the SELECT statements an engine runs (to show the loading is not per run)."""

    def __init__(self, engine: Any) -> None:
        self.engine, self.n = engine, 0

    def __enter__(self) -> "Statements":
        event.listen(self.engine, "before_cursor_execute", self._count)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._count)

    def _count(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.n += statement.lstrip().upper().startswith("SELECT")


def test_store_history_counts_every_case_exactly(
    make_harness: Callable[..., Harness], fast_project: Path
) -> None:
    h = make_harness(only_journeys(fast_project, promo=PROMO, lessons=LESSONS))
    t0 = h.now  # 15:00 UTC: midnight in Tokyo
    inside = user("promo", "inside", held=False)  # buys at +20s: the window's last second
    outside = user("promo", "outside", held=False)  # buys at +21s: too late to count
    no_consent = user("promo", "noconsent", held=False)  # a phone, but never opted in to SMS
    early = user("promo", "early", held=False)  # buys at +1s, before any message
    tokyo = user("promo", "tokyo", held=False)  # the nudge is held by quiet hours
    both = user("promo", "both", held=False)  # in both journeys: the lesson reminder wins
    held_buyer = user("promo", "heldbuyer", held=True)
    held_idle = user("promo", "heldidle", held=True)
    restarter = "lessons-restarter"  # lessons only, restarted once

    h.profile(inside, email="inside@example.com", phone="+15555550101", consent={"sms": "opted_in"})
    # Opted in to SMS without a phone number: the text is skipped for "no_contact".
    h.profile(outside, email="outside@example.com", consent={"sms": "opted_in"})
    h.profile(no_consent, email="noconsent@example.com", phone="+15555550102")
    h.profile(early, email="early@example.com")
    h.profile(tokyo, email="tokyo@example.com", timezone="Asia/Tokyo", consent={"sms": "opted_in"})
    h.profile(both, email="both@example.com", consent={"sms": "opted_in"})
    h.profile(held_buyer, email="heldbuyer@example.com")
    h.profile(held_idle, email="heldidle@example.com")
    h.profile(restarter, email="restarter@example.com")
    for uid in (inside, outside, no_consent, early, tokyo, both, held_buyer, held_idle):
        h.track(uid, "cart_updated", CART)

    h.clock.now = t0 + timedelta(seconds=1)
    order(h, early)
    h.tick(seconds=1)  # +2s: the nudges and texts go out (Tokyo's nudge is held)
    h.clock.now = t0 + timedelta(seconds=5)
    h.track(both, "lesson_completed", LESSON)
    h.track(restarter, "lesson_completed", LESSON)
    h.clock.now = t0 + timedelta(seconds=6)
    h.track(restarter, "lesson_completed", LESSON)  # restarts the run: a second reminder
    h.clock.now = t0 + timedelta(seconds=8)
    order(h, both)  # converts in both journeys; the last message was the lesson reminder
    h.clock.now = t0 + timedelta(seconds=10)
    order(h, held_buyer)

    # What the providers report, through the real webhook path: by our delivery key, or by
    # the provider's message id only.
    def ledger(uid: str, step: str) -> dict[str, Any]:
        return h.one(deliveries, user_id=uid, step=step)

    at = h.now
    ev = [
        ProviderEvent("sendgrid", "e1", "delivered", at, delivery_key=ledger(inside, "nudge")["key"]),
        ProviderEvent("sendgrid", "e2", "opened", at, delivery_key=ledger(inside, "nudge")["key"]),
        ProviderEvent("sendgrid", "e3", "clicked", at, delivery_key=ledger(inside, "nudge")["key"]),
        ProviderEvent("sendgrid", "e3", "clicked", at, delivery_key=ledger(inside, "nudge")["key"]),  # repeated
        ProviderEvent("twilio", "e4", "delivered", at, provider_id=ledger(inside, "text")["provider_id"]),
        ProviderEvent("sendgrid", "e5", "opened", at, provider_id=ledger(outside, "nudge")["provider_id"]),
        ProviderEvent("sendgrid", "e6", "bounced", at, delivery_key=ledger(no_consent, "nudge")["key"]),
    ]
    applied = apply_events(h.engine, ev, at)
    assert (applied.applied, applied.duplicates, applied.unmatched) == (6, 1, 0)

    h.clock.now = t0 + timedelta(seconds=20)
    order(h, inside)  # 20s after entry: inside the 20s window
    h.tick()  # the held-out runs' window ends
    h.clock.now = t0 + timedelta(seconds=21)
    order(h, outside)  # 21s: a goal, but not a conversion
    h.tick(seconds=11)  # +32s: the rest linger out their wait; the window is over: completed
    h.clock.now = t0.replace(hour=23)  # 08:00 in Tokyo: the held nudge goes out
    assert h.tick().messages == 1
    h.tick(minutes=5)

    machine = h.runtime.registry.machine(h.engine.connect(), h.version("promo"))
    with Statements(h.engine) as sql:
        history = load_history(h.engine, "promo")
    assert sql.n <= 9, sql.n  # a fixed number of statements, whatever the number of runs
    f = build_funnel(machine, history)

    assert (f.users, f.runs, f.entries, f.restarts, f.held_out, f.in_progress) == (8, 8, 8, 0, 2, 0)
    steps = {s.step: s for s in f.steps}
    assert steps["wait_a_bit"].reached == 6  # every treated run; the early buyer left during it
    assert steps["linger"].reached == 5
    nudge, text = steps["nudge"], steps["text"]
    assert nudge.reached == 5 and text.reached == 5
    assert dict(nudge.sent) == {"email": 5} and dict(nudge.skipped) == {}
    assert nudge.deferred == 1  # Tokyo, sent at 08:00 local
    assert dict(text.sent) == {"sms": 1}
    assert dict(text.skipped) == {"no_contact": 3, "no_consent": 1}
    assert (nudge.delivered, nudge.bounced, nudge.failed, nudge.opened, nudge.clicked) == (2, 1, 0, 2, 1)
    assert (text.delivered, text.bounced, text.opened, text.clicked) == (1, 0, 0, 0)
    email, sms = f.channels["email"], f.channels["sms"]
    assert (email.sent, email.delivered, email.bounced, email.opened, email.clicked) == (5, 2, 1, 2, 1)
    assert (sms.sent, sms.delivered, sms.credited) == (1, 1, 1)
    assert dict(f.skipped) == {"no_contact": 3, "no_consent": 1} and f.deferred == 1

    # Conversions: inside (+20s), early (+1s, no message yet), both (+8s), the held-out buyer.
    assert {c.user_id for c in history.conversions} == {inside, early, both, held_buyer}
    assert (f.converted, f.converted_held_out) == (4, 1)
    # inside: its nudge and text went at the same instant; the tie-break credits the text.
    assert dict(text.credited) == {"sms": 1} and dict(nudge.credited) == {}
    assert (f.credited_to_messages, f.credited_to_no_message) == (1, 2)
    assert dict(f.credited_elsewhere) == {"lessons": 1}
    assert dict(f.exited) == {"goal:order_completed": 5, "holdout_window_ended": 1, "completed": 2}
    outside_run = next(r for r in history.runs if r.user_id == outside)
    assert (outside_run.exit_reason, outside_run.converted) == ("goal:order_completed", False)
    tokyo_run = next(r for r in history.runs if r.user_id == tokyo)
    assert (tokyo_run.exit_step, tokyo_run.exit_reason) == ("linger", "completed")

    # The other journey: the same purchase is its own message's conversion.
    lessons = build_funnel(h.runtime.registry.machine(h.engine.connect(), h.version("lessons")),
                           load_history(h.engine, "lessons"))
    assert (lessons.runs, lessons.entries, lessons.restarts, lessons.converted) == (2, 3, 1, 1)
    rows = {s.step: s for s in lessons.steps}
    assert rows["reminder"].reached == 3 and dict(rows["reminder"].sent) == {"email": 3}
    assert (lessons.credited_to_messages, dict(rows["reminder"].credited)) == (1, {"email": 1})
    assert dict(lessons.credited_elsewhere) == {}

    # The cohort: runs entered in [since, until).
    assert len(load_history(h.engine, "promo", until=t0).runs) == 0
    assert len(load_history(h.engine, "promo", until=t0 + timedelta(seconds=1)).runs) == 8
    later = load_history(h.engine, "promo", since=t0 + timedelta(seconds=1))
    assert (later.runs, later.messages, later.deliveries, later.conversions) == ([], [], [], [])
    assert len(load_history(h.engine, "lessons", since=t0 + timedelta(seconds=6)).runs) == 1  # restarted at +6s

    # The JSON the command prints has the same figures.
    result = CliRunner().invoke(cli, ["stats", "promo", "--database-url", h.settings.database_url,
                                      "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["funnel"]["credited"] == {"messages": 1, "no_message": 2, "other_journeys": {"lessons": 1}}
    assert data["funnel"]["channels"]["email"]["bounced"] == 1
    assert data["version"] == h.version("promo")


def test_an_empty_history_loads(make_harness: Callable[..., Harness], fast_project: Path) -> None:
    h = make_harness(only_journeys(fast_project, promo=PROMO))
    history = load_history(h.engine, "promo")
    assert (history.runs, history.messages, history.reaches, history.deliveries) == ([], [], [], [])
    assert load_history(h.engine, "no_such_journey").runs == []


def test_load_history_wants_aware_datetimes(make_harness: Callable[..., Harness], fast_project: Path) -> None:
    h = make_harness(only_journeys(fast_project, promo=PROMO))
    with pytest.raises(ValueError, match="aware"):
        load_history(h.engine, "promo", since=datetime(2026, 3, 1))


# -- the commands' error paths ------------------------------------------------------------------

def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def one_line_error(result: Any, code: int, *needles: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.output)
    assert isinstance(result.exception, SystemExit), result.exception  # never a traceback
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert result.stdout == ""


def test_stats_of_an_unknown_journey_is_one_line(make_harness: Callable[..., Harness], fast_project: Path) -> None:
    h = make_harness(only_journeys(fast_project, promo=PROMO, lessons=LESSONS))
    url = h.settings.database_url
    one_line_error(invoke("stats", "promos", "--database-url", url), 1,
                   "no journey named 'promos'", "did you mean 'promo'", "lessons, promo")
    one_line_error(invoke("report", "nope", "--out", str(fast_project / "x.html"), "--database-url", url), 1,
                   "no journey named 'nope'")
    assert not (fast_project / "x.html").exists()


def test_stats_compile_the_yaml_only_when_no_version_was_recorded(
    make_harness: Callable[..., Harness], fast_project: Path
) -> None:
    """Runs without a recorded version (a database restored without journey_versions, say):
    the journey's YAML is compiled from --project; without it, one line."""
    from sqlalchemy import delete

    from orchestrator.store.schema import journey_versions

    h = make_harness(only_journeys(fast_project, promo=PROMO))
    h.profile("u1", email="u1@example.com")
    h.track("u1", "cart_updated", CART)
    with h.engine.begin() as conn:
        conn.execute(delete(journey_versions))
    url = h.settings.database_url
    ok = invoke("stats", "promo", "--database-url", url, "--project", str(fast_project), "--format", "json")
    assert ok.exit_code == 0, ok.output
    data = json.loads(ok.stdout)
    assert (data["version"], data["funnel"]["runs"]) == (h.version("promo"), 1)
    empty = fast_project.parent / "empty"
    (empty / "journeys").mkdir(parents=True)
    one_line_error(invoke("stats", "promo", "--database-url", url, "--project", str(empty)), 1,
                   "'promo' has runs but no deployed version", "no journey named 'promo'")


def test_stats_rejects_a_bad_since(make_harness: Callable[..., Harness], fast_project: Path) -> None:
    h = make_harness(only_journeys(fast_project, promo=PROMO))
    url = h.settings.database_url
    one_line_error(invoke("stats", "promo", "--since", "last week", "--database-url", url), 2,
                   "--since 'last week'", "7d", "2026-03-01")
    one_line_error(invoke("stats", "promo", "--since", "2026-03-05", "--until", "2026-03-01",
                          "--database-url", url), 2, "must be before --until")
    # Both forms work: a duration back from now and an ISO date.
    for since in ("7d", "2026-03-01", "2026-03-01T09:00:00Z"):
        ok = invoke("stats", "promo", "--since", since, "--database-url", url, "--format", "json")
        assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["since"] == "2026-03-01T09:00:00+00:00"


def test_stats_with_an_unreachable_database_is_one_line(tmp_path: Path) -> None:
    one_line_error(invoke("stats", "cart_abandonment", "--database-url",
                          "postgresql://postgres@127.0.0.1:1/nowhere"), 1,
                   "cannot connect to the database at 127.0.0.1:1/nowhere")
    missing = tmp_path / "missing.db"
    one_line_error(invoke("stats", "cart_abandonment", "--database-url", f"sqlite:///{missing}"), 1,
                   "no database at", "does not exist")
    assert not missing.exists()  # reading never creates a database
    empty = tmp_path / "empty.db"
    empty.touch()
    one_line_error(invoke("stats", "cart_abandonment", "--database-url", f"sqlite:///{empty}"), 1,
                   "has no journey tables", "journey db upgrade")
    one_line_error(invoke("stats", "cart_abandonment", "--database-url", "nonsense://"), 1,
                   "cannot open the database")


# -- the acceptance test ------------------------------------------------------------------------

SHOPPERS = 3000
SEED = 13  # the seed whose rates come closest to the planned ones (any seed passes)
EARLY = 0.03  # buys during the wait for an order, after the nudge (any group)
BUYS_AFTER_OFFER = {"discount": 0.30, "free_shipping": 0.15, "holdout": 0.10, "not_sent": 0.10}
NO_SMS = 0.10  # never opted in to SMS: the free-shipping text is skipped ("no_consent")


def shopper(uid: str, rng: random.Random) -> dict[str, Any]:
    contact: dict[str, Any] = {"email": f"{uid}@example.com", "phone": f"+1555{rng.randrange(10**7):07d}",
                               "timezone": "Europe/London"}
    if rng.random() < 0.3:
        contact["push_tokens"] = [f"fcm-{uid}"]
    consent = {} if rng.random() < NO_SMS else {"sms": "opted_in"}
    return {"contact": contact, "consent": consent}


BOUNCES, OPENS, CLICKS = 0.02, 0.45, 0.3  # of nudges by email; clicks: of those opened


def sent_nudges(h: Harness) -> set[str]:
    return {d["user_id"] for d in h.rows(deliveries, step="nudge", channel="email")}


def nudge_events(h: Harness, feedback: dict[str, tuple[bool, bool, bool, bool]]) -> list[ProviderEvent]:
    events = []
    for d in h.rows(deliveries, step="nudge", channel="email"):
        _, bounce, opens, clicks = feedback[d["user_id"]]
        outcomes = ["bounced"] if bounce else ["delivered"] + ["opened"] * opens + ["clicked"] * clicks
        events += [ProviderEvent("sendgrid", f"{name}-{d['id']}", name, h.now, delivery_key=d["key"])
                   for name in outcomes]
    return events


def offer_events(h: Harness) -> list[ProviderEvent]:
    """Twilio reports by its message id only; SendGrid carries our delivery key."""
    return [ProviderEvent("twilio", f"delivered-{d['id']}", "delivered", h.now, provider_id=d["provider_id"])
            if d["channel"] == "sms" else
            ProviderEvent("sendgrid", f"delivered-{d['id']}", "delivered", h.now, delivery_key=d["key"])
            for step in ("discount_email", "free_shipping_sms") for d in h.rows(deliveries, step=step)]


def webhooks(h: Harness, events: list[ProviderEvent]) -> None:
    applied = apply_events(h.engine, events, h.now)
    assert (applied.applied, applied.unmatched) == (len(events), 0)


def feed(h: Harness, name: str, users: list[str], props: Callable[[str], dict[str, Any]]) -> None:
    """Events through the ingest path (stored, then each user's work done), as the API does."""
    for i in range(0, len(users), 500):
        part = users[i:i + 500]
        stored = store_events(h.engine, [IncomingEvent(u, name, h.now, props(u)) for u in part], h.now)
        for j in range(0, len(stored.user_ids), 200):
            h.dispatcher.process_users(stored.user_ids[j:j + 200])


def test_acceptance_stats_and_report_for_thousands_of_shoppers(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shipped cart abandonment journey for 3,000 shoppers on the real runtime. Each
    shopper's purchase is decided in advance by a seeded random generator from what they are
    sent: 3% buy after the nudge whatever their group; after the offer 30% of those sent the
    discount buy, 15% of those sent free shipping, 10% of the held-out and of those whose
    offer was not sent (no SMS opt-in, or their email bounced). The email provider reports
    the nudges delivered, bounced, opened and clicked, and every offer delivered, through the
    real webhook path (``feedback.apply_events``). ``journey stats`` must report exactly the groups and conversions this
    gives, call the discount better than the holdout, significant, and give the free-shipping
    verdict the test's own two-proportion test (SciPy) gives; ``journey report`` must draw the
    experiments. SQLite only: the same code on PostgreSQL is covered above, and SQLite plays
    this about twice as fast."""
    started = time.monotonic()
    sink = tmp_path / "sink.jsonl"
    monkeypatch.setenv("JOURNEY_FILE_SINK", str(sink))
    clock = ManualClock()
    h = Harness(sqlite_url, ROOT, clock, sink)
    machine = compile_journey(ROOT / "journeys" / "cart_abandonment.yaml", Project(ROOT))
    offer = machine.states["offer"]
    assert isinstance(offer, SplitState)
    try:
        users = [f"shopper-{i:05d}" for i in range(SHOPPERS)]
        group: dict[str, str] = {}
        plan: dict[str, str | None] = {}  # user -> "early" | "late" | None
        feedback: dict[str, tuple[bool, bool, bool, bool]] = {}  # by email, bounce, open, click
        for uid in users:
            rng = random.Random(f"{SEED}:{uid}")
            p = shopper(uid, rng)
            h.profile(uid, consent=p["consent"], **p["contact"])
            if bucket(machine.journey, uid, HOLDOUT_STEP) * 100 < machine.holdout:
                group[uid] = "holdout"
            else:
                group[uid] = pick_variant(machine.journey, uid, "offer", offer)[0]
            # What the email provider will report about the nudge, when it goes by email
            # (shoppers with a push token get it by push). A bounce stops email for good:
            # the discount email is then not sent either.
            by_email = "push_tokens" not in p["contact"]
            fb = random.Random(f"{SEED}:{uid}:feedback")
            bounce = by_email and fb.random() < BOUNCES
            opens = by_email and not bounce and fb.random() < OPENS
            feedback[uid] = (by_email, bounce, opens, opens and fb.random() < CLICKS)
            sent = group[uid]
            if (sent == "free_shipping" and not p["consent"]) or (sent == "discount" and bounce):
                sent = "not_sent"
            plan[uid] = ("early" if rng.random() < EARLY
                         else "late" if rng.random() < BUYS_AFTER_OFFER[sent] else None)

        def purchase(uid: str) -> dict[str, Any]:
            return {"order_id": f"o-{uid}", "cart_id": CART["cart_id"], "total": 89.0, "currency": "USD"}

        t0 = h.now
        feed(h, "cart_updated", users, lambda u: CART)
        h.tick(hours=1)  # the nudges
        h.clock.now = t0 + timedelta(hours=1, minutes=5)
        webhooks(h, nudge_events(h, feedback))  # SendGrid: delivered, bounced, opened, clicked
        h.clock.now = t0 + timedelta(hours=5)
        feed(h, "order_completed", [u for u in users if plan[u] == "early"], purchase)
        h.clock.now = t0 + timedelta(hours=24)
        h.tick()  # no order yet: the offers
        h.clock.now = t0 + timedelta(hours=24, minutes=5)
        webhooks(h, offer_events(h))  # every offer delivered (SendGrid and Twilio)
        h.clock.now = t0 + timedelta(hours=30)
        feed(h, "order_completed", [u for u in users if plan[u] == "late"], purchase)
        h.clock.now = t0 + timedelta(days=3, minutes=1)
        h.tick()  # every conversion window is over
        simulated = time.monotonic() - started

        # What the test expects, from its own plan.
        expected: dict[str, tuple[int, int]] = {}
        for name in ("discount", "free_shipping", "holdout"):
            members = [u for u in users if group[u] == name]
            expected[name] = (len(members), sum(plan[u] is not None for u in members))

        url = h.settings.database_url
        runner = CliRunner()
        result = runner.invoke(cli, ["stats", "cart_abandonment", "--database-url", url, "--format", "json"])
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
        (tmp_path / "stats.json").write_text(result.stdout, encoding="utf-8")
        assert data["version"] == h.version("cart_abandonment")
        funnel = data["funnel"]
        assert funnel["runs"] == funnel["users"] == SHOPPERS
        assert funnel["converted"] == sum(plan[u] is not None for u in users)
        assert funnel["held_out"] == expected["holdout"][0]
        assert funnel["in_progress"] == 0

        steps = {row["step"]: row for row in funnel["steps"]}
        nudge, emailed = steps["nudge"], sent_nudges(h)
        nudged = [u for u in users if feedback[u][0] and u in emailed]
        assert len(nudged) == len(emailed)  # by email exactly when there is no push token
        assert nudge["sent"]["email"] == len(nudged)
        assert nudge["bounced"] == sum(feedback[u][1] for u in nudged)
        assert nudge["delivered"] == len(nudged) - nudge["bounced"]
        assert nudge["opened"] == sum(feedback[u][2] for u in nudged)
        assert nudge["clicked"] == sum(feedback[u][3] for u in nudged)
        for step in ("discount_email", "free_shipping_sms"):
            assert steps[step]["delivered"] == steps[step]["sent_total"] > 0
        assert steps["discount_email"]["skipped"] == {"unsubscribed": sum(
            1 for u in users if group[u] == "discount" and feedback[u][1] and plan[u] != "early")}

        split = next(e for e in data["experiments"] if e["kind"] == "split")
        groups = {g["name"]: (g["users"], g["conversions"]) for g in split["groups"]}
        assert groups == expected
        # Intent to treat: early buyers never reached the split, yet count in their variant.
        early_treated = sum(plan[u] == "early" and group[u] != "holdout" for u in users)
        assert split["assigned_by_hash"] == early_treated
        vs = {(c["group"], c["baseline"]): c for c in split["comparisons"]}
        discount = vs[("discount", "holdout")]
        assert discount["significant"] and discount["difference"] > 0
        assert split["headline"].startswith("'discount' converts better than 'holdout': ")
        assert split["headline"].endswith(", significant at 95%")

        def p_value(a: str, b: str) -> float:
            (na, ka), (nb, kb) = expected[a], expected[b]
            table = [[ka, na - ka], [kb, nb - kb]]
            return float(sps.chi2_contingency(table, correction=False)[1])

        assert discount["p_value"] == pytest.approx(p_value("discount", "holdout"), rel=1e-6)
        free = vs[("free_shipping", "holdout")]
        p_free = p_value("free_shipping", "holdout")
        assert free["p_value"] == pytest.approx(p_free, rel=1e-6)
        assert free["significant"] == (p_free < 0.05)
        verdict_start = ("'free_shipping' converts better than 'holdout'" if p_free < 0.05
                         else "no significant difference between 'free_shipping' and 'holdout' yet")
        assert free["verdict"].startswith(verdict_start)
        (na, ka), (nb, kb) = expected["free_shipping"], expected["holdout"]
        assert free["difference"] == pytest.approx(ka / na - kb / nb)

        holdout = next(e for e in data["experiments"] if e["kind"] == "holdout")
        treated = sum(1 for u in users if group[u] != "holdout")
        assert holdout["groups"][0]["users"] == treated

        table = runner.invoke(cli, ["stats", "cart_abandonment", "--database-url", url])
        assert table.exit_code == 0, table.output
        (tmp_path / "stats.txt").write_text(table.stdout, encoding="utf-8")
        assert split["headline"] in table.stdout
        assert holdout["headline"] in table.stdout
        assert "Funnel by step" in table.stdout and "discount_email" in table.stdout

        out = tmp_path / "report.html"
        report = runner.invoke(cli, ["report", "cart_abandonment", "--out", str(out), "--database-url", url])
        assert report.exit_code == 0, report.output
        page = out.read_text(encoding="utf-8")
        assert 'data-chart="experiment-offer"' in page
        assert 'data-chart="experiment-holdout"' in page
        total = time.monotonic() - started
        print(f"\nacceptance: {SHOPPERS} shoppers played in {simulated:.1f}s, stats and report "
              f"{total - simulated:.1f}s; groups {groups}; free_shipping p = {p_free:.4g}")
    finally:
        h.close()


# -- parity with the dry-run --------------------------------------------------------------------

def test_production_counts_what_the_dry_run_counts(tmp_path: Path) -> None:
    """The parity scenario (tests/test_parity.py: quiet hours, restarts, caps, every skip
    reason, the holdout, a split, buyers) played by the dry-run and by the runtime: the funnel
    and the experiments read from the store are the dry-run's, figure for figure."""
    import dataclasses
    import shutil

    import test_parity as parity

    from orchestrator.render import Renderer
    from orchestrator.simulate import Simulator
    from orchestrator.stats import journey_stats

    root = tmp_path / "project"
    (root / "journeys").mkdir(parents=True)
    shutil.copy(ROOT / "catalog.yaml", root / "catalog.yaml")
    shutil.copytree(ROOT / "templates", root / "templates")
    for name, text in parity.JOURNEYS.items():
        (root / "journeys" / f"{name}.yaml").write_text(text.lstrip(), encoding="utf-8")
    p = Project(root)
    renderer = Renderer(p.templates_dir)
    sims = {name: Simulator(compile_journey(p.journey_path(name), p), renderer, parity.USERS)
            for name in parity.JOURNEYS}
    shared = sims[parity.CART_JOURNEY].history  # frequency caps count both journeys' messages
    for sim in sims.values():
        sim.history = shared
        sim.run(parity.EVENTS, parity.T0, parity.T0)
    t = parity.T0
    while t < parity.UNTIL:
        t += parity.MIN
        for sim in sims.values():
            sim.run([], t, t)
    h, _ = parity.play_runtime(root, tmp_path)

    for name, sim in sims.items():
        dry = journey_stats(sim.machine, sim.facts())
        stored = load_history(h.engine, name)
        # Compared as a dry-run would count it: no provider feedback either side.
        prod = journey_stats(sim.machine, dataclasses.replace(stored, simulated=True))
        assert prod.funnel.to_dict() == dry.funnel.to_dict(), name
        assert [e.to_dict() for e in prod.experiments] == [e.to_dict() for e in dry.experiments], name
        assert sorted((m.step, m.action, m.channel, m.reason, m.at) for m in stored.messages) == \
            sorted((m.step, m.action, m.channel, m.reason, m.at) for m in sim.facts().messages), name
    cart = journey_stats(sims[parity.CART_JOURNEY].machine, load_history(h.engine, parity.CART_JOURNEY))
    assert cart.funnel.converted == 2 and cart.funnel.restarts == 2  # the scenario's buyers, restarts


def test_a_late_goal_event_is_credited_by_when_it_happened(
    make_harness: Callable[..., Harness], fast_project: Path
) -> None:
    """The order happened at +1s but reached the worker at +5s, after the nudge went out at
    +2s: the nudge cannot have caused it, so it gets no credit (the conversion is recorded at
    the event's own time, as the dry-run does)."""
    from orchestrator.stats.attribution import attribute
    from orchestrator.store.schema import conversions

    h = make_harness(only_journeys(fast_project, promo=PROMO))
    t0 = h.now
    late, prompt = user("promo", "late", held=False), user("promo", "prompt", held=False)
    for uid in (late, prompt):
        h.profile(uid, email=f"{uid}@example.com")
        h.track(uid, "cart_updated", CART)
    h.tick(seconds=2)  # +2s: both nudges go out
    h.clock.now = t0 + timedelta(seconds=5)
    props = {"order_id": "o-1", "total": 89.0, "currency": "USD"}
    stored = store_events(h.engine, [
        IncomingEvent(late, "order_completed", t0 + timedelta(seconds=1), props, "late-order"),
        IncomingEvent(prompt, "order_completed", h.now, {**props, "order_id": "o-2"}, "prompt-order"),
    ], h.now)
    h.dispatcher.process_users(stored.user_ids)
    by_user = {r["user_id"]: r["at"] for r in h.rows(conversions)}
    assert by_user == {late: t0 + timedelta(seconds=1), prompt: t0 + timedelta(seconds=5)}
    history = load_history(h.engine, "promo")
    credited = attribute(history, 20)
    runs = {r.user_id: r.run_id for r in history.runs}
    assert credited[runs[late]] is None
    touch = credited[runs[prompt]]
    assert touch is not None and touch.step == "nudge"
