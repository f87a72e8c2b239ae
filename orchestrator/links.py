"""Signed links in messages: the one-click unsubscribe URL. Core (pure: the key is passed in).

A token is ``<payload>.<mac>``: the payload is the user id and channel (base64url JSON), the mac
an HMAC-SHA256 of it under the server's ``JOURNEY_SECRET_KEY``. Nobody can unsubscribe someone
else by editing a link, and a link keeps working without any state on the server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from urllib.parse import quote


class InvalidLink(Exception):
    pass


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class LinkSigner:
    secret: bytes
    base: str  # public base URL of the API, e.g. https://journeys.example.com

    def token(self, user_id: str, channel: str) -> str:
        payload = _b64(json.dumps([user_id, channel], separators=(",", ":")).encode())
        mac = hmac.new(self.secret, payload.encode(), hashlib.sha256).digest()[:18]
        return f"{payload}.{_b64(mac)}"

    def unsubscribe_url(self, user_id: str, channel: str) -> str:
        return f"{self.base.rstrip('/')}/v1/unsubscribe/{quote(self.token(user_id, channel), safe='')}"

    def verify(self, token: str) -> tuple[str, str]:
        """The (user id, channel) a token was made for; :class:`InvalidLink` if forged."""
        payload, _, mac = token.partition(".")
        try:
            expected = hmac.new(self.secret, payload.encode(), hashlib.sha256).digest()[:18]
            if not mac or not hmac.compare_digest(_unb64(mac), expected):
                raise InvalidLink("this link is not valid (it was changed or is not ours)")
            user_id, channel = json.loads(_unb64(payload))
        except InvalidLink:
            raise
        except Exception:  # noqa: BLE001 - any malformed token
            raise InvalidLink("this link is not valid") from None
        return str(user_id), str(channel)
