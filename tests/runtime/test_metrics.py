"""``GET /metrics`` (Prometheus) on the API app of a real runtime: the Harness on both stores
drives journeys (events, timers, sends through the file channel and scripted provider answers)
and the scrape, parsed with prometheus_client's own parser, must agree with the sink file and
the database. Counters are process-wide, so each test compares scrapes before and after.

Multiprocess mode: two processes run the real work with ``PROMETHEUS_MULTIPROC_DIR`` set and a
third serves ``/metrics`` summing both; then the Procfile's web, worker and scheduler do the
same with a real Celery worker.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert

from orchestrator.api import create_app
from orchestrator.store.schema import deliveries, events, timers

from .conftest import CART, LESSON, ROOT
from .harness import (  # noqa: F401
    Harness,
    ScriptedChannel,
    make_harness,
    make_sqlite_harness,
    rejected,
    retry_later,
)
from .procs import Stack, diagnosed, wait_until, write_project

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def scrape(client: Any, **headers: str) -> Samples:
    resp = client.get("/metrics", headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    return parse(resp.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum over the series of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


@pytest.fixture
def api(make_harness: Callable[..., Harness]) -> Iterator[tuple[Harness, TestClient]]:
    h = make_harness()
    with TestClient(create_app(h.runtime, h.dispatcher)) as client:
        yield h, client


# -- counters, histogram and queue gauges through one journey --------------------------------------

def test_metrics_follow_events_timers_and_sends(api: tuple[Harness, TestClient]) -> None:
    h, client = api
    before = scrape(client)
    assert value(before, "journey_database_up") == 1
    users = ("u1", "u2", "u3")
    for u in users:
        h.profile(u, email=f"{u}@example.com")
        h.track(u, "lesson_completed", LESSON)  # enters lesson_reminder: one outcome each
    h.store(("u1", "cart_updated", CART))  # stored, not yet applied

    now = scrape(client)
    assert value(now, "journey_pending_events") == 1
    assert value(now, "journey_waiting_timers") == 3
    assert value(now, "journey_due_timers") == 0
    assert delta(before, now, "journey_steps_applied_total", journey="lesson_reminder") == 3

    h.dispatcher.process_users(["u1"])  # enters cart_abandonment (its 2 s wait)
    h.clock.advance(seconds=4)  # every timer is due; nothing has fired them yet
    now = scrape(client)
    assert value(now, "journey_pending_events") == 0
    assert value(now, "journey_waiting_timers") == 4
    assert value(now, "journey_due_timers") == 4

    h.tick()  # fires the 4 timers: 3 reminders and 1 nudge, all by email (no push token)
    after = scrape(client)
    sunk = h.lines()
    assert len(sunk) == 4 and {m["channel"] for m in sunk} == {"email"}
    assert delta(before, after, "journey_deliveries_total", channel="email", status="sent") == len(sunk)
    assert delta(before, after, "journey_steps_applied_total", journey="lesson_reminder") == 6
    assert delta(before, after, "journey_steps_applied_total", journey="cart_abandonment") == 2
    fired = [t for t in h.rows(timers) if t["status"] == "done"]
    assert len(fired) == 4
    assert delta(before, after, "journey_timer_lateness_seconds_count") == len(fired)
    # Reminders due at +3 s fired at +4 s; the nudge due at +2 s: 3 x 1 s + 2 s late.
    assert delta(before, after, "journey_timer_lateness_seconds_sum") == pytest.approx(5.0)
    assert delta(before, after, "journey_timer_lateness_seconds_bucket", le="1.0") == 3
    assert delta(before, after, "journey_timer_lateness_seconds_bucket", le="2.5") == 4
    assert value(after, "journey_due_timers") == 0
    assert value(after, "journey_waiting_timers") == 1  # the cart's wait for an order
    assert value(after, "journey_parked", kind="events") == 0
    assert total(after, "journey_ledger_deliveries") == 0  # every delivery settled


def test_parked_events_are_a_gauge(api: tuple[Harness, TestClient]) -> None:
    h, client = api
    h.profile("u-bad", email="bad@example.com")
    # Another producer wrote an event whose properties are not an object: applying it raises,
    # and the user's events are parked (see test_work).
    with h.engine.begin() as conn:
        conn.execute(insert(events), {
            "event_id": "poison", "user_id": "u-bad", "name": "lesson_completed", "at": h.now,
            "properties": "not an object", "received_at": h.now, "status": "pending", "attempts": 0,
        })
    assert value(scrape(client), "journey_pending_events") == 1
    assert h.runtime.process_users(["u-bad"]).failed == 1
    now = scrape(client)
    assert value(now, "journey_parked", kind="events") == 1
    assert value(now, "journey_parked", kind="timers") == 0
    assert value(now, "journey_pending_events") == 0


def test_retries_rejections_and_skips_are_counted_and_the_outbox_gauge_sees_due_retries(
        make_harness: Callable[..., Harness], tmp_path: Path) -> None:
    from channels.file import FileChannel
    from orchestrator.runtime.sending import ChannelRouter

    sink = tmp_path / "sink.jsonl"
    channel = ScriptedChannel(sink, [retry_later(after=60), rejected()])
    router = ChannelRouter({}, instances={"email": channel, "sms": FileChannel(sink), "push": FileChannel(sink)})
    h = make_harness(router=router)
    with TestClient(create_app(h.runtime, h.dispatcher)) as client:
        before = scrape(client)
        h.profile("u-retry", email="retry@example.com")
        h.profile("u-dead", email="dead@example.com")
        h.profile("u-out", email="out@example.com", consent={"email": "unsubscribed"})
        for u in ("u-retry", "u-dead", "u-out"):
            h.track(u, "lesson_completed", LESSON)
        h.tick(seconds=3)  # the reminders: retry later, rejected, skipped (unsubscribed)
        now = scrape(client)
        assert delta(before, now, "journey_deliveries_total", channel="email", status="retry") == 1
        assert delta(before, now, "journey_deliveries_total", channel="email", status="rejected") == 1
        assert total(now, "journey_deliveries_total", status="skipped") \
            - total(before, "journey_deliveries_total", status="skipped") == 1
        assert delta(before, now, "journey_deliveries_total", channel="email", status="sent") == 0
        assert value(now, "journey_ledger_deliveries", channel="email", status="retry") == 1
        assert value(now, "journey_outbox_pending") == 0  # the retry is due in 60 s

        h.clock.advance(seconds=61)
        assert value(scrape(client), "journey_outbox_pending") == 1
        h.tick()  # the retry goes out this time
        after = scrape(client)
        assert len(h.lines()) == 1
        assert delta(before, after, "journey_deliveries_total", channel="email", status="sent") == 1
        assert value(after, "journey_outbox_pending") == 0
        assert value(after, "journey_ledger_deliveries", channel="email", status="retry") == 0
        assert [r["status"] for r in h.rows(deliveries)] == ["sent", "rejected"]


# -- webhook refusals -----------------------------------------------------------------------------

def _public_b64(key: ec.EllipticCurvePrivateKey) -> str:
    return base64.b64encode(key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()


def _signed(key: ec.EllipticCurvePrivateKey, body: bytes, stamp: int) -> dict[str, str]:
    sig = base64.b64encode(key.sign(str(stamp).encode() + body, ec.ECDSA(hashes.SHA256()))).decode()
    return {"X-Twilio-Email-Event-Webhook-Signature": sig,
            "X-Twilio-Email-Event-Webhook-Timestamp": str(stamp), "content-type": "application/json"}


def test_refused_webhooks_are_counted_by_provider_and_reason(make_sqlite_harness: Callable[..., Harness]) -> None:
    ours, forger = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    h = make_sqlite_harness(sendgrid_webhook_key=_public_b64(ours))
    body = json.dumps([{"event": "delivered", "sg_event_id": "e1", "timestamp": int(time.time())}]).encode()
    with TestClient(create_app(h.runtime, h.dispatcher)) as client:
        before = scrape(client)

        def post(content: bytes, headers: Mapping[str, str], status: int) -> None:
            resp = client.post("/v1/webhooks/sendgrid", content=content, headers=dict(headers))
            assert resp.status_code == status, resp.text

        post(body, _signed(forger, body, int(time.time())), 401)
        post(body, _signed(forger, body, int(time.time())), 401)
        post(body, _signed(ours, body, int(time.time()) - 3600), 401)
        post(body, {"content-type": "application/json"}, 401)
        malformed = b'{"not": "a list"}'
        post(malformed, _signed(ours, malformed, int(time.time())), 400)
        post(body, _signed(ours, body, int(time.time())), 200)  # a good one: not a failure
        assert client.post("/v1/webhooks/twilio/status", data={"MessageStatus": "delivered"}).status_code == 401
        after = scrape(client)

    def refused(provider: str, reason: str) -> float:
        return delta(before, after, "journey_webhook_failures_total", provider=provider, reason=reason)

    assert refused("sendgrid", "bad_signature") == 2
    assert refused("sendgrid", "stale_timestamp") == 1
    assert refused("sendgrid", "missing_signature") == 1
    assert refused("sendgrid", "malformed_body") == 1
    assert refused("twilio", "not_configured") == 1
    assert total(after, "journey_webhook_failures_total") - total(before, "journey_webhook_failures_total") == 6


# -- authentication -------------------------------------------------------------------------------

def test_a_configured_metrics_token_is_required_as_a_bearer_token(make_sqlite_harness: Callable[..., Harness]) -> None:
    h = make_sqlite_harness(metrics_token="s3cret-token", api_keys=["api-key"])
    with TestClient(create_app(h.runtime, h.dispatcher)) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"},
                        {"Authorization": "Basic s3cret-token"}, {"Authorization": "Bearer api-key"},
                        {"X-API-Key": "s3cret-token"}):
            resp = client.get("/metrics", headers=headers)
            assert resp.status_code == 401, headers
            assert resp.headers["www-authenticate"] == "Bearer"
            assert "journey_" not in resp.text
        samples = scrape(client, Authorization="Bearer s3cret-token")
        assert value(samples, "journey_database_up") == 1
        assert client.get("/metrics", headers={"authorization": "bearer s3cret-token"}).status_code == 200
        assert client.get("/healthz").status_code == 200  # health checks need no token


def test_without_a_token_metrics_are_open(make_sqlite_harness: Callable[..., Harness]) -> None:
    h = make_sqlite_harness()
    with TestClient(create_app(h.runtime, h.dispatcher)) as client:
        assert value(scrape(client), "journey_waiting_timers") == 0


def test_the_metrics_token_comes_from_the_environment() -> None:
    from orchestrator.runtime.config import Settings

    assert Settings.from_env({"JOURNEY_METRICS_TOKEN": " tok "}).metrics_token == "tok"
    assert Settings.from_env({}).metrics_token == ""


# -- multiprocess mode ----------------------------------------------------------------------------

# One process doing real work with the Harness: profiles, lesson events, then a tick that fires
# the reminders and sends them through the file channel.
WORKER = """
import os, sys
from pathlib import Path
from runtime.conftest import LESSON, ManualClock
from runtime.harness import Harness

