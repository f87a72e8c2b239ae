"""End to end, with real processes: the Procfile's web, worker and scheduler (and ``journey
serve`` for embedded mode) against PostgreSQL, Redis or RabbitMQ, events posted over HTTP with
the Python client, messages read back from the ``file`` adapter's JSON lines and the database.

Journeys wait seconds (conftest's ``FAST_JOURNEYS``): cart abandonment nudges 2 s after the
cart and sends the offer 3 s after the nudge; the lesson reminder goes 3 s after the lesson.
The tests in the first group share one set of processes (distinct users per test); the crash,
embedded and RabbitMQ tests start their own. Each stack has its own database, queue and sink.
"""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
from sqlalchemy import func, select

from orchestrator.store.schema import (
    activity,
    conversions,
    deliveries,
    events,
    outbox,
    runs,
    timers,
)

from .conftest import CART, LESSON
from .procs import AMQP_URL, Stack, diagnosed, wait_until, write_project

LATE = 2.5  # how late a message may be (scheduler tick, broker hop, a slow CI machine)
EARLY = 0.05  # clock resolution: a message is never early by more than this
SETTLE = 20.0  # seconds for things to happen that should take about one
ORDER = {"order_id": "o-1", "cart_id": "c-1", "total": 89.0, "currency": "USD"}


def now() -> datetime:
    return datetime.now(timezone.utc)


def uid(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


def wait_past(at: datetime, slack: float) -> None:
    """Let ``slack`` seconds pass beyond ``at``: needed to show that something did NOT happen."""
    remaining = (at - now()).total_seconds() + slack
    if remaining > 0:
        time.sleep(remaining)


def received_at(stack: Stack, event_id: str) -> datetime:
    q = select(events.c.received_at).where(events.c.event_id == event_id)
    return stack.select(q)[0]["received_at"]


def ledger(stack: Stack, user_id: str) -> list[dict[str, Any]]:
    q = select(deliveries).where(deliveries.c.user_id == user_id).order_by(deliveries.c.id)
    return stack.select(q)


def messages(stack: Stack, user_id: str, step: str | None = None) -> list[dict[str, Any]]:
    return [m for m in stack.sent_to(user_id) if step is None or m["metadata"]["step"] == step]


def one(stack: Stack, user_id: str, step: str) -> dict[str, Any] | None:
    found = messages(stack, user_id, step)
    assert len(found) <= 1, f"{user_id} got {step} {len(found)} times: {found}"
    return found[0] if found else None


def every(stack: Stack, user_ids: tuple[str, ...], step: str) -> list[dict[str, Any]] | None:
    """Each user's one message of ``step``, once every one is in the sink and marked sent in the
    ledger (the adapter writes its line a moment before the ledger row is marked)."""
    found = [one(stack, u, step) for u in user_ids]
    if not all(found):
        return None
    marked = stack.select(select(deliveries.c.id).where(deliveries.c.user_id.in_(user_ids),
                                                        deliveries.c.step == step,
                                                        deliveries.c.status == "sent"))
    return found if len(marked) == len(user_ids) else None  # type: ignore[return-value]


def sent(stack: Stack, user_id: str, step: str) -> dict[str, Any] | None:
    found = every(stack, (user_id,), step)
    return found[0] if found else None


def user_runs(stack: Stack, user_id: str, journey: str) -> list[dict[str, Any]]:
    return stack.select(select(runs).where(runs.c.user_id == user_id, runs.c.journey == journey))


def user_timers(stack: Stack, user_id: str) -> list[dict[str, Any]]:
    return stack.select(select(timers).where(timers.c.user_id == user_id).order_by(timers.c.id))


def seconds(a: datetime, b: datetime) -> float:
    return (a - b).total_seconds()


# -- one set of processes for the tests that do not disturb each other ---------------------------


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_project(tmp_path_factory.mktemp("e2e") / "project")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, project: Path) -> Iterator[Stack]:
    """web + worker + scheduler from the Procfile, on PostgreSQL and Redis."""
    stack = Stack.create(tmp_path_factory.mktemp("live"), project)
    try:
        assert "up to date" in stack.journey("db", "upgrade")
        deployed = stack.journey("deploy")
        assert "cart_abandonment: version" in deployed and "lesson_reminder: version" in deployed
        stack.start_all()
        yield stack
    finally:
        stack.close()


