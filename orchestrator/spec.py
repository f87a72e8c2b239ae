"""The journey language: pydantic models of a journey YAML file. Core: no I/O.

A journey reads like a plan::

    trigger: {event: cart_updated, when: "event['items'] | length > 0"}
    re_entry: restart            # ignore | restart | parallel
    holdout: 10%
    goals: [order_completed]
    delivery: {quiet_hours: {start: "21:00", end: "08:00"}}
    steps:
      - id: wait_an_hour
        wait: 1h
      - id: nudge
        send: {channel: preferred, fallback: [push, email, sms], template: cart_nudge}

Every model forbids unknown keys, so a typo is an error with a suggestion rather than a silently
ignored setting. Field descriptions double as the JSON Schema editors use (``journey schema``).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from .durations import format_duration, parse_clock, parse_duration, parse_percent

MAX_CAP_WINDOW = 31 * 86400  # seconds; production loads this much message history for caps

CHANNELS = ("email", "sms", "push")
STEP_KINDS = ("send", "wait", "wait_for", "branch", "split", "update_profile", "exit")
RE_ENTRY = ("ignore", "restart", "parallel")
_ID = r"^[A-Za-z][A-Za-z0-9_]*$"
_DURATION_PATTERN = r"^\s*(\d+(\.\d+)?\s*[wdhms]\s*)+$"


Duration = Annotated[
    int,
    PlainValidator(parse_duration),
    WithJsonSchema({"type": "string", "pattern": _DURATION_PATTERN, "examples": ["1h", "23.5h"]}),
]


def _clock(value: Any) -> str:
    t = parse_clock(value)
    return f"{t.hour:02d}:{t.minute:02d}"


Clock = Annotated[
    str,
    PlainValidator(_clock),
    WithJsonSchema({"type": "string", "pattern": r"^([01]?\d|2[0-3]):[0-5]\d$"}),
]

Percent = Annotated[
    float,
    PlainValidator(parse_percent),
    WithJsonSchema({"type": ["string", "number"], "examples": ["10%"]}),
]


def _weight(value: Any) -> float:
    pct = parse_percent(value)
    if pct <= 0:
        raise ValueError(f"a variant's weight must be more than 0% (got {value!r})")
    return pct


Weight = Annotated[
    float, PlainValidator(_weight), WithJsonSchema({"type": ["string", "number"]})
]


def _timezone(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected an IANA time zone such as Europe/Paris (got {value!r})")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone '{value}'; expected an IANA name such as Europe/Paris"
        ) from None
    return value


TimeZone = Annotated[str, PlainValidator(_timezone), WithJsonSchema({"type": "string"})]


def _channel_choice(value: Any) -> str | tuple[str, ...]:
    allowed = (*CHANNELS, "preferred")
    if isinstance(value, str):
        if value not in allowed:
            from .errors import did_you_mean

            raise ValueError(
                f"unknown channel '{value}'{did_you_mean(value, allowed) or ';'} "
                f"expected one of email, sms, push, preferred, or a list such as [push, email]"
            )
        return value
    if isinstance(value, list) and value:
        for v in value:
            if v not in CHANNELS:
                from .errors import did_you_mean

                raise ValueError(
                    f"unknown channel {v!r} in list{did_you_mean(str(v), CHANNELS) or ';'} "
                    "expected email, sms or push"
                )
        if len(set(value)) != len(value):
            raise ValueError("a channel is listed twice")
        return tuple(value)
    raise ValueError(
        f"expected a channel (email, sms, push, preferred) or a list of them (got {value!r})"
    )


ChannelChoice = Annotated[
    Any,
    PlainValidator(_channel_choice),
    WithJsonSchema(
        {
            "oneOf": [
                {"enum": [*CHANNELS, "preferred"]},
                {"type": "array", "items": {"enum": list(CHANNELS)}, "minItems": 1},
            ]
        }
    ),
]
Channel = Literal["email", "sms", "push"]
StepId = Annotated[str, Field(pattern=_ID, description="Letters, digits and _; starts with a letter.")]
Condition = Annotated[
    str,
    Field(
        description="A Jinja2 expression (no braces), e.g. \"user.country == 'FR'\". "
        "Names: user, event, trigger, journey."
    ),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _event_shorthand(value: Any) -> Any:
    return {"event": value} if isinstance(value, str) else value


class TriggerSpec(_Strict):
    """The event that starts a run, and who may enter."""

    event: str = Field(description="Name of the event that starts a run.")
    when: Condition | None = Field(None, description="Condition on the trigger event.")
    audience: Condition | None = Field(None, description="Condition on the user's profile.")


class EventMatch(_Strict):
    """An event, optionally with a condition: for goals, exits and wait_for."""

    event: str
    when: Condition | None = None


EventMatchField = Annotated[
    EventMatch,
    BeforeValidator(_event_shorthand),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "description": "An event name."},
                {
                    "type": "object",
                    "properties": {"event": {"type": "string"}, "when": {"type": "string"}},
                    "required": ["event"],
                    "additionalProperties": False,
                },
            ]
        }
    ),
]


class QuietHours(_Strict):
    start: Clock = Field(description="Local time quiet hours begin, e.g. 21:00.")
    end: Clock = Field(description="Local time quiet hours end, e.g. 08:00.")


class FrequencyCap(_Strict):
    max: int = Field(gt=0, description="At most this many messages ...")
    per: Duration = Field(description="... in any window this long, e.g. 1d.")
    channel: Channel | None = Field(None, description="Count one channel only; all if absent.")

    @field_validator("per")
    @classmethod
    def _at_most_a_month(cls, v: int) -> int:
        # Production keeps 31 days of message history for caps; a longer window could not be
        # enforced there, so the dry-run would promise what production does not do.
        if v > MAX_CAP_WINDOW:
            raise ValueError(f"a frequency cap window can be at most 31d (got {format_duration(v)})")
        return v


class DeliverySpec(_Strict):
    quiet_hours: QuietHours | None = None
    timezone: TimeZone = Field("UTC", description="Time zone for users who have none.")
    frequency_caps: list[FrequencyCap] = Field(default_factory=list)
    opt_in_required: list[Channel] = Field(
        default_factory=list,
        description="Channels a user must have opted in to (profile attribute <channel>_opt_in "
        "true), e.g. [sms] where the law asks for prior consent to marketing texts.",
    )


class SendSpec(_Strict):
    channel: ChannelChoice = Field(
        description="email, sms, push; 'preferred' for the user's preferred_channel; "
        "or an ordered list to fall back through."
    )
    fallback: list[Channel] = Field(
        default_factory=list,
        description="With channel: preferred, the order to try after the user's preference.",
    )
    template: str = Field(
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_/-]*$",
        description="Template name: templates/<channel>/<name>.* must exist for each channel.",
    )


def _wait_shorthand(value: Any) -> Any:
    return {"duration": value} if isinstance(value, (str, int)) else value


class WaitSpec(_Strict):
    """Either a duration, or until the next local clock time."""

    duration: Duration | None = None
    until: Clock | None = Field(None, description="Wait until the next HH:MM in the user's zone.")

    @model_validator(mode="after")
    def _one(self) -> "WaitSpec":
        if (self.duration is None) == (self.until is None):
            raise ValueError("a wait needs exactly one of 'duration' (e.g. 1h) or 'until' (HH:MM)")
        return self


class WaitForSpec(_Strict):
    event: str = Field(description="The event to wait for.")
    when: Condition | None = None
    timeout: Duration
    on_event: StepId | None = Field(None, description="Step after the event; default next.")
    on_timeout: StepId | None = Field(None, description="Step after the timeout; default next.")


class BranchCase(_Strict):
    when: Condition
    next: StepId


class BranchSpec(_Strict):
    cases: list[BranchCase] = Field(min_length=1)
    else_: StepId | None = Field(None, alias="else", description="Where to go if no case holds.")


class Variant(_Strict):
    name: StepId
    weight: Weight
    next: StepId


def _exit_shorthand(value: Any) -> Any:
    if value is True or value is None:
        return {}
    if isinstance(value, str):
        return {"reason": value}
    return value


class ExitSpec(_Strict):
    reason: str = "exited"
    converted: bool = False


class StepSpec(_Strict):
    id: StepId
    description: str | None = None
    next: StepId | None = Field(None, description="The step after this one; default the next.")
    send: SendSpec | None = None
    wait: Annotated[
        WaitSpec,
        BeforeValidator(_wait_shorthand),
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "string", "pattern": _DURATION_PATTERN, "examples": ["1h", "23h30m"]},
                    {
                        "type": "object",
                        "properties": {
                            "duration": {"type": "string", "pattern": _DURATION_PATTERN},
                            "until": {"type": "string", "pattern": r"^([01]?\d|2[0-3]):[0-5]\d$"},
                        },
                        "additionalProperties": False,
                    },
                ]
            }
        ),
    ] | None = None
    wait_for: WaitForSpec | None = None
    branch: BranchSpec | None = None
    split: list[Variant] | None = Field(None, min_length=2)
    update_profile: dict[str, Any] | None = None
    exit: Annotated[
        ExitSpec,
        BeforeValidator(_exit_shorthand),
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "boolean"},
                    {"type": "string", "description": "The exit reason."},
                    {
                        "type": "object",
                        "properties": {
                            "reason": {"type": "string"},
                            "converted": {"type": "boolean"},
                        },
                        "additionalProperties": False,
                    },
                ]
            }
        ),
    ] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> "StepSpec":
        kinds = [k for k in STEP_KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            found = " and ".join(kinds) if kinds else "none"
            raise ValueError(
                f"step '{self.id}' must have exactly one kind ({', '.join(STEP_KINDS)}); "
                f"found {found}"
            )
        return self

    @property
    def kind(self) -> str:
        return next(k for k in STEP_KINDS if getattr(self, k) is not None)


class JourneySpec(_Strict):
    """One journey file. Its name is the file's name without .yaml."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        populate_by_name=True,
        json_schema_extra={"title": "Journey"},
    )

    description: str | None = None
    trigger: TriggerSpec
    re_entry: Literal["ignore", "restart", "parallel"] = Field(
        "ignore",
        description="A new trigger for a user already in the journey: ignore it, restart "
        "the run from the first step, or start a second run in parallel.",
    )
    holdout: Percent = Field(0.0, description="Share of entrants kept as a control group.")
    goals: list[EventMatchField] = Field(
        default_factory=list, description="Events that end the run as converted."
    )
    exit_on: list[EventMatchField] = Field(
        default_factory=list, description="Events that end the run, not converted."
    )
    conversion_window: Duration = Field(
        3 * 86400, description="How long after entry a goal still counts (holdout included)."
    )
    delivery: DeliverySpec = Field(default_factory=DeliverySpec)  # type: ignore[arg-type]
    steps: list[StepSpec] = Field(min_length=1)


def json_schema() -> dict[str, Any]:
    schema = JourneySpec.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def is_identifier(text: str) -> bool:
    return re.match(_ID, text) is not None
