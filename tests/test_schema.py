"""The JSON Schema editors use matches the compiler's language and the shipped journeys."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from orchestrator.spec import json_schema

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_FILE = ROOT / "docs" / "journey.schema.json"


def test_committed_schema_is_current() -> None:
    committed = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert committed == json_schema(), "run: journey schema --out docs/journey.schema.json"


@pytest.mark.parametrize("path", sorted((ROOT / "journeys").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_journeys_satisfy_the_schema(path: Path) -> None:
    jsonschema.validate(yaml.safe_load(path.read_text(encoding="utf-8")), json_schema())


@pytest.mark.parametrize(
    "journey",
    [
        {"trigger": {"event": "x"}, "steps": [{"id": "a", "sned": {}}]},
        {"trigger": {"event": "x"}, "steps": [{"id": "a", "wait": "soon"}]},
        {"trigger": {"event": "x"}, "steps": [{"id": "a", "send": {"channel": "fax", "template": "t"}}]},
        {"trigger": {"event": "x"}, "re_entry": "sometimes", "steps": [{"id": "a", "exit": True}]},
        {"steps": [{"id": "a", "exit": True}]},
    ],
)
def test_schema_flags_what_the_compiler_rejects(journey: dict) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(journey, json_schema())


def test_schema_accepts_every_shorthand() -> None:
    journey = {
        "trigger": {"event": "x"},
        "goals": ["bought", {"event": "paid", "when": "event.total > 0"}],
        "steps": [
            {"id": "a", "wait": "23h30m"},
            {"id": "b", "wait": {"until": "09:00"}},
            {"id": "c", "send": {"channel": ["push", "email"], "template": "t"}},
            {"id": "d", "exit": "done"},
        ],
    }
    jsonschema.validate(journey, json_schema())
