"""Parity: the dry-run shows what production does.

One scenario (users across time zones, one inside quiet hours, one unsubscribed from email, one
without a phone, one not opted in to SMS, one capped across two journeys, one capped on SMS,
a held-out user, a split, a buyer, a restart, a message held by quiet hours that a restart or a
goal makes obsolete, one held overnight) is played twice:

* through the dry-run's :class:`~orchestrator.simulate.Simulator` (one per journey, stepped in
  lockstep and sharing one message history, which is what production's frequency caps count);
* through the in-process runtime (tests/runtime/harness.py) on SQLite, with the same users as
  profiles (contact columns, attributes, consent rows) and the same events, a
  :class:`ManualClock` stepping minute by minute through the same instants and the timer pump
  ticking at each (an idle night is skipped to the next thing due).

Then every user's timeline must be the same on both sides: entries, each message sent (journey,
step, channel, variant, time, rendered subject and body, SMS segments, fallback detail), each
skip with its reason and detail, each quiet-hours deferral with its end, and each exit.

The journeys wait minutes; the project is the shipped catalog and templates with two journeys
written here. Nothing is mocked: the runtime writes real rows and the ``file`` channel writes
the messages it sends.

The same parity is required when the providers report each message delivered (a webhook moving
its ledger row on), and for a frequency cap longer than the month of history production reads
(a known discrepancy, marked xfail).
"""

from __future__ import annotations

import dataclasses
import shutil
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

import pytest
from sqlalchemy import func, select

from channels.file import FileChannel
from orchestrator.compiler import compile_journey
from orchestrator.engine import HOLDOUT_STEP, Event, bucket
from orchestrator.project import Project
from orchestrator.render import Renderer
from orchestrator.runtime.feedback import ProviderEvent, apply_events
from orchestrator.runtime.sending import ChannelRouter
from orchestrator.simulate import Entry, Simulator
from orchestrator.store.database import upgrade
from orchestrator.store.schema import activity, deliveries, outbox, timers

try:
    from runtime.conftest import ManualClock
    from runtime.harness import Harness
except ImportError:  # tests/ imported as a package
    from tests.runtime.conftest import ManualClock
    from tests.runtime.harness import Harness

