"""Events -> runs -> timers -> messages, in-process on both stores: the work functions, the
pump and the file channel, driven by the ManualClock."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from orchestrator.store.schema import activity, conversions, events, journey_versions, outbox, runs, timers

from .conftest import CART, LESSON
from .harness import Harness, h, make_harness, write_journey  # noqa: F401


def unfinished(h: Harness, journey: str, user_id: str) -> list[dict[str, Any]]:
    return [r for r in h.rows(runs, journey=journey, user_id=user_id) if r["status"] != "finished"]


# -- 1. events -> runs -> timer -> message ----------------------------------------------------

def test_cart_event_enters_waits_on_a_timer_and_sends_on_the_preferred_channel(h: Harness) -> None:
    t0 = h.now
    h.profile("u-email", email="ana@example.com", attributes={"first_name": "Ana"})  # no push token
    h.profile("u-push", email="bo@example.com", push_tokens=["tok-bo"])
    h.profile("u-prefers-email", email="cy@example.com", push_tokens=["tok-cy"],
              attributes={"preferred_channel": "email"})
    for uid in ("u-email", "u-push", "u-prefers-email"):
        h.track(uid, "cart_updated", CART)

    run = h.one(runs, user_id="u-email", journey="cart_abandonment")
    assert run["status"] == "waiting" and run["step"] == "wait_a_bit"
    timer = h.one(timers, run_id=run["run_id"])
    assert timer["status"] == "pending" and timer["fire_at"] == t0 + timedelta(seconds=2)
    assert h.rows(outbox) == [] and h.lines() == []

    assert h.tick(seconds=1.9).timers == 0  # not due yet
    assert h.lines() == []
    assert h.tick(seconds=0.1).timers == 3

    sent = {line["metadata"]["user_id"]: line for line in h.lines()}
    assert set(sent) == {"u-email", "u-push", "u-prefers-email"}
    assert (sent["u-email"]["channel"], sent["u-email"]["to"]) == ("email", "ana@example.com")
    assert "Hi Ana" in sent["u-email"]["body"]
    assert (sent["u-push"]["channel"], sent["u-push"]["to"]) == ("push", ["tok-bo"])
    assert sent["u-prefers-email"]["channel"] == "email"
    box = h.one(outbox, user_id="u-email")
    assert (box["status"], box["channel"], box["detail"]) == ("sent", "email", "fell back from push")
    assert h.one(timers, run_id=run["run_id"], generation=1)["status"] == "done"
    # The run went on to its next wait (wait_for order_completed, 3 s).
    run = h.one(runs, run_id=run["run_id"])
    assert (run["status"], run["step"]) == ("waiting", "wait_for_order")


# -- 2. a goal during the wait ------------------------------------------------------------------

def test_order_during_the_wait_converts_and_cancels_the_timer(h: Harness) -> None:
    h.profile("u1", email="ana@example.com")
    h.track("u1", "cart_updated", CART)
    h.clock.advance(seconds=1)
    h.track("u1", "order_completed", {"order_id": "o-1", "cart_id": "c-1", "total": 89.0, "currency": "USD"})

    run = h.one(runs, user_id="u1")
    assert (run["status"], run["exit_reason"], run["converted"]) == ("finished", "goal:order_completed", True)
    conv = h.one(conversions, run_id=run["run_id"])
    assert (conv["goal"], conv["user_id"], conv["version"]) == ("order_completed", "u1", run["version"])
    assert h.one(timers, run_id=run["run_id"])["status"] == "cancelled"

    for _ in range(5):
        assert h.tick(seconds=3).timers == 0
    assert h.lines() == [] and h.rows(outbox) == []


# -- 3. restart -------------------------------------------------------------------------------------

def test_second_lesson_restarts_the_run_and_only_one_reminder_goes(h: Harness) -> None:
    h.profile("u1", email="ana@example.com")
    t0 = h.now
    h.track("u1", "lesson_completed", LESSON)
    h.clock.advance(seconds=2)
    h.track("u1", "lesson_completed", {**LESSON, "lesson_number": 13, "streak": 6})

    run = h.one(runs, user_id="u1")
    first, second = h.rows(timers, run_id=run["run_id"], order_by="generation")
    assert first["status"] == "cancelled"
    assert (second["status"], second["fire_at"]) == ("pending", t0 + timedelta(seconds=5))

    h.tick(seconds=1.5)  # past the first timer's time: nothing
    assert h.lines() == []
    h.tick(seconds=1.5)  # t0 + 5
    h.tick(seconds=10)
    lines = h.lines()
    assert len(lines) == 1
    assert "6-day" in lines[0]["body"] and "lesson 14" in lines[0]["body"]  # the second lesson's data
    assert h.one(runs, user_id="u1")["status"] == "finished"
    reasons = [a["reason"] for a in h.rows(activity, user_id="u1", action="enter")]
    assert reasons == [None, "restarted"]


# -- 4. duplicates ------------------------------------------------------------------------------

def test_a_repeated_event_id_is_stored_once_and_applied_once(h: Harness) -> None:
    h.profile("u1", email="ana@example.com")
    first = h.track("u1", "cart_updated", CART, event_id="ev-1")
    again = h.track("u1", "cart_updated", CART, event_id="ev-1")
    assert first.new == ("ev-1",) and again.new == () and again.event_ids == ("ev-1",)
    assert again.user_ids == ()
    # Also inside one batch.
    both = h.store(("u1", "cart_updated", CART, "ev-2"), ("u1", "cart_updated", CART, "ev-2"))
    assert both.event_ids == ("ev-2", "ev-2")
    assert both.new == ("ev-2",)
    with h.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(events)).scalar_one() == 2

    # Processing the same user twice (a task delivered twice) applies each event once.
    h.runtime.process_users(["u1"])
    h.runtime.process_users(["u1"])
    h.dispatcher.process_users(["u1", "u1"])
    assert {e["status"] for e in h.rows(events)} == {"processed"}
    run = h.one(runs, user_id="u1")
    # ev-1 entered (generation 1), ev-2 restarted once (generation 2): no more.
    assert run["generation"] == 2
    assert [t["status"] for t in h.rows(timers, run_id=run["run_id"], order_by="generation")] == ["cancelled", "pending"]
    h.tick(seconds=2)
    assert len(h.lines()) == 1


# -- 5. exclusivity ----------------------------------------------------------------------------

PARALLEL = """
trigger: {event: lesson_completed}
re_entry: parallel
steps:
  - id: wait
    wait: 3s
  - id: reminder
    send: {channel: email, template: streak_reminder}