@diagnosed
def test_cart_messages_arrive_on_time_on_the_preferred_channel_with_fallback(live: Stack) -> None:
    client = live.client()
    pushed, fell_back = uid("cart-push"), uid("cart-fallback")
    client.put_profile(pushed, email=f"{pushed}@example.com", push_tokens=["tok-1"],
                       attributes={"first_name": "Ana", "preferred_channel": "push"})
    # Prefers push but has no push token: the step's fallback order gives email.
    client.put_profile(fell_back, email=f"{fell_back}@example.com",
                       attributes={"first_name": "Bo", "preferred_channel": "push"})
    posted = {u: client.track(u, "cart_updated", CART)["event_ids"][0] for u in (pushed, fell_back)}
    t_cart = {u: received_at(live, e) for u, e in posted.items()}

    push, email = wait_until(lambda: every(live, (pushed, fell_back), "nudge"), 2 + SETTLE,
                             "both nudges")
    assert push["channel"] == "push" and push["to"] == ["tok-1"]
    assert "Trail shoe" in push["body"] and push["link"] == "northwind://cart/c-1"
    assert email["channel"] == "email" and email["to"] == f"{fell_back}@example.com"
    assert email["subject"] == "Bo, your cart is waiting"
    assert "Trail shoe" in email["body"] and "Trail shoe" in email["html"]
    q = select(outbox.c.detail).where(outbox.c.user_id == fell_back, outbox.c.step == "nudge")
    assert live.select(q) == [{"detail": "fell back from push"}]
    assert not messages(live, pushed, "offer") and not messages(live, fell_back, "offer")

    # No order: the offer email 3 s after the nudge, for both.
    wait_until(lambda: every(live, (pushed, fell_back), "offer"), 3 + SETTLE, "both offers")
    for u in (pushed, fell_back):
        rows = {r["step"]: r for r in ledger(live, u)}
        assert sorted(rows) == ["nudge", "offer"]
        assert {r["status"] for r in rows.values()} == {"sent"}
        nudge_after = seconds(rows["nudge"]["sent_at"], t_cart[u])
        offer_after = seconds(rows["offer"]["sent_at"], rows["nudge"]["sent_at"])
        assert 2 - EARLY <= nudge_after <= 2 + LATE, f"nudge {nudge_after:.2f}s after the cart"
        assert 3 - EARLY <= offer_after <= 3 + LATE, f"offer {offer_after:.2f}s after the nudge"
        offer = one(live, u, "offer")
        assert offer is not None and offer["channel"] == "email"
        assert offer["to"] == f"{u}@example.com"
        assert offer["subject"] == "10% off the items in your cart"
        assert "Trail shoe" in offer["body"] and "COMEBACK10" in offer["body"]
        assert offer["delivery_id"] == rows["offer"]["key"]
        assert len(messages(live, u)) == 2


@diagnosed
def test_an_order_during_the_wait_ends_the_run_and_its_timer_never_fires(live: Stack) -> None:
    client = live.client()
    early, late = uid("order-early"), uid("order-late")  # order before the nudge / after it
    for u in (early, late):
        client.put_profile(u, email=f"{u}@example.com")
        client.track(u, "cart_updated", CART)

    def waiting(u: str, step: str) -> bool:
        return any(r["status"] == "waiting" and r["step"] == step
                   for r in user_runs(live, u, "cart_abandonment"))

    wait_until(lambda: waiting(early, "wait_a_bit"), SETTLE, "the run to wait")
    client.track(early, "order_completed", ORDER)
    wait_until(lambda: sent(live, late, "nudge") and waiting(late, "wait_for_order"), 2 + SETTLE,
               "the nudge")
    client.track(late, "order_completed", ORDER)

    for u in (early, late):
        run = wait_until(lambda: [r for r in user_runs(live, u, "cart_abandonment")
                                  if r["status"] == "finished"], SETTLE, f"{u}'s run to finish")[0]
        assert run["exit_reason"] == "goal:order_completed" and run["converted"] is True
        conv = live.select(select(conversions).where(conversions.c.user_id == u))
        assert [c["goal"] for c in conv] == ["order_completed"]

    # Every timer of both runs was cancelled; let their fire times pass well beyond the pump.
    pending = {u: user_timers(live, u) for u in (early, late)}
    assert [t["status"] for t in pending[early]] == ["cancelled"]
    assert [(t["step"], t["status"]) for t in pending[late]] == [
        ("wait_a_bit", "done"), ("wait_for_order", "cancelled")]
    wait_past(max(t["fire_at"] for ts in pending.values() for t in ts), 1.5)
    assert [t["status"] for t in user_timers(live, early)] == ["cancelled"]
    assert user_timers(live, early)[0]["fired_at"] is None
    assert user_timers(live, late)[-1]["status"] == "cancelled"
    assert messages(live, early) == [] and ledger(live, early) == []
    assert live.select(select(outbox.c.id).where(outbox.c.user_id == early)) == []
    assert [m["metadata"]["step"] for m in messages(live, late)] == ["nudge"]
    assert [r["step"] for r in ledger(live, late)] == ["nudge"]


