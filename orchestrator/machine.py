"""The compiled journey: plain, immutable, serializable data. Core: no I/O.

A :class:`Machine` is what the engine runs. It is identified by ``version``, a hash of its
content (including the digests of the templates it uses), so editing a journey or one of its
templates yields a new version and a run can stay pinned to the version it entered with.

States are a closed union; ``next = None`` means "the journey is complete".
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal, Mapping, Union


@dataclass(frozen=True)
class SendState:
    channels: tuple[str, ...]
    prefer_user: bool
    template: str
    next: str | None
    kind: Literal["send"] = "send"


@dataclass(frozen=True)
class WaitState:
    seconds: int | None
    until: str | None  # "HH:MM" in the user's time zone
    next: str | None
    kind: Literal["wait"] = "wait"


@dataclass(frozen=True)
class WaitForState:
    event: str
    when: str | None
    timeout: int
    on_event: str | None
    on_timeout: str | None
    kind: Literal["wait_for"] = "wait_for"


@dataclass(frozen=True)
class BranchState:
    cases: tuple[tuple[str, str | None], ...]  # (condition, next)
    otherwise: str | None
    kind: Literal["branch"] = "branch"


@dataclass(frozen=True)
class SplitState:
    variants: tuple[tuple[str, float, str | None], ...]  # (name, weight %, next)
    kind: Literal["split"] = "split"


@dataclass(frozen=True)
class UpdateProfileState:
    changes: Mapping[str, Any]
    next: str | None
    kind: Literal["update_profile"] = "update_profile"


@dataclass(frozen=True)
class ExitState:
    reason: str
    converted: bool
    kind: Literal["exit"] = "exit"


State = Union[
    SendState, WaitState, WaitForState, BranchState, SplitState, UpdateProfileState, ExitState
]
_STATE_TYPES: dict[str, type] = {
    "send": SendState,
    "wait": WaitState,
    "wait_for": WaitForState,
    "branch": BranchState,
    "split": SplitState,
    "update_profile": UpdateProfileState,
    "exit": ExitState,
}
WAITING_KINDS = frozenset({"wait", "wait_for"})


@dataclass(frozen=True)
class Match:
    """An event, with an optional condition (goals, exits)."""

    event: str
    when: str | None = None


@dataclass(frozen=True)
class Cap:
    max: int
    per: int  # seconds
    channel: str | None = None


@dataclass(frozen=True)
class Delivery:
    quiet_hours: tuple[str, str] | None = None  # ("21:00", "08:00") local time
    timezone: str = "UTC"
    frequency_caps: tuple[Cap, ...] = ()
    opt_in_required: tuple[str, ...] = ()


@dataclass(frozen=True)
class Machine:
    journey: str
    trigger_event: str
    trigger_when: str | None
    audience: str | None
    re_entry: str
    holdout: float  # percent
    goals: tuple[Match, ...]
    exits: tuple[Match, ...]
    conversion_window: int
    delivery: Delivery
    start: str
    states: Mapping[str, State]
    templates: Mapping[str, str] = field(default_factory=dict)  # file -> sha256
    profile_defaults: Mapping[str, Any] = field(default_factory=dict)  # from the catalog
    description: str | None = None
    version: str = ""

    def listens_to(self) -> frozenset[str]:
        """Every event name that can change a run of this machine or start one."""
        names = {self.trigger_event, *(m.event for m in self.goals), *(m.event for m in self.exits)}
        names.update(s.event for s in self.states.values() if isinstance(s, WaitForState))
        return frozenset(names)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["states"] = {k: asdict(v) for k, v in self.states.items()}
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Machine":
        d = dict(data)
        d["goals"] = tuple(Match(**g) for g in d["goals"])
        d["exits"] = tuple(Match(**g) for g in d["exits"])
        dl = dict(d["delivery"])
        dl["quiet_hours"] = tuple(dl["quiet_hours"]) if dl["quiet_hours"] else None
        dl["frequency_caps"] = tuple(Cap(**c) for c in dl["frequency_caps"])
        dl["opt_in_required"] = tuple(dl.get("opt_in_required", ()))
        d["delivery"] = Delivery(**dl)
        d["states"] = {k: _state_from_dict(v) for k, v in d["states"].items()}
        return cls(**d)

    def with_version(self) -> "Machine":
        unversioned = replace(self, version="")
        digest = hashlib.sha256(unversioned.to_json().encode()).hexdigest()
        return replace(self, version=digest[:16])


def _state_from_dict(data: Mapping[str, Any]) -> State:
    cls = _STATE_TYPES[data["kind"]]
    kwargs = dict(data)
    names = {f.name for f in fields(cls)}
    if "channels" in kwargs:
        kwargs["channels"] = tuple(kwargs["channels"])
    if "cases" in kwargs:
        kwargs["cases"] = tuple(tuple(c) for c in kwargs["cases"])
    if "variants" in kwargs:
        kwargs["variants"] = tuple(tuple(v) for v in kwargs["variants"])
    return cls(**{k: v for k, v in kwargs.items() if k in names})  # type: ignore[no-any-return]


def successors(state: State) -> list[str | None]:
    """Every state a state can lead to (``None`` = complete)."""
    match state:
        case SendState() | WaitState() | UpdateProfileState():
            return [state.next]
        case WaitForState():
            return [state.on_event, state.on_timeout]
        case BranchState():
            return [n for _, n in state.cases] + [state.otherwise]
        case SplitState():
            return [n for _, _, n in state.variants]
        case ExitState():
            return []
    raise AssertionError(f"unknown state {state!r}")
