"""Logging for the service processes. Shell.

:func:`configure_logging` gives the root logger one handler writing either one JSON object per
line (python-json-logger: ``time``, ``level``, ``logger``, ``message`` and every ``extra``
field) or plain text for a human at a terminal. Either way the handler's :class:`Redact` filter
replaces email addresses with ``[email]`` and phone numbers with ``[phone]`` in the message and
in every extra field, and the formatters do the same to tracebacks. Log ids (run, delivery,
event), never a profile; the filter is the safety net for what slips through (a provider's error
text quoting an address, say).
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from datetime import UTC, date, datetime
from types import TracebackType
from typing import Any, TextIO
from urllib.parse import unquote

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

# The local part without "/", "=", "?" and "&", so that a URL keeps its path and query names.
EMAIL = re.compile(r"[\w.!#$%'*+^`{|}~-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}\b")
# E.164-ish: "+" and 7 to 15 digits, with spaces, dots, dashes or brackets between them; or a
# bare run of 10 or more digits (a national number) that is not part of a word or a decimal.
PHONE = re.compile(r"\+\d(?:[ .()-]{0,2}\d){6,14}(?!\d)|(?<![\w.:/-])\d{10,}(?![\w.])")
# Record attributes that are not ``extra`` fields; uvicorn's ANSI-coloured copy of its message
# is dropped.
STANDARD = frozenset(RESERVED_ATTRS) | {"message", "asctime", "taskName", "color_message"}
PLAIN = (int, float, bool, type(None), datetime, date)
# Exact strings never redacted although they look like an address: a Celery node name such as
# ``worker@host.example.com`` (see ``keep``).
_KEEP: set[str] = set()
# Loggers of libraries that install handlers of their own; routed through ours instead.
FOREIGN = ("uvicorn", "uvicorn.error", "uvicorn.access")
QUIET = {"apscheduler": logging.WARNING}  # one line per tick is noise


def keep(*words: str) -> None:
    """Never redact these exact strings (the worker's own node name)."""
    _KEEP.update(w for w in words if w)


def _email(m: re.Match[str]) -> str:
    return m.group(0) if m.group(0) in _KEEP else "[email]"


# Signed tokens in URLs carry the user id (which may be an address): never logged.
TOKEN_PATH = re.compile(r"(/v1/unsubscribe/)[^/\s?\"']+")


def redact(text: str) -> str:
    """``text`` with email addresses, phone numbers and unsubscribe tokens replaced. Percent-
    encoded text is decoded first: an access log quotes ``a@b.com`` in a path as ``a%40b.com``
    and ``+1555...`` as ``%2B1555...``."""
    if "%" in text:
        text = unquote(text)
    text = TOKEN_PATH.sub(r"\1[token]", text)
    return PHONE.sub("[phone]", EMAIL.sub(_email, text))


def redact_value(value: Any) -> Any:
    """Strings redacted, containers walked; other objects (but numbers, booleans and dates)
    become their redacted ``str``, as the JSON encoder would have shown them anyway."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, PLAIN):
        return value
    if isinstance(value, dict):
        return {redact_value(k): redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [redact_value(v) for v in value]
    return redact(str(value))


class Redact(logging.Filter):
    """Redacts the message (merged with its arguments) and every ``extra`` field of a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string: leave it to the handler
            return True
        record.msg, record.args = redact(message), None
        for key, value in list(vars(record).items()):
            if key not in STANDARD:
                setattr(record, key, redact_value(value))
        return True


ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]


def _iso(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


class Json(JsonFormatter):
    """One JSON object per line: time (ISO 8601, UTC), level, logger, message, extras."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s",
                         rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                         reserved_attrs=sorted(STANDARD))

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _iso(record)

    def formatException(self, ei: ExcInfo) -> str:
        return redact("".join(traceback.format_exception(*ei)).rstrip("\n"))

    def formatStack(self, stack_info: str) -> str:
        return redact(stack_info)


class Text(logging.Formatter):
    """``time LEVEL logger: message  key=value ...`` for people reading a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _iso(record)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = [f"{k}={v}" for k, v in vars(record).items() if k not in STANDARD]
        if not extras:
            return text
        first, nl, rest = text.partition("\n")
        return f"{first}  {' '.join(extras)}{nl}{rest}"

    def formatException(self, ei: ExcInfo) -> str:
        return redact(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return redact(stack_info)


def configure_logging(json: bool = True, level: int | str = logging.INFO,
                      stream: TextIO | None = None) -> logging.Handler:
    """Make the root logger write every record (this process's and its libraries') through one
    redacting handler on ``stream`` (default stderr), replacing the handlers it had."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(Json() if json else Text())
    handler.addFilter(Redact())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    for name in FOREIGN:  # their own handlers and levels (uvicorn's --log-level) give way to ours
        foreign = logging.getLogger(name)
        foreign.handlers.clear()
        foreign.propagate, foreign.disabled = True, False
        foreign.setLevel(logging.NOTSET)
    for name, quiet in QUIET.items():
        logging.getLogger(name).setLevel(quiet)
    return handler


def configure_from(log_format: str, log_level: str, *, default_format: str = "json",
                   default_level: int | str = logging.INFO) -> logging.Handler:
    """``configure_logging`` from the settings' ``JOURNEY_LOG_FORMAT`` / ``JOURNEY_LOG_LEVEL``
    (empty: the process's defaults)."""
    return configure_logging(json=(log_format or default_format) == "json",
                             level=log_level or default_level)