@diagnosed
def test_a_second_lesson_moves_the_reminder(live: Stack) -> None:
    client = live.client()
    u = uid("lesson-twice")
    client.put_profile(u, email=f"{u}@example.com", attributes={"first_name": "Cy"})
    first = client.track(u, "lesson_completed", LESSON)["event_ids"][0]
    t_first = received_at(live, first)
    wait_until(lambda: [t for t in user_timers(live, u) if t["status"] == "pending"], SETTLE,
               "the first timer")
    wait_past(t_first, 1.0)  # the second lesson 1 s later, well before the first reminder is due
    again = dict(LESSON, lesson_number=13, streak=6)
    second = client.track(u, "lesson_completed", again)["event_ids"][0]
    t_second = received_at(live, second)
    assert seconds(t_second, t_first) < 2.5, "the second lesson came too late to test anything"

    reminder = wait_until(lambda: sent(live, u, "reminder"), 3 + SETTLE, "the reminder")
    wait_past(t_second, 3 + LATE)  # room for a second reminder, were there one
    assert len(messages(live, u)) == 1
    assert "6-day" in reminder["subject"] and "lesson 14" in reminder["body"]
    [row] = ledger(live, u)
    after_second = seconds(row["sent_at"], t_second)
    assert 3 - EARLY <= after_second <= 3 + LATE, f"reminder {after_second:.2f}s after lesson 2"
    assert seconds(row["sent_at"], t_first) >= 3 + 1.0 - EARLY  # not the first lesson's timer
    [run] = user_runs(live, u, "lesson_reminder")
    assert run["status"] == "finished" and run["started_generation"] >= 1
    assert [t["status"] for t in user_timers(live, u)] == ["cancelled", "done"]


@diagnosed
def test_fifty_concurrent_triggers_enroll_the_user_once(live: Stack) -> None:
    client = live.client(timeout=30)
    u = uid("burst")
    client.put_profile(u, email=f"{u}@example.com")
    start = threading.Barrier(50)

    def post(_: int) -> dict[str, Any]:
        start.wait(timeout=30)
        return client.track(u, "cart_updated", CART)  # a fresh event id each

    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(post, range(50)))
    assert [a["accepted"] for a in answers] == [1] * 50
    assert len({a["event_ids"][0] for a in answers}) == 50

    def all_processed() -> bool:
        q = select(events.c.status, func.count().label("n")).where(events.c.user_id == u)
        return live.select(q.group_by(events.c.status)) == [{"status": "processed", "n": 50}]
    wait_until(all_processed, SETTLE, "50 processed events")

    [run] = user_runs(live, u, "cart_abandonment")  # one run, restarted by the other triggers
    enters = live.select(select(activity.c.reason).where(activity.c.user_id == u,
                                                         activity.c.action == "enter"))
    assert sorted(str(e["reason"]) for e in enters) == ["None"] + ["restarted"] * 49
    live_timers = [t for t in user_timers(live, u) if t["status"] in ("pending", "claimed", "done")]
    assert len(live_timers) == 1 and live_timers[0]["generation"] == run["generation"]

    wait_until(lambda: sent(live, u, "nudge"), 2 + SETTLE, "the nudge")
    wait_past(now(), 0.5)
    assert len(messages(live, u, "nudge")) == 1
    assert [r["step"] for r in ledger(live, u)] == ["nudge"]
    assert len(user_runs(live, u, "cart_abandonment")) == 1


@diagnosed
def test_a_restarted_scheduler_fires_the_timers_that_came_due_meanwhile(live: Stack) -> None:
    client = live.client()
    lesson, cart = uid("sched-lesson"), uid("sched-cart")
    for u in (lesson, cart):
        client.put_profile(u, email=f"{u}@example.com")
    live.procs["scheduler"].stop()
    assert not live.procs["scheduler"].group_alive()
    try:
        client.track(lesson, "lesson_completed", LESSON)
        client.track(cart, "cart_updated", CART)

        # The web hands the events to the worker directly: the runs wait on their timers.
        def both_pending() -> list[dict[str, Any]]:
            found = [t for u in (lesson, cart) for t in user_timers(live, u)
                     if t["status"] == "pending"]
            return found if len(found) == 2 else []

        pending = wait_until(both_pending, SETTLE, "both timers")
        wait_past(max(t["fire_at"] for t in pending), 1.5)
        statuses = [t["status"] for u in (lesson, cart) for t in user_timers(live, u)]
        assert statuses == ["pending", "pending"]
        assert messages(live, lesson) == [] and messages(live, cart) == []
    finally:
        restarting = now()
        live.wait_scheduler(live.start_scheduler())
        ready = now()

    reminder = wait_until(lambda: sent(live, lesson, "reminder"), SETTLE, "the overdue reminder")
    nudge = wait_until(lambda: sent(live, cart, "nudge"), SETTLE, "the overdue nudge")
    assert reminder["channel"] == "email" and nudge["channel"] == "email"
    for u in (lesson, cart):
        [row] = ledger(live, u)
        assert row["status"] == "sent"
        assert restarting <= row["sent_at"] <= ready + timedelta(seconds=LATE)  # its first ticks
        assert user_timers(live, u)[0]["status"] == "done"


