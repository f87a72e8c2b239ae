"""Turns pydantic's validation errors into a marketer's one-line errors. Core: no I/O.

``steps.2.sned: Extra inputs are not permitted`` becomes
``journeys/x.yaml:14:7: error: unknown key 'sned' in step 'nudge'; did you mean 'send'?``
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ValidationError

from . import spec
from .errors import JourneyError, did_you_mean, one_of
from .loader import LocatedDict, key_location, locate

# The model that validates the mapping found under a key (or list of mappings).
_MODEL_UNDER: dict[str, type[BaseModel]] = {
    "": spec.JourneySpec,
    "trigger": spec.TriggerSpec,
    "steps": spec.StepSpec,
    "send": spec.SendSpec,
    "wait": spec.WaitSpec,
    "wait_for": spec.WaitForSpec,
    "branch": spec.BranchSpec,
    "cases": spec.BranchCase,
    "split": spec.Variant,
    "exit": spec.ExitSpec,
    "goals": spec.EventMatch,
    "exit_on": spec.EventMatch,
    "delivery": spec.DeliverySpec,
    "quiet_hours": spec.QuietHours,
    "frequency_caps": spec.FrequencyCap,
}


def _keys(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _parent_model(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    names = [p for p in loc if isinstance(p, str)]
    key = names[-1] if names else ""
    return _MODEL_UNDER.get(key)


def _where(data: Any, loc: tuple[Any, ...]) -> str:
    """`` in step 'nudge'`` / `` in trigger`` for a message."""
    if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
        steps = data.get("steps") if isinstance(data, dict) else None
        step = steps[loc[1]] if isinstance(steps, list) and loc[1] < len(steps) else None
        sid = step.get("id") if isinstance(step, dict) else None
        label = f"step '{sid}'" if isinstance(sid, str) else f"step #{loc[1] + 1}"
        rest = [str(p) for p in loc[2:] if isinstance(p, str)]
        return f" in {label}" + (f" ({'.'.join(rest)})" if rest else "")
    names = [str(p) for p in loc if isinstance(p, str)]
    return f" in {'.'.join(names)}" if names else ""


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def translate(exc: ValidationError, data: Any, path: str) -> list[JourneyError]:
    out: list[JourneyError] = []
    seen: set[tuple[str, int, int]] = set()
    for err in exc.errors():
        loc = tuple(err["loc"])
        kind = err["type"]
        if kind == "extra_forbidden":
            key = str(loc[-1])
            parent = loc[:-1]
            model = _parent_model(parent)
            allowed = _keys(model) if model else []
            hint = did_you_mean(key, allowed)
            if model is spec.StepSpec:
                msg = (
                    f"unknown step kind or key '{key}'{_where(data, parent)}{hint}"
                    f" a step has an id and one of: {', '.join(spec.STEP_KINDS)}"
                )
            else:
                msg = f"unknown key '{key}'{_where(data, parent)}{hint}"
                if not hint and allowed:
                    msg += f"; expected one of {one_of(allowed)}"
            where = key_location(data, loc, path)
        elif kind == "missing":
            key = str(loc[-1])
            parent = loc[:-1]
            msg = f"missing required key '{key}'{_where(data, parent)}"
            model = _parent_model(parent)
            field = model.model_fields.get(key) if model else None
            if field is not None and field.description:
                msg += f" ({field.description})"
            where = locate(data, parent, path)
        elif kind in ("value_error", "assertion_error"):
            text = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
            msg = f"{text}{_where(data, loc)}" if _where(data, loc) not in text else text
            where = locate(data, loc, path)
        elif kind == "literal_error":
            expected = err.get("ctx", {}).get("expected", "")
            got = err.get("input")
            # pydantic writes the choices as "'ignore', 'restart' or 'parallel'".
            hint = did_you_mean(str(got), re.findall(r"'([^']*)'", str(expected)))
            msg = (
                f"{_describe(got)} is not allowed{_where(data, loc)}{hint or ';'} "
                f"expected {expected}"
            )
            where = locate(data, loc, path)
        elif kind in ("model_type", "dict_type", "model_attributes_type"):
            msg = f"expected a mapping of keys to values{_where(data, loc)} (got {_describe(err.get('input'))})"
            where = locate(data, loc, path)
        elif kind == "string_pattern_mismatch":
            msg = (
                f"{_describe(err.get('input'))} is not a valid name{_where(data, loc)}; "
                "use letters, digits and _ (and / in template names), starting with a letter"
            )
            where = locate(data, loc, path)
        elif kind == "too_short":
            msg = f"{err['msg'].lower()}{_where(data, loc)}"
            where = locate(data, loc, path)
        else:
            msg = f"{err['msg']}{_where(data, loc)} (got {_describe(err.get('input'))})"
            where = locate(data, loc, path)
        sig = (msg, where.line, where.col)
        if sig in seen:
            continue
        seen.add(sig)
        out.append(JourneyError(msg, where))
    return out


def is_mapping(data: Any) -> bool:
    return isinstance(data, LocatedDict)
