"""Appends each message as one JSON line to a file: for development and end-to-end tests.
Shell. Appends are whole lines written with one ``write`` call under an exclusive lock, so
several processes can share one file."""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import asdict
from pathlib import Path

from .base import Delivery, OutboundMessage


class FileChannel:
    name = "file"

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path or os.environ.get("JOURNEY_FILE_SINK", "outbox.jsonl"))

    def send(self, message: OutboundMessage) -> Delivery:
        record = asdict(message)
        record["metadata"] = dict(message.metadata)
        line = json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        return Delivery(message.delivery_id, provider_id=f"file-{message.delivery_id}")