# -- processes of their own --------------------------------------------------------------------


@pytest.fixture
def crash_stack(tmp_path: Path, project: Path) -> Iterator[Stack]:
    # Small batches: many tasks, so the kill lands in the middle of some and between others.
    stack = Stack.create(tmp_path / "crash", project, JOURNEY_BATCH="20")
    try:
        stack.journey("deploy")
        stack.start_all()
        yield stack
    finally:
        stack.close()


@diagnosed
def test_kill_9_of_a_worker_mid_batch_loses_no_run_and_resends_nothing(crash_stack: Stack) -> None:
    stack = crash_stack
    n = 300
    users = [f"crash-{i:03d}" for i in range(n)]
    client = stack.client(timeout=30)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda u: client.put_profile(u, email=f"{u}@example.com"), users))
    answer = client.track_many([client.event(u, "lesson_completed", LESSON) for u in users])
    assert answer["accepted"] == n

    # First kill: while the worker enrols the users (some batches committed, not all).
    worker = stack.procs["worker"]
    wait_until(lambda: stack.value("SELECT count(*) FROM runs"), SETTLE, "the first runs",
               interval=0.002)
    worker.kill9()
    runs_at_kill = stack.value("SELECT count(*) FROM runs")
    assert 0 < runs_at_kill < n, f"the worker was not killed mid-way ({runs_at_kill} of {n} runs)"
    worker = stack.start_worker("worker")
    stack.wait_worker(worker)

    # Second kill: the reminders come due 3 s after each run began; kill the new worker once
    # some are out, not all (a batch or so done, one mid-way, more reserved or still queued).
    wait_until(lambda: stack.sink_lines() >= n // 10, 3 + SETTLE, "the first reminders",
               interval=0.002)
    worker.kill9()
    at_kill = stack.sink_lines()
    assert 0 < at_kill < n, f"the worker was not killed mid-batch ({at_kill} of {n} sent)"
    assert not worker.group_alive()
    stack.wait_worker(stack.start_worker("worker"))

    def settled() -> bool:
        busy = stack.value("SELECT count(*) FROM outbox WHERE status IN ('pending', 'sending')")
        busy += stack.value("SELECT count(*) FROM timers WHERE status IN ('pending', 'claimed')")
        busy += stack.value("SELECT count(*) FROM events WHERE status = 'pending'")
        busy += stack.value("SELECT count(*) FROM deliveries WHERE status = 'sending'")
        return busy == 0 and stack.value("SELECT count(*) FROM outbox") == n

    wait_until(settled, 60, "every user's reminder to be settled", interval=0.2)

    per_user_runs = stack.rows(
        "SELECT user_id, count(*) AS c, min(status) AS s FROM runs GROUP BY user_id")
    assert len(per_user_runs) == n and {(r.c, r.s) for r in per_user_runs} == {(1, "finished")}
    assert stack.rows("SELECT status, count(*) FROM events GROUP BY status") == [("processed", n)]
    assert stack.rows("SELECT status, count(*) FROM timers GROUP BY status") == [("done", n)]
    box = stack.rows("SELECT user_id, count(*) AS c FROM outbox GROUP BY user_id")
    assert len(box) == n and {r.c for r in box} == {1}
    rows = stack.rows("SELECT user_id, key, status FROM deliveries")
    assert sorted(r.user_id for r in rows) == users  # every due message in the ledger exactly once
    status = {r.key: r.status for r in rows}
    assert set(status.values()) <= {"sent", "unknown"}
    outbox_status = dict(stack.rows("SELECT status, count(*) FROM outbox GROUP BY status"))
    assert outbox_status.get("sent", 0) == sum(1 for s in status.values() if s == "sent")

    sunk = [m["delivery_id"] for m in stack.sink()]
    assert len(sunk) == len(set(sunk)), "a delivery key appears twice in the sink"
    assert set(sunk) <= set(status), "the sink holds a message the ledger does not know"
    sent = {k for k, s in status.items() if s == "sent"}
    unknown = {k for k, s in status.items() if s == "unknown"}
    assert sent <= set(sunk), "a delivery marked sent never reached the adapter"
    print(f"killed at {runs_at_kill}/{n} runs, then at {at_kill}/{n} in the sink; "
          f"sent {len(sent)}, unknown {len(unknown)} "
          f"({len(unknown & set(sunk))} of them reached the sink before the kill, "
          f"{len(unknown - set(sunk))} did not), none resent")