ROOT = Path(__file__).resolve().parents[1]
UTC = timezone.utc
T0 = datetime(2026, 3, 2, 14, 50, tzinfo=UTC)  # a Monday; 06:50 in Los Angeles, 20:20 in Kolkata
UNTIL = datetime(2026, 3, 3, 3, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
# What the dry-run puts in a message where production puts its public URL (signed links need
# JOURNEY_SECRET_KEY; without one, production links under JOURNEY_LINKS_BASE the same way).
PREVIEW_BASE = "https://example.invalid"

CART_JOURNEY = "parity_cart"
LESSON_JOURNEY = "parity_lesson"
JOURNEYS = {
    CART_JOURNEY: """
trigger:
  event: cart_updated
  when: "event['items'] | length > 0"
re_entry: restart
holdout: 20%
goals: [order_completed]
exit_on:
  - event: cart_updated
    when: "event['items'] | length == 0"
conversion_window: 90m
delivery:
  quiet_hours: {start: "22:00", end: "07:30"}
  timezone: America/New_York
  frequency_caps:
    - {max: 2, per: 1h}
    - {channel: sms, max: 1, per: 30m}
  opt_in_required: [sms]
steps:
  - id: wait_a_bit
    wait: 5m
  - id: nudge
    send: {channel: preferred, fallback: [push, email, sms], template: cart_nudge}
  - id: wait_for_order
    wait_for: {event: order_completed, timeout: 20m, on_event: end, on_timeout: offer}
  - id: offer
    split:
      - {name: discount, weight: 50%, next: discount_email}
      - {name: free_shipping, weight: 50%, next: free_shipping_sms}
  - id: discount_email
    send: {channel: email, template: cart_discount}
    next: end
  - id: free_shipping_sms
    send: {channel: sms, template: cart_free_shipping}
""",
    LESSON_JOURNEY: """
trigger: {event: lesson_completed}
re_entry: restart
steps:
  - id: wait_after_lesson
    wait: 2m
  - id: reminder
    send: {channel: [push, email], template: streak_reminder}
""",
}


# -- picking user ids by the documented hash rules ------------------------------------------

def held_out(uid: str) -> bool:
    return bucket(CART_JOURNEY, uid, HOLDOUT_STEP) * 100 < 20


def variant(uid: str) -> str:
    return "discount" if bucket(CART_JOURNEY, uid, "offer") < 0.5 else "free_shipping"


def pick(prefix: str, *, holdout: bool = False, offer: str | None = None) -> str:
    for n in range(1, 10_000):
        uid = f"{prefix}-{n}"
        if held_out(uid) == holdout and (offer is None or holdout or variant(uid) == offer):
            return uid
    raise AssertionError(prefix)


def cart(cart_id: str, *items: tuple[str, str, float, int]) -> dict[str, Any]:
    return {
        "cart_id": cart_id,
        "items": [{"sku": s, "name": n, "price": p, "quantity": q,
                   "image_url": f"https://cdn.example.com/p/{s.lower()}.jpg"} for s, n, p, q in items],
        "total": round(sum(p * q for _, _, p, q in items), 2),
        "currency": "USD",
    }


ONE = cart("c-1", ("MUG", "Blue mug", 12.5, 1))
TWO = cart("c-2", ("LAMP", "Desk lamp", 40.0, 1), ("BULB", "Spare bulb", 4.25, 3))
EMPTY = cart("c-1")
ORDER = {"order_id": "o-1", "cart_id": "c-1", "total": 12.5, "currency": "USD"}
LESSON = {"course": "Spanish", "lesson": "Ordering food", "lesson_number": 12, "streak": 5}

U = {
    "ny": pick("ny", offer="free_shipping"),  # New York, push preferred: nudge by push, SMS offer
    "la": pick("la", offer="discount"),  # Los Angeles: 06:50 local, inside quiet hours; restarts
    "la_buyer": pick("labuy", offer="discount"),  # Los Angeles: buys while two messages are held
    "unsub": pick("unsub", offer="discount"),  # unsubscribed from email
    "nophone": pick("nophone", offer="free_shipping"),  # opted in to SMS, but no phone number
    "noconsent": pick("noconsent", offer="free_shipping"),  # a phone, never opted in to SMS
    "capper": pick("capper", offer="discount"),  # a lesson reminder and a nudge: offer capped
    "smscap": pick("smscap", offer="free_shipping"),  # SMS nudge, then an SMS offer: capped
    "held": pick("held", holdout=True),  # the control group
    "kolkata": pick("kolkata", offer="discount"),  # offer due at 22:15 local: held overnight
    "notz": pick("notz"),  # no time zone (the journey's), buys: converted
    "emptier": pick("emptier"),  # empties the cart: exit event
    "nobody": pick("nobody"),  # a lesson, but no push token and unsubscribed from email
    "restarter": pick("restarter", offer="discount"),  # two carts: two nudges, offer capped
}


def person(key: str, **fields: Any) -> dict[str, Any]:
    uid = U[key]
    return {"id": uid, "first_name": key.split("_")[0].title(), **fields}


USERS: list[dict[str, Any]] = [
    person("ny", email="ny@example.com", phone="+12125550101", push_tokens=["tok-ny"],
           timezone="America/New_York", preferred_channel="push", sms_opt_in=True),
    person("la", email="la@example.com", timezone="America/Los_Angeles", preferred_channel="email"),
    person("la_buyer", email="labuy@example.com", push_tokens=["tok-labuy"], timezone="America/Los_Angeles"),
    person("unsub", email="unsub@example.com", push_tokens=["tok-unsub"], timezone="Europe/Berlin",
           preferred_channel="email", unsubscribed=["email"]),
    person("nophone", email="nophone@example.com", push_tokens=["tok-nophone"], timezone="America/Chicago",
           sms_opt_in=True),
    person("noconsent", email="noconsent@example.com", phone="+447700900123", timezone="Europe/London",
           preferred_channel="sms"),
    person("capper", email="capper@example.com", push_tokens=["tok-capper"], timezone="America/New_York"),
    person("smscap", phone="+12125550102", timezone="America/New_York", preferred_channel="sms",
           sms_opt_in=True),
    person("held", email="held@example.com", push_tokens=["tok-held"], timezone="America/New_York"),
    person("kolkata", email="kolkata@example.com", timezone="Asia/Kolkata", locale="hi-IN"),
    person("notz", email="notz@example.com"),
    person("emptier", email="emptier@example.com", timezone="America/New_York"),
    person("nobody", email="nobody@example.com", timezone="Europe/Berlin", unsubscribed=["email"]),
    person("restarter", email="restarter@example.com", push_tokens=["tok-restarter"], timezone="Europe/Berlin"),
]


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


EVENTS: list[Event] = sorted([
    Event(U["ny"], "cart_updated", at(0), TWO),
    Event(U["la"], "cart_updated", at(0), ONE),
    Event(U["la"], "cart_updated", at(20), TWO),  # restarts; the first nudge is still held
    Event(U["la_buyer"], "cart_updated", at(0), ONE),
    Event(U["la_buyer"], "order_completed", at(30), ORDER),  # the nudge is still held
    Event(U["unsub"], "cart_updated", at(0), ONE),
    Event(U["nophone"], "cart_updated", at(0), TWO),
    Event(U["noconsent"], "cart_updated", at(0), ONE),
    Event(U["capper"], "lesson_completed", at(0), LESSON),  # reminder at +2
    Event(U["capper"], "cart_updated", at(1), ONE),  # nudge at +6, offer at +26: third in 1 h
    Event(U["smscap"], "cart_updated", at(0), ONE),
    Event(U["held"], "cart_updated", at(0), ONE),
    Event(U["kolkata"], "cart_updated", at(90), TWO),  # 21:50 local
    Event(U["notz"], "cart_updated", at(0), ONE),
    Event(U["notz"], "order_completed", at(15), ORDER),
    Event(U["emptier"], "cart_updated", at(0), ONE),
    Event(U["emptier"], "cart_updated", at(3), EMPTY),
    Event(U["nobody"], "lesson_completed", at(10), LESSON),
    Event(U["restarter"], "cart_updated", at(0), ONE),
    Event(U["restarter"], "cart_updated", at(12), TWO),  # restarts during the wait for an order
], key=lambda e: e.at)


# -- the project ----------------------------------------------------------------------------

@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "journeys").mkdir(parents=True)
    shutil.copy(ROOT / "catalog.yaml", root / "catalog.yaml")
    shutil.copytree(ROOT / "templates", root / "templates")
    for name, text in JOURNEYS.items():
        (root / "journeys" / f"{name}.yaml").write_text(text.lstrip(), encoding="utf-8")
    return root