h = Harness(os.environ["DB_URL"], Path(os.environ["JOURNEY_PROJECT"]), ManualClock(),
            Path(os.environ["JOURNEY_FILE_SINK"]))
for i in range(int(sys.argv[2])):
    user = f"{sys.argv[1]}-{i}"
    h.profile(user, email=f"{user}@example.com")
    h.track(user, "lesson_completed", LESSON)
h.tick(seconds=4)
h.close()
"""
# A third process: the API app's /metrics, printed.
SCRAPER = """
import os
from pathlib import Path
from fastapi.testclient import TestClient
from orchestrator.api import create_app
from runtime.conftest import ManualClock
from runtime.harness import Harness

h = Harness(os.environ["DB_URL"], Path(os.environ["JOURNEY_PROJECT"]), ManualClock(),
            Path(os.environ["JOURNEY_FILE_SINK"]))
with TestClient(create_app(h.runtime, h.dispatcher)) as client:
    resp = client.get("/metrics")
    assert resp.status_code == 200, resp.text
    print(resp.text)
"""


def test_multiprocess_mode_sums_the_counters_of_every_process(
        sqlite_url: str, fast_project: Path, tmp_path: Path) -> None:
    metrics_dir = tmp_path / "prometheus"  # created by the processes themselves
    sink = tmp_path / "sink.jsonl"
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "DB_URL": sqlite_url,
           "JOURNEY_PROJECT": str(fast_project), "JOURNEY_FILE_SINK": str(sink),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}

    def run(code: str, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-c", code, *args], env=env, cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    workers = [run(WORKER, "a", "3"), run(WORKER, "b", "4")]  # at the same time, one database
    for p in workers:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    pids = {f.stem.rsplit("_", 1)[1] for f in metrics_dir.glob("counter_*.db")}
    assert len(pids) == 2, sorted(metrics_dir.iterdir())  # each worker wrote its own counters

    scraper = run(SCRAPER)
    out, err = scraper.communicate(timeout=120)
    assert scraper.returncode == 0, err
    samples = parse(out)
    sent = [json.loads(line) for line in sink.read_text(encoding="utf-8").splitlines()]
    assert len(sent) == 7
    assert value(samples, "journey_deliveries_total", channel="email", status="sent") == 7
    assert value(samples, "journey_steps_applied_total", journey="lesson_reminder") == 14  # 7 entries, 7 timers
    assert value(samples, "journey_timer_lateness_seconds_count") == 7
    assert value(samples, "journey_waiting_timers") == 0  # the queue gauges: from the database
    assert value(samples, "journey_database_up") == 1


def test_a_metrics_failure_never_breaks_the_work(sqlite_url: str, fast_project: Path, tmp_path: Path) -> None:
    """The multiprocess folder vanishes under a running process: counting fails, sending does not
    (the counters are touched after the batch committed and before its messages go out)."""
    metrics_dir = tmp_path / "prometheus"
    sink = tmp_path / "sink.jsonl"
    code = "import shutil, sys\nfrom orchestrator.runtime import metrics\n" \
           f"shutil.rmtree({str(metrics_dir)!r})\n" + WORKER
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "DB_URL": sqlite_url,
           "JOURNEY_PROJECT": str(fast_project), "JOURNEY_FILE_SINK": str(sink),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code, "c", "2"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "could not be recorded" in done.stderr  # logged
    assert len(sink.read_text(encoding="utf-8").splitlines()) == 2  # and both reminders sent


@diagnosed
def test_celery_worker_processes_are_summed_by_the_web_process(tmp_path: Path) -> None:
    """The Procfile's processes with PROMETHEUS_MULTIPROC_DIR (as docs/operations.md says):
    the worker's pool processes count, the web process's /metrics shows their sum; and every
    process logs JSON lines with no email address or phone number in them."""
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    project = write_project(tmp_path / "project")
    stack = Stack.create(tmp_path / "stack", project, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
                         JOURNEY_METRICS_TOKEN="scrape-token")
    users = [f"mp-{uuid.uuid4().hex[:8]}-{i}" for i in range(4)]

    def metrics() -> Samples:
        resp = httpx.get(f"{stack.base_url}/metrics", timeout=10,
                         headers={"Authorization": "Bearer scrape-token"})
        assert resp.status_code == 200, resp.text
        return parse(resp.text)

    def counted() -> Samples | None:
        # The ledger row is marked sent a moment before the worker counts it (after the commit).
        samples = metrics()
        sent = value(samples, "journey_deliveries_total", channel="email", status="sent")
        return samples if sent == len(users) else None

    try:
        stack.journey("db", "upgrade")
        stack.start_all()
        with stack.client() as client:
            for u in users:
                client.put_profile(u, email=f"{u}@example.com", phone="+14155550123")
                client.track(u, "lesson_completed", LESSON)
        wait_until(lambda: len(stack.sink()) == len(users) and stack.value(
            "SELECT count(*) FROM deliveries WHERE status = 'sent'") == len(users), 30, "the reminders")
        samples = wait_until(counted, 10, "the worker's counters in /metrics")
        assert value(samples, "journey_steps_applied_total", journey="lesson_reminder") == 2 * len(users)
        assert value(samples, "journey_timer_lateness_seconds_count") == len(users)
        assert value(samples, "journey_due_timers") == 0
        assert httpx.get(f"{stack.base_url}/metrics", timeout=10).status_code == 401
    finally:
        stack.close()
    for proc in stack.started:
        text = proc.log()
        for u in users:
            assert f"{u}@example.com" not in text, proc.name
        assert "4155550123" not in text, proc.name
        records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        assert records, f"{proc.name} logged no JSON:\n{proc.tail()}"
        assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    worker = [json.loads(line) for line in stack.procs["worker"].log().splitlines() if line.startswith("{")]
    assert any(r["message"].endswith(" ready.") and "@" in r["message"] for r in worker)
