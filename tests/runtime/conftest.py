"""Fixtures for the runtime tests: real PostgreSQL databases (a fresh one per test session,
dropped at the end), SQLite files, Redis, and a project whose journeys wait seconds, not hours.

The services must be up (``.ci/run`` starts them); a test that cannot reach one fails, it does
not skip.
"""

from __future__ import annotations

import os
import shutil
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import psycopg
import pytest

from orchestrator.store.database import upgrade

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN = os.environ.get("JOURNEY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("JOURNEY_TEST_REDIS", "redis://127.0.0.1:6379/0")


def _pg_url(name: str) -> str:
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{name}"


def create_pg_database() -> tuple[str, str]:
    name = f"journey_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _pg_url(name)
    upgrade(url)
    return name, url


def drop_pg_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for one test."""
    name, url = create_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(name)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'journey.db'}"
    upgrade(url)
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Both stores: the same behaviour is required of each."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'journey.db'}"
        upgrade(url)
        yield url
    else:
        name, url = create_pg_database()
        try:
            yield url
        finally:
            drop_pg_database(name)


FAST_JOURNEYS = {
    # Cart abandonment with seconds instead of hours, no quiet hours (tests run at any hour).
    "cart_abandonment": """
trigger:
  event: cart_updated
  when: "event['items'] | length > 0"
re_entry: restart
goals: [order_completed]
conversion_window: 30s
steps:
  - id: wait_a_bit
    wait: 2s
  - id: nudge
    send: {channel: preferred, fallback: [push, email, sms], template: cart_nudge}
  - id: wait_for_order
    wait_for: {event: order_completed, timeout: 3s, on_event: end, on_timeout: offer}
  - id: offer
    send: {channel: email, template: cart_discount}
""",
    "lesson_reminder": """
trigger: {event: lesson_completed}
re_entry: restart
steps:
  - id: wait_after_lesson
    wait: 3s
  - id: reminder
    send: {channel: preferred, fallback: [push, email], template: streak_reminder}
""",
}


@pytest.fixture
def fast_project(tmp_path: Path) -> Path:
    """A project folder with the shipped catalog and templates and FAST_JOURNEYS."""
    root = tmp_path / "project"
    (root / "journeys").mkdir(parents=True)
    shutil.copy(ROOT / "catalog.yaml", root / "catalog.yaml")
    shutil.copytree(ROOT / "templates", root / "templates")
    for name, text in FAST_JOURNEYS.items():
        (root / "journeys" / f"{name}.yaml").write_text(text.lstrip(), encoding="utf-8")
    return root


class ManualClock:
    """An injected clock for in-process runtime tests."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 3, 2, 15, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> datetime:
        self.now += timedelta(**kwargs)
        return self.now


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


CART = {
    "cart_id": "c-1",
    "items": [{"sku": "sku-1", "name": "Trail shoe", "price": 89.0, "quantity": 1,
               "image_url": "https://shop.example.com/i/1.png"}],
    "total": 89.0,
    "currency": "USD",
}
LESSON = {"course": "Spanish", "lesson": "Ordering food", "lesson_number": 12, "streak": 5}
