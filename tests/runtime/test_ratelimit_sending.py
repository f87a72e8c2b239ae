"""The shared provider rate limit in the send path (``JOURNEY_RATE_LIMITS``): every worker takes
its tokens from one bucket per channel in the real Redis. A message that would wait longer than
a worker is willing to (``sending.MAX_THROTTLE_WAIT``) goes back to the outbox for later
without reaching the provider: not an attempt, and its ledger row stays retryable (never
"unknown"). A short wait is waited out in the worker, inside the same batch.

Two "workers" are two :class:`Runtime` instances on one store, each with its own database engine,
Redis connection and channel router, sharing only the database and the Redis bucket (a unique
key prefix per test). The provider is a channel of our own protocol that records each call.
"""

from __future__ import annotations

import threading
import time
import types
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import redis

from channels.base import Delivery, OutboundMessage
from orchestrator.runtime import sending
from orchestrator.runtime.context import Runtime
from orchestrator.runtime.ratelimit import RateLimiter
from orchestrator.runtime.sending import ChannelRouter
from orchestrator.store.schema import deliveries, outbox, timers

from .conftest import REDIS_URL, ManualClock
from .harness import Harness, make_harness, only_journeys  # noqa: F401

TEXT = """
trigger: {event: app_installed}
re_entry: restart
steps:
  - id: settle
    wait: 10s
  - id: text
    send: {channel: sms, template: first_order_offer}
"""
INSTALL = {"platform": "ios", "app_version": "4.2.0"}


@dataclass
class Provider:
    """Records every provider call (thread-safe); always accepts."""

    name: str = "sms"
    calls: list[tuple[float, OutboundMessage]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, message: OutboundMessage) -> Delivery:
        with self.lock:
            self.calls.append((time.monotonic(), message))
            n = len(self.calls)
        return Delivery(message.delivery_id, provider_id=f"SM{n:04d}")

    def users(self) -> list[str]:
        return [m.metadata["user_id"] for _, m in self.calls]


@dataclass
class ClockedLimiter(RateLimiter):
    """The real limiter (the same Lua script on the real Redis), reading the test's manual clock
    instead of the wall clock, so a bucket refills exactly when the test moves time on."""

    clock: Callable[[], datetime] | None = None

    def take(self, channel: str, now: float | None = None) -> float:
        assert self.clock is not None
        return super().take(channel, self.clock().timestamp() if now is None else now)


@pytest.fixture
def prefix() -> Iterator[str]:
    p = f"test:sendlimit:{uuid.uuid4().hex}:"
    yield p
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{p}*"))
    if keys:
        client.delete(*keys)
    client.close()


def two_workers(make_harness: Callable[..., Harness], fast_project: Path, provider: Provider,
                limiter: Callable[[], RateLimiter]) -> tuple[Harness, Runtime]:
    """Worker A is the harness's runtime (its pump dispatches inline to A); worker B a second
    Runtime on the same store. Each gets its own limiter instance (own Redis connection)."""
    only_journeys(fast_project, texting=TEXT)
    router = ChannelRouter({}, instances={"sms": provider})
    h = make_harness(router=router)
    other = Runtime.create(h.settings, clock=h.clock, router=ChannelRouter({}, instances={"sms": provider}))
    h.runtime.limiter = limiter()  # type: ignore[misc]  # (a cached_property: set per instance)
    other.limiter = limiter()  # type: ignore[misc]
    return h, other


PHONES = {"ana": "+14155550101", "ben": "+14155550102", "cy": "+14155550103"}


def opted_in(h: Harness, *user_ids: str) -> None:
    for uid in user_ids:
        h.profile(uid, phone=PHONES[uid], consent={"sms": "opted_in"}, attributes={"first_name": uid.title()})


def concurrently(*jobs: Callable[[], Any]) -> list[Any]:
    """Run the jobs in threads released together; re-raise the first error."""
    start = threading.Barrier(len(jobs))
    results: list[Any] = [None] * len(jobs)
    errors: list[BaseException] = []

    def run(i: int, job: Callable[[], Any]) -> None:
        start.wait()
        try:
            results[i] = job()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, j)) for i, j in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if errors:
        raise errors[0]
    return results


def by_user(h: Harness) -> dict[str, dict[str, Any]]:
    return {r["user_id"]: r for r in h.rows(outbox)}


