"""The example plug-in channel: POSTs each message as JSON to a URL of yours (a Slack relay,
an in-app inbox service, a partner's API). Shell. Registered, like any third-party channel
would be, under the ``journey_orchestrator.channels`` entry point group as ``webhook``.

Configuration: ``WEBHOOK_CHANNEL_URL`` (required) and ``WEBHOOK_CHANNEL_SECRET``: when set, the
body is signed with HMAC-SHA256 in the ``X-Journey-Signature`` header (hex), so the receiver
can check it came from us. The receiver answers 2xx to accept, 429/5xx to ask for a retry,
410 to say the recipient is gone for good.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import asdict

import httpx

from .base import Delivery, DeliveryUnknown, Failed, OutboundMessage, Rejected, Retryable, retry_after


class WebhookChannel:
    name = "webhook"

    def __init__(self, url: str | None = None, secret: str | None = None, timeout: float = 10.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.url = url or os.environ.get("WEBHOOK_CHANNEL_URL", "")
        if not self.url:
            raise ValueError("the webhook channel needs WEBHOOK_CHANNEL_URL")
        self.secret = (secret or os.environ.get("WEBHOOK_CHANNEL_SECRET") or "").encode()
        self.http = httpx.Client(timeout=timeout, transport=transport)

    def send(self, message: OutboundMessage) -> Delivery:
        record = asdict(message)
        record["metadata"] = dict(message.metadata)
        body = json.dumps(record, sort_keys=True).encode()
        headers = {"content-type": "application/json", "idempotency-key": message.delivery_id}
        if self.secret:
            headers["x-journey-signature"] = hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        try:
            r = self.http.post(self.url, content=body, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # the request never left
            raise Retryable(f"cannot reach {self.url}: {exc}") from None
        except httpx.TransportError as exc:
            raise DeliveryUnknown(f"no answer from {self.url}: {exc!r}") from None
        if r.status_code < 300:
            return Delivery(message.delivery_id, provider_id=r.headers.get("x-message-id"))
        if r.status_code == 429 or r.status_code >= 500:
            raise Retryable(f"webhook {r.status_code}", retry_after(r.headers))
        if r.status_code == 410:
            raise Rejected("the receiver says this recipient is gone")
        raise Failed(f"webhook {r.status_code}: {r.text[:200]}")
