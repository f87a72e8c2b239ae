"""Fixtures for the provider tests: the fake provider servers (one per test), and the runtime
fixtures of tests/runtime (real stores, the fast project, the manual clock, the harness)."""

from __future__ import annotations

from typing import Iterator

import pytest

from runtime.conftest import clock, db_url, fast_project, pg_url, sqlite_url  # noqa: F401
from runtime.harness import make_harness, make_sqlite_harness  # noqa: F401

from .fakes import Blackhole, FcmFake, SendGridFake, TwilioFake


@pytest.fixture
def sendgrid() -> Iterator[SendGridFake]:
    fake = SendGridFake()
    yield fake
    fake.close()


@pytest.fixture
def twilio() -> Iterator[TwilioFake]:
    fake = TwilioFake()
    yield fake
    fake.close()


@pytest.fixture
def fcm() -> Iterator[FcmFake]:
    fake = FcmFake()
    yield fake
    fake.close()


@pytest.fixture
def blackhole() -> Iterator[Blackhole]:
    hole = Blackhole()
    yield hole
    hole.close()
