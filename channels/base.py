"""The one small interface every channel implements, and the registry that finds them. Shell.

A channel takes an :class:`OutboundMessage` and returns a :class:`Delivery`, or raises one of:

* :class:`Retryable`: the provider did not take the message; try again later (a 429 with
  Retry-After, a 5xx, a connection refused before the request was sent);
* :class:`Rejected`: this contact point will never work (an invalid or unsubscribed number, an
  address that does not exist): the contact point is suppressed, not the user;
* :class:`Failed`: this message cannot be sent (the provider refused its content or our
  credentials); not retried, nothing suppressed;
* :class:`DeliveryUnknown`: the request may have reached the provider but no answer came (a read
  timeout): recorded as unknown and never resent. Third-party channels register under
the entry point group ``journey_orchestrator.channels``::

    [project.entry-points."journey_orchestrator.channels"]
    whatsapp = "my_package.whatsapp:WhatsAppChannel"
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Mapping, Protocol, runtime_checkable

ENTRY_POINT_GROUP = "journey_orchestrator.channels"


@dataclass(frozen=True)
class OutboundMessage:
    delivery_id: str  # unique per (run, step, generation, channel): the idempotency key
    channel: str
    to: str | tuple[str, ...]  # email address, phone number, or push tokens
    subject: str | None
    body: str
    html: str | None = None
    link: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    unsubscribe_url: str | None = None  # one-click unsubscribe (RFC 8058) for email
    status_callback: str | None = None  # where the provider reports delivery status


@dataclass(frozen=True)
class Delivery:
    delivery_id: str
    provider_id: str | None
    status: str = "sent"  # sent | queued
    segments: int | None = None
    # Push tokens the provider said are dead (unregistered, invalid): removed from the profile.
    dead_tokens: tuple[str, ...] = ()


class Retryable(Exception):
    """Try again after ``after`` seconds (None: the caller's backoff decides)."""

    def __init__(self, reason: str, after: float | None = None) -> None:
        super().__init__(reason)
        self.after = after


class Rejected(Exception):
    """The provider refused this contact point for good; suppress it, not the user.
    ``dead_tokens`` lists push tokens to remove from the profile."""

    def __init__(self, reason: str, dead_tokens: tuple[str, ...] = ()) -> None:
        super().__init__(reason)
        self.dead_tokens = dead_tokens


class Failed(Exception):
    """This message cannot be sent (content refused, credentials wrong); not retried."""


class DeliveryUnknown(Exception):
    """The request may have reached the provider; do not send it again."""


def retry_after(headers: Any, default: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date) or an
    ``X-RateLimit-Reset`` epoch; ``default`` when neither is usable."""
    import email.utils
    import time

    if headers is None:
        return default
    value = headers.get("Retry-After") or headers.get("retry-after")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
                return max(0.0, when.timestamp() - time.time())
            except (TypeError, ValueError):
                pass
    reset = headers.get("X-RateLimit-Reset") or headers.get("x-ratelimit-reset")
    if reset:
        try:
            return max(0.0, float(reset) - time.time())
        except ValueError:
            pass
    return default


@runtime_checkable
class Channel(Protocol):
    name: str

    def send(self, message: OutboundMessage) -> Delivery: ...


def available_channels() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_channel(name: str, **options: Any) -> Channel:
    """Instantiate the channel registered as ``name`` with ``options``."""
    found = available_channels()
    if name not in found:
        known = ", ".join(sorted(found)) or "none"
        raise LookupError(
            f"no channel named '{name}' (installed: {known}); a channel package registers "
            f"itself under the entry point group '{ENTRY_POINT_GROUP}'"
        )
    cls = found[name].load()
    channel: Channel = cls(**options)
    return channel
