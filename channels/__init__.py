"""Channel adapters: how a rendered message leaves the system (shell).

The distribution is ``journey-orchestrator``; its import package ``channels`` shares a name
with Django Channels, so do not install both in one environment.
"""

from .base import Channel, Delivery, OutboundMessage, Rejected, Retryable, load_channel

__all__ = ["Channel", "Delivery", "OutboundMessage", "Rejected", "Retryable", "load_channel"]
