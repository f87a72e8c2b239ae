"""What the engine asks the outside world to do. Core: plain immutable data.

The engine never performs I/O; it returns these and a driver (the dry-run simulator or the
production runtime) applies them: write the run, schedule or cancel a timer row, queue a
message in the outbox, update the profile. ``Entered``, ``Exited`` and ``Assigned`` are facts
a driver records for the timeline and for statistics.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from datetime import datetime
from typing import Any, Mapping, TypeVar, Union

_Record = TypeVar("_Record")


def quick_init(cls: type[_Record]) -> type[_Record]:
    """Give a frozen dataclass an equivalent ``__init__`` that is about a third faster.

    The ``__init__`` that ``@dataclass(frozen=True)`` writes sets every field through
    ``object.__setattr__(self, name, value)``, looking the method up and binding it again for
    each field. This one binds it once per instance (as attrs does): same parameters, same
    defaults, same resulting object. It matters because the engine and the dry-run create
    several of these small records for every step they take. Only plain fields are supported
    (no ``default_factory``, ``init=False``, keyword-only fields or ``__post_init__``); the
    decorator refuses anything else rather than change its meaning.
    """
    namespace: dict[str, Any] = {"_object_setattr": object.__setattr__}
    params: list[str] = []
    body: list[str] = []
    for f in fields(cls):  # type: ignore[arg-type]
        plain = f.init and not f.kw_only and f.default_factory is MISSING
        if not plain or f.name in ("self", "set_"):
            raise TypeError(f"quick_init does not support the field {cls.__name__}.{f.name}")
        if f.default is MISSING:
            params.append(f.name)
        else:
            namespace[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
        body.append(f"    set_({f.name!r}, {f.name})")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"quick_init does not support {cls.__name__}.__post_init__")
    source = (
        f"def __init__(self, {', '.join(params)}):\n"
        "    set_ = _object_setattr.__get__(self)\n" + "\n".join(body) + "\n"
    )
    exec(source, namespace)  # noqa: S102 - generated from the field names, like dataclasses does
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__annotations__ = dict(cls.__init__.__annotations__)  # type: ignore[misc]
    cls.__init__ = init  # type: ignore[misc]
    return cls


@quick_init
@dataclass(frozen=True, slots=True)
class Entered:
    run_id: str
    step: str | None
    holdout: bool
    restarted: bool = False


@quick_init
@dataclass(frozen=True, slots=True)
class Send:
    """Queue one message; the channel is chosen at send time by the delivery policy."""

    run_id: str
    step: str
    template: str
    channels: tuple[str, ...]  # in order of preference
    prefer_user: bool  # try the user's preferred_channel first (if it is in ``channels``)
    generation: int
    variant: str | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class StartTimer:
    run_id: str
    generation: int
    fire_at: datetime
    step: str


@quick_init
@dataclass(frozen=True, slots=True)
class CancelTimer:
    run_id: str
    generation: int


@quick_init
@dataclass(frozen=True, slots=True)
class UpdateProfile:
    user_id: str
    changes: Mapping[str, Any]


@quick_init
@dataclass(frozen=True, slots=True)
class Exited:
    run_id: str
    step: str | None
    reason: str
    converted: bool


@quick_init
@dataclass(frozen=True, slots=True)
class Assigned:
    """A run took ``variant`` at split ``step``: a fact for statistics (a restart clears the
    run's variants, so the funnel counts split passes from these)."""

    run_id: str
    step: str
    variant: str


Effect = Union[Entered, Send, StartTimer, CancelTimer, UpdateProfile, Exited, Assigned]
