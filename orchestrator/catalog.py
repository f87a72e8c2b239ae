"""The data catalog: which profile attributes and which events (with which properties) exist.
Core: parses data; :func:`load_catalog` reads the file.

The compiler checks every template and condition against it, so ``event.itmes`` or
``user.frist_name`` is caught before any user sees a broken message. The catalog lives in
``catalog.yaml`` beside ``journeys/``::

    profile:
      first_name: string
      profile_completed: {type: boolean, default: false}
    events:
      cart_updated:
        properties: {cart_id: string, items: list, total: number, currency: string}
        example: {cart_id: c-1, items: [...], total: 42.0, currency: USD}

A profile attribute's ``default`` is what conditions and templates see for a user who lacks it.
An event's ``example`` is what the dry-run fires when no events file is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from typing_extensions import Annotated

from .errors import JourneyError, JourneyErrors, Location
from .loader import load_file, locate

TypeName = Literal["string", "number", "integer", "boolean", "list", "object", "datetime", "any"]

# Contact points and settings every profile may have; see docs/journey-language.md.
BUILTIN_PROFILE: dict[str, TypeName] = {
    "id": "string",
    "email": "string",
    "phone": "string",
    "push_tokens": "list",
    "timezone": "string",
    "locale": "string",
    "first_name": "string",
    "unsubscribed": "list",
    "preferred_channel": "string",
}


def _type_shorthand(value: Any) -> Any:
    return {"type": value} if isinstance(value, str) else value


class Attribute(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: TypeName = "any"
    default: Any = None
    description: str | None = None


AttributeField = Annotated[Attribute, BeforeValidator(_type_shorthand)]


class EventDef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    description: str | None = None
    properties: dict[str, AttributeField] = Field(default_factory=dict)
    example: dict[str, Any] = Field(default_factory=dict)


class Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    profile: dict[str, AttributeField] = Field(default_factory=dict)
    events: dict[str, EventDef] = Field(default_factory=dict)

    def profile_attributes(self) -> set[str]:
        return set(BUILTIN_PROFILE) | set(self.profile)

    def profile_defaults(self) -> dict[str, Any]:
        defaults: dict[str, Any] = {name: None for name in BUILTIN_PROFILE}
        defaults.update(push_tokens=[], unsubscribed=[])
        defaults.update({k: a.default for k, a in self.profile.items()})
        return defaults

    def event_properties(self, event: str) -> set[str] | None:
        d = self.events.get(event)
        return None if d is None else set(d.properties)


def load_catalog(path: str | Path) -> Catalog:
    """Read ``catalog.yaml``; a missing file is an empty catalog (no variable checks)."""
    p = Path(path)
    if not p.is_file():
        return Catalog()
    data = load_file(p)
    if data is None:
        return Catalog()
    try:
        return Catalog.model_validate(data)
    except ValidationError as exc:
        raise JourneyErrors(
            JourneyError(
                f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}",
                locate(data, tuple(err["loc"]), str(path)),
            )
            for err in exc.errors()
        ) from None
    except Exception as exc:  # noqa: BLE001 - never a traceback for bad input
        raise JourneyError(f"cannot read catalog: {exc}", Location(str(path))) from None


_PY_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "list": (list, tuple),
    "object": (dict,),
    "datetime": (str,),
}


def event_problems(catalog: Catalog, name: str, properties: Any) -> list[tuple[str, str]]:
    """What is wrong with an incoming event's properties, as (field, message) pairs. An event
    the catalog does not know is accepted as it is (no journey can use it yet)."""
    if not isinstance(properties, dict):
        return [("properties", "must be an object")]
    d = catalog.events.get(name)
    if d is None:
        return []
    problems = []
    for key, attr in d.properties.items():
        if key not in properties or properties[key] is None:
            problems.append((f"properties.{key}", f"missing: '{name}' events carry '{key}' ({attr.type})"))
            continue
        value = properties[key]
        allowed = _PY_TYPES.get(attr.type)
        bad_bool = isinstance(value, bool) and attr.type in ("number", "integer")
        if allowed is not None and (bad_bool or not isinstance(value, allowed)):
            problems.append(
                (f"properties.{key}", f"expected {attr.type}, got {type(value).__name__} {value!r:.40}")
            )
    return problems
