"""Push through Firebase Cloud Messaging's HTTP v1 API. Shell.

We call the v1 REST endpoint directly with Google's official auth library (``google-auth``:
service-account credentials, OAuth2 token exchange and refresh) instead of ``firebase-admin``:
its messaging endpoint is hard-coded (so it cannot be tested against a local server without
patching its internals) and it sleeps through retries inside ``send()``, which would hide
Retry-After from our own retry policy.

Configuration: ``FCM_CREDENTIALS`` (a service-account JSON file path, or the JSON itself;
default ``GOOGLE_APPLICATION_CREDENTIALS``), ``FCM_PROJECT_ID`` (default: the service account's
project), ``FCM_API_BASE`` (default ``https://fcm.googleapis.com``).

A user may have several device tokens: each gets the message. A token FCM calls UNREGISTERED
or invalid is reported back in ``dead_tokens`` so the runtime removes it from the profile;
it is never retried. Messages carry a collapse key (one per journey step) and the deep link.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any, Mapping

import google.auth.exceptions
import requests
from google.auth.transport.requests import AuthorizedSession
from google.oauth2 import service_account

from .base import Delivery, DeliveryUnknown, Failed, OutboundMessage, Rejected, Retryable, retry_after

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
DEAD = frozenset({"UNREGISTERED"})
RETRY = frozenset({"QUOTA_EXCEEDED", "UNAVAILABLE", "INTERNAL"})


class ConfigurationError(Exception):
    pass


def _credentials_info(value: str) -> Mapping[str, Any]:
    value = value.strip()
    if value.startswith("{"):
        return json.loads(value)  # type: ignore[no-any-return]
    with open(value, encoding="utf-8") as fh:
        return json.load(fh)  # type: ignore[no-any-return]


class FcmChannel:
    name = "push"

    def __init__(self, credentials: str | Mapping[str, Any] | None = None, project_id: str | None = None,
                 api_base: str | None = None, timeout: float = 10.0) -> None:
        env = os.environ
        source = credentials or env.get("FCM_CREDENTIALS") or env.get("GOOGLE_APPLICATION_CREDENTIALS")
        if not source:
            raise ConfigurationError("the FCM channel needs FCM_CREDENTIALS (a service-account JSON)")
        info = dict(source) if isinstance(source, Mapping) else _credentials_info(source)
        self.project_id = project_id or env.get("FCM_PROJECT_ID") or info.get("project_id")
        if not self.project_id:
            raise ConfigurationError("the FCM channel needs FCM_PROJECT_ID")
        creds = service_account.Credentials.from_service_account_info(info, scopes=[SCOPE])
        self.base = (api_base or env.get("FCM_API_BASE") or "https://fcm.googleapis.com").rstrip("/")
        self.timeout = timeout
        self._local = threading.local()
        self._creds = creds

    @property
    def session(self) -> AuthorizedSession:
        """One session per thread (requests sessions are not thread-safe); the credentials,
        and so the cached access token, are shared."""
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = AuthorizedSession(self._creds)
        return s

    def payload(self, message: OutboundMessage, token: str) -> dict[str, Any]:
        meta = message.metadata
        collapse = f"{meta.get('journey', 'journey')}.{meta.get('step', 'message')}"[:64]
        data = {"delivery_id": message.delivery_id}
        if message.link:
            data["link"] = message.link
        msg: dict[str, Any] = {
            "token": token,
            "notification": {"title": message.subject or "", "body": message.body},
            "data": data,
            "android": {"collapse_key": collapse},
            "apns": {"headers": {"apns-collapse-id": collapse}},
        }
        if message.link:
            msg["webpush"] = {"fcm_options": {"link": message.link}}
        return {"message": msg}

    def send(self, message: OutboundMessage) -> Delivery:
        tokens = [message.to] if isinstance(message.to, str) else list(message.to)
        tokens = [t for t in tokens if t]
        if not tokens:
            raise Rejected("no push token")
        url = f"{self.base}/v1/projects/{self.project_id}/messages:send"
        sent: list[str] = []
        dead: list[str] = []
        retry: Retryable | None = None
        unknown: str | None = None
        failed: str | None = None
        for token in tokens:
            try:
                r = self.session.post(url, json=self.payload(message, token), timeout=self.timeout)
            except google.auth.exceptions.RefreshError as exc:
                # The OAuth exchange was refused: nothing reached FCM for this token or the next.
                if getattr(exc, "retryable", False):
                    retry = retry or Retryable(f"FCM access token refresh failed: {exc}")
                else:
                    failed = f"FCM access token refused: {exc}"
                break
            except google.auth.exceptions.TransportError as exc:  # the token endpoint is unreachable
                retry = retry or Retryable(f"cannot reach the OAuth token endpoint: {exc}")
                break
            except requests.exceptions.ConnectionError as exc:
                if isinstance(exc, requests.exceptions.ConnectTimeout) or "refused" in str(exc).lower():
                    retry = retry or Retryable(f"cannot reach FCM: {exc}")
                else:
                    unknown = f"connection to FCM broke: {exc}"
                continue
            except requests.exceptions.Timeout as exc:
                unknown = f"no answer from FCM: {exc}"
                continue
            if r.status_code == 200:
                sent.append(r.json().get("name", ""))
                continue
            code, status, text = _error(r)
            if code in DEAD or (code == "INVALID_ARGUMENT" and "token" in text.lower()):
                dead.append(token)
            elif r.status_code == 429 or r.status_code >= 500 or code in RETRY:
                retry = retry or Retryable(f"FCM {r.status_code} {code or status}", retry_after(r.headers))
            else:
                failed = f"FCM {r.status_code} {code or status}: {text[:200]}"
        if sent:
            # Some devices got it: done. Never resend to those because others failed.
            return Delivery(message.delivery_id, provider_id=sent[0], status="sent", dead_tokens=tuple(dead))
        if unknown:
            raise DeliveryUnknown(unknown)
        if retry:
            raise retry
        if dead and not failed:
            raise Rejected("every push token is unregistered or invalid", dead_tokens=tuple(dead))
        raise Failed(failed or "FCM refused the message")


def _error(r: requests.Response) -> tuple[str | None, str, str]:
    try:
        err = r.json().get("error", {})
    except ValueError:
        return None, str(r.status_code), r.text
    code = next((d.get("errorCode") for d in err.get("details", []) if d.get("@type") == FCM_ERROR), None)
    return code, str(err.get("status", r.status_code)), str(err.get("message", ""))
