"""Configuration from environment variables. Shell. Documented in docs/operations.md.

=======================  ================================================================
``DATABASE_URL``         SQLAlchemy URL; default ``sqlite:///journey.db`` (local use only).
                         ``postgresql://...`` is rewritten to use the psycopg 3 driver.
``BROKER_URL``           Celery broker; default ``redis://127.0.0.1:6379/0``.
``JOURNEY_API_KEYS``     comma-separated keys accepted by the ingest API for writes.
``JOURNEY_PROJECT``      folder holding journeys/, templates/ and catalog.yaml.
``JOURNEY_CHANNELS``     which adapter sends each channel, e.g. ``email=file,sms=file,push=file``
                         (default: every channel to ``console``).
``JOURNEY_QUEUE``        Celery queue name; default ``journey``.
``JOURNEY_LEASE``        seconds before work claimed by a dead process is handed out again
                         (default 60).
``JOURNEY_TICK``         seconds between timer pump ticks (default 1).
``JOURNEY_BATCH``        users / timers / messages per task (default 200).
``JOURNEY_LINKS_BASE``   public base URL of the API (unsubscribe links, provider callbacks).
``JOURNEY_SECRET_KEY``   signs unsubscribe links (required by the web process).
``SENDGRID_WEBHOOK_PUBLIC_KEY``  verifies the SendGrid Event Webhook (base64 DER, as shown by
                         SendGrid); without it the endpoint refuses every request.
``TWILIO_AUTH_TOKEN``    verifies Twilio callbacks (and authenticates the Twilio channel).
``JOURNEY_RATE_LIMITS``  provider rate limits shared by all workers, e.g. ``sms=1/s,email=100/s``.
``REDIS_URL``            Redis for the rate limits; default the broker when it is Redis.
``JOURNEY_METRICS_TOKEN``  when set, ``GET /metrics`` needs ``Authorization: Bearer <token>``.
``JOURNEY_LOG_FORMAT``   ``json`` (one object per line) or ``text``; default ``json`` for the
                         web, worker and scheduler processes, ``text`` for ``journey serve``.
``JOURNEY_LOG_LEVEL``    ``DEBUG``, ``INFO`` (default), ``WARNING``...
``PROMETHEUS_MULTIPROC_DIR``  read by prometheus_client itself (see ``metrics``): the folder
                         where the processes of a machine keep the metrics ``/metrics`` sums.
=======================  ================================================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


def _normalize_db_url(url: str) -> str:
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def _channels(spec: str) -> dict[str, str]:
    out = {"email": "console", "sms": "console", "push": "console"}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, adapter = part.partition("=")
        if not sep or not name.strip() or not adapter.strip():
            raise ValueError(
                f"JOURNEY_CHANNELS: '{part}' should look like channel=adapter, e.g. email=file"
            )
        out[name.strip()] = adapter.strip()
    return out


def _log_format(value: str) -> str:
    value = value.strip().lower()
    if value not in ("", "json", "text"):
        raise ValueError(f"JOURNEY_LOG_FORMAT: '{value}' should be json or text")
    return value


def _log_level(value: str) -> str:
    value = value.strip().upper()
    if value not in ("", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError(f"JOURNEY_LOG_LEVEL: '{value}' should be DEBUG, INFO, WARNING or ERROR")
    return value


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite:///journey.db"
    broker_url: str = "redis://127.0.0.1:6379/0"
    api_keys: frozenset[str] = frozenset()
    project: str | None = None
    channels: dict[str, str] = field(default_factory=lambda: _channels(""))
    queue: str = "journey"
    lease: float = 60.0
    tick: float = 1.0
    batch: int = 200
    links_base: str = "http://127.0.0.1:8000"
    max_attempts: int = 5
    secret_key: str = ""
    sendgrid_webhook_key: str = ""
    twilio_auth_token: str = ""
    rate_limits: str = ""
    redis_url: str = "redis://127.0.0.1:6379/0"
    sms_help_text: str = "Reply STOP to unsubscribe, START to subscribe again."
    metrics_token: str = ""
    log_format: str = ""  # json | text; empty: the process's own default
    log_level: str = ""  # empty: INFO (or the level the worker was started with)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        e = dict(os.environ if env is None else env)
        return cls(
            database_url=_normalize_db_url(e.get("DATABASE_URL", cls.database_url)),
            broker_url=e.get("BROKER_URL", cls.broker_url),
            api_keys=frozenset(k.strip() for k in e.get("JOURNEY_API_KEYS", "").split(",") if k.strip()),
            project=e.get("JOURNEY_PROJECT") or None,
            channels=_channels(e.get("JOURNEY_CHANNELS", "")),
            queue=e.get("JOURNEY_QUEUE", cls.queue),
            lease=float(e.get("JOURNEY_LEASE", cls.lease)),
            tick=float(e.get("JOURNEY_TICK", cls.tick)),
            batch=int(e.get("JOURNEY_BATCH", cls.batch)),
            links_base=e.get("JOURNEY_LINKS_BASE", cls.links_base).rstrip("/"),
            max_attempts=int(e.get("JOURNEY_MAX_ATTEMPTS", cls.max_attempts)),
            secret_key=e.get("JOURNEY_SECRET_KEY", ""),
            sendgrid_webhook_key=e.get("SENDGRID_WEBHOOK_PUBLIC_KEY", ""),
            twilio_auth_token=e.get("TWILIO_AUTH_TOKEN", ""),
            rate_limits=e.get("JOURNEY_RATE_LIMITS", ""),
            redis_url=e.get("REDIS_URL") or (
                e["BROKER_URL"] if e.get("BROKER_URL", "").startswith("redis") else cls.redis_url),
            sms_help_text=e.get("JOURNEY_SMS_HELP_TEXT", cls.sms_help_text),
            metrics_token=e.get("JOURNEY_METRICS_TOKEN", "").strip(),
            log_format=_log_format(e.get("JOURNEY_LOG_FORMAT", "")),
            log_level=_log_level(e.get("JOURNEY_LOG_LEVEL", "")),
        )