def test_one_sms_per_10s_across_two_workers_the_rest_go_back_to_the_outbox(
    make_harness: Callable[..., Harness], fast_project: Path, prefix: str, clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider = Provider()
    h, other = two_workers(make_harness, fast_project, provider,
                           lambda: ClockedLimiter(redis.Redis.from_url(REDIS_URL), {"sms": 0.1}, prefix, clock))
    # A 10 s wait is over the worker's limit: it must never sleep on it.
    slept: list[float] = []
    monkeypatch.setattr(sending, "time", types.SimpleNamespace(sleep=slept.append))
    try:
        opted_in(h, "ana", "ben", "cy")
        for uid in ("ana", "ben", "cy"):
            h.track(uid, "app_installed", INSTALL)
        h.clock.advance(seconds=10)
        t0 = h.now
        due = {t["user_id"]: t["id"] for t in h.rows(timers, status="pending")}
        assert sorted(due) == ["ana", "ben", "cy"]
        # Three SMS due at once: worker A fires two users' timers, worker B the third's.
        concurrently(lambda: h.runtime.fire_timers([due["ana"], due["ben"]]),
                     lambda: other.fire_timers([due["cy"]]))

        assert len(provider.calls) == 1  # exactly one reached the provider
        first = provider.users()[0]
        rows = by_user(h)
        assert rows[first]["status"] == "sent"
        held = sorted(u for u in rows if u != first)
        for uid in held:
            box = rows[uid]
            assert box["status"] == "pending" and box["claimed_at"] is None
            assert box["attempts"] == 0  # our own limit: not a provider attempt
            assert abs((box["due_at"] - (t0 + timedelta(seconds=10))).total_seconds()) < 0.5
            (ledger,) = h.rows(deliveries, outbox_id=box["id"])
            assert ledger["status"] == "retry" and ledger["error"] == "provider rate limit"
        (sent_row,) = h.rows(deliveries, outbox_id=rows[first]["id"])
        assert sent_row["status"] == "sent" and sent_row["provider_id"] == "SM0001"

        h.tick(seconds=5)  # not due yet
        assert len(provider.calls) == 1
        h.tick(seconds=5)  # 10 s on: the bucket has one token again, for one of the two
        assert len(provider.calls) == 2
        second = provider.users()[1]
        assert second in held
        (last,) = [u for u in held if u != second]
        box = by_user(h)[last]
        assert (box["status"], box["attempts"]) == ("pending", 0)
        assert abs((box["due_at"] - (t0 + timedelta(seconds=20))).total_seconds()) < 0.5
        h.tick(seconds=9)
        assert len(provider.calls) == 2
        h.tick(seconds=1)
        assert provider.users() == [first, second, last]

        # Each message went out once, each under its own delivery id, and nothing is left.
        assert len({m.delivery_id for _, m in provider.calls}) == 3
        assert {(r["status"], r["attempts"]) for r in h.rows(outbox)} == {("sent", 0)}
        ledger = h.rows(deliveries)
        assert len(ledger) == 3 and {d["status"] for d in ledger} == {"sent"}
        assert {d["provider_id"] for d in ledger} == {"SM0001", "SM0002", "SM0003"}
        assert slept == []
    finally:
        other.engine.dispose()


def test_one_sms_a_second_the_second_waits_in_the_worker_and_goes_in_the_same_batch(
    make_harness: Callable[..., Harness], fast_project: Path, prefix: str,
) -> None:
    provider = Provider()
    h, other = two_workers(make_harness, fast_project, provider,
                           lambda: RateLimiter(redis.Redis.from_url(REDIS_URL), {"sms": 1.0}, prefix))
    try:
        opted_in(h, "ana", "ben")
        h.store(("ana", "app_installed", INSTALL), ("ben", "app_installed", INSTALL))
        h.runtime.process_users(["ana", "ben"])  # one batch: both runs wait 10 s
        h.clock.advance(seconds=10)
        ids = [t["id"] for t in h.rows(timers, status="pending")]
        assert len(ids) == 2
        began = time.monotonic()
        h.runtime.fire_timers(ids)  # one batch, both SMS due now
        took = time.monotonic() - began

        assert sorted(provider.users()) == ["ana", "ben"]
        gap = provider.calls[1][0] - provider.calls[0][0]
        assert 0.8 <= gap <= 1.6, gap  # the second waited about a second for its token
        assert took < 1.9
        assert {(r["status"], r["attempts"]) for r in h.rows(outbox)} == {("sent", 0)}
        assert {d["status"] for d in h.rows(deliveries)} == {"sent"}
    finally:
        other.engine.dispose()


def test_one_sms_a_second_shared_by_two_busy_workers(
    make_harness: Callable[..., Harness], fast_project: Path, prefix: str,
) -> None:
    """Three SMS due at once on two workers at 1/s: each waits its turn (at most about a second
    at a time, under the worker's limit), all go out within their batches, a second apart."""
    provider = Provider()
    h, other = two_workers(make_harness, fast_project, provider,
                           lambda: RateLimiter(redis.Redis.from_url(REDIS_URL), {"sms": 1.0}, prefix))
    try:
        opted_in(h, "ana", "ben", "cy")
        h.store(*((u, "app_installed", INSTALL) for u in ("ana", "ben", "cy")))
        h.runtime.process_users(["ana", "ben", "cy"])
        h.clock.advance(seconds=10)
        due = {t["user_id"]: t["id"] for t in h.rows(timers, status="pending")}
        concurrently(lambda: h.runtime.fire_timers([due["ana"], due["ben"]]),
                     lambda: other.fire_timers([due["cy"]]))

        assert sorted(provider.users()) == ["ana", "ben", "cy"]
        at = [t for t, _ in provider.calls]
        assert all(0.8 <= b - a <= 1.6 for a, b in zip(at, at[1:])), [b - a for a, b in zip(at, at[1:])]
        assert {(r["status"], r["attempts"]) for r in h.rows(outbox)} == {("sent", 0)}
        assert {d["status"] for d in h.rows(deliveries)} == {"sent"}
    finally:
        other.engine.dispose()
