"""The shared provider rate limit: a token bucket in the real Redis."""

from __future__ import annotations

import uuid

import pytest
import redis

from orchestrator.runtime.ratelimit import RateLimiter, parse_limits
from tests.runtime.conftest import REDIS_URL


@pytest.fixture
def limiter() -> RateLimiter:
    client = redis.Redis.from_url(REDIS_URL)
    return RateLimiter(client, {"sms": 1.0, "email": 10.0}, prefix=f"test:{uuid.uuid4().hex}:")


def test_parse_limits() -> None:
    assert parse_limits("sms=1/s, email=600/m,push=3600/h") == {"sms": 1.0, "email": 10.0, "push": 1.0}
    assert parse_limits("") == {}
    for bad in ("sms", "sms=1", "sms=x/s", "sms=1/d", "sms=0/s"):
        with pytest.raises(ValueError, match="should look like sms=1/s"):
            parse_limits(bad)


def test_one_sms_a_second_shared_by_every_caller(limiter: RateLimiter) -> None:
    other_worker = RateLimiter(limiter.redis, limiter.limits, prefix=limiter.prefix)
    t = 1_000_000.0
    assert limiter.take("sms", t) == 0.0
    assert other_worker.take("sms", t) == pytest.approx(1.0)  # the same bucket
    assert other_worker.take("sms", t + 0.25) == pytest.approx(0.75)
    assert limiter.take("sms", t + 1.0) == 0.0
    assert limiter.take("sms", t + 1.0) == pytest.approx(1.0)


def test_burst_is_one_seconds_worth_and_unlimited_channels_pass(limiter: RateLimiter) -> None:
    t = 2_000_000.0
    assert [limiter.take("email", t) for _ in range(10)] == [0.0] * 10
    assert limiter.take("email", t) == pytest.approx(0.1)
    assert all(limiter.take("push", t) == 0.0 for _ in range(100))  # no limit configured


def test_a_batch_stops_sleeping_for_tokens_once_its_budget_is_spent(limiter: RateLimiter) -> None:
    """A rate-limited batch must not outlive its claim: past the budget, messages go back to
    the outbox instead of the worker sleeping."""
    from orchestrator.runtime.sending import _throttle

    budget = [1.5]
    assert _throttle(limiter, "sms", budget) == 0.0  # a token at once
    assert _throttle(limiter, "sms", budget) == 0.0  # waited about a second for the next
    assert budget[0] < 0.6
    assert _throttle(limiter, "sms", budget) > 0.0  # the next wait exceeds what is left: defer
