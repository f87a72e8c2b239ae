"""The project's error tree. Core: no I/O.

    OrchestratorError
    ├── JourneyError          the journey author's fault: YAML, spec, templates, conditions.
    │   └── JourneyErrors     several JourneyErrors found at once (the compiler reports all).
    ├── InputError            a dry-run input file (users, events) that cannot be read.
    └── RenderError           a template that failed for one user at send time.

Every error carries what is wrong and, where it can, what was expected, so the message alone
tells the reader the fix. Locations print as ``path:line:col`` (1-based), the format editors
and CI annotations understand.
"""

from __future__ import annotations

from dataclasses import dataclass
from difflib import get_close_matches
from typing import Iterable


@dataclass(frozen=True)
class Location:
    path: str
    line: int = 0  # 1-based; 0 means "the whole file"
    col: int = 0

    def __str__(self) -> str:
        if self.line <= 0:
            return self.path
        return f"{self.path}:{self.line}:{max(self.col, 1)}"


class OrchestratorError(Exception):
    """Base of every error this project raises on purpose."""


class JourneyError(OrchestratorError):
    """One mistake in a journey definition, with where it is."""

    def __init__(self, message: str, location: Location | None = None) -> None:
        message = _one_line(message)
        super().__init__(message)
        self.message = message
        self.location = location

    def __str__(self) -> str:
        where = f"{self.location}: " if self.location else ""
        return f"{where}error: {self.message}"


class JourneyErrors(JourneyError):
    """Every mistake found in one pass, in file order."""

    def __init__(self, errors: Iterable[JourneyError]) -> None:
        self.errors = sorted(
            errors,
            key=lambda e: (
                e.location.path if e.location else "",
                e.location.line if e.location else 0,
                e.location.col if e.location else 0,
            ),
        )
        super().__init__(f"{len(self.errors)} error(s)")

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


class InputError(OrchestratorError):
    """A users or events file the dry-run cannot use."""


class RenderError(OrchestratorError):
    """A template that could not be rendered for one user."""


def _one_line(text: str) -> str:
    """Control characters from the input (a key "a\\nb") escaped: an error is one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'send'?"`` or ``""`` when nothing is close."""
    close = get_close_matches(str(word), sorted(set(choices)), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def one_of(choices: Iterable[str]) -> str:
    return ", ".join(f"'{c}'" for c in sorted(set(choices)))
