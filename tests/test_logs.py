"""Structured logs without personal data (``orchestrator.logs``): a real runtime (the Harness,
SQLite) sends to a user with an email address and a phone number while the root logger writes
JSON lines into a StringIO; every line must parse, the lines about each delivery carry its run
id and delivery key, and neither the address nor the number appears anywhere. The redaction
filter and the formatters are also tested on their own."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from runtime.conftest import CART, LESSON, clock, fast_project, sqlite_url  # noqa: F401
from runtime.harness import Harness, ScriptedChannel, make_sqlite_harness  # noqa: F401

from channels.base import Rejected, Retryable
from channels.file import FileChannel
from orchestrator.logs import Json, Redact, Text, configure_from, configure_logging, keep, redact
from orchestrator.runtime.sending import ChannelRouter
from orchestrator.store.schema import deliveries, runs

EMAIL = "ana.lima+promo@example.com"
PHONE = "+14155550123"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging replaces the root logger's handlers: put everything back afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    foreign = {n: (list(logging.getLogger(n).handlers), logging.getLogger(n).propagate,
                   logging.getLogger(n).level, logging.getLogger(n).disabled)
               for n in ("uvicorn", "uvicorn.error", "uvicorn.access")}
    quiet = logging.getLogger("apscheduler").level
    try:
        yield
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for name, (handlers, propagate, level, disabled) in foreign.items():
            logger = logging.getLogger(name)
            logger.handlers[:] = handlers
            logger.propagate, logger.disabled = propagate, disabled
            logger.setLevel(level)
        logging.getLogger("apscheduler").setLevel(quiet)


def record(msg: str, *args: Any, exc: bool = False, **extra: Any) -> logging.LogRecord:
    r = logging.LogRecord("t", logging.INFO, __file__, 1, msg, args or None, None)
    if exc:
        try:
            raise ValueError(f"no such mailbox {EMAIL}")
        except ValueError:
            import sys
            r.exc_info = sys.exc_info()
    for k, v in extra.items():
        setattr(r, k, v)
    return r


# -- a real send ----------------------------------------------------------------------------

def test_json_lines_of_real_sends_carry_ids_and_no_contact_points(
        make_sqlite_harness: Callable[..., Harness], tmp_path: Path, restore_logging: None) -> None:
    sink = tmp_path / "sink.jsonl"
    # The email provider first says "later" quoting the address, as providers do.
    email = ScriptedChannel(sink, [Retryable(f"421 4.7.0 <{EMAIL}>: try again later", after=5)])
    router = ChannelRouter({}, instances={"email": email, "sms": FileChannel(sink), "push": FileChannel(sink)})
    h = make_sqlite_harness(router=router)
    buf = io.StringIO()
    configure_logging(json=True, level=logging.DEBUG, stream=buf)

    h.profile("u-ana", email=EMAIL, phone=PHONE, attributes={"first_name": "Ana", "preferred_channel": "sms"},
              consent={"sms": "opted_in"})
    h.track("u-ana", "cart_updated", CART)
    h.track("u-ana", "lesson_completed", LESSON)
    h.tick(seconds=2)  # the cart nudge, by SMS to the phone number
    h.tick(seconds=1)  # the lesson reminder by email: the provider says "later"
    h.tick(seconds=6)  # the retry goes out, and the discount offer
    for handler in logging.getLogger().handlers:
        handler.flush()

    sent = h.lines()
    assert {(m["channel"], m["to"]) for m in sent} == {("sms", PHONE), ("email", EMAIL)}  # really sent
    out = buf.getvalue()
    assert EMAIL not in out and PHONE not in out and PHONE[2:] not in out and "ana.lima" not in out
    records = [json.loads(line) for line in out.splitlines()]  # every line is one JSON object
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)

    about = [r for r in records if r["logger"] == "orchestrator.runtime.sending" and "delivery_key" in r]
    ledger = {d["key"]: d for d in h.rows(deliveries)}
    run_ids = {r["run_id"] for r in h.rows(runs)}
    assert {r["delivery_key"] for r in about} == set(ledger)
    for r in about:
        assert r["run_id"] in run_ids and r["delivery_key"].startswith(r["run_id"] + ":")
        assert r["delivery_id"] == ledger[r["delivery_key"]]["id"]
        assert r["channel"] == ledger[r["delivery_key"]]["channel"]
        assert r["journey"] in ("cart_abandonment", "lesson_reminder")
    outcomes = sorted((r["channel"], r["status"]) for r in about)
    assert outcomes == [("email", "retry"), ("email", "sent"), ("email", "sent"), ("sms", "sent")]
    retry = next(r for r in about if r["status"] == "retry")
    assert retry["level"] == "INFO" and "[email]" in retry["message"] and retry["retry_after"] == 5


def test_a_rejected_address_is_logged_without_it(make_sqlite_harness: Callable[..., Harness], tmp_path: Path,
                                                   restore_logging: None) -> None:
    sink = tmp_path / "sink.jsonl"
    email = ScriptedChannel(sink, [Rejected(f"550 5.1.1 {EMAIL}: mailbox unavailable (call {PHONE})")])
    h = make_sqlite_harness(router=ChannelRouter({}, instances={"email": email}))
    buf = io.StringIO()
    configure_logging(json=True, level=logging.INFO, stream=buf)
    h.profile("u-ana", email=EMAIL, phone=PHONE)
    h.track("u-ana", "lesson_completed", LESSON)
    h.tick(seconds=3)
    [rejected] = [json.loads(line) for line in buf.getvalue().splitlines()
                  if json.loads(line).get("status") == "rejected"]
    assert rejected["channel"] == "email" and rejected["run_id"] and rejected["delivery_key"]
    assert "[email]" in rejected["message"] and "[phone]" in rejected["message"]
    assert EMAIL not in buf.getvalue() and PHONE not in buf.getvalue()
    assert {json.loads(line)["level"] for line in buf.getvalue().splitlines()} <= {"INFO", "WARNING", "ERROR"}


# -- the filter and the formatters ----------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    (f"to {EMAIL}.", "to [email]."),
    ("a@b.co and x_y@mail.example.org", "[email] and [email]"),
    (f"call {PHONE} now", "call [phone] now"),
    ("call +44 20 7946 0958 or +1 (415) 555-0123", "call [phone] or [phone]"),
    ("national 07700900123 or 4155550123", "national [phone] or [phone]"),
    ("tel:+33612345678", "tel:[phone]"),
    (f"GET /v1/profiles/{EMAIL}?email={EMAIL}&x=1", "GET /v1/profiles/[email]?email=[email]&x=1"),
    # what uvicorn's access log really writes: the path percent-encoded
    ('"PUT /v1/profiles/ana%40example.com HTTP/1.1" 200', '"PUT /v1/profiles/[email] HTTP/1.1" 200'),
    ('"GET /v1/profiles/%2B14155550123 HTTP/1.1"', '"GET /v1/profiles/[phone] HTTP/1.1"'),
    # unsubscribe tokens carry the user id
    ('"GET /v1/unsubscribe/WyJhbmFAZXguY29tIiwiZW1haWwiXQ.c2ln HTTP/1.1"', '"GET /v1/unsubscribe/[token] HTTP/1.1"'),
])
def test_redact_replaces_addresses_and_numbers(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize("text", [
    "run 3f2a9c0d1e4b4f6a8b7c6d5e4f3a2b1c: delivery 3f2a9c0d:reminder:0:email",
    "2026-03-02T15:00:00+00:00 took 0.123456789s, 1234.5678901234",
    "task 5335d362-0bb3-4590-ab34-123456789012 timer 123456789 outbox 42",
    "worker@vm ready.", "redis://:**@127.0.0.1:6379/0", "https://shop.example.com/cart/c-1",
])
def test_redact_leaves_ids_times_and_urls_alone(text: str) -> None:
    assert redact(text) == text


def test_the_filter_redacts_the_message_with_its_arguments_and_every_extra_value() -> None:
    r = record("send to %s (%s)", EMAIL, PHONE, run_id="r-1", delivery_key="r-1:s:0:email", count=14155550123,
               to=[EMAIL, {"phone": PHONE, "nested": (EMAIL,)}], profile={"email": EMAIL, "name": "Ana"},
               obj=ValueError(f"bounce from {EMAIL}"))
    assert Redact().filter(r) is True
    assert r.getMessage() == "send to [email] ([phone])"
    assert (r.run_id, r.delivery_key) == ("r-1", "r-1:s:0:email")  # type: ignore[attr-defined]
    assert r.to == ["[email]", {"phone": "[phone]", "nested": ["[email]"]}]  # type: ignore[attr-defined]
    assert r.profile == {"email": "[email]", "name": "Ana"}  # type: ignore[attr-defined]
    assert r.obj == "bounce from [email]"  # type: ignore[attr-defined]
    assert r.count == 14155550123  # type: ignore[attr-defined]  # numbers are ids, kept


def test_a_kept_node_name_is_not_redacted() -> None:
    name = "worker-1@host.example.com"
    assert redact(f"{name} ready.") == "[email] ready."
    keep(name)
    assert redact(f"{name} ready. mail {EMAIL}") == f"{name} ready. mail [email]"


def test_json_and_text_formatters_redact_tracebacks_and_show_extras() -> None:
    r = record("failed for %s", EMAIL, exc=True, run_id="r-9")
    Redact().filter(r)
    line = Json().format(r)
    data = json.loads(line)
    assert data["message"] == "failed for [email]" and data["run_id"] == "r-9"
    assert data["level"] == "INFO" and data["logger"] == "t" and data["time"].endswith("+00:00")
    assert "ValueError: no such mailbox [email]" in data["exc_info"] and EMAIL not in line

    r = record("failed for %s", EMAIL, exc=True, run_id="r-9", color_message="\x1b[36m")
    Redact().filter(r)
    text = Text().format(r)
    assert text.splitlines()[0].endswith("INFO t: failed for [email]  run_id=r-9")
    assert "no such mailbox [email]" in text and EMAIL not in text and "color_message" not in text


def test_configure_logging_routes_every_logger_through_one_redacting_handler(restore_logging: None) -> None:
    access = logging.getLogger("uvicorn.access")
    access.setLevel(logging.WARNING)  # as uvicorn --log-level warning leaves it
    access.addHandler(logging.StreamHandler(io.StringIO()))
    access.propagate = False
    buf = io.StringIO()
    configure_logging(json=True, level="INFO", stream=buf)
    logging.getLogger("uvicorn.access").info('%s - "GET /v1/profiles/%s HTTP/1.1" 200', "127.0.0.1:1", EMAIL)
    logging.getLogger("orchestrator.x").debug("not at INFO")
    logging.getLogger("apscheduler.scheduler").info("tick noise")
    [line] = buf.getvalue().splitlines()
    assert json.loads(line)["message"] == '127.0.0.1:1 - "GET /v1/profiles/[email] HTTP/1.1" 200'

    buf = io.StringIO()
    configure_logging(json=False, level=logging.DEBUG, stream=buf)  # replaces the JSON handler
    logging.getLogger("orchestrator.x").debug("now at DEBUG %s", PHONE)
    assert len(logging.getLogger().handlers) == 1
    assert buf.getvalue().rstrip().endswith("DEBUG orchestrator.x: now at DEBUG [phone]")


def test_the_format_comes_from_the_environment_with_a_default_per_process(restore_logging: None) -> None:
    from orchestrator.runtime.config import Settings

    assert isinstance(configure_from("", "", default_format="json").formatter, Json)
    assert isinstance(configure_from("", "", default_format="text").formatter, Text)
    assert isinstance(configure_from("text", "", default_format="json").formatter, Text)
    configure_from("", "WARNING")
    assert logging.getLogger().level == logging.WARNING
    s = Settings.from_env({"JOURNEY_LOG_FORMAT": "TEXT", "JOURNEY_LOG_LEVEL": "debug"})
    assert (s.log_format, s.log_level) == ("text", "DEBUG")
    with pytest.raises(ValueError, match="JOURNEY_LOG_FORMAT"):
        Settings.from_env({"JOURNEY_LOG_FORMAT": "xml"})
    with pytest.raises(ValueError, match="JOURNEY_LOG_LEVEL"):
        Settings.from_env({"JOURNEY_LOG_LEVEL": "loud"})


def test_the_celery_worker_logs_through_our_handler(restore_logging: None) -> None:
    from celery.signals import setup_logging

    from orchestrator.runtime import celery_app

    assert celery_app.app.conf.worker_hijack_root_logger is False
    setup_logging.send(sender=None, loglevel=logging.INFO, logfile=None, format="", colorize=False)
    [handler] = logging.getLogger().handlers
    assert isinstance(handler.formatter, Json if celery_app.settings.log_format != "text" else Text)
    assert any(isinstance(f, Redact) for f in handler.filters)
