"""Prints each message to a stream: for development. Shell."""

from __future__ import annotations

import sys
from typing import TextIO

from .base import Delivery, OutboundMessage


class ConsoleChannel:
    name = "console"

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def send(self, message: OutboundMessage) -> Delivery:
        to = ", ".join(message.to) if isinstance(message.to, tuple) else message.to
        lines = [f"--- {message.channel} to {to} [{message.delivery_id}]"]
        if message.subject:
            lines.append(f"subject: {message.subject}")
        lines.append(message.body)
        self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()
        return Delivery(message.delivery_id, provider_id=f"console-{message.delivery_id}")