# -- the two sides, each as a list of comparable lines -----------------------------------------

Line = tuple[Any, ...]


def sim_lines(journey: str, timeline: Iterable[Entry]) -> dict[str, list[Line]]:
    out: dict[str, list[Line]] = defaultdict(list)
    for e in timeline:
        if e.action == "enter":
            line: Line = (e.at, journey, "enter", e.step, "holdout" if e.holdout else e.reason)
        elif e.action == "exit":
            line = (e.at, journey, "exit", e.step, e.reason, bool(e.converted))
        elif e.action == "send":
            line = (e.at, journey, "send", e.step, e.channel, e.variant, e.detail, e.segments, e.subject, e.body)
        elif e.action == "skip":
            line = (e.at, journey, "skip", e.step, e.channel, e.variant, e.reason, e.detail)
        else:
            assert e.action == "defer", e
            line = (e.at, journey, "defer", e.step, e.variant, e.reason, e.until)
        out[e.user].append(line)
    return out


def runtime_lines(h: Harness) -> dict[str, list[Line]]:
    """The same lines from what production recorded: the activity log, the outbox and the
    delivery ledger, and the message each send handed to the channel (the file sink)."""
    written = {m["metadata"]["ledger_id"]: m for m in h.lines()}
    ledger = {d["outbox_id"]: d for d in h.rows(deliveries) if d["sent_at"] is not None}
    sent_rows = {(r["run_id"], r["step"], r["generation"]): r for r in h.rows(outbox) if r["status"] == "sent"}
    by_run_step: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in sorted(sent_rows.values(), key=lambda r: r["id"]):
        by_run_step[(row["run_id"], row["step"])].append(row)
    used: set[int] = set()
    out: dict[str, list[Line]] = defaultdict(list)
    for a in h.rows(activity, order_by="id"):
        j, step = a["journey"], a["step"]
        if a["action"] == "split":
            continue  # a statistics fact (the dry-run's timeline has no line for it)
        if a["action"] == "enter":
            line: Line = (a["at"], j, "enter", step, a["reason"])
        elif a["action"] == "exit":
            line = (a["at"], j, "exit", step, a["reason"], a["detail"] == "converted")
        elif a["action"] == "send":
            row = next(r for r in by_run_step[(a["run_id"], step)] if r["id"] not in used)
            used.add(row["id"])
            d = ledger[row["id"]]
            m = written[d["id"]]
            assert (d["sent_at"], m["channel"], m["metadata"]["step"]) == (a["at"], a["channel"], step)
            line = (a["at"], j, "send", step, a["channel"], a["variant"], row["detail"], d["segments"],
                    m["subject"], m["body"])
        elif a["action"] == "skip":
            line = (a["at"], j, "skip", step, a["channel"], a["variant"], a["reason"], a["detail"])
        else:
            assert a["action"] == "defer", a
            assert a["detail"].startswith("until ")
            line = (a["at"], j, "defer", step, a["variant"], a["reason"],
                    datetime.fromisoformat(a["detail"].removeprefix("until ")))
        out[a["user_id"]].append(line)
    assert len(used) == len(sent_rows) == len(written), "every message sent is in the activity log once"
    return out


