"""Email through SendGrid's v3 Mail Send API, with the official ``sendgrid`` SDK. Shell.

Configuration (environment, or constructor arguments):
``SENDGRID_API_KEY`` (required), ``SENDGRID_FROM_EMAIL`` (required), ``SENDGRID_FROM_NAME``,
``SENDGRID_SANDBOX=1`` (SendGrid validates but does not deliver), ``SENDGRID_API_HOST``
(default ``https://api.sendgrid.com``; tests point it at a local server).

Each message carries an HTML and a plain-text part, the one-click unsubscribe headers of RFC
8058 (``List-Unsubscribe`` with our signed URL, ``List-Unsubscribe-Post``), and the delivery id
in ``custom_args`` so Event Webhook events map back to the delivery ledger.
"""

from __future__ import annotations

import os
import re
import urllib.error
from typing import Any

from python_http_client.exceptions import HTTPError, TooManyRequestsError
from sendgrid import SendGridAPIClient

from .base import Delivery, DeliveryUnknown, Failed, OutboundMessage, Rejected, Retryable, retry_after


class ConfigurationError(Exception):
    pass


class SendGridChannel:
    name = "email"

    def __init__(self, api_key: str | None = None, from_email: str | None = None,
                 from_name: str | None = None, host: str | None = None,
                 sandbox: bool | None = None, timeout: float = 10.0) -> None:
        self.api_key = api_key or os.environ.get("SENDGRID_API_KEY", "")
        self.from_email = from_email or os.environ.get("SENDGRID_FROM_EMAIL", "")
        if not self.api_key or not self.from_email:
            raise ConfigurationError("the SendGrid channel needs SENDGRID_API_KEY and SENDGRID_FROM_EMAIL")
        self.from_name = from_name or os.environ.get("SENDGRID_FROM_NAME") or None
        self.sandbox = sandbox if sandbox is not None else os.environ.get("SENDGRID_SANDBOX") == "1"
        host = (host or os.environ.get("SENDGRID_API_HOST") or "https://api.sendgrid.com").rstrip("/")
        self.client = SendGridAPIClient(api_key=self.api_key, host=host)
        self.client.client.timeout = timeout

    def payload(self, message: OutboundMessage) -> dict[str, Any]:
        sender: dict[str, str] = {"email": self.from_email}
        if self.from_name:
            sender["name"] = self.from_name
        content = [{"type": "text/plain", "value": message.body}]
        if message.html:
            content.append({"type": "text/html", "value": message.html})
        meta = message.metadata
        body: dict[str, Any] = {
            "from": sender,
            "subject": message.subject or "",
            "personalizations": [{"to": [{"email": str(message.to)}]}],
            "content": content,
            "custom_args": {
                "delivery_id": message.delivery_id,
                **{k: str(meta[k]) for k in ("journey", "step") if meta.get(k)},
            },
            "categories": [c for c in ("journey", str(meta.get("journey") or "")) if c][:10],
            "mail_settings": {"sandbox_mode": {"enable": self.sandbox}},
        }
        if message.unsubscribe_url:
            body["headers"] = {
                "List-Unsubscribe": f"<{message.unsubscribe_url}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            }
        return body

    def send(self, message: OutboundMessage) -> Delivery:
        if not message.to:
            raise Rejected("no email address")
        try:
            response = self.client.send(self.payload(message))
        except TooManyRequestsError as exc:
            raise Retryable("SendGrid rate limit (429)", retry_after(exc.headers, 60.0)) from None
        except HTTPError as exc:
            status = exc.status_code
            detail = _errors(exc)
            if status >= 500:
                raise Retryable(f"SendGrid {status}: {detail}", retry_after(exc.headers)) from None
            if status == 400 and _recipient_refused(exc):
                raise Rejected(f"SendGrid refused the address: {detail}") from None
            raise Failed(f"SendGrid {status}: {detail}") from None
        except urllib.error.URLError as exc:
            # The connection was never made (refused, DNS, connect timeout): nothing was sent.
            raise Retryable(f"cannot reach SendGrid: {exc.reason}") from None
        except OSError as exc:  # read timeout after the request left: it may have been sent
            raise DeliveryUnknown(f"no answer from SendGrid: {exc!r}") from None
        provider_id = response.headers.get("X-Message-Id") if response.headers else None
        return Delivery(message.delivery_id, provider_id=provider_id, status="queued")


# An error about the recipient's address (personalizations.0.to.0.email), not about our
# sender, subject or arguments: only those may suppress the user's email address.
_RECIPIENT_FIELD = re.compile(r"^personalizations\.\d+\.(to|cc|bcc)(\.|$)")


def _recipient_refused(exc: HTTPError) -> bool:
    try:
        errors = exc.to_dict.get("errors") or []
    except Exception:  # noqa: BLE001 - a non-JSON error body
        return False
    return any(isinstance(e, dict) and _RECIPIENT_FIELD.match(str(e.get("field") or "")) for e in errors)


def _errors(exc: HTTPError) -> str:
    try:
        data = exc.to_dict
        return "; ".join(
            f"{e.get('field') or ''}: {e.get('message') or ''}".strip(": ") for e in data.get("errors", [])
        ) or str(data)
    except Exception:  # noqa: BLE001 - a non-JSON error body
        return str(getattr(exc, "body", b"")[:200])
