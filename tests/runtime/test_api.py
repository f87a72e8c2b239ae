"""The ingest API (FastAPI) in-process, with the InlineDispatcher, on both stores."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Iterator, Sequence

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from orchestrator.api import create_app
from orchestrator.store.database import make_engine
from orchestrator.store.schema import consents, events, profiles, runs

from .conftest import CART, LESSON
from .harness import Harness, h, make_harness, make_sqlite_harness  # noqa: F401

KEY = "key-1"
AUTH = {"Authorization": f"Bearer {KEY}"}


def _api(h: Harness) -> Iterator[tuple[Harness, TestClient]]:
    with TestClient(create_app(h.runtime, h.dispatcher), raise_server_exceptions=False) as client:
        yield h, client


@pytest.fixture
def api(make_harness: Callable[..., Harness]) -> Iterator[tuple[Harness, TestClient]]:
    yield from _api(make_harness(api_keys=[KEY, "key-2"]))


@pytest.fixture
def api_sqlite(make_sqlite_harness: Callable[..., Harness]) -> Iterator[tuple[Harness, TestClient]]:
    """HTTP behaviour that does not depend on the store."""
    yield from _api(make_sqlite_harness(api_keys=[KEY, "key-2"]))


def count(h: Harness, table: Any = events) -> int:
    with h.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def fields(resp: Any) -> list[str]:
    return [e["field"] for e in resp.json()["errors"]]


def ev(user_id: str = "u1", name: str = "lesson_completed", properties: dict[str, Any] | None = None,
       **more: Any) -> dict[str, Any]:
    return {"user_id": user_id, "name": name, "properties": LESSON if properties is None else properties, **more}


# -- 11. authentication -----------------------------------------------------------------------

def test_writes_and_profile_reads_need_a_configured_key_in_either_header(api_sqlite: tuple[Harness, TestClient]) -> None:
    h, client = api_sqlite
    assert client.post("/v1/events", json=ev()).status_code == 401
    assert client.post("/v1/events", json=ev(), headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.post("/v1/events", json=ev(), headers={"Authorization": KEY}).status_code == 401  # no scheme
    assert client.post("/v1/events", json=ev(), headers={"X-API-Key": "nope"}).status_code == 401
    assert client.put("/v1/profiles/u1", json={}).status_code == 401
    assert client.get("/v1/profiles/u1").status_code == 401
    assert count(h) == 0 and count(h, profiles) == 0

    assert client.post("/v1/events", json=ev(event_id="a"), headers=AUTH).status_code == 202
    assert client.post("/v1/events", json=ev(event_id="b"), headers={"authorization": f"bearer {KEY}"}).status_code == 202
    assert client.post("/v1/events", json=ev(event_id="c"), headers={"X-API-Key": "key-2"}).status_code == 202
    assert client.get("/v1/profiles/u1", headers={"X-API-Key": KEY}).status_code == 200
    assert count(h) == 3


def test_no_configured_keys_means_no_writes(make_sqlite_harness: Callable[..., Harness]) -> None:
    h = make_sqlite_harness()  # JOURNEY_API_KEYS unset
    with TestClient(create_app(h.runtime, h.dispatcher)) as client:
        resp = client.post("/v1/events", json=ev(), headers={"Authorization": "Bearer "})
        assert resp.status_code == 401
        resp = client.post("/v1/events", json=ev(), headers=AUTH)
        assert resp.status_code == 401 and "JOURNEY_API_KEYS" in resp.json()["detail"]
        assert client.get("/healthz").status_code == 200
    assert count(h) == 0


# -- bodies ---------------------------------------------------------------------------------------

def test_a_single_event_a_list_and_an_events_object_are_accepted_and_processed(
    api: tuple[Harness, TestClient],
) -> None:
    h, client = api
    h.profile("u1", email="u1@example.com")
    resp = client.post("/v1/events", json=ev("u1", event_id="s-1"), headers=AUTH)
    assert resp.status_code == 202
    assert resp.json() == {"accepted": 1, "duplicates": 0, "event_ids": ["s-1"]}
    resp = client.post("/v1/events", json=[ev("u2"), ev("u3", "cart_updated", CART)], headers=AUTH)
    assert resp.status_code == 202 and resp.json()["accepted"] == 2
    assert len(resp.json()["event_ids"]) == 2 and all(resp.json()["event_ids"])
    resp = client.post("/v1/events", json={"events": [ev("u4", at="2026-03-02T16:00:00+01:00")]}, headers=AUTH)
    assert resp.status_code == 202 and resp.json()["accepted"] == 1
    assert count(h) == 4
    # Stored before the 202 and, with the inline dispatcher, already applied.
    assert {e["status"] for e in h.rows(events)} == {"processed"}
    assert {(r["user_id"], r["journey"]) for r in h.rows(runs)} == {
        ("u1", "lesson_reminder"), ("u2", "lesson_reminder"), ("u3", "cart_abandonment"), ("u4", "lesson_reminder")}
    at = h.one(events, user_id="u4")["at"]
    assert at.isoformat() == "2026-03-02T15:00:00+00:00"
    assert h.one(events, user_id="u1")["at"] == h.now  # no "at": the time it arrived


def test_a_repeated_event_id_is_a_202_that_changes_nothing(api: tuple[Harness, TestClient]) -> None:
    h, client = api
    first = client.post("/v1/events", json=ev(event_id="once"), headers=AUTH)
    again = client.post("/v1/events", json=ev(event_id="once", properties={**LESSON, "streak": 99}), headers=AUTH)
    assert first.status_code == again.status_code == 202
    assert again.json() == {"accepted": 0, "duplicates": 1, "event_ids": ["once"]}
    twice = client.post("/v1/events", json=[ev(event_id="dup"), ev(event_id="dup")], headers=AUTH)
    assert twice.json()["accepted"] == 1 and twice.json()["duplicates"] == 1
    assert count(h) == 2
    assert h.one(events, event_id="once")["properties"]["streak"] == 5
    assert len(h.rows(runs)) == 1


def test_a_batch_with_one_bad_event_is_rejected_whole_naming_the_field(api: tuple[Harness, TestClient]) -> None:
    h, client = api
    cases: list[tuple[Any, list[str]]] = [
        ({"events": [ev(), {"name": "lesson_completed"}]}, ["events[1].user_id"]),
        ([ev(), ev(user_id="")], ["[1].user_id"]),
        ({"name": "x"}, ["user_id"]),
        ({"events": [ev("u1", "cart_updated", {k: v for k, v in CART.items() if k != "items"})]},
         ["events[0].properties.items"]),
        ([ev("u1", "cart_updated", {**CART, "total": "89"})], ["[0].properties.total"]),
        (ev("u1", "cart_updated", {**CART, "items": "none"}), ["properties.items"]),
        (ev(at="2026-03-02T15:00:00"), ["at"]),  # no time zone
        (ev(surprise=1), ["surprise"]),
        (ev(properties=[1, 2]), ["properties"]),  # type: ignore[arg-type]
        ({"events": []}, ["events"]),
        ([], ["body"]),
        ("hello", ["body"]),
    ]
    for body, expected in cases:
        resp = client.post("/v1/events", json=body, headers=AUTH)
        assert resp.status_code == 422, (body, resp.text)
        assert fields(resp) == expected, (body, resp.text)
        assert all(e["message"] for e in resp.json()["errors"])
    assert count(h) == 0 and count(h, profiles) == 0


def test_not_json_is_a_400_and_more_than_1000_events_a_413(api: tuple[Harness, TestClient]) -> None:
    h, client = api
    for raw in (b"{not json", b"\xff\xfe", b"", b"[" * 100_000 + b"]" * 100_000):
        resp = client.post("/v1/events", content=raw, headers={**AUTH, "Content-Type": "application/json"})
        assert resp.status_code == 400 and fields(resp) == ["body"], raw[:20]
    big = [ev(f"u{i}", "page_viewed", {}) for i in range(1001)]
    resp = client.post("/v1/events", json={"events": big}, headers=AUTH)
    assert resp.status_code == 413 and fields(resp) == ["events"]
    assert client.post("/v1/events", json=big, headers=AUTH).status_code == 413
    assert count(h) == 0
    resp = client.post("/v1/events", json=big[:1000], headers=AUTH)
    assert resp.status_code == 202 and resp.json()["accepted"] == 1000
    assert count(h) == 1000


def test_values_no_store_can_hold_are_client_errors_not_server_errors(api: tuple[Harness, TestClient]) -> None:
    """NaN / Infinity are not JSON; NUL characters and years out of range cannot be stored.
    Each is the client's error (4xx, not retried), identical on both stores, and stores nothing."""
    h, client = api
    for raw in ('{"user_id": "u1", "name": "x", "properties": {"a": NaN}}',
                '{"user_id": "u1", "name": "x", "properties": {"a": -Infinity}}',
                '{"user_id": "u1", "name": "x", "properties": {"a": 1e999}}'):
        resp = client.post("/v1/events", content=raw, headers={**AUTH, "Content-Type": "application/json"})
        assert resp.status_code == 400, (raw, resp.status_code)
    for body, field in ((ev(properties={"a": "x\u0000y"}), "properties"),
                        ([ev(), ev(user_id="u\u0000")], "[1].user_id"),
                        (ev(at="0001-01-01T00:00:00+05:00"), "at")):
        resp = client.post("/v1/events", json=body, headers=AUTH)
        assert resp.status_code == 422, (body, resp.status_code)
        assert fields(resp) == [field]
    resp = client.put("/v1/profiles/u1", json={"attributes": {"nick": "a\u0000"}}, headers=AUTH)
    assert resp.status_code == 422 and fields(resp) == ["attributes"]
    resp = client.put("/v1/profiles/u1", content='{"attributes": {"score": NaN}}',
                      headers={**AUTH, "Content-Type": "application/json"})
    assert 400 <= resp.status_code < 500
    assert count(h) == 0 and count(h, profiles) == 0