def merged(*sides: Mapping[str, list[Line]]) -> dict[str, list[Line]]:
    """Per user, lines in time order; within one instant and journey, in the order they were
    recorded, except that an exit comes last (production logs a run's exit as the outcome is
    applied and the fate of the message it queued at the same instant when that is sent, right
    after; the dry-run logs the message first)."""
    out: dict[str, list[Line]] = defaultdict(list)
    for side in sides:
        for uid, lines in side.items():
            out[uid] += lines
    return {uid: sorted(lines, key=lambda l: (l[0], l[1], l[2] == "exit")) for uid, lines in out.items()}


# -- playing the scenario ---------------------------------------------------------------------

def play_dry_run(project: Path, *, shared_history: bool = True) -> dict[str, list[Line]]:
    """Both journeys in the dry-run's Simulator, stepped together minute by minute. With
    ``shared_history`` the two simulators count each other's messages for frequency caps (as
    production does); without it each journey is a plain one-journey dry-run."""
    p = Project(project)
    renderer = Renderer(p.templates_dir)
    sims = {name: Simulator(compile_journey(p.journey_path(name), p), renderer, USERS) for name in JOURNEYS}
    if shared_history:
        history = sims[CART_JOURNEY].history
        for sim in sims.values():
            sim.history = history
    for sim in sims.values():
        sim.run(EVENTS, T0, T0)
    t = T0
    while t < UNTIL:
        t += MIN
        for sim in sims.values():
            sim.run([], t, t)
    return merged(*(sim_lines(name, sim.timeline) for name, sim in sims.items()))


def profile_args(user: Mapping[str, Any]) -> dict[str, Any]:
    """A dry-run user as production stores it: contact columns, attributes and consent rows."""
    contact = {k: user[k] for k in ("email", "phone", "push_tokens", "timezone", "locale") if k in user}
    consent = {c: "unsubscribed" for c in user.get("unsubscribed", [])}
    if user.get("sms_opt_in") is True:
        consent["sms"] = "opted_in"
    attributes = {k: v for k, v in user.items()
                  if k not in contact and k not in ("id", "unsubscribed", "sms_opt_in")}
    return {"contact": contact, "attributes": attributes, "consent": consent}


def next_due(h: Harness, after: datetime) -> datetime | None:
    """The earliest pending timer or message (what a scheduler ticking every minute would meet
    next), to skip the idle night minute by minute would only pass through."""
    with h.engine.connect() as conn:
        t = conn.execute(select(func.min(timers.c.fire_at)).where(timers.c.status == "pending")).scalar()
        m = conn.execute(select(func.min(outbox.c.due_at)).where(outbox.c.status == "pending")).scalar()
    found = [x for x in (t, m) if x is not None and x > after]
    return min(found) if found else None


