"""Golden dry-runs: the shipped journeys against the sample users, byte for byte.

A change to a journey, a template, a policy or the engine that changes what any sample user
receives shows up here as a diff. When the change is intended, read the new timelines, then
refresh the files with::

    UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden.py
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path

import pytest

try:
    from dryrun_helpers import ROOT, invoke
except ImportError:  # tests/ imported as a package
    from tests.dryrun_helpers import ROOT, invoke

GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"

CASES = {
    "cart_abandonment": ("cart_abandonment", None),
    "lesson_reminder": ("lesson_reminder", None),
    "onboarding": ("onboarding", None),
    "cart_abandonment_events": ("cart_abandonment", "samples/events/cart_abandonment.yaml"),
}


def _dry_run(journey: str, events: str | None) -> str:
    args = ["dry-run", journey, "--users", "samples/users.yaml"]
    if events:
        args += ["--events", events]
    proc = invoke(*args, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_sample_events_file_exists() -> None:
    assert (ROOT / CASES["cart_abandonment_events"][1]).is_file()


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name: str) -> None:
    journey, events = CASES[name]
    actual = _dry_run(journey, events)
    json.loads(actual)  # always valid JSON
    path = GOLDEN / f"{name}.json"
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(actual, encoding="utf-8")
        pytest.skip(f"rewrote {path.relative_to(ROOT)}")
    assert path.is_file(), f"{path} is missing; create it with UPDATE_GOLDEN=1"
    expected = path.read_text(encoding="utf-8")
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                actual.splitlines(keepends=True),
                f"golden/{name}.json",
                "dry-run output",
                n=2,
            )
        )
        lines = diff.splitlines()
        shown = "\n".join(lines[:120]) + (f"\n... {len(lines) - 120} more lines" if len(lines) > 120 else "")
        pytest.fail(
            f"the dry-run of {journey} no longer matches golden/{name}.json; if the change is "
            f"intended, rerun with UPDATE_GOLDEN=1\n{shown}",
            pytrace=False,
        )


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_files_are_consistent(name: str) -> None:
    """Sanity checks on the frozen files themselves, so a bad refresh cannot slip through."""
    path = GOLDEN / f"{name}.json"
    if not path.is_file():
        pytest.skip("missing; test_golden reports it")
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["journey"] == CASES[name][0]
    assert data["start"] == "2026-01-05T14:00:00Z"
    users = {e["user"] for e in data["timeline"]}
    assert users <= {f"u-{n}" for n in "ana bruno chloe dev emi farah gus hana ivan jo".split()}
    # Every run that entered ended within the 30-day horizon.
    assert data["summary"]["in_progress"] == 0
    enters = sum(1 for e in data["timeline"] if e["action"] == "enter")
    exits = sum(1 for e in data["timeline"] if e["action"] == "exit")
    restarts = sum(1 for e in data["timeline"] if e["action"] == "enter" and e.get("reason") == "restarted")
    assert enters - restarts == exits
