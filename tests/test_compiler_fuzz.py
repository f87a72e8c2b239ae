"""Whatever a journey file holds, the compiler answers with a Machine or JourneyErrors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.catalog import Catalog, load_catalog
from orchestrator.compiler import compile_text
from orchestrator.errors import JourneyError, JourneyErrors
from orchestrator.machine import Machine
from orchestrator.render import Renderer

ROOT = Path(__file__).resolve().parent.parent
CATALOG: Catalog = load_catalog(ROOT / "catalog.yaml")
RENDERER = Renderer(ROOT / "templates")
FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

KEYS = [
    "trigger", "steps", "id", "send", "wait", "wait_for", "branch", "split", "exit", "next",
    "channel", "template", "fallback", "weight", "name", "event", "when", "timeout", "on_event",
    "on_timeout", "cases", "else", "duration", "until", "goals", "exit_on", "delivery",
    "quiet_hours", "start", "end", "timezone", "frequency_caps", "max", "per", "holdout",
    "re_entry", "conversion_window", "update_profile", "reason", "converted", "audience",
    "description", "<<",
]  # fmt: skip
WORDS = [
    "cart_updated", "order_completed", "lesson_completed", "email", "sms", "push", "preferred",
    "cart_nudge", "welcome", "streak_reminder", "a", "b", "c", "end", "complete", "1h", "0m",
    "23.5h", "30m1h", "21:00", "08:00", "25:99", "50%", "100%", "-5%", "UTC", "Mars/Base",
    "user.first_name", "event.items", "event['items'] | length > 0", "{{ x }}", "user.",
    "restart", "ignore", "yes", "no", "", " ", "é", "../etc/passwd", "x" * 60,
]  # fmt: skip

scalars = st.one_of(
    st.sampled_from(WORDS),
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
)
keys = st.one_of(st.sampled_from(KEYS), st.text(min_size=1, max_size=6))
structures = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(keys, children, max_size=4),
    ),
    max_leaves=12,
)


def _rarely(draw: st.DrawFn) -> bool:
    """True about one time in eight (a middle value: Hypothesis favours the ends of a range)."""
    return draw(st.integers(0, 7)) == 3


def _pick(
    good: list[object] | st.SearchStrategy[object], bad: list[object] | None = None
) -> st.SearchStrategy[object]:
    """Mostly a sensible value; sometimes a plausible mistake, or anything at all."""
    good_s = good if isinstance(good, st.SearchStrategy) else st.sampled_from(good)
    bad_s = st.one_of(st.sampled_from(bad), structures) if bad else structures

    @st.composite
    def pick(draw: st.DrawFn) -> object:
        return draw(bad_s) if _rarely(draw) else draw(good_s)

    return pick()


# Journeys that are close to valid, so the later stages (graph, conditions, templates,
# machine) see many inputs, not only the schema check.
STEP_IDS = ["a", "b", "c", "d"]
targets = _pick([*STEP_IDS, "end"], ["complete", "nowhere", "1x"])
events = _pick(["cart_updated", "order_completed", "lesson_completed"], ["nope", ""])
durations = _pick(["1h", "30m", "23.5h", "2d", "90s"], ["0m", "5", "1x", "30m1h", 5])
clocks = _pick(["21:00", "08:00", "8:30"], ["25:00", "2100", 1260])
conditions = _pick(
    ["true", "user.plan == 'pro'", "event['items'] | length > 0", "trigger.total > 10",
     "not user.has_purchased"],
    ["event.itmes", "usr.x", "user.frist_name", "user.plan ===", "{{ x }}", "not", "user.__class__"],
)  # fmt: skip
templates = _pick(
    ["cart_nudge", "welcome", "streak_reminder", "cart_free_shipping", "complete_profile"],
    ["welcom", "x/y", "../layouts/email", "-"],
)
channels = _pick(
    ["email", "sms", "push", "preferred", ["push", "email"], ["sms"]],
    ["emial", [], ["email", "email"], ["preferred"]],
)
kinds: dict[str, st.SearchStrategy[object]] = {
    "send": st.fixed_dictionaries(
        {"channel": channels, "template": templates},
        optional={"fallback": _pick(st.lists(st.sampled_from(["email", "sms", "push"]), unique=True), ["fax"])},
    ),
    "wait": st.one_of(durations, st.fixed_dictionaries({}, optional={"duration": durations, "until": clocks})),
    "wait_for": st.fixed_dictionaries(
        {"event": events, "timeout": durations},
        optional={"when": conditions, "on_event": targets, "on_timeout": targets},
    ),
    "branch": st.fixed_dictionaries(
        {"cases": _pick(st.lists(st.fixed_dictionaries({"when": conditions, "next": targets}), min_size=1, max_size=2), [[]])},
        optional={"else": targets},
    ),
    "split": _pick(
        st.lists(
            st.fixed_dictionaries(
                {"name": _pick(["x", "y", "z"], ["1x"]),
                 "weight": _pick(["50%"], ["25%", 50, "75", "0%", "101%", True]),
                 "next": targets}
            ),
            min_size=2, max_size=2,
        ),
        [[]],
    ),
    "update_profile": _pick(st.dictionaries(st.sampled_from(["plan", "streak_days", "plan", "nope"]), scalars, max_size=2)),
    "exit": st.one_of(st.just(True), st.none(), st.just("done"), st.fixed_dictionaries({}, optional={"reason": scalars, "converted": scalars})),
}  # fmt: skip


@st.composite
def near_valid_step(draw: st.DrawFn, sid: object) -> dict[str, object]:
    kind = draw(st.sampled_from(sorted(kinds)))
    step: dict[str, object] = {"id": sid, kind: draw(kinds[kind])}
    if draw(st.integers(0, 3)) == 2:
        step["next"] = draw(targets)
    if _rarely(draw):
        step[draw(keys)] = draw(scalars)
    return step


@st.composite
def near_valid_journeys(draw: st.DrawFn) -> dict[str, object]:
    n = draw(st.integers(1, 4))
    ids = [draw(_pick([STEP_IDS[i]], [*STEP_IDS, "end", "9"])) for i in range(n)]
    journey: dict[str, object] = {
        "trigger": draw(st.fixed_dictionaries({"event": events}, optional={"when": conditions, "audience": conditions})),
        "steps": [draw(near_valid_step(sid)) for sid in ids],
    }
    for key, value in (
        ("goals", st.lists(st.one_of(events, st.fixed_dictionaries({"event": events, "when": conditions})), max_size=2)),
        ("exit_on", st.lists(events, max_size=1)),
        ("delivery", st.fixed_dictionaries({}, optional={"timezone": _pick(["UTC", "Europe/Paris"], ["Mars/Base", "", 3]), "quiet_hours": st.fixed_dictionaries({"start": clocks, "end": clocks}), "frequency_caps": st.lists(st.fixed_dictionaries({"max": _pick([1, 3], [0, -1, "x"]), "per": durations}, optional={"channel": channels}), max_size=2)})),
        ("holdout", _pick(["10%", 0, "100%"], ["-1%", "x"])),
        ("re_entry", _pick(["ignore", "restart", "parallel"], ["again"])),
        ("conversion_window", durations),
    ):
        if draw(st.booleans()):
            journey[key] = draw(value)
    return journey


def _compile(text: str) -> None:
    try:
        result = compile_text(text, "journeys/fuzz.yaml", "fuzz", CATALOG, RENDERER)
    except JourneyErrors as exc:
        assert exc.errors, "JourneyErrors without any error"
        for err in exc.errors:
            assert isinstance(err, JourneyError) and not isinstance(err, JourneyErrors)
            assert err.location is not None and err.location.path, str(err)
            assert ": error: " in str(err), str(err)
            assert "\n" not in str(err), f"an error must fit on one line: {err!s}"
        return
    assert isinstance(result, Machine)
    assert result.version


def _dump(data: object) -> str:
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


@FUZZ
@given(st.text(max_size=300))
def test_arbitrary_text(text: str) -> None:
    _compile(text)


@FUZZ
@given(
    st.lists(
        st.one_of(
            st.sampled_from(
                ["trigger:", "  event: cart_updated", "steps:", "  - id: a", "    send:",
                 "      channel: email", "      template: welcome", "    wait: 1h", "    next: b",
                 "  - id: b", "    split:", "      - {name: x, weight: 50%, next: a}",
                 "- ", "  ", ": ", "{", "]", "&a", "*a", "!!str", "'", '"', "\t", "#", "---"]
            ),
            st.text(max_size=10),
        ),
        max_size=15,
    ).map("\n".join)
)  # fmt: skip
def test_yaml_ish_lines(text: str) -> None:
    _compile(text)


@FUZZ
@given(structures)
def test_arbitrary_structures(data: object) -> None:
    _compile(_dump(data))


@FUZZ
@given(near_valid_journeys())
def test_step_like_journeys(data: dict[str, object]) -> None:
    _compile(_dump(data))


@FUZZ
@given(
    st.fixed_dictionaries(
        {"trigger": st.one_of(structures, events.map(lambda e: {"event": e})),
         "steps": st.one_of(st.lists(st.dictionaries(keys, structures, max_size=4), max_size=3), structures)},
        optional={k: structures for k in ("goals", "delivery", "holdout", "re_entry", "exit_on")},
    )
)  # fmt: skip
def test_random_keys_and_values(data: dict[str, object]) -> None:
    _compile(_dump(data))


@pytest.mark.parametrize(
    "text",
    [
        "\x00\x01\x02",
        "\ufeff",
        "[[[[[[[[[[",
        "a: " + "[" * 200 + "]" * 200,
        "steps: !!binary aGVsbG8=",
        "trigger: !!set {a, b}\nsteps: []",
        "trigger: {event: cart_updated}\nsteps:\n  - id: a\n    send: {channel: [], template: x}",
        "trigger: {event: cart_updated}\nsteps:\n  - id: a\n    split: [{name: a, weight: .nan, next: a}, {name: b, weight: 1e400, next: a}]",
        "trigger: {event: cart_updated}\nsteps:\n  - id: a\n    wait: 99999999999999999999999w",
        "trigger: {event: cart_updated}\nsteps:\n  - id: a\n    send: {channel: email, template: ../../etc/passwd}",
        "trigger: {event: cart_updated}\nsteps:\n  - id: a\n    send: {channel: sms, template: layouts/../sms/cart_nudge}",
        "trigger: {event: cart_updated}\ngoals: [{event: order_completed}, order_completed, 5]\nsteps:\n  - {id: a, exit: true}",
        "trigger: {event: cart_updated, when: '{{ x }}'}\nsteps:\n  - {id: a, exit: true}",
        "trigger: {event: cart_updated, when: \"user.__class__.__mro__\"}\nsteps:\n  - {id: a, exit: true}",
        "trigger: {event: cart_updated}\nsteps:\n  - {id: a, update_profile: {1: 2}}",
        "trigger: {event: cart_updated}\nsteps:\n  - {id: a, update_profile: [plan]}",
    ],
)
def test_nasty_inputs(text: str) -> None:
    _compile(text)