@pytest.fixture
def embedded(tmp_path: Path, project: Path) -> Iterator[Stack]:
    stack = Stack.create(tmp_path / "embedded", project, sqlite=True)
    try:
        stack.wait_web(stack.start_embedded())
        yield stack
    finally:
        stack.close()


@diagnosed
def test_embedded_mode_on_sqlite_runs_the_same_flow(embedded: Stack) -> None:
    stack = embedded
    assert stack.db_url.startswith("sqlite:///")
    client = stack.client()
    u = uid("embedded")
    client.put_profile(u, email=f"{u}@example.com", phone="+14155550123",
                       attributes={"first_name": "Di", "preferred_channel": "sms"})
    cart = client.track(u, "cart_updated", CART)["event_ids"][0]
    first = client.track(u, "lesson_completed", LESSON, event_id=f"lesson-{u}")
    assert first["accepted"] == 1 and first["duplicates"] == 0
    again = client.track(u, "lesson_completed", LESSON, event_id=f"lesson-{u}")  # a client retry
    assert again == {"accepted": 0, "duplicates": 1, "event_ids": [f"lesson-{u}"]}

    nudge = wait_until(lambda: sent(stack, u, "nudge"), 2 + SETTLE, "the nudge")
    reminder = wait_until(lambda: sent(stack, u, "reminder"), 3 + SETTLE, "the reminder")
    assert nudge["channel"] == "sms" and nudge["to"] == "+14155550123" and "$89.00" in nudge["body"]
    assert reminder["channel"] == "email" and "5-day" in reminder["subject"]  # no push token: email
    rows = {r["step"]: r for r in ledger(stack, u)}
    assert seconds(rows["nudge"]["sent_at"], received_at(stack, cart)) >= 2 - EARLY
    assert seconds(rows["reminder"]["sent_at"], received_at(stack, f"lesson-{u}")) >= 3 - EARLY

    offer = wait_until(lambda: sent(stack, u, "offer"), 3 + SETTLE, "the offer")
    assert offer["channel"] == "email" and "Trail shoe" in offer["body"]
    # The duplicate changed nothing: one stored event, one run entered once, one reminder.
    assert stack.value("SELECT count(*) FROM events WHERE event_id = :e", e=f"lesson-{u}") == 1
    [run] = user_runs(stack, u, "lesson_reminder")
    assert run["started_generation"] == 0 and run["status"] == "finished"
    steps = sorted(m["metadata"]["step"] for m in messages(stack, u))
    assert steps == ["nudge", "offer", "reminder"]
    assert all(r["status"] == "sent" for r in ledger(stack, u))


@pytest.fixture
def rabbit(tmp_path: Path, project: Path) -> Iterator[Stack]:
    # No `journey deploy` here: the worker deploys the project when it starts.
    stack = Stack.create(tmp_path / "rabbit", project, broker=AMQP_URL)
    try:
        stack.start_all()
        yield stack
    finally:
        stack.close()


@diagnosed
def test_the_worker_runs_with_rabbitmq_as_the_broker(rabbit: Stack) -> None:
    stack = rabbit
    log = stack.procs["worker"].log()
    assert "amqp://" in log and "journeys deployed" in log
    client = stack.client()
    u = uid("rabbit")
    client.put_profile(u, email=f"{u}@example.com", push_tokens=["tok-r"],
                       attributes={"preferred_channel": "push"})
    client.track(u, "cart_updated", CART)
    client.track(u, "lesson_completed", LESSON)
    nudge = wait_until(lambda: sent(stack, u, "nudge"), 2 + SETTLE, "the nudge")
    reminder = wait_until(lambda: sent(stack, u, "reminder"), 3 + SETTLE, "the reminder")
    assert nudge["channel"] == "push" and "Trail shoe" in nudge["body"]
    assert reminder["channel"] == "push" and reminder["to"] == ["tok-r"]
    assert {r["status"] for r in ledger(stack, u)} == {"sent"}
