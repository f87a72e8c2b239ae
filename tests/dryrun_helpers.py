"""Shared helpers for the dry-run, template and input-file tests.

Kept out of ``conftest.py`` on purpose: these are plain functions the test modules import, so
they work whatever fixtures ``conftest.py`` happens to define.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from orchestrator.catalog import load_catalog
from orchestrator.compiler import compile_journey
from orchestrator.engine import HOLDOUT_STEP, Event, bucket
from orchestrator.machine import Machine
from orchestrator.project import Project
from orchestrator.render import Renderer
from orchestrator.simulate import Entry, Result, Simulator

ROOT = Path(__file__).resolve().parents[1]
PROJECT = Project(ROOT)
SAMPLE_USERS = ROOT / "samples" / "users.yaml"
JOURNEYS = ("cart_abandonment", "lesson_reminder", "onboarding")
UTC = timezone.utc
# The CLI's default start: Monday 2026-01-05 14:00 UTC.
START = datetime(2026, 1, 5, 14, 0, tzinfo=UTC)


@lru_cache(maxsize=None)
def machine(name: str) -> Machine:
    return compile_journey(PROJECT.journey_path(name), PROJECT)


@lru_cache(maxsize=1)
def renderer() -> Renderer:
    return Renderer(PROJECT.templates_dir)


@lru_cache(maxsize=1)
def catalog() -> Any:
    return load_catalog(PROJECT.catalog_path)


def example(event: str) -> dict[str, Any]:
    """The catalog's example properties for ``event`` (a fresh copy)."""
    import copy

    return copy.deepcopy(dict(catalog().events[event].example))


def cart(cart_id: str, *items: tuple[str, str, float, int], currency: str = "USD") -> dict[str, Any]:
    """A ``cart_updated`` payload from ``(sku, name, price, quantity)`` tuples."""
    lines = [
        {
            "sku": sku,
            "name": name,
            "price": price,
            "quantity": qty,
            "image_url": f"https://cdn.example.com/p/{sku.lower()}.jpg",
        }
        for sku, name, price, qty in items
    ]
    return {
        "cart_id": cart_id,
        "items": lines,
        "total": round(sum(p * q for _, _, p, q in items), 2),
        "currency": currency,
    }


def user(uid: str, **attrs: Any) -> dict[str, Any]:
    """A reachable user in UTC with every contact point unless ``attrs`` say otherwise."""
    base: dict[str, Any] = {
        "id": uid,
        "first_name": uid.split("-")[0].title(),
        "email": f"{uid}@example.com",
        "phone": "+15555550100",
        "push_tokens": [f"tok-{uid}"],
        "timezone": "UTC",
        "unsubscribed": [],
    }
    base.update(attrs)
    return base


def ev(uid: str, name: str, at: datetime, props: Mapping[str, Any] | None = None) -> Event:
    return Event(uid, name, at, dict(props or {}))


def simulate(
    journey: str,
    users: Iterable[Mapping[str, Any]],
    events: Iterable[Event],
    *,
    start: datetime = START,
    days: float = 10,
) -> Result:
    m = machine(journey)
    sim = Simulator(m, renderer(), [dict(u) for u in users])
    return sim.run(list(events), start, start + timedelta(days=days))


def entries(result: Result, uid: str, action: str | None = None) -> list[Entry]:
    return [e for e in result.timeline if e.user == uid and (action is None or e.action == action)]


def story(result: Result, uid: str) -> list[tuple[str, str | None, str | None]]:
    """``(action, step, channel)`` for each of a user's timeline entries."""
    return [(e.action, e.step, e.channel) for e in entries(result, uid)]


def is_held_out(journey: str, uid: str) -> bool:
    m = machine(journey)
    return m.holdout > 0 and bucket(m.journey, uid, HOLDOUT_STEP) * 100 < m.holdout


def offer_variant(uid: str) -> str:
    """The cart_abandonment split's variant for ``uid``, computed from the documented rule
    (a stable hash of journey, user and step), independently of the engine's own code path."""
    return "discount" if bucket("cart_abandonment", uid, "offer") < 0.5 else "free_shipping"


def pick_user_id(prefix: str, ok: Callable[[str], bool]) -> str:
    """The first ``prefix-N`` id for which ``ok`` holds (deterministic)."""
    for n in range(1, 10_000):
        uid = f"{prefix}-{n}"
        if ok(uid):
            return uid
    raise AssertionError(f"no id with prefix {prefix!r} satisfies the predicate")


def treated(prefix: str, variant: str | None = None) -> str:
    """A cart_abandonment user id outside the holdout, optionally with a given offer variant."""
    return pick_user_id(
        prefix,
        lambda u: not is_held_out("cart_abandonment", u)
        and (variant is None or offer_variant(u) == variant),
    )


def run_cli(*args: str, cwd: Path = ROOT, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``journey ARGS`` as a user runs it: a separate process, through ``main()``."""
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        cwd=str(cwd),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
    )


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def invoke(*args: str) -> CliResult:
    """``journey ARGS`` in this process, through ``main()`` exactly as the console script runs
    it (its error handling included), from the project root. Much faster than a subprocess."""
    import contextlib
    import io
    import os

    from orchestrator import cli

    out, err = io.StringIO(), io.StringIO()
    old_argv, old_cwd = sys.argv, os.getcwd()
    old_project = os.environ.pop("JOURNEY_PROJECT", None)
    code = 0
    try:
        sys.argv = ["journey", *args]
        os.chdir(ROOT)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = old_argv
        os.chdir(old_cwd)
        if old_project is not None:
            os.environ["JOURNEY_PROJECT"] = old_project
    return CliResult(code, out.getvalue(), err.getvalue())


def run_cli_bytes(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        cwd=str(cwd),
        capture_output=True,
        timeout=60,
        env=_env(),
    )


def _env() -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if k != "JOURNEY_PROJECT"}
    env["PYTHONHASHSEED"] = "random"
    env["PYTHONIOENCODING"] = "utf-8"
    env["COLUMNS"] = "140"
    return env