def report_delivered(h: Harness, now: datetime) -> None:
    """What the providers' delivery webhooks do (runtime/feedback.py): every message sent so
    far moves from "sent" to "delivered" in the ledger."""
    sent = h.rows(deliveries, status="sent")
    apply_events(h.engine, [ProviderEvent("sendgrid", f"delivered-{d['id']}", "delivered", now,
                                          delivery_key=d["key"]) for d in sent], now)


def play_runtime(project: Path, tmp_path: Path, *,
                 delivered: bool = False) -> tuple[Harness, dict[str, list[Line]]]:
    db = tmp_path / "journey.db"
    upgrade(f"sqlite:///{db}")
    sink = tmp_path / "sink.jsonl"
    clock = ManualClock(T0 - MIN)
    file = FileChannel(sink)
    router = ChannelRouter({}, instances={"email": file, "sms": file, "push": file})
    h = Harness(f"sqlite:///{db}", project, clock, sink, router=router)
    # No JOURNEY_SECRET_KEY: unsubscribe links are unsigned, under the base the dry-run shows.
    h.settings = h.runtime.settings = dataclasses.replace(h.settings, links_base=PREVIEW_BASE)
    assert sorted(d.journey for d in h.deployed) == sorted(JOURNEYS)  # type: ignore[attr-defined]
    for user in USERS:
        args = profile_args(user)
        h.profile(user["id"], attributes=args["attributes"], consent=args["consent"], **args["contact"])
    pending = list(EVENTS)
    t = T0
    while t <= UNTIL:
        clock.now = t
        while pending and pending[0].at == t:
            ev = pending.pop(0)
            h.track(ev.user_id, ev.name, dict(ev.properties))
        h.pump.tick(t)
        if delivered:
            report_delivered(h, t)
        t += MIN
        # Minute by minute; only an idle stretch of over an hour (the night the Kolkata offer
        # is held) is skipped, to the next thing due, as the scheduler would meet it.
        upcoming = [x for x in (next_due(h, t - MIN), pending[0].at if pending else None) if x is not None]
        if not upcoming:
            break
        if min(upcoming) - t > timedelta(hours=1):
            t = min(upcoming)
            assert t.second == 0 and t.microsecond == 0, t  # the scenario runs on whole minutes
    try:
        return h, merged(runtime_lines(h))
    finally:
        h.close()


# -- the test -----------------------------------------------------------------------------------

