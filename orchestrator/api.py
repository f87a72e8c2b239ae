"""The HTTP ingest API (FastAPI, served by uvicorn). Shell.

* ``POST /v1/events``: one event, a list, or ``{"events": [...]}`` (at most 1,000). Each event
  is ``{"user_id", "name", "at"?, "properties"?, "event_id"?}``. Events are stored (committed)
  before the 202; a repeated ``event_id`` is accepted again and changes nothing.
* ``PUT /v1/profiles/{user_id}``: contact points, time zone, locale, attributes, consent.
* ``GET /v1/profiles/{user_id}``, ``GET /healthz``.
* ``GET /metrics``: Prometheus metrics (``runtime.metrics``); read-only, and when
  ``JOURNEY_METRICS_TOKEN`` is set it needs ``Authorization: Bearer <token>``.

Writes and profile reads need an API key (``Authorization: Bearer KEY`` or ``X-API-Key``),
one of ``JOURNEY_API_KEYS``. Bad payloads get a 4xx whose ``errors`` name each field.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import re
from datetime import datetime, timezone
from typing import Any, Literal, Sequence
from zoneinfo import ZoneInfo

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator
from sqlalchemy import text

from .catalog import Catalog, event_problems, load_catalog
from .runtime import metrics
from .runtime.context import Runtime
from .runtime.ingest import IncomingEvent, get_profile, put_profile, store_events
from .runtime.pump import Dispatcher
from .webhooks import add_webhook_routes

log = logging.getLogger(__name__)
MAX_BATCH = 1000
E164 = re.compile(r"^\+[1-9]\d{6,14}$")


def _storable(value: Any) -> Any:
    """Reject what the stores cannot hold (a client error, not a 500): NUL characters (not in
    PostgreSQL text or JSONB) and NaN or infinite numbers (not JSON)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str) and "\x00" in v:
            raise ValueError("contains a NUL character (\\u0000), which cannot be stored")
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError("contains NaN or an infinite number, which is not JSON")
        if isinstance(v, dict):
            stack += [*v.keys(), *v.values()]
        elif isinstance(v, list):
            stack += v
    return value


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text}")
    return value


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: str = Field(min_length=1, max_length=200)
    name: str = Field(min_length=1, max_length=200)
    at: AwareDatetime | None = None
    properties: dict[str, Any] = Field(default_factory=dict)
    event_id: str | None = Field(default=None, min_length=1, max_length=200)

    @field_validator("user_id", "name", "properties", "event_id")
    @classmethod
    def _storable(cls, v: Any) -> Any:
        return _storable(v)

    @field_validator("at")
    @classmethod
    def _in_range(cls, v: datetime | None) -> datetime | None:
        if v is not None:
            try:
                v.astimezone(timezone.utc)
            except OverflowError:
                raise ValueError("out of range once converted to UTC") from None
        return v


class ProfileIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str | None = Field(default=None, max_length=320)
    phone: str | None = None
    push_tokens: list[str] | None = None
    timezone: str | None = None
    locale: str | None = Field(default=None, max_length=35)
    attributes: dict[str, Any] | None = None
    consent: dict[Literal["email", "sms", "push"], Literal["subscribed", "opted_in", "unsubscribed", "bounced", "spam"]] = Field(default_factory=dict)

    @field_validator("email", "push_tokens", "locale", "attributes")
    @classmethod
    def _storable(cls, v: Any) -> Any:
        return _storable(v)

    @field_validator("email")
    @classmethod
    def _email(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", v):
            raise ValueError("not an email address")
        return v

    @field_validator("phone")
    @classmethod
    def _phone(cls, v: str | None) -> str | None:
        if v is not None and not E164.fullmatch(v):
            raise ValueError("expected an E.164 number such as +14155550123")
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                ZoneInfo(v)
            except Exception:
                raise ValueError("expected an IANA time zone such as America/New_York") from None
        return v


_events = TypeAdapter(list[EventIn])


def _field(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _message(msg: str) -> str:
    return msg.removeprefix("Value error, ")


def _invalid(errors: list[dict[str, str]], status: int = 422) -> JSONResponse:
    return JSONResponse({"errors": errors}, status_code=status)


def create_app(runtime: Runtime, dispatcher: Dispatcher, catalog: Catalog | None = None) -> FastAPI:
    app = FastAPI(title="Journey orchestrator ingest API", version="1")
    keys = [k.encode() for k in runtime.settings.api_keys]
    catalog = catalog if catalog is not None else load_catalog(runtime.project.catalog_path)

    def api_key(authorization: str | None = Header(default=None), x_api_key: str | None = Header(default=None)) -> None:
        given = x_api_key or (authorization[7:] if authorization and authorization.lower().startswith("bearer ") else None)
        if not keys:
            raise HTTPException(401, "no API keys are configured on this server: set JOURNEY_API_KEYS")
        if not given or not any(hmac.compare_digest(given.encode(), k) for k in keys):
            raise HTTPException(401, "missing or wrong API key (send 'Authorization: Bearer KEY')")

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _invalid([
            {"field": _field([p for p in e["loc"] if p != "body"]) or "body", "message": _message(e["msg"])}
            for e in exc.errors()
        ])

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        try:
            with runtime.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:  # noqa: BLE001
            return JSONResponse({"status": "unavailable", "database": str(exc)[:200]}, status_code=503)
        return JSONResponse({"status": "ok"})

    metrics_token = runtime.settings.metrics_token.encode()

    @app.get("/metrics")
    def metrics_route(authorization: str | None = Header(default=None)) -> Response:
        if metrics_token:
            given = authorization[7:] if authorization and authorization.lower().startswith("bearer ") else ""
            if not hmac.compare_digest(given.encode(), metrics_token):
                return JSONResponse({"detail": "missing or wrong metrics token (send 'Authorization: "
                                               "Bearer <JOURNEY_METRICS_TOKEN>')"},
                                    status_code=401, headers={"WWW-Authenticate": "Bearer"})
        body, content_type = metrics.exposition(runtime.engine, runtime.clock)
        return Response(body, media_type=content_type)

    @app.post("/v1/events", status_code=202, dependencies=[Depends(api_key)])
    async def post_events(request: Request) -> JSONResponse:
        try:
            body = json.loads(await request.body(), parse_constant=_not_json, parse_float=_finite)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return _invalid([{"field": "body", "message": "not valid JSON"}], 400)
        prefix, single = "", False
        if isinstance(body, dict) and "events" in body:
            body, prefix = body["events"], "events"
        elif isinstance(body, dict):
            body, single = [body], True
        if not isinstance(body, list) or not body:
            return _invalid([{"field": prefix or "body", "message": "expected an event, a list of events or {\"events\": [...]}"}])
        if len(body) > MAX_BATCH:
            return _invalid([{"field": prefix or "body", "message": f"at most {MAX_BATCH} events per request"}], 413)
        try:
            parsed = _events.validate_python(body)
        except ValidationError as exc:
            return _invalid([
                {"field": _field(e["loc"][1:] if single else [prefix, *e["loc"]]), "message": _message(e["msg"])}
                for e in exc.errors()
            ])
        problems = []
        for i, ev in enumerate(parsed):
            where = "" if single else f"{prefix}[{i}]."
            problems += [{"field": where + f, "message": m} for f, m in event_problems(catalog, ev.name, ev.properties)]
        if problems:
            return _invalid(problems)
        now = runtime.clock()
        stored = store_events(
            runtime.engine,
            [IncomingEvent(e.user_id, e.name, e.at or now, e.properties, e.event_id) for e in parsed],
            now,
        )
        _dispatch(dispatcher, stored.user_ids, runtime.settings.batch)
        return JSONResponse(
            {"accepted": len(stored.new), "duplicates": len(stored.event_ids) - len(stored.new),
             "event_ids": list(stored.event_ids)},
            status_code=202,
        )

    # ":path": a user id may contain "/" (it arrives percent-encoded, decoded before routing).
    @app.put("/v1/profiles/{user_id:path}", dependencies=[Depends(api_key)])
    def put_profile_route(user_id: str, profile: ProfileIn) -> JSONResponse:
        if not 0 < len(user_id) <= 200 or "\x00" in user_id:
            return _invalid([{"field": "user_id", "message": "1 to 200 characters, no NUL"}])
        contact = profile.model_dump(include={"email", "phone", "push_tokens", "timezone", "locale"}, exclude_unset=True)
        put_profile(runtime.engine, user_id, runtime.clock(), contact=contact,
                    attributes=profile.attributes, consent=dict(profile.consent))
        return JSONResponse(get_profile(runtime.engine, user_id))

    @app.get("/v1/profiles/{user_id:path}", dependencies=[Depends(api_key)])
    def get_profile_route(user_id: str) -> JSONResponse:
        found = get_profile(runtime.engine, user_id) if "\x00" not in user_id else None
        if found is None:
            raise HTTPException(404, f"no profile '{user_id}'")
        return JSONResponse(found)

    add_webhook_routes(app, runtime)
    return app


def _dispatch(dispatcher: Dispatcher, user_ids: Sequence[str], batch: int) -> None:
    try:
        for i in range(0, len(user_ids), batch):
            dispatcher.process_users(list(user_ids[i:i + batch]))
    except Exception:  # noqa: BLE001 - stored already; the pump re-dispatches after the lease
        log.exception("dispatch failed; the timer pump will pick the events up",
                      extra={"users": len(user_ids)})


def production_app() -> FastAPI:
    """``uvicorn --factory orchestrator.api:production_app``: the web process."""
    from .logs import configure_from
    from .runtime.celery_app import app as celery_app
    from .runtime.config import Settings
    from .runtime.dispatch import CeleryDispatcher

    settings = Settings.from_env()
    configure_from(settings.log_format, settings.log_level)  # uvicorn's own loggers too
    if not settings.secret_key:
        log.warning("JOURNEY_SECRET_KEY is not set: emails carry no working unsubscribe link and "
                    "the unsubscribe page refuses every link; set it (see docs/operations.md)")
    return create_app(Runtime.create(settings), CeleryDispatcher(celery_app, settings.queue))