# -- profiles --------------------------------------------------------------------------------------

def test_put_and_get_profile_round_trip(api: tuple[Harness, TestClient]) -> None:
    h, client = api
    body = {"email": "ana@example.com", "phone": "+14155550123", "push_tokens": ["t1"],
            "timezone": "Europe/Lisbon", "locale": "pt-PT",
            "attributes": {"first_name": "Ana", "plan": "pro"},
            "consent": {"sms": "opted_in", "email": "subscribed"}}
    resp = client.put("/v1/profiles/u-ana", json=body, headers=AUTH)
    assert resp.status_code == 200
    expected = {"user_id": "u-ana", **{k: v for k, v in body.items()}}
    assert resp.json() == expected
    assert client.get("/v1/profiles/u-ana", headers=AUTH).json() == expected
    # Attributes merge; consent changes one channel; unset fields stay.
    resp = client.put("/v1/profiles/u-ana", json={"attributes": {"plan": "free"}, "consent": {"sms": "unsubscribed"}},
                      headers=AUTH)
    got = client.get("/v1/profiles/u-ana", headers=AUTH).json()
    assert got == resp.json()
    assert got["attributes"] == {"first_name": "Ana", "plan": "free"}
    assert got["consent"] == {"sms": "unsubscribed", "email": "subscribed"}
    assert got["email"] == "ana@example.com"
    assert h.one(consents, user_id="u-ana", channel="sms")["status"] == "unsubscribed"
    assert client.get("/v1/profiles/nobody", headers=AUTH).status_code == 404


