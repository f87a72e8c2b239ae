"""The delivery ledger (exactly once, or "unknown", never twice) and the delivery policies as
production applies them: consent at send time, frequency caps across journeys, quiet hours."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import pytest

from channels.base import Delivery, OutboundMessage
from channels.file import FileChannel
from orchestrator.runtime import work
from orchestrator.runtime.sending import ChannelRouter
from orchestrator.store.schema import activity, consents, deliveries, outbox, timers

from .conftest import CART, LESSON
from .harness import (  # noqa: F401
    Harness,
    ProcessDied,
    ScriptedChannel,
    h,
    make_harness,
    only_journeys,
    rejected,
    retry_later,
)


def scripted(make_harness: Callable[..., Harness], tmp_path: Path, email: list[Any] | None = None,
             **kwargs: Any) -> tuple[Harness, ScriptedChannel]:
    """A harness whose email channel answers from ``email``; sms and push write to the sink."""
    sink = tmp_path / "sink.jsonl"
    channel = ScriptedChannel(sink, list(email or []))
    others = FileChannel(sink)
    router = ChannelRouter({}, instances={"email": channel, "sms": others, "push": others})
    return make_harness(router=router, **kwargs), channel


def queue_reminders(h: Harness, *user_ids: str) -> list[int]:
    """Lesson reminders queued by a worker that committed and died before sending them."""
    for uid in user_ids:
        h.track(uid, "lesson_completed", LESSON)
    h.clock.advance(seconds=3)
    due = [t["id"] for t in h.rows(timers, status="pending")]
    done = work.fire_timers(h.engine, h.runtime.registry, due, h.now)
    assert len(done.messages) == len(user_ids)
    return list(done.messages)


# -- 7. the ledger ----------------------------------------------------------------------------

def test_sending_the_same_outbox_ids_twice_sends_once(h: Harness) -> None:
    h.profile("u1", email="ana@example.com")
    ids = queue_reminders(h, "u1")
    first = h.runtime.send_messages(ids)
    second = h.runtime.send_messages(ids)
    h.runtime.send_messages(ids + ids)
    assert (first.sent, second.sent) == (1, 0)
    assert len(h.lines()) == 1
    ledger = h.one(deliveries)
    assert (ledger["status"], ledger["channel"], ledger["outbox_id"]) == ("sent", "email", ids[0])
    assert ledger["key"] == f"{ledger['run_id']}:reminder:1:email"
    assert h.one(outbox)["status"] == "sent"
    h.tick(seconds=h.settings.lease + 1)
    assert len(h.lines()) == 1


class SlowChannel:
    name = "slow"

    def __init__(self, sink: Path) -> None:
        self.inner = FileChannel(sink)

    def send(self, message: OutboundMessage) -> Delivery:
        time.sleep(0.3)
        return self.inner.send(message)


def test_two_workers_sending_the_same_messages_at_once_send_each_once(
    make_harness: Callable[..., Harness], tmp_path: Path
) -> None:
    slow = SlowChannel(tmp_path / "sink.jsonl")
    h = make_harness(router=ChannelRouter({}, instances={"email": slow, "sms": slow, "push": slow}))
    for uid in ("u1", "u2"):
        h.profile(uid, email=f"{uid}@example.com")
    ids = queue_reminders(h, "u1", "u2")
    barrier = threading.Barrier(2)
    reports: list[Any] = []

    def worker() -> None:
        barrier.wait()
        reports.append(h.runtime.send_messages(ids))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sum(r.sent for r in reports) == 2
    assert sorted(line["to"] for line in h.lines()) == ["u1@example.com", "u2@example.com"]


def test_a_process_dying_mid_call_leaves_unknown_never_a_second_send(
    make_harness: Callable[..., Harness], tmp_path: Path
) -> None:
    h, channel = scripted(make_harness, tmp_path, email=[ProcessDied()])
    h.profile("u1", email="ana@example.com")
    ids = queue_reminders(h, "u1")
    with pytest.raises(ProcessDied):
        h.runtime.send_messages(ids)
    assert h.one(deliveries)["status"] == "sending"  # committed before the call
    assert h.one(outbox)["status"] == "sending"

    assert h.runtime.send_messages(ids).busy == 1  # within the lease: someone is sending it
    h.tick(seconds=h.settings.lease - 1)
    assert h.one(deliveries)["status"] == "sending"
    h.tick(seconds=2)
    ledger, box = h.one(deliveries), h.one(outbox)
    assert ledger["status"] == "unknown" and "stopped mid-call" in ledger["error"]
    assert (box["status"], box["reason"]) == ("unknown", "unknown_outcome")
    for _ in range(3):
        h.tick(seconds=h.settings.lease + 1)
    h.runtime.send_messages(ids)
    assert len(channel.calls) == 1 and h.lines() == []


def test_a_sending_row_found_after_the_lease_becomes_unknown(h: Harness) -> None:
    """The same, set up by hand: a ledger row 'sending' and its outbox row claimed long ago."""
    h.profile("u1", email="ana@example.com")
    ids = queue_reminders(h, "u1")
    h.runtime.send_messages(ids)
    long_ago = h.now - timedelta(minutes=5)
    with h.engine.begin() as conn:
        conn.execute(deliveries.update().values(status="sending", sent_at=None))
        conn.execute(outbox.update().values(status="sending", claimed_at=long_ago))
    assert h.tick().messages == 1
    assert h.one(deliveries)["status"] == "unknown" and h.one(outbox)["status"] == "unknown"
    assert len(h.lines()) == 1


def test_retryable_puts_the_message_back_until_its_time_then_sends_it_once(
    make_harness: Callable[..., Harness], tmp_path: Path
) -> None:
    h, channel = scripted(make_harness, tmp_path, email=[retry_later(after=7)])
    h.profile("u1", email="ana@example.com")
    h.track("u1", "lesson_completed", LESSON)
    h.tick(seconds=3)
    first_try = h.now
    box = h.one(outbox)
    assert (box["status"], box["attempts"]) == ("pending", 1)
    assert box["due_at"] == first_try + timedelta(seconds=7)
    assert "429" in box["detail"]
    assert h.one(deliveries)["status"] == "retry"
    assert h.lines() == []

    h.tick(seconds=6.9)
    assert len(channel.calls) == 1
    h.tick(seconds=0.1)
    assert len(channel.calls) == 2
    assert len(h.lines()) == 1
    ledger = h.one(deliveries)  # the same ledger row, now sent
    assert (ledger["status"], ledger["sent_at"]) == ("sent", h.now)
    assert h.one(outbox)["status"] == "sent"
    for _ in range(3):
        h.tick(seconds=60)
    assert len(channel.calls) == 2 and len(h.lines()) == 1


def test_retryable_every_time_fails_after_max_attempts_with_backoff(
    make_harness: Callable[..., Harness], tmp_path: Path
) -> None:
    h, channel = scripted(make_harness, tmp_path, email=[retry_later() for _ in range(10)], max_attempts=3)
    h.profile("u1", email="ana@example.com")
    h.track("u1", "lesson_completed", LESSON)
    h.tick(seconds=3)
    assert h.one(outbox)["due_at"] == h.now + timedelta(seconds=30)  # no Retry-After: 30 s, doubling
    h.tick(seconds=29)
    assert len(channel.calls) == 1
    h.tick(seconds=1)
    assert len(channel.calls) == 2
    assert h.one(outbox)["due_at"] == h.now + timedelta(seconds=60)
    h.tick(seconds=60)
    assert len(channel.calls) == 3
    box = h.one(outbox)
    assert (box["status"], box["attempts"], box["reason"]) == ("failed", 3, "provider_retries_exhausted")
    assert h.one(deliveries)["status"] == "failed"
    for _ in range(3):
        h.tick(seconds=600)
    assert len(channel.calls) == 3 and h.lines() == []


def test_rejected_suppresses_the_channel_for_the_user_and_later_messages_fall_back(
    make_harness: Callable[..., Harness], tmp_path: Path
) -> None:
    h, channel = scripted(make_harness, tmp_path, email=[rejected()])
    h.profile("u1", email="gone@example.com", phone="+14155550123")
    h.track("u1", "cart_updated", CART)
    h.tick(seconds=2)  # the nudge: push (no token) -> email, which the provider rejects
    assert len(channel.calls) == 1
    ledger, box = h.one(deliveries), h.one(outbox)
    assert (ledger["status"], ledger["channel"]) == ("rejected", "email")
    assert (box["status"], box["reason"]) == ("rejected", "rejected")
    consent = h.one(consents, user_id="u1", channel="email")
    assert (consent["status"], consent["source"]) == ("rejected", "provider")

    h.tick(seconds=3)  # wait_for_order times out: the email-only offer is not sent
    offer = h.one(outbox, step="offer")
    assert (offer["status"], offer["reason"]) == ("skipped", "unsubscribed")
    assert "email: unsubscribed" in offer["detail"]

    h.track("u1", "cart_updated", {**CART, "cart_id": "c-2"})
    h.tick(seconds=2)  # a new nudge falls back to sms
    assert len(channel.calls) == 1
    assert [(line["channel"], line["to"]) for line in h.lines()] == [("sms", "+14155550123")]
    assert h.rows(outbox, order_by="id")[-1]["detail"] == "fell back from push, email"


def test_an_error_from_the_channel_is_unknown_and_never_resent(
    make_harness: Callable[..., Harness], tmp_path: Path
) -> None:
    h, channel = scripted(make_harness, tmp_path, email=[ConnectionResetError("peer reset")])
    h.profile("u1", email="ana@example.com")
    h.track("u1", "lesson_completed", LESSON)
    h.tick(seconds=3)
    ledger, box = h.one(deliveries), h.one(outbox)
    assert ledger["status"] == "unknown" and "peer reset" in ledger["error"]
    assert (box["status"], box["reason"]) == ("unknown", "unknown_outcome")
    for _ in range(3):
        h.tick(seconds=h.settings.lease + 1)
    h.runtime.send_messages([box["id"]])
    assert len(channel.calls) == 1 and h.lines() == []


# -- 8. policies in production ----------------------------------------------------------------

def test_consent_withdrawn_after_queueing_wins_at_send_time(h: Harness) -> None:
    h.profile("u-stop", email="a@example.com", push_tokens=["tok-a"])
    h.profile("u-stop-push", email="b@example.com", push_tokens=["tok-b"])
    h.profile("u-keep", email="c@example.com")
    ids = queue_reminders(h, "u-stop", "u-stop-push", "u-keep")
    h.profile("u-stop", consent={"email": "unsubscribed", "push": "unsubscribed"})
    h.profile("u-stop-push", consent={"push": "unsubscribed"})
    report = h.runtime.send_messages(ids)
    assert (report.sent, report.skipped) == (2, 1)
    stopped = h.one(outbox, user_id="u-stop")
    assert (stopped["status"], stopped["reason"]) == ("skipped", "unsubscribed")
    assert h.one(activity, user_id="u-stop", action="skip")["reason"] == "unsubscribed"
    assert h.one(outbox, user_id="u-stop-push")["channel"] == "email"
    assert sorted(line["to"] for line in h.lines()) == ["b@example.com", "c@example.com"]


LESSON_EMAIL = """
trigger: {event: lesson_completed}
re_entry: restart
steps:
  - id: wait
    wait: 3s
  - id: reminder
    send: {channel: email, template: streak_reminder}
