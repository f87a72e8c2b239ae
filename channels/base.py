"""The one small interface every channel implements, and the registry that finds them. Shell.

A channel takes an :class:`OutboundMessage` and returns a :class:`Delivery`, or raises
:class:`Retryable` (try again later, e.g. a 429 with Retry-After) or :class:`Rejected` (this
contact point will never work, e.g. an invalid number). Third-party channels register under
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


@dataclass(frozen=True)
class Delivery:
    delivery_id: str
    provider_id: str | None
    status: str = "sent"  # sent | queued


class Retryable(Exception):
    """Try again after ``after`` seconds (None: the caller's backoff decides)."""

    def __init__(self, reason: str, after: float | None = None) -> None:
        super().__init__(reason)
        self.after = after


class Rejected(Exception):
    """The provider refused this contact point for good; suppress it, not the user."""


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
