"""A small Python client for the ingest API. Shell (HTTP).

    from orchestrator.client import JourneyClient
    client = JourneyClient("http://127.0.0.1:8000", api_key="...")
    client.put_profile("u-1", email="ana@example.com", timezone="Europe/Lisbon")
    client.track("u-1", "cart_updated", {"cart_id": "c-1", "items": [...], "total": 42.0,
                                          "currency": "EUR"})

Every event gets an ``event_id`` (a UUID unless you pass one) before the first attempt, so a
retry after a timeout or a 5xx can never store the event twice. Connection errors and 5xx
answers are retried with backoff; a 4xx raises :class:`ApiError` with the server's
field-by-field ``errors``.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Any, Iterable, Mapping
from urllib.parse import quote

import httpx


def _profile_path(user_id: str) -> str:
    # Percent-encode everything: "a?b" or "a#b" must not address the profile "a".
    return "/v1/profiles/" + quote(user_id, safe="")


class ApiError(Exception):
    def __init__(self, status: int, errors: Any) -> None:
        super().__init__(f"HTTP {status}: {errors}")
        self.status = status
        self.errors = errors


class JourneyClient:
    def __init__(self, base_url: str, api_key: str, *, timeout: float = 10.0, retries: int = 4,
                 backoff: float = 0.25, transport: httpx.BaseTransport | None = None) -> None:
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout, transport=transport,
                                  headers={"Authorization": f"Bearer {api_key}"})
        self.retries = retries
        self.backoff = backoff

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "JourneyClient":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @staticmethod
    def event(user_id: str, name: str, properties: Mapping[str, Any] | None = None, *,
              at: datetime | None = None, event_id: str | None = None) -> dict[str, Any]:
        ev: dict[str, Any] = {"user_id": user_id, "name": name, "properties": dict(properties or {}),
                              "event_id": event_id or uuid.uuid4().hex}
        if at is not None:
            ev["at"] = at.isoformat()
        return ev

    def track(self, user_id: str, name: str, properties: Mapping[str, Any] | None = None, *,
              at: datetime | None = None, event_id: str | None = None) -> dict[str, Any]:
        return self._call("POST", "/v1/events", self.event(user_id, name, properties, at=at, event_id=event_id))

    def track_many(self, events: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
        batch = [dict(e, event_id=e.get("event_id") or uuid.uuid4().hex) for e in events]
        return self._call("POST", "/v1/events", {"events": batch})

    def put_profile(self, user_id: str, **fields: Any) -> dict[str, Any]:
        return self._call("PUT", _profile_path(user_id), fields)

    def get_profile(self, user_id: str) -> dict[str, Any]:
        return self._call("GET", _profile_path(user_id), None)

    def _call(self, method: str, path: str, body: Any) -> dict[str, Any]:
        for attempt in range(self.retries + 1):
            try:
                resp = self._http.request(method, path, json=body)
            except httpx.TransportError:
                if attempt == self.retries:
                    raise
            else:
                if resp.status_code < 400:
                    return resp.json()  # type: ignore[no-any-return]
                if resp.status_code < 500 or attempt == self.retries:
                    try:
                        detail = resp.json()
                    except ValueError:
                        detail = resp.text
                    raise ApiError(resp.status_code, detail.get("errors", detail.get("detail")) if isinstance(detail, dict) else detail)
            time.sleep(self.backoff * 2 ** attempt)
        raise AssertionError("unreachable")