"""

CAPPED_CART = """
trigger: {event: cart_updated}
re_entry: restart
delivery:
  frequency_caps:
    - {max: 1, per: 1d}
steps:
  - id: wait
    wait: 5s
  - id: nudge
    send: {channel: email, template: cart_nudge}
"""


def test_frequency_caps_count_messages_from_other_journeys(
    make_harness: Callable[..., Harness], fast_project: Path
) -> None:
    h = make_harness(only_journeys(fast_project, lessons=LESSON_EMAIL, capped_cart=CAPPED_CART))
    h.profile("u-busy", email="busy@example.com")
    h.profile("u-quiet", email="quiet@example.com")
    h.track("u-busy", "lesson_completed", LESSON)
    for uid in ("u-busy", "u-quiet"):
        h.track(uid, "cart_updated", CART)
    h.tick(seconds=3)  # the lesson reminder (a journey without caps) goes to u-busy
    h.tick(seconds=2)  # the capped cart nudge: u-busy already had a message today
    assert sorted((line["metadata"]["journey"], line["to"]) for line in h.lines()) == [
        ("capped_cart", "quiet@example.com"), ("lessons", "busy@example.com")]
    capped = h.one(outbox, user_id="u-busy", journey="capped_cart")
    assert (capped["status"], capped["reason"]) == ("skipped", "frequency_cap")
    # A day later the cap has room again.
    h.clock.advance(days=1)
    h.track("u-busy", "cart_updated", CART)
    h.tick(seconds=5)
    assert [line["metadata"]["journey"] for line in h.lines()].count("capped_cart") == 2


QUIET = """
trigger: {event: lesson_completed}
re_entry: restart
delivery:
  quiet_hours: {start: "21:00", end: "08:00"}