def story(lines: list[Line]) -> list[tuple[Any, ...]]:
    """(minute, action, step, channel or reason) for a readable expectation."""
    out = []
    for line in lines:
        minute = int((line[0] - T0).total_seconds() // 60)
        if line[2] == "send":
            out.append((minute, "send", line[3], line[4]))
        elif line[2] == "skip":
            out.append((minute, "skip", line[3], line[6]))
        elif line[2] == "defer":
            out.append((minute, "defer", line[3], int((line[6] - T0).total_seconds() // 60)))
        elif line[2] == "exit":
            out.append((minute, "exit", line[4]))
        else:
            out.append((minute, "enter", line[4]))
    return out


def test_the_dry_run_shows_what_production_does(project: Path, tmp_path: Path) -> None:
    dry = play_dry_run(project)
    h, prod = play_runtime(project, tmp_path)

    # The scenario does what it was written for (checked on the dry-run side; parity below).
    s = {key: story(dry[uid]) for key, uid in U.items()}
    assert s["ny"] == [(0, "enter", None), (5, "send", "nudge", "push"), (25, "send", "free_shipping_sms", "sms"),
                       (90, "exit", "completed")]
    assert s["la"] == [  # 06:50 in Los Angeles: held until 07:30 local (15:30 UTC, minute 40)
        (0, "enter", None), (5, "defer", "nudge", 40), (20, "enter", "restarted"),
        (25, "defer", "nudge", 40), (40, "skip", "nudge", "restarted"), (40, "send", "nudge", "email"),
        (45, "send", "discount_email", "email"), (110, "exit", "completed")]
    assert s["la_buyer"] == [
        (0, "enter", None), (5, "defer", "nudge", 40), (25, "defer", "discount_email", 40),
        (30, "exit", "goal:order_completed"), (40, "skip", "nudge", "goal_reached"),
        (40, "skip", "discount_email", "goal_reached")]
    assert s["unsub"][1:3] == [(5, "send", "nudge", "push"), (25, "skip", "discount_email", "unsubscribed")]
    assert s["nophone"][2] == (25, "skip", "free_shipping_sms", "no_contact")
    assert s["noconsent"][1:3] == [(5, "send", "nudge", "email"), (25, "skip", "free_shipping_sms", "no_consent")]
    assert s["capper"] == [  # the lesson reminder and the nudge fill the cart journey's 2 per hour
        (0, "enter", None), (1, "enter", None), (2, "send", "reminder", "push"), (2, "exit", "completed"),
        (6, "send", "nudge", "push"), (26, "skip", "discount_email", "frequency_cap"), (91, "exit", "completed")]
    assert s["smscap"][1:3] == [(5, "send", "nudge", "sms"), (25, "skip", "free_shipping_sms", "frequency_cap")]
    assert s["held"] == [(0, "enter", "holdout"), (90, "exit", "holdout_window_ended")]
    assert s["kolkata"] == [  # the offer is due at 22:15 local: held until 07:30 local (02:00 UTC)
        (90, "enter", None), (95, "send", "nudge", "email"), (115, "defer", "discount_email", 670),
        (180, "exit", "completed"), (670, "send", "discount_email", "email")]
    assert s["notz"] == [(0, "enter", None), (5, "send", "nudge", "email"), (15, "exit", "goal:order_completed")]
    assert s["emptier"] == [(0, "enter", None), (3, "exit", "exit:cart_updated")]
    assert s["nobody"] == [(10, "enter", None), (12, "skip", "reminder", "no_reachable_channel"),
                           (12, "exit", "completed")]
    assert s["restarter"] == [(0, "enter", None), (5, "send", "nudge", "push"), (12, "enter", "restarted"),
                              (17, "send", "nudge", "push"), (37, "skip", "discount_email", "frequency_cap"),
                              (102, "exit", "completed")]
    skipped = {line[6] for lines in dry.values() for line in lines if line[2] == "skip"}
    assert skipped == {"restarted", "goal_reached", "unsubscribed", "no_contact", "no_consent",
                       "frequency_cap", "no_reachable_channel"}
    assert {line[5] for lines in dry.values() for line in lines if line[2] == "send" and line[5]} \
        == {"discount", "free_shipping"}

    # Parity: every user's whole timeline, line by line.
    assert sorted(prod) == sorted(dry)
    for key, uid in U.items():
        assert prod[uid] == dry[uid], f"{key} ({uid}) differs"

    # Nothing left behind in production: every timer fired or was cancelled, every message done.
    assert {r["status"] for r in h.rows(timers)} <= {"done", "cancelled"}
    assert {r["status"] for r in h.rows(outbox)} <= {"sent", "skipped"}
    assert {r["status"] for r in h.rows(deliveries)} == {"sent"}


def test_a_one_journey_dry_run_counts_only_that_journeys_messages(project: Path) -> None:
    """Documented (docs/journey-language.md, frequency caps): a dry-run plays one journey, so its
    caps count that journey's messages only. The capped offer above goes out there."""
    alone = play_dry_run(project, shared_history=False)
    assert story(alone[U["capper"]])[5] == (26, "send", "discount_email", "email")
    together = play_dry_run(project)
    for key, uid in U.items():
        if key != "capper":
            assert alone[uid] == together[uid], key


def test_delivery_reports_do_not_change_what_production_does(project: Path, tmp_path: Path) -> None:
    """Providers report each message delivered a moment after it is sent. That must not free its
    place under a frequency cap: production still does what the dry-run shows. (It did free it:
    the history for caps counted only "sending", "sent" and "unknown" ledger rows, so the capped
    user above got the third message in an hour, and the SMS-capped one a second SMS within
    30 minutes, once their earlier messages were reported delivered.)"""
    dry = play_dry_run(project)
    h, prod = play_runtime(project, tmp_path, delivered=True)
    assert {d["status"] for d in h.rows(deliveries)} == {"delivered"}
    for key, uid in U.items():
        assert prod[uid] == dry[uid], f"{key} ({uid}) differs"


MONTHLY = """
trigger: {event: lesson_completed}
re_entry: restart
delivery:
  frequency_caps:
    - {max: 1, per: 40d}
steps:
  - id: reminder
    send: {channel: email, template: streak_reminder}
"""