def test_profile_fields_are_validated_by_name(api_sqlite: tuple[Harness, TestClient]) -> None:
    h, client = api_sqlite
    for body, field in (({"phone": "4155550123"}, "phone"), ({"timezone": "Mars/Olympus"}, "timezone"),
                        ({"email": "not-an-email"}, "email"), ({"consent": {"email": "maybe"}}, "consent.email"),
                        ({"consent": {"fax": "subscribed"}}, "consent.fax"), ({"age": 3}, "age"),
                        ({"push_tokens": "t1"}, "push_tokens")):
        resp = client.put("/v1/profiles/u1", json=body, headers=AUTH)
        assert resp.status_code == 422, body
        assert len(fields(resp)) == 1 and fields(resp)[0].startswith(field), resp.text
    assert count(h, profiles) == 0


def test_profile_ids_with_url_characters_are_addressable(api: tuple[Harness, TestClient]) -> None:
    h, client = api
    for uid in ("a?b", "shop/42", "50% off", "ünï", "a#b"):
        from urllib.parse import quote

        path = "/v1/profiles/" + quote(uid, safe="")
        assert client.put(path, json={"email": "x@example.com"}, headers=AUTH).status_code == 200, uid
        assert client.get(path, headers=AUTH).json()["user_id"] == uid
    assert sorted(p["user_id"] for p in h.rows(profiles)) == sorted(["a?b", "shop/42", "50% off", "ünï", "a#b"])


# -- health and dispatch -----------------------------------------------------------------------------

def test_healthz(api_sqlite: tuple[Harness, TestClient]) -> None:
    h, client = api_sqlite
    resp = client.get("/healthz")
    assert resp.status_code == 200 and resp.json() == {"status": "ok"}
    down = dataclasses.replace(h.runtime, engine=make_engine("postgresql+psycopg://postgres@127.0.0.1:1/none"))
    with TestClient(create_app(down, h.dispatcher)) as broken:
        resp = broken.get("/healthz")
        assert resp.status_code == 503 and resp.json()["status"] == "unavailable"


class BrokerDown:
    def process_users(self, user_ids: Sequence[str]) -> None:
        raise ConnectionError("broker unreachable")

    def fire_timers(self, timer_ids: Sequence[int]) -> None:
        raise ConnectionError("broker unreachable")

    def send_messages(self, outbox_ids: Sequence[int]) -> None:
        raise ConnectionError("broker unreachable")


def test_events_stored_while_the_broker_is_down_are_accepted_and_picked_up_by_the_pump(
    make_harness: Callable[..., Harness],
) -> None:
    h = make_harness(api_keys=[KEY])
    with TestClient(create_app(h.runtime, BrokerDown())) as client:
        resp = client.post("/v1/events", json=ev("u1"), headers=AUTH)
    assert resp.status_code == 202 and h.one(events)["status"] == "pending"
    h.tick(seconds=h.settings.lease + 1)
    assert h.one(events)["status"] == "processed" and len(h.rows(runs)) == 1


def test_the_response_lists_event_ids_in_request_order(api_sqlite: tuple[Harness, TestClient]) -> None:
    h, client = api_sqlite
    resp = client.post("/v1/events", json=[ev("u1", event_id="z"), ev("u2"), ev("u3", event_id="a")], headers=AUTH)
    ids = resp.json()["event_ids"]
    assert ids[0] == "z" and ids[2] == "a"
    assert {e["event_id"]: e["user_id"] for e in h.rows(events)} == {"z": "u1", ids[1]: "u2", "a": "u3"}
    assert json.loads(json.dumps(resp.json()))  # plain JSON
