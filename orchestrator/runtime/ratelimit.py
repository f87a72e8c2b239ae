"""Provider rate limits shared by every worker: a token bucket per channel in Redis. Shell.

``JOURNEY_RATE_LIMITS=sms=1/s,email=100/s`` gives each channel a rate (tokens per second, from
``N/s``, ``N/m`` or ``N/h``) and a burst of one second's worth (at least 1). Twilio allows one
message a second per long code: ``sms=1/s``. The bucket lives in Redis and is updated by one
Lua script, so all workers on all machines share it exactly.

:meth:`RateLimiter.take` answers how long to wait before a token is free (0: go now; the token
is taken). The sender waits briefly (up to ``max_wait``) or puts the message back in the outbox
for later, without calling the provider.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

_PER = {"s": 1.0, "m": 60.0, "h": 3600.0}

# KEYS[1] bucket; ARGV: rate (tokens/s), burst, now (s). Returns wait in ms (0 = token taken).
_SCRIPT = """
local rate = tonumber(ARGV[1]); local burst = tonumber(ARGV[2]); local now = tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1]) or burst; local at = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = math.ceil((1 - tokens) / rate * 1000) end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return wait
"""


def parse_limits(spec: str) -> dict[str, float]:
    """``"sms=1/s,email=100/s"`` -> ``{"sms": 1.0, "email": 100.0}`` (tokens per second)."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        channel, sep, rate = part.partition("=")
        count, slash, unit = rate.partition("/")
        try:
            if not sep or not slash or unit not in _PER or float(count) <= 0:
                raise ValueError
            out[channel.strip()] = float(count) / _PER[unit]
        except ValueError:
            raise ValueError(f"JOURNEY_RATE_LIMITS: '{part}' should look like sms=1/s (per s, m or h)") from None
    return out


@dataclass
class RateLimiter:
    redis: Any  # a redis.Redis client
    limits: dict[str, float]
    prefix: str = "journey:rate:"

    @classmethod
    def from_settings(cls, redis_url: str, spec: str) -> "RateLimiter | None":
        limits = parse_limits(spec)
        if not limits:
            return None
        import redis

        return cls(redis.Redis.from_url(redis_url), limits)

    def take(self, channel: str, now: float | None = None) -> float:
        rate = self.limits.get(channel)
        if rate is None:
            return 0.0
        burst = max(1.0, rate)
        at = time.time() if now is None else now
        wait_ms = self.redis.eval(_SCRIPT, 1, self.prefix + channel, rate, burst, at)
        return float(wait_ms) / 1000.0