steps:
  - id: reminder
    send: {channel: email, template: streak_reminder}
"""


def test_quiet_hours_defer_the_message_to_the_end_of_the_window(
    make_harness: Callable[..., Harness], fast_project: Path
) -> None:
    h = make_harness(only_journeys(fast_project, quiet=QUIET))
    assert h.now == datetime(2026, 3, 2, 15, 0, tzinfo=timezone.utc)  # 00:00 in Tokyo
    h.profile("u-tokyo", email="tokyo@example.com", timezone="Asia/Tokyo")
    h.profile("u-lisbon", email="lisbon@example.com", timezone="Europe/Lisbon")  # 15:00 there
    h.track("u-tokyo", "lesson_completed", LESSON)
    h.track("u-lisbon", "lesson_completed", LESSON)
    assert [line["to"] for line in h.lines()] == ["lisbon@example.com"]
    held = h.one(outbox, user_id="u-tokyo")
    end = datetime(2026, 3, 2, 23, 0, tzinfo=timezone.utc)  # 08:00 in Tokyo
    assert (held["status"], held["due_at"], held["reason"]) == ("pending", end, "quiet_hours")
    assert h.one(activity, user_id="u-tokyo", action="defer")["reason"] == "quiet_hours"

    h.clock.now = end - timedelta(seconds=1)
    assert h.tick().messages == 0
    assert len(h.lines()) == 1
    h.clock.now = end
    assert h.tick().messages == 1
    assert [line["to"] for line in h.lines()] == ["lisbon@example.com", "tokyo@example.com"]
    assert h.one(outbox, user_id="u-tokyo")["status"] == "sent"


def test_a_message_whose_user_data_breaks_the_policy_is_parked_and_the_batch_is_sent(
    make_harness: Callable[..., Harness], fast_project: Path
) -> None:
    """A profile written around the API's validation (ingest.put_profile) with the time zone
    "America": a directory of the tz database, on which ZoneInfo raises IsADirectoryError
    (not the ZoneInfoNotFoundError the policy code falls back on). The quiet-hours check of
    that one message must not keep every other message of the batch from going out."""
    h = make_harness(only_journeys(fast_project, quiet=QUIET.replace("  - id: reminder", "  - id: wait\n    wait: 1s\n  - id: reminder")))
    h.clock.now = h.now.replace(hour=12)  # quiet hours are not on in UTC
    h.profile("u-bad-tz", email="bad@example.com", timezone="America")
    h.profile("u-ok", email="ok@example.com", timezone="Europe/Lisbon")
    h.track("u-bad-tz", "lesson_completed", LESSON)
    h.track("u-ok", "lesson_completed", LESSON)
    h.tick(seconds=1)  # both timers in one batch, their messages in one send batch
    assert "ok@example.com" in [line["to"] for line in h.lines()]
    bad = h.one(outbox, user_id="u-bad-tz")
    assert bad["status"] in ("failed", "sent"), bad  # parked with its error (or sent: UTC fallback)
    if bad["status"] == "failed":
        assert "Error" in bad["detail"]
    for _ in range(3):
        h.tick(seconds=h.settings.lease + 1)
    assert h.one(outbox, user_id="u-ok")["status"] == "sent" and len(h.lines()) in (1, 2)


def test_unsubscribed_in_profile_attributes_is_honoured_as_the_dry_run_reads_it(h: Harness) -> None:
    """``unsubscribed`` may list channels or say ``all``; a single channel may be given as a
    string, as the dry-run's policies accept it (``policies.unusable_because``)."""
    both = {"email": "x@example.com", "push_tokens": ["tok"]}
    h.profile("u-str-push", attributes={"unsubscribed": "push"}, **both)
    h.profile("u-str-all", attributes={"unsubscribed": "all"}, **both)
    h.profile("u-list", attributes={"unsubscribed": ["push", "email"]}, **both)
    h.profile("u-odd", attributes={"unsubscribed": 5}, **both)  # junk: ignored, not a crash
    h.profile("u-none", **both)
    users = ["u-str-push", "u-str-all", "u-list", "u-odd", "u-none"]
    h.store(*[(u, "lesson_completed", LESSON) for u in users])
    assert h.runtime.process_users(users).applied == 5
    h.tick(seconds=3)
    got = {r["user_id"]: (r["status"], r["channel"] if r["status"] == "sent" else r["reason"]) for r in h.rows(outbox)}
    assert got == {
        "u-str-push": ("sent", "email"),
        "u-str-all": ("skipped", "unsubscribed"),
        "u-list": ("skipped", "unsubscribed"),
        "u-odd": ("sent", "push"),
        "u-none": ("sent", "push"),
    }
