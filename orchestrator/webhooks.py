"""Provider webhooks and the one-click unsubscribe page, mounted on the ingest API. Shell.

* ``POST /v1/webhooks/sendgrid``: SendGrid's Event Webhook, ECDSA-signed (P-256, SHA-256 over
  timestamp + raw body), checked against ``SENDGRID_WEBHOOK_PUBLIC_KEY``; stale timestamps
  (over 10 minutes) are refused too, so a captured request cannot be replayed later.
* ``POST /v1/webhooks/twilio/status`` and ``/v1/webhooks/twilio/inbound``: signed with
  ``X-Twilio-Signature`` (HMAC of our public URL and the form fields under
  ``TWILIO_AUTH_TOKEN``). Inbound STOP/UNSUBSCRIBE/... stops SMS for that number, START/YES
  subscribes again, HELP answers with ``JOURNEY_SMS_HELP_TEXT``.
* ``GET /v1/unsubscribe/{token}`` shows a confirmation page; ``POST`` unsubscribes (the
  mailbox's RFC 8058 one-click POST, or the page's button). Tokens are HMAC-signed.

Unsigned or badly signed requests get 401 and change nothing; each refusal is logged (provider
and reason, never the body) and counted in ``journey_webhook_failures_total``.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import time
from datetime import datetime, timezone
from urllib.parse import parse_qsl

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from twilio.request_validator import RequestValidator

from .links import InvalidLink, LinkSigner
from .runtime import metrics
from .runtime.context import Runtime
from .runtime.feedback import ProviderEvent, apply_events, inbound_sms, unsubscribe

log = logging.getLogger(__name__)

SENDGRID_SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
MAX_SKEW = 600  # seconds
SENDGRID_EVENTS = {"processed": "processed", "delivered": "delivered", "bounce": "bounced",
                   "dropped": "dropped", "deferred": "deferred", "spamreport": "spamreport",
                   "unsubscribe": "unsubscribe", "group_unsubscribe": "unsubscribe",
                   "open": "opened", "click": "clicked"}
TWILIO_STATUS = {"queued": "sent", "accepted": "sent", "sending": "sent", "sent": "sent",
                 "delivered": "delivered", "undelivered": "undelivered", "failed": "failed",
                 "read": "opened"}
DEAD_NUMBER_CODES = {"21211", "21610", "21612", "21614", "30005", "30006"}  # 30003 (phone off) is temporary


def verify_sendgrid(public_key_b64: str, body: bytes, signature_b64: str, timestamp: str) -> bool:
    try:
        key = serialization.load_der_public_key(base64.b64decode(public_key_b64))
        assert isinstance(key, ec.EllipticCurvePublicKey)
        key.verify(base64.b64decode(signature_b64, validate=True), timestamp.encode() + body,
                   ec.ECDSA(hashes.SHA256()))
        return True
    except (InvalidSignature, ValueError, AssertionError, TypeError):
        return False


def _refuse(provider: str, reason: str, why: str, *, field: str = "signature",
            status: int = 401) -> JSONResponse:
    """Refuse a webhook request: log and count it (``reason`` is a metric label)."""
    metrics.webhook_refused(provider, reason)
    log.warning("%s webhook refused: %s", provider, why, extra={"provider": provider, "reason": reason})
    return JSONResponse({"errors": [{"field": field, "message": why}]}, status_code=status)


def _public_url(runtime: Runtime, request: Request) -> str:
    """The URL the provider called, as it saw it (behind a proxy, from JOURNEY_LINKS_BASE)."""
    url = runtime.settings.links_base + request.url.path
    return url + (f"?{request.url.query}" if request.url.query else "")


def add_webhook_routes(app: FastAPI, runtime: Runtime) -> None:
    settings = runtime.settings
    signer = LinkSigner(settings.secret_key.encode(), settings.links_base) if settings.secret_key else None

    @app.post("/v1/webhooks/sendgrid")
    async def sendgrid_events(request: Request) -> Response:
        body = await request.body()
        signature = request.headers.get(SENDGRID_SIGNATURE, "")
        stamp = request.headers.get(SENDGRID_TIMESTAMP, "")
        if not settings.sendgrid_webhook_key:
            return _refuse("sendgrid", "not_configured",
                           "SENDGRID_WEBHOOK_PUBLIC_KEY is not configured: every request is refused")
        if not signature or not stamp:
            return _refuse("sendgrid", "missing_signature", "missing SendGrid signature headers")
        try:
            fresh = abs(time.time() - int(stamp)) <= MAX_SKEW
        except ValueError:
            fresh = False
        if not fresh:
            return _refuse("sendgrid", "stale_timestamp", "timestamp missing or more than 10 minutes off")
        if not verify_sendgrid(settings.sendgrid_webhook_key, body, signature, stamp):
            return _refuse("sendgrid", "bad_signature", "bad SendGrid signature")
        try:
            items = json.loads(body)
            assert isinstance(items, list)
        except (ValueError, AssertionError):
            return _refuse("sendgrid", "malformed_body", "expected a JSON list", field="body", status=400)
        batch = []
        for item in items:
            if not isinstance(item, dict) or item.get("event") not in SENDGRID_EVENTS:
                continue
            at = datetime.fromtimestamp(int(item.get("timestamp", time.time())), timezone.utc)
            sg_id = str(item.get("sg_message_id") or "")
            batch.append(ProviderEvent(
                provider="sendgrid",
                event_id=str(item.get("sg_event_id") or f"{sg_id}:{item.get('event')}:{item.get('timestamp')}"),
                # A "blocked" bounce is the receiving server refusing for now (often a
                # reputation block), not a dead address: the delivery failed, consent stands.
                event="failed" if item["event"] == "bounce" and item.get("type") == "blocked"
                else SENDGRID_EVENTS[item["event"]], at=at,
                delivery_key=item.get("delivery_id"), provider_id=sg_id.split(".")[0] or None,
                payload={k: item[k] for k in ("event", "reason", "type", "url", "status") if k in item},
            ))
        result = apply_events(runtime.engine, batch, runtime.clock())
        log.debug("sendgrid webhook: %d applied", result.applied,
                  extra={"provider": "sendgrid", "applied": result.applied, "duplicates": result.duplicates,
                         "unmatched": result.unmatched})
        return JSONResponse({"applied": result.applied, "duplicates": result.duplicates,
                             "unmatched": result.unmatched})

    async def _twilio_form(request: Request) -> tuple[dict[str, str] | None, Response | None]:
        if not settings.twilio_auth_token:
            return None, _refuse("twilio", "not_configured",
                                 "TWILIO_AUTH_TOKEN is not configured: every request is refused")
        # Twilio posts application/x-www-form-urlencoded; parsed here, not with request.form(),
        # which needs the optional python-multipart package (not a dependency: a 500 without it).
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))
        signature = request.headers.get("X-Twilio-Signature", "")
        if not signature or not RequestValidator(settings.twilio_auth_token).validate(
            _public_url(runtime, request), form, signature
        ):
            return None, _refuse("twilio", "bad_signature", "bad or missing X-Twilio-Signature")
        return form, None

    @app.post("/v1/webhooks/twilio/status")
    async def twilio_status(request: Request) -> Response:
        form, refused = await _twilio_form(request)
        if refused is not None or form is None:
            return refused or JSONResponse({"errors": []}, status_code=401)
        status = form.get("MessageStatus", "")
        if status not in TWILIO_STATUS:
            return JSONResponse({"applied": 0, "ignored": status})
        sid = form.get("MessageSid", "")
        code = form.get("ErrorCode", "")
        event = ProviderEvent(
            provider="twilio", event_id=f"{sid}:{status}:{code}", event=TWILIO_STATUS[status],
            at=runtime.clock(), delivery_key=request.query_params.get("d"), provider_id=sid or None,
            payload={"status": status, "error_code": code}, dead_number=code in DEAD_NUMBER_CODES,
        )
        result = apply_events(runtime.engine, [event], runtime.clock())
        log.debug("twilio status %s: %d applied", status, result.applied,
                  extra={"provider": "twilio", "delivery_key": event.delivery_key, "status": status,
                         "applied": result.applied})
        return JSONResponse({"applied": result.applied, "duplicates": result.duplicates})

    @app.post("/v1/webhooks/twilio/inbound")
    async def twilio_inbound(request: Request) -> Response:
        form, refused = await _twilio_form(request)
        if refused is not None or form is None:
            return refused or JSONResponse({"errors": []}, status_code=401)
        kind = inbound_sms(runtime.engine, form.get("From", ""), form.get("Body", ""), runtime.clock())
        # Twilio itself answers STOP/START/HELP on long codes with its default texts; we answer
        # HELP with ours and stay silent otherwise (an empty TwiML response).
        reply = f"<Message>{html.escape(settings.sms_help_text)}</Message>" if kind == "help" else ""
        return Response(f'<?xml version="1.0" encoding="UTF-8"?><Response>{reply}</Response>',
                        media_type="application/xml")

    def _page(title: str, text: str, form_action: str | None = None, status: int = 200) -> HTMLResponse:
        button = (f'<form method="post" action="{html.escape(form_action)}"><button type="submit">'
                  "Unsubscribe</button></form>") if form_action else ""
        return HTMLResponse(
            "<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' "
            "content='width=device-width'><title>" + html.escape(title) + "</title></head><body "
            "style='font-family:sans-serif;max-width:32em;margin:3em auto'><h1>" + html.escape(title)
            + "</h1><p>" + html.escape(text) + "</p>" + button + "</body></html>",
            status_code=status,
        )

    def _verify(token: str) -> tuple[str, str] | None:
        if signer is None:
            return None
        try:
            return signer.verify(token)
        except InvalidLink:
            return None

    @app.get("/v1/unsubscribe/{token}")
    def unsubscribe_page(token: str) -> HTMLResponse:
        # GET never unsubscribes: mail scanners follow links. The button POSTs.
        if _verify(token) is None:
            return _page("Link not valid", "This unsubscribe link is not valid.", status=400)
        return _page("Unsubscribe", "Stop receiving these messages?", form_action=f"{settings.links_base}/v1/unsubscribe/{token}")

    @app.post("/v1/unsubscribe/{token}")
    def unsubscribe_post(token: str) -> HTMLResponse:
        found = _verify(token)
        if found is None:
            return _page("Link not valid", "This unsubscribe link is not valid.", status=400)
        user_id, channel = found
        unsubscribe(runtime.engine, user_id, channel, runtime.clock())
        names = {"email": "emails", "sms": "text messages", "push": "notifications"}
        return _page("You are unsubscribed", f"You will not get these {names.get(channel, channel)} any more.")


