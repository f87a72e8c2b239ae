"""SMS through Twilio's Messages API, with the official ``twilio`` SDK. Shell.

Configuration (environment, or constructor arguments): ``TWILIO_ACCOUNT_SID`` and
``TWILIO_AUTH_TOKEN`` (required), and either ``TWILIO_MESSAGING_SERVICE_SID`` (preferred: the
service picks the sender) or ``TWILIO_FROM_NUMBER``. ``TWILIO_API_BASE`` points the SDK at
another host (tests use a local server); the status callback URL comes with each message.

US and Canadian numbers get "Reply STOP to opt out." appended when the text has no opt-out
language of its own (the shipped templates carry it already).
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from .base import Delivery, DeliveryUnknown, Failed, OutboundMessage, Rejected, Retryable, retry_after
from orchestrator.segments import sms_size

try:  # RFC 9457 error bodies raise this instead (not a TwilioRestException subclass)
    from twilio.base.exceptions import TwilioServiceException
except ImportError:  # pragma: no cover - older SDKs
    TwilioServiceException = TwilioRestException  # type: ignore[misc,assignment]

# Twilio error codes that mean "this number will never work": invalid 'To', unsubscribed
# recipient (STOP), not a mobile number, unknown or unreachable destination.
DEAD_NUMBER_CODES = frozenset({21211, 21610, 21612, 21614, 30005, 30006})  # not 30003: phone off
OPT_OUT_TEXT = "Reply STOP to opt out."
_OPT_OUT_WORD = re.compile(r"\bstop\b", re.IGNORECASE)  # "Reply STOP", not "nonstop"


class ConfigurationError(Exception):
    pass


class RoutedHttpClient(TwilioHttpClient):
    """The SDK's own HTTP client, sending to ``base_url`` when one is configured, and keeping
    each thread's last response headers (the SDK's exception does not carry Retry-After)."""

    def __init__(self, base_url: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._base = urlsplit(base_url) if base_url else None
        self._local = threading.local()

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if self._base is not None:
            u = urlsplit(url)
            url = urlunsplit((self._base.scheme, self._base.netloc, u.path, u.query, u.fragment))
        response = super().request(method, url, *args, **kwargs)
        self._local.headers = response.headers
        return response

    def last_headers(self) -> Any:
        return getattr(self._local, "headers", None) or {}


class TwilioChannel:
    name = "sms"

    def __init__(self, account_sid: str | None = None, auth_token: str | None = None,
                 messaging_service_sid: str | None = None, from_number: str | None = None,
                 api_base: str | None = None, timeout: float = 10.0) -> None:
        env = os.environ
        self.account_sid = account_sid or env.get("TWILIO_ACCOUNT_SID", "")
        token = auth_token or env.get("TWILIO_AUTH_TOKEN", "")
        self.messaging_service_sid = messaging_service_sid or env.get("TWILIO_MESSAGING_SERVICE_SID") or None
        self.from_number = from_number or env.get("TWILIO_FROM_NUMBER") or None
        if not self.account_sid or not token:
            raise ConfigurationError("the Twilio channel needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN")
        if not self.messaging_service_sid and not self.from_number:
            raise ConfigurationError("the Twilio channel needs TWILIO_MESSAGING_SERVICE_SID or TWILIO_FROM_NUMBER")
        self.http = RoutedHttpClient(api_base or env.get("TWILIO_API_BASE") or None, timeout=timeout)
        self.client = Client(self.account_sid, token, http_client=self.http)

    @staticmethod
    def with_opt_out(to: str, body: str) -> str:
        if to.startswith("+1") and not _OPT_OUT_WORD.search(body):
            return f"{body} {OPT_OUT_TEXT}"
        return body

    def send(self, message: OutboundMessage) -> Delivery:
        to = str(message.to or "")
        if not to:
            raise Rejected("no phone number")
        body = self.with_opt_out(to, message.body)
        params: dict[str, Any] = {"to": to, "body": body}
        if self.messaging_service_sid:
            params["messaging_service_sid"] = self.messaging_service_sid
        else:
            params["from_"] = self.from_number
        if message.status_callback:
            params["status_callback"] = message.status_callback
        try:
            sent = self.client.messages.create(**params)
        except (TwilioRestException, TwilioServiceException) as exc:
            status = int(getattr(exc, "status", 0) or 0)
            code = getattr(exc, "code", None)
            if status == 429:
                raise Retryable(f"Twilio rate limit ({code})", retry_after(self.http.last_headers(), 1.0)) from None
            if status >= 500:
                raise Retryable(f"Twilio {status}", retry_after(self.http.last_headers())) from None
            if code in DEAD_NUMBER_CODES:
                raise Rejected(f"Twilio {code}: the number cannot receive messages") from None
            raise Failed(f"Twilio {status} {code}: {getattr(exc, 'msg', exc)}") from None
        except requests.exceptions.ConnectionError as exc:
            if isinstance(exc, requests.exceptions.ConnectTimeout) or "refused" in str(exc).lower():
                raise Retryable(f"cannot reach Twilio: {exc}") from None
            raise DeliveryUnknown(f"connection to Twilio broke: {exc}") from None
        except requests.exceptions.Timeout as exc:
            raise DeliveryUnknown(f"no answer from Twilio: {exc}") from None
        segments = getattr(sent, "num_segments", None)
        return Delivery(message.delivery_id, provider_id=getattr(sent, "sid", None), status="queued",
                        segments=int(segments) if segments else sms_size(body).segments)
