"""The Python client against the real app served by uvicorn on a loopback port."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Callable, Iterator

import httpx
import pytest
import uvicorn
from fastapi.responses import JSONResponse

from orchestrator.api import create_app
from orchestrator.client import ApiError, JourneyClient
from orchestrator.store.schema import events, profiles, runs

from .conftest import CART, LESSON
from .harness import Harness, make_harness, make_sqlite_harness  # noqa: F401

KEY = "client-key"


class Served:
    """An ASGI app served by uvicorn in a thread, on a free loopback port."""

    def __init__(self, app: Any) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


class FailAfterForwarding:
    """Passes each request to the app, then, for the first ``failures`` event posts, throws the
    app's answer away and says 500: the request was stored, the client cannot know it."""

    def __init__(self, app: Any, failures: int = 1) -> None:
        self.app = app
        self.failures = failures
        self.seen = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/v1/events":
            self.seen += 1
            if self.failures:
                self.failures -= 1

                async def discard(_: Any) -> None:
                    return None

                await self.app(scope, receive, discard)
                await JSONResponse({"detail": "upstream timeout"}, status_code=500)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _served(make: Callable[..., Harness]) -> Iterator[Callable[..., tuple[Harness, str, Any]]]:
    running: list[Served] = []

    def serve(wrap: Callable[[Any], Any] = lambda app: app) -> tuple[Harness, str, Any]:
        h = make(api_keys=[KEY])
        app = wrap(create_app(h.runtime, h.dispatcher))
        s = Served(app)
        running.append(s)
        return h, s.url, app

    yield serve
    for s in running:
        s.stop()


@pytest.fixture
def served(make_harness: Callable[..., Harness]) -> Iterator[Callable[..., tuple[Harness, str, Any]]]:
    yield from _served(make_harness)


@pytest.fixture
def served_sqlite(make_sqlite_harness: Callable[..., Harness]) -> Iterator[Callable[..., tuple[Harness, str, Any]]]:
    yield from _served(make_sqlite_harness)


def test_track_track_many_and_profiles_over_http(served: Callable[..., tuple[Harness, str, Any]]) -> None:
    h, url, _ = served()
    with JourneyClient(url, api_key=KEY, backoff=0.01) as client:
        got = client.put_profile("u-ana", email="ana@example.com", timezone="Europe/Lisbon",
                                 attributes={"first_name": "Ana"}, consent={"sms": "opted_in"})
        assert got["email"] == "ana@example.com" and got["consent"] == {"sms": "opted_in"}
        assert client.get_profile("u-ana") == got
        one = client.track("u-ana", "cart_updated", CART, event_id="cart-1")
        assert one == {"accepted": 1, "duplicates": 0, "event_ids": ["cart-1"]}
        many = client.track_many([
            JourneyClient.event("u-ana", "lesson_completed", LESSON),
            {"user_id": "u-bo", "name": "lesson_completed", "properties": LESSON},
        ])
        assert many["accepted"] == 2 and all(many["event_ids"])
    assert {(r["user_id"], r["journey"]) for r in h.rows(runs)} == {
        ("u-ana", "cart_abandonment"), ("u-ana", "lesson_reminder"), ("u-bo", "lesson_reminder")}
    h.tick(seconds=2)
    assert [line["to"] for line in h.lines()] == ["ana@example.com"]


def test_a_client_error_raises_with_the_field_errors_and_is_not_retried(
    served_sqlite: Callable[..., tuple[Harness, str, Any]],
) -> None:
    h, url, app = served_sqlite(FailAfterForwarding)
    app.failures = 0
    with JourneyClient(url, api_key=KEY, backoff=0.01) as client:
        with pytest.raises(ApiError) as err:
            client.track_many([JourneyClient.event("u1", "lesson_completed", LESSON),
                               JourneyClient.event("u2", "cart_updated", {"cart_id": "c"})])
        assert err.value.status == 422
        assert {e["field"] for e in err.value.errors} == {
            "events[1].properties.items", "events[1].properties.total", "events[1].properties.currency"}
        assert app.seen == 1
        with pytest.raises(ApiError) as err:
            client.put_profile("u1", phone="555")
        assert err.value.status == 422 and err.value.errors[0]["field"] == "phone"
        with pytest.raises(ApiError) as err:
            client.get_profile("nobody")
        assert err.value.status == 404 and "nobody" in err.value.errors
    with JourneyClient(url, api_key="wrong", backoff=0.01) as client:
        with pytest.raises(ApiError) as err:
            client.track("u1", "lesson_completed", LESSON)
        assert err.value.status == 401
    assert h.rows(events) == []


def test_a_retry_after_a_server_error_does_not_store_the_event_twice(
    served: Callable[..., tuple[Harness, str, Any]],
) -> None:
    h, url, app = served(FailAfterForwarding)
    for uid in ("u1", "u2", "u3"):
        h.profile(uid, email=f"{uid}@example.com")
    with JourneyClient(url, api_key=KEY, backoff=0.01) as client:
        answer = client.track("u1", "lesson_completed", LESSON)  # no event_id given
        assert app.seen == 2  # stored, 500, retried
        assert answer["accepted"] == 0 and answer["duplicates"] == 1
        app.failures = 2
        answer = client.track_many([JourneyClient.event("u2", "lesson_completed", LESSON),
                                    {"user_id": "u3", "name": "lesson_completed", "properties": LESSON}])
        assert app.seen == 5 and answer["duplicates"] == 2
    assert sorted(e["user_id"] for e in h.rows(events)) == ["u1", "u2", "u3"]
    assert len(h.rows(runs)) == 3
    h.tick(seconds=3)
    assert len(h.lines()) == 3


def test_server_errors_are_retried_a_bounded_number_of_times(
    served_sqlite: Callable[..., tuple[Harness, str, Any]],
) -> None:
    h, url, app = served_sqlite(FailAfterForwarding)
    app.failures = 100
    with JourneyClient(url, api_key=KEY, retries=2, backoff=0.01) as client:
        with pytest.raises(ApiError) as err:
            client.track("u1", "lesson_completed", LESSON)
    assert err.value.status == 500 and app.seen == 3
    assert len(h.rows(events)) == 1


def test_connection_errors_are_retried_then_raised() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there
    attempts = 0

    def count(request: httpx.Request) -> None:
        nonlocal attempts
        attempts += 1

    client = JourneyClient(f"http://127.0.0.1:{port}", api_key=KEY, retries=2, backoff=0.01)
    client._http.event_hooks["request"].append(count)
    with pytest.raises(httpx.ConnectError):
        client.track("u1", "lesson_completed", LESSON)
    client.close()
    assert attempts == 3


def test_profile_ids_with_url_characters_reach_the_right_profile(
    served: Callable[..., tuple[Harness, str, Any]],
) -> None:
    h, url, _ = served()
    odd = ["a?b", "a#b", "shop/42", "50% off", "ünï"]
    with JourneyClient(url, api_key=KEY, backoff=0.01) as client:
        for uid in odd:
            assert client.put_profile(uid, email="x@example.com")["user_id"] == uid
            assert client.get_profile(uid)["user_id"] == uid
    assert sorted(p["user_id"] for p in h.rows(profiles)) == sorted(odd)
