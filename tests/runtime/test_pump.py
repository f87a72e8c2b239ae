"""The timer pump: claims, leases, hand-backs and restarts."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable, Sequence

from orchestrator.runtime import work
from orchestrator.store.schema import events, outbox, runs, timers

from .conftest import LESSON
from .harness import Harness, h, make_harness  # noqa: F401


class Recording:
    """A dispatcher whose work never arrives (a broker that lost it, a worker that died):
    it only records what it was handed."""

    def __init__(self) -> None:
        self.timers: list[int] = []
        self.users: list[str] = []
        self.messages: list[int] = []
        self._lock = threading.Lock()

    def process_users(self, user_ids: Sequence[str]) -> None:
        with self._lock:
            self.users += list(user_ids)

    def fire_timers(self, timer_ids: Sequence[int]) -> None:
        with self._lock:
            self.timers += list(timer_ids)

    def send_messages(self, outbox_ids: Sequence[int]) -> None:
        with self._lock:
            self.messages += list(outbox_ids)


def test_two_pumps_claiming_at_once_never_claim_the_same_timer(
    pg_url: str, fast_project: Path, clock: Any, tmp_path: Path
) -> None:
    h = Harness(pg_url, fast_project, clock, tmp_path / "sink.jsonl")
    try:
        users = [f"u{i:03d}" for i in range(300)]
        h.store(*[(u, "lesson_completed", LESSON) for u in users])
        h.runtime.process_users(users)
        clock.advance(seconds=3)
        recorders = [Recording(), Recording()]
        pumps = [h.new_pump(r, claim=5, batch=5) for r in recorders]
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def run(i: int) -> None:
            try:
                barrier.wait()
                pumps[i].tick(clock())
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors
        a, b = (set(r.timers) for r in recorders)
        assert len(a) == len(recorders[0].timers) and len(b) == len(recorders[1].timers)
        assert not a & b
        rows = h.rows(timers)
        assert a | b == {t["id"] for t in rows} and len(rows) == 300
        assert {(t["status"], t["attempts"]) for t in rows} == {("claimed", 1)}
    finally:
        h.close()


def test_a_claim_older_than_the_lease_is_handed_back_and_fired(h: Harness) -> None:
    h.profile("u1", email="ana@example.com")
    h.track("u1", "lesson_completed", LESSON)
    h.clock.advance(seconds=3)
    lost = Recording()
    assert h.new_pump(lost).tick(h.now).timers == 1  # claimed, then the worker died
    assert h.one(timers)["status"] == "claimed"

    t = h.tick(seconds=h.settings.lease - 1)
    assert (t.reclaimed, t.timers) == (0, 0)
    assert h.one(timers)["status"] == "claimed" and h.lines() == []
    t = h.tick(seconds=2)
    assert (t.reclaimed, t.timers) == (1, 1)
    timer = h.one(timers)
    assert (timer["status"], timer["attempts"]) == ("done", 2)
    assert len(h.lines()) == 1
    h.tick(seconds=h.settings.lease + 1)
    assert len(h.lines()) == 1


def test_events_never_dispatched_are_dispatched_after_the_lease(h: Harness) -> None:
    h.profile("u1", email="ana@example.com")
    h.store(("u1", "lesson_completed", LESSON))  # stored; the task to process it was lost
    assert h.tick().events == 0
    assert h.tick(seconds=h.settings.lease - 1).events == 0
    assert h.one(events)["status"] == "pending" and h.rows(runs) == []
    assert h.tick(seconds=2).events == 1
    ev = h.one(events)
    assert (ev["status"], ev["attempts"]) == ("processed", 1)
    assert h.one(runs)["status"] == "waiting"
    assert h.tick().events == 0


def test_events_whose_redispatch_is_lost_again_are_handed_out_again(h: Harness) -> None:
    h.store(("u1", "lesson_completed", LESSON))
    lost = Recording()
    pump = h.new_pump(lost)
    h.clock.advance(seconds=h.settings.lease + 1)
    assert pump.tick(h.now).events == 1
    assert pump.tick(h.now).events == 0  # claimed just now: not handed out twice at once
    h.clock.advance(seconds=h.settings.lease + 1)
    assert pump.tick(h.now).events == 1
    assert lost.users == ["u1", "u1"]
    assert h.one(events)["attempts"] == 2


def test_messages_queued_by_a_worker_that_died_are_sent_after_the_lease(h: Harness) -> None:
    h.profile("u1", email="ana@example.com")
    h.track("u1", "lesson_completed", LESSON)
    h.clock.advance(seconds=3)
    done = work.fire_timers(h.engine, h.runtime.registry, [h.one(timers)["id"]], h.now)
    assert len(done.messages) == 1  # committed, never sent
    assert h.tick().messages == 0  # the queuing process still holds it
    assert h.tick(seconds=h.settings.lease - 1).messages == 0
    assert h.tick(seconds=2).messages == 1
    assert h.one(outbox)["status"] == "sent" and len(h.lines()) == 1
    assert h.tick(seconds=h.settings.lease + 1).messages == 0


def test_a_restarted_pump_fires_what_came_due_while_none_ran(
    make_harness: Callable[..., Harness],
) -> None:
    h = make_harness()
    for i in range(3):
        h.profile(f"u{i}", email=f"u{i}@example.com")
        h.track(f"u{i}", "lesson_completed", LESSON)
        h.clock.advance(seconds=1)
    h.close()  # the whole service stops; the reminders come due meanwhile
    h.clock.advance(hours=2)
    later = make_harness()  # a new process: new runtime, new pump
    t = later.new_pump().tick(later.now)
    assert t.timers == 3
    assert sorted(line["to"] for line in later.lines()) == ["u0@example.com", "u1@example.com", "u2@example.com"]
    assert {r["status"] for r in later.rows(runs)} == {"finished"}