"""

IGNORE = """
trigger: {event: lesson_completed}
re_entry: ignore
steps:
  - id: wait
    wait: 3s
  - id: reminder
    send: {channel: email, template: streak_reminder}
"""


def test_one_unfinished_run_per_user_in_an_exclusive_journey_many_in_a_parallel_one(
    make_harness: Callable[..., Harness], fast_project: Path
) -> None:
    write_journey(fast_project, "lesson_parallel", PARALLEL)
    write_journey(fast_project, "lesson_ignore", IGNORE)
    h = make_harness()
    h.profile("u1", email="ana@example.com")
    n = 0

    def burst(k: int) -> None:
        nonlocal n
        h.store(*[("u1", "lesson_completed", LESSON, f"l-{n + i}") for i in range(k)])
        n += k

    burst(3)
    h.runtime.process_users(["u1"])
    burst(4)
    h.runtime.process_users(["u1"])
    h.runtime.process_users(["u1"])
    burst(1)
    h.dispatcher.process_users(["u1"])
    h.clock.advance(seconds=1)
    burst(2)
    h.runtime.process_users(["u1"])

    assert {e["status"] for e in h.rows(events)} == {"processed"}
    for journey in ("lesson_reminder", "lesson_ignore"):
        assert len(unfinished(h, journey, "u1")) == 1, journey
        assert len(h.rows(runs, journey=journey)) == 1, journey
    par = unfinished(h, "lesson_parallel", "u1")
    assert len(par) == 10 and not any(r["exclusive"] for r in par)
    assert all(r["exclusive"] for r in h.rows(runs, journey="lesson_reminder"))
    # ignore kept the first run and its one timer; restart moved its run on each trigger.
    rem = h.one(runs, journey="lesson_reminder")
    assert rem["generation"] == 10
    assert [t["status"] for t in h.rows(timers, run_id=rem["run_id"])].count("pending") == 1
    ign = h.one(runs, journey="lesson_ignore")
    assert h.one(timers, run_id=ign["run_id"])["status"] == "pending"

    h.tick(seconds=2)  # first burst's timers (t0 + 3) are due now
    h.tick(seconds=10)
    by_journey: dict[str, int] = {}
    for line in h.lines():
        by_journey[line["metadata"]["journey"]] = by_journey.get(line["metadata"]["journey"], 0) + 1
    assert by_journey == {"lesson_reminder": 1, "lesson_ignore": 1, "lesson_parallel": 10}


def test_the_database_refuses_a_second_unfinished_exclusive_run(h: Harness) -> None:
    h.profile("u1", email="ana@example.com")
    h.track("u1", "cart_updated", CART)
    run = h.one(runs, user_id="u1")
    clone = {**run, "run_id": "another", "updated_at": h.now}
    with pytest.raises(IntegrityError):
        with h.engine.begin() as conn:
            conn.execute(insert(runs), clone)
    # Finished or non-exclusive runs are not constrained.
    with h.engine.begin() as conn:
        conn.execute(insert(runs), {**clone, "run_id": "done-1", "status": "finished"})
        conn.execute(insert(runs), {**clone, "run_id": "par-1", "exclusive": False})
        conn.execute(insert(runs), {**clone, "run_id": "par-2", "exclusive": False})


# -- 6. versions ------------------------------------------------------------------------------

def test_a_new_version_is_current_for_new_entrants_while_runs_in_flight_finish_on_theirs(
    h: Harness, fast_project: Path
) -> None:
    t0 = h.now
    for uid in ("u-old", "u-old-restarted", "u-new"):
        h.profile(uid, email=f"{uid}@example.com")
    v1 = h.version("lesson_reminder")
    h.track("u-old", "lesson_completed", LESSON)
    h.track("u-old-restarted", "lesson_completed", LESSON)

    text = (fast_project / "journeys" / "lesson_reminder.yaml").read_text()
    (fast_project / "journeys" / "lesson_reminder.yaml").write_text(text.replace("wait: 3s", "wait: 10s"))
    deployed = {d.journey: d for d in h.runtime.deploy()}  # type: ignore[attr-defined]
    v2 = deployed["lesson_reminder"].version
    assert v2 != v1 and deployed["lesson_reminder"].new
    assert not deployed["cart_abandonment"].new  # unchanged: same version, not new
    versions = {r["version"]: r["current"] for r in h.rows(journey_versions, journey="lesson_reminder")}
    assert versions == {v1: False, v2: True}
    assert not {d.journey: d for d in h.runtime.deploy()}["lesson_reminder"].new  # type: ignore[attr-defined]

    h.clock.advance(seconds=1)
    h.track("u-new", "lesson_completed", LESSON)
    h.track("u-old-restarted", "lesson_completed", LESSON)  # restarts on its own version

    new = h.one(runs, user_id="u-new")
    assert new["version"] == v2
    assert h.one(timers, run_id=new["run_id"])["fire_at"] == t0 + timedelta(seconds=11)
    restarted = h.one(runs, user_id="u-old-restarted")
    assert restarted["version"] == v1
    assert h.rows(timers, run_id=restarted["run_id"], order_by="generation")[-1]["fire_at"] == t0 + timedelta(seconds=4)

    h.tick(seconds=2)  # t0 + 3: the v1 wait of u-old is over
    assert [line["metadata"]["user_id"] for line in h.lines()] == ["u-old"]
    old = h.one(runs, user_id="u-old")
    assert (old["status"], old["version"]) == ("finished", v1)
    h.tick(seconds=1)  # t0 + 4
    assert [line["metadata"]["user_id"] for line in h.lines()] == ["u-old", "u-old-restarted"]
    h.tick(seconds=6.5)  # t0 + 10.5
    assert len(h.lines()) == 2
    h.tick(seconds=0.5)  # t0 + 11
    assert [line["metadata"]["user_id"] for line in h.lines()][-1] == "u-new"
    assert {r["version"] for r in h.rows(outbox, user_id="u-new")} == {v2}


# -- 10. poison -----------------------------------------------------------------------------------

def test_a_user_whose_data_breaks_the_journey_is_parked_and_the_batch_goes_on(h: Harness) -> None:
    for uid in ("u-ok-1", "u-bad", "u-ok-2"):
        h.profile(uid, email=f"{uid}@example.com")
    # Another producer wrote an event whose properties are not an object: the lesson journey
    # (no trigger condition) enters and copies the properties as the run's trigger.
    h.store(("u-ok-1", "lesson_completed", LESSON), ("u-ok-2", "lesson_completed", LESSON))
    with h.engine.begin() as conn:
        conn.execute(insert(events), {
            "event_id": "poison", "user_id": "u-bad", "name": "lesson_completed", "at": h.now,
            "properties": "not an object", "received_at": h.now, "status": "pending", "attempts": 0,
        })
    h.store(("u-bad", "lesson_completed", LESSON, "after-poison"))
    done = h.runtime.process_users(["u-ok-1", "u-bad", "u-ok-2"])
    assert (done.applied, done.failed) == (2, 2)

    by_user = {e["user_id"]: e for e in h.rows(events) if e["user_id"] != "u-bad"}
    assert {e["status"] for e in by_user.values()} == {"processed"}
    bad = h.rows(events, user_id="u-bad")
    assert [e["status"] for e in bad] == ["failed", "failed"]
    assert all(e["error"] and "Error" in e["error"] for e in bad)
    assert h.rows(runs, user_id="u-bad") == []
    assert {r["user_id"] for r in h.rows(runs)} == {"u-ok-1", "u-ok-2"}

    # Parked events are not handed out again in a loop.
    for _ in range(3):
        assert h.tick(seconds=h.settings.lease + 1).events == 0
    assert [e["status"] for e in h.rows(events, user_id="u-bad")] == ["failed", "failed"]
    assert sorted(line["metadata"]["user_id"] for line in h.lines()) == ["u-ok-1", "u-ok-2"]


def test_two_workers_processing_the_same_user_at_once_apply_each_event_once(h: Harness) -> None:
    import threading

    h.profile("u1", email="ana@example.com")
    h.store(("u1", "cart_updated", CART), ("u1", "lesson_completed", LESSON))
    barrier = threading.Barrier(3)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            h.runtime.process_users(["u1"])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert sorted(r["journey"] for r in h.rows(runs)) == ["cart_abandonment", "lesson_reminder"]
    assert len(h.rows(timers)) == 2 and len(h.rows(activity, action="enter")) == 2


def test_a_deploy_with_a_broken_journey_records_nothing(h: Harness, fast_project: Path) -> None:
    from orchestrator.errors import JourneyErrors

    before = h.rows(journey_versions)
    text = (fast_project / "journeys" / "lesson_reminder.yaml").read_text()
    (fast_project / "journeys" / "lesson_reminder.yaml").write_text(text.replace("wait: 3s", "wait: 10s"))
    write_journey(fast_project, "broken", "trigger: {event: lesson_completed}\nsteps:\n  - id: x\n    sned: {}\n")
    with pytest.raises(JourneyErrors):
        h.runtime.deploy()
    assert h.rows(journey_versions) == before
    h.profile("u1", email="ana@example.com")
    h.track("u1", "lesson_completed", LESSON)
    assert h.one(runs, user_id="u1")["version"] == h.version("lesson_reminder")


def test_goals_of_several_users_in_one_batch_cancel_each_timer(h: Harness) -> None:
    """One batch cancelling several timers (a batched UPDATE) must not fail the batch."""
    users = ["u1", "u2", "u3"]
    for uid in users:
        h.profile(uid, email=f"{uid}@example.com")
    h.store(*[(u, "cart_updated", CART) for u in users])
    h.runtime.process_users(users)
    h.clock.advance(seconds=1)
    order = {"order_id": "o", "cart_id": "c-1", "total": 89.0, "currency": "USD"}
    h.store(*[(u, "order_completed", order) for u in users])
    done = h.runtime.process_users(users)
    assert (done.applied, done.failed) == (3, 0)
    assert {e["status"] for e in h.rows(events)} == {"processed"}
    assert {t["status"] for t in h.rows(timers)} == {"cancelled"}
    assert len(h.rows(conversions)) == 3
    h.tick(seconds=10)
    assert h.lines() == []


def test_a_removed_journey_takes_no_new_entrants_after_deploy(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    from sqlalchemy import select

    from orchestrator.runtime.config import Settings
    from orchestrator.runtime.context import Runtime
    from orchestrator.store.database import upgrade
    from orchestrator.store.schema import journey_versions
    from tests.runtime.conftest import FAST_JOURNEYS, ROOT

    root = tmp_path / "p"
    (root / "journeys").mkdir(parents=True)
    shutil.copy(ROOT / "catalog.yaml", root / "catalog.yaml")
    shutil.copytree(ROOT / "templates", root / "templates")
    for name, text in FAST_JOURNEYS.items():
        (root / "journeys" / f"{name}.yaml").write_text(text.lstrip(), encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'j.db'}"
    upgrade(url)
    runtime = Runtime.create(Settings(database_url=url, project=str(root)))
    runtime.deploy()
    (root / "journeys" / "lesson_reminder.yaml").unlink()
    runtime.deploy()
    with runtime.engine.connect() as conn:
        current = set(conn.execute(select(journey_versions.c.journey).where(journey_versions.c.current)).scalars())
    assert current == {"cart_abandonment"}


def test_a_new_address_lifts_a_bounce_but_not_an_unsubscribe(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from datetime import datetime, timezone

    from orchestrator.runtime.ingest import get_profile, put_profile
    from orchestrator.store.database import make_engine, upgrade
    from orchestrator.store.rows import set_consent

    url = f"sqlite:///{tmp_path / 'c.db'}"
    upgrade(url)
    engine = make_engine(url)
    now = datetime(2026, 3, 2, tzinfo=timezone.utc)
    put_profile(engine, "u", now, contact={"email": "old@x.com", "phone": "+14155550100"}, attributes=None, consent={})
    with engine.begin() as conn:
        set_consent(conn, "u", "email", "bounced", "sendgrid", now)
        set_consent(conn, "u", "sms", "unsubscribed", "sms_keyword", now)
    put_profile(engine, "u", now, contact={"email": "old@x.com"}, attributes=None, consent={})
    assert get_profile(engine, "u")["consent"] == {"email": "bounced", "sms": "unsubscribed"}  # type: ignore[index]
    put_profile(engine, "u", now, contact={"email": "new@x.com", "phone": "+14155550199"}, attributes=None, consent={})
    assert get_profile(engine, "u")["consent"] == {"email": "subscribed", "sms": "unsubscribed"}  # type: ignore[index]
