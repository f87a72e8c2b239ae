"""The journey compiler: one test per check, each pinning where the error points and what it says.

Journeys are written into a throw-away copy of the project (``make_project``), so templates can
be added or broken per test. Line numbers in the comments (``# 5``) are the YAML line numbers.
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Callable

import pytest

from orchestrator.compiler import compile_all, compile_journey
from orchestrator.errors import JourneyError, JourneyErrors
from orchestrator.machine import BranchState, Machine, SendState, SplitState, WaitForState
from orchestrator.project import Project

from conftest import TmpProject

MakeProject = Callable[..., TmpProject]
ERROR_LINE = re.compile(r"^(?P<path>.+):(?P<line>\d+):(?P<col>\d+): error: (?P<message>.+)$")


# --- helpers ----------------------------------------------------------------------------------


def yaml_text(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def errors_of(project: TmpProject, text: str) -> list[JourneyError]:
    result = project.compile(yaml_text(text))
    assert isinstance(result, JourneyErrors), "expected errors, but the journey compiled"
    assert result.errors
    for err in result.errors:
        assert ERROR_LINE.match(str(err)), f"not path:line:col: error: ...: {err}"
    return result.errors


def the_error(errors: list[JourneyError], *words: str) -> JourneyError:
    """The one error whose message holds every word."""
    found = [e for e in errors if all(w in e.message for w in words)]
    listing = "\n".join(str(e) for e in errors)
    assert len(found) == 1, f"{len(found)} errors hold {words}; all errors:\n{listing}"
    return found[0]


def only_error(project: TmpProject, text: str, *words: str) -> JourneyError:
    errors = errors_of(project, text)
    listing = "\n".join(str(e) for e in errors)
    assert len(errors) == 1, f"expected one error, got:\n{listing}"
    return the_error(errors, *words)


def assert_at(err: JourneyError, path: str | Path, line: int, col: int | None = None) -> None:
    m = ERROR_LINE.match(str(err))
    assert m, str(err)
    assert m["path"] == str(path), str(err)
    assert int(m["line"]) == line, str(err)
    if col is not None:
        assert int(m["col"]) == col, str(err)
    assert m["message"] == err.message


def compiled(project: TmpProject, text: str) -> Machine:
    result = project.compile(yaml_text(text))
    if isinstance(result, JourneyErrors):
        pytest.fail(f"expected the journey to compile:\n{result}")
    return result


@pytest.fixture
def tp(make_project: MakeProject) -> TmpProject:
    return make_project()


@pytest.fixture
def jpath(tp: TmpProject) -> str:
    return str(tp.journey_path())


# --- the shipped journeys ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cart_abandonment", "lesson_reminder", "onboarding"])
def test_shipped_journeys_compile(project_root: Path, name: str) -> None:
    machine = compile_journey(project_root / "journeys" / f"{name}.yaml", Project(project_root))
    assert machine.journey == name
    assert re.fullmatch(r"[0-9a-f]{16}", machine.version)
    assert machine.start in machine.states


def test_all_shipped_journeys_compile_together(project_root: Path) -> None:
    machines, errors = compile_all(Project(project_root))
    assert errors == []
    assert sorted(machines) == ["cart_abandonment", "lesson_reminder", "onboarding"]


def test_cart_abandonment_machine(project_root: Path) -> None:
    m = compile_journey(project_root / "journeys" / "cart_abandonment.yaml", Project(project_root))
    assert m.trigger_event == "cart_updated"
    assert m.holdout == 10.0
    assert m.conversion_window == 3 * 86400
    assert m.delivery.quiet_hours == ("21:00", "08:00")
    assert m.start == "wait_an_hour"
    nudge = m.states["nudge"]
    assert isinstance(nudge, SendState)
    assert nudge.channels == ("push", "email", "sms") and nudge.prefer_user
    wait_for = m.states["wait_for_order"]
    assert isinstance(wait_for, WaitForState)
    assert (wait_for.timeout, wait_for.on_event, wait_for.on_timeout) == (23 * 3600, None, "offer")
    split = m.states["offer"]
    assert isinstance(split, SplitState)
    assert split.variants == (
        ("discount", 50.0, "discount_email"),
        ("free_shipping", 50.0, "free_shipping_sms"),
    )
    assert m.states["discount_email"].next is None  # type: ignore[union-attr]
    # Every template file the journey may render, layouts and includes too, is pinned.
    assert "layouts/email.html" in m.templates and "layouts/cart_items.txt" in m.templates
    assert "push/cart_nudge.txt" in m.templates and "sms/cart_free_shipping.txt" in m.templates


# --- YAML and schema --------------------------------------------------------------------------


def test_yaml_syntax_error(tp: TmpProject, jpath: str) -> None:
    err = only_error(
        tp,
        """
        trigger:
          event: cart_updated
        steps:
          - id: a
            send: {channel: email, template: welcome
          - id: b
            wait: 1h
        """,
        "YAML syntax",
    )
    assert_at(err, jpath, 6)


def test_tab_indentation_is_a_syntax_error(tp: TmpProject, jpath: str) -> None:
    err = only_error(tp, "trigger:\n\tevent: cart_updated\nsteps: []\n", "YAML syntax")
    assert_at(err, jpath, 2, 1)


def test_duplicate_key(tp: TmpProject, jpath: str) -> None:
    err = only_error(
        tp,
        """
        trigger: {event: cart_updated}
        steps:
          - id: a
            wait: 1h
            wait: 2h
        """,
        "duplicate key 'wait'",
        "line 4",
    )
    assert_at(err, jpath, 5, 5)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just text\n", "", "42\n"])
def test_not_a_mapping(tp: TmpProject, jpath: str, text: str) -> None:
    err = only_error(tp, text, "must be a mapping", "'trigger'", "'steps'")
    assert_at(err, jpath, 1, 1)


def test_unknown_top_level_key(tp: TmpProject, jpath: str) -> None:
    errors = errors_of(
        tp,
        """
        description: x
        trigerr:
          event: cart_updated
        steps:
          - id: a
            wait: 1h
        """,
    )
    err = the_error(errors, "unknown key 'trigerr'", "did you mean 'trigger'?")
    assert_at(err, jpath, 2, 1)
    missing = the_error(errors, "missing required key 'trigger'")
    assert_at(missing, jpath, 1, 1)


def test_unknown_key_without_a_close_match_lists_the_keys(tp: TmpProject, jpath: str) -> None:
    err = only_error(
        tp,
        """
        trigger: {event: cart_updated, zzz: 1}
        steps:
          - {id: a, wait: 1h}
        """,
        "unknown key 'zzz'",
        "expected one of 'audience', 'event', 'when'",
    )
    assert_at(err, jpath, 1, 32)


def test_unknown_step_kind(tp: TmpProject, jpath: str) -> None:
    err = only_error(
        tp,
        """
        trigger: {event: cart_updated}
        steps:
          - id: wait_a_bit
            wait: 1h
          - id: nudge
            sned: {channel: email, template: welcome}
        """,
        "'sned'",
        "step 'nudge'",
        "did you mean 'send'?",
    )
    assert_at(err, jpath, 6, 5)
    assert "send, wait, wait_for, branch, split, update_profile, exit" in err.message


def test_step_with_two_kinds(tp: TmpProject, jpath: str) -> None:
    err = only_error(
        tp,
        """
        trigger: {event: cart_updated}
        steps:
          - id: a
            wait: 1h
            exit: true
        """,
        "exactly one kind",
        "found wait and exit",
    )
    assert_at(err, jpath, 3)


def test_send_without_template(tp: TmpProject, jpath: str) -> None:
    err = only_error(
        tp,
        """
        trigger: {event: cart_updated}
        steps:
          - id: a
            wait: 1h
          - id: nudge
            send:
              channel: email
        """,
        "missing required key 'template'",
        "step 'nudge'",
    )
    assert_at(err, jpath, 7, 7)


def test_step_without_id(tp: TmpProject, jpath: str) -> None:
    err = only_error(
        tp,
        """
        trigger: {event: cart_updated}
        steps:
          - id: a
            wait: 1h
          - send: {channel: email, template: welcome}
        """,
        "missing required key 'id'",
        "step #2",
    )
    assert_at(err, jpath, 5, 5)


def test_journey_without_steps(tp: TmpProject, jpath: str) -> None:
    err = only_error(tp, "trigger: {event: cart_updated}\n", "missing required key 'steps'")
    assert_at(err, jpath, 1, 1)


def test_journey_with_empty_steps(tp: TmpProject, jpath: str) -> None:
    err = only_error(tp, "trigger: {event: cart_updated}\nsteps: []\n", "at least 1 item", "steps")
    assert_at(err, jpath, 2, 8)


def test_bad_step_id(tp: TmpProject, jpath: str) -> None:
    err = only_error(
        tp,
        """
        trigger: {event: cart_updated}
        steps:
          - id: 1st step
            wait: 1h
        """,
        "'1st step' is not a valid name",
    )
    assert_at(err, jpath, 3, 9)


def test_bad_duration_in_wait(tp: TmpProject, jpath: str) -> None:
    err = only_error(
        tp,
        """
        trigger: {event: cart_updated}
        steps:
          - id: pause
            wait: 1x
        """,
        "'1x' is not a duration",
        "30m, 1h",
        "step 'pause'",
    )
    assert_at(err, jpath, 4, 11)


def test_duration_without_unit_in_wait(tp: TmpProject, jpath: str) -> None:
    err = only_error(
        tp,
        """
        trigger: {event: cart_updated}
        steps:
          - id: pause
            wait: 5
        """,
        "'5' has no unit",
    )
    assert_at(err, jpath, 4, 11)


def test_bad_duration_in_wait_for_timeout(tp: TmpProject, jpath: str) -> None:
    err = only_error(
        tp,
        """
        trigger: {event: cart_updated}
        steps:
          - id: wait_for_order
            wait_for:
              event: order_completed
              timeout: 30m1h
        """,
        "'30m1h'",
        "largest unit first",
        "step 'wait_for_order'",
    )
    assert_at(err, jpath, 6, 16)


def test_bad_conversion_window(tp: TmpProject, jpath: str) -> None:
    err = only_error(
        tp,
        """
        trigger: {event: cart_updated}
        conversion_window: 0m
        steps:
          - {id: a, wait: 1h}
        """,
        "'0m' must be longer than zero",
        "conversion_window",
    )
    assert_at(err, jpath, 2, 20)


def test_fractional_second_duration(tp: TmpProject, jpath: str) -> None:
    err = only_error(
        tp,
        """
        trigger: {event: cart_updated}
        steps:
          - {id: a, wait: 1.5s}
        """,
        "not a whole number of seconds",
    )
    assert_at(err, jpath, 3)


def test_bad_clock_time_in_quiet_hours(tp: TmpProject, jpath: str) -> None:
    err = only_error(
        tp,
        """
        trigger: {event: cart_updated}
        delivery:
          quiet_hours:
            start: "9pm"
            end: "08:00"
        steps:
          - {id: a, wait: 1h}
        """,
        "24-hour clock time",
        "'9pm'",
        "quiet_hours.start",
    )
    assert_at(err, jpath, 4, 12)


def test_bad_time_zone(tp: TmpProject, jpath: str) -> None:
    err = only_error(
        tp,
        """
        trigger: {event: cart_updated}
        delivery:
          timezone: Europe/Pariss
        steps:
          - {id: a, wait: 1h}
        """,
        "unknown time zone 'Europe/Pariss'",
        "IANA",
    )
    assert_at(err, jpath, 3, 13)


def test_bad_holdout_and_re_entry(tp: TmpProject, jpath: str) -> None:
    errors = errors_of(
        tp,
        """
        trigger: {event: cart_updated}
        holdout: 110%
        re_entry: restrat
        steps:
          - {id: a, wait: 1h}
        """,
    )
    assert len(errors) == 2
    assert_at(the_error(errors, "between 0% and 100%", "'110%'"), jpath, 2, 10)
    assert_at(the_error(errors, "'restrat'", "did you mean 'restart'?"), jpath, 3, 11)


def test_unknown_channel(tp: TmpProject, jpath: str) -> None:
    err = only_error(
        tp,
        """
        trigger: {event: cart_updated}
        steps:
          - id: nudge
            send:
              channel: emial
              template: welcome
        """,
        "unknown channel 'emial'",
        "did you mean 'email'?",
        "step 'nudge'",
    )
    assert_at(err, jpath, 5, 16)


def test_unknown_channel_in_a_list(tp: TmpProject, jpath: str) -> None:
    err = only_error(
        tp,
        """
        trigger: {event: cart_updated}
        steps:
          - id: nudge
            send: {channel: [push, emial], template: cart_nudge}
        """,
        "unknown channel 'emial' in list",
        "did you mean 'email'?",
    )
    assert_at(err, jpath, 4)


def test_unknown_fallback_channel(tp: TmpProject, jpath: str) -> None:
    err = only_error(
        tp,
        """
        trigger: {event: cart_updated}
        steps:
          - id: nudge
            send:
              channel: preferred
              fallback: [push, smss]
              template: cart_nudge
        """,
        "'smss'",
        "did you mean 'sms'?",
    )
    assert_at(err, jpath, 6, 24)


def test_fallback_without_preferred(tp: TmpProject, jpath: str) -> None:
    err = only_error(
        tp,
        """
        trigger: {event: cart_updated}
        steps:
          - id: nudge
            send:
              channel: email
              fallback: [sms]
              template: cart_nudge
        """,
        "'fallback' only goes with channel: preferred",
    )
    assert_at(err, jpath, 6, 17)


# --- step graph -------------------------------------------------------------------------------


def test_next_pointing_nowhere(tp: TmpProject, jpath: str) -> None:
    errors = errors_of(
        tp,
        """
        trigger: {event: cart_updated}
        steps:
          - id: wait_a_bit
            wait: 1h
            next: nudeg
          - id: nudge
            send: {channel: email, template: cart_nudge}
        """,
    )
    err = the_error(errors, "'nudeg' is not a step", "did you mean 'nudge'?", "'end'")
    assert_at(err, jpath, 5, 11)
    assert "expected one of 'nudge', 'wait_a_bit' or 'end'" in err.message
    # With the typo, nothing leads to nudge any more: said too, and nothing else.
    assert_at(the_error(errors, "step 'nudge' is unreachable"), jpath, 6, 9)
    assert len(errors) == 2


@pytest.mark.parametrize(
    "step, line, col, bad",
    [
        (
            """
              - id: wait_for_order
                wait_for: {event: order_completed, timeout: 1h, on_timeout: ofer}
            """,
            5, 65, "ofer",
        ),
        (
            """
              - id: wait_for_order
                wait_for:
                  event: order_completed
                  timeout: 1h
                  on_event: ofer
            """,
            8, 17, "ofer",
        ),
        (
            """
              - id: check
                branch:
                  cases:
                    - when: "user.plan == 'pro'"
                      next: ofer
            """,
            8, 17, "ofer",
        ),
        (
            """
              - id: check
                branch:
                  cases:
                    - {when: "user.plan == 'pro'", next: offer}
                  else: ofer
            """,
            8, 13, "ofer",
        ),
        (
            """
              - id: pick
                split:
                  - {name: one, weight: 50%, next: offer}
                  - {name: two, weight: 50%, next: ofer}
            """,
            7, 40, "ofer",
        ),
    ],
)  # fmt: skip
def test_targets_pointing_nowhere(
    tp: TmpProject, jpath: str, step: str, line: int, col: int, bad: str
) -> None:
    text = (
        "trigger: {event: cart_updated}\n"
        "steps:\n"
        "  - {id: first, wait: 1h}\n"
        + textwrap.indent(textwrap.dedent(step).strip("\n"), "  ")
        + "\n  - id: offer\n    send: {channel: email, template: cart_nudge}\n"
    )
    err = the_error(errors_of(tp, text), f"'{bad}' is not a step", "did you mean 'offer'?")
    assert_at(err, jpath, line, col)


def test_duplicate_step_ids(tp: TmpProject, jpath: str) -> None:
    err = only_error(
        tp,
        """
        trigger: {event: cart_updated}
        steps:
          - id: nudge
            send: {channel: email, template: cart_nudge}
          - id: pause
            wait: 1h
          - id: nudge
            send: {channel: sms, template: cart_nudge}
        """,
        "duplicate step id 'nudge'",
        "step #1",
    )
    assert_at(err, jpath, 7, 9)


def test_unreachable_step(tp: TmpProject, jpath: str) -> None:
    err = only_error(
        tp,
        """
        trigger: {event: cart_updated}
        steps:
          - id: nudge
            send: {channel: email, template: cart_nudge}
            next: end
          - id: forgotten
            send: {channel: sms, template: cart_nudge}
        """,
        "step 'forgotten' is unreachable",
    )
    assert_at(err, jpath, 6, 9)


def test_steps_after_an_exit_are_unreachable(tp: TmpProject, jpath: str) -> None:
    err = only_error(
        tp,
        """
        trigger: {event: cart_updated}
        steps:
          - id: stop
            exit: {reason: done}
          - id: after
            wait: 1h
        """,
        "step 'after' is unreachable",
    )
    assert_at(err, jpath, 5, 9)


def test_loop_without_a_wait(tp: TmpProject, jpath: str) -> None:
    err = only_error(
        tp,
        """
        trigger: {event: cart_updated}
        steps:
          - id: first
            wait: 1h
          - id: check
            branch:
              cases:
                - when: "user.plan == 'pro'"
                  next: upgrade
              else: nudge
          - id: upgrade
            update_profile: {plan: pro}
            next: check
          - id: nudge
            send: {channel: email, template: cart_nudge}
        """,
        "check -> upgrade -> check",
        "loop without a wait",
    )
    assert_at(err, jpath, 5, 9)


def test_send_pointing_at_itself_loops(tp: TmpProject, jpath: str) -> None:
    err = only_error(
        tp,
        """
        trigger: {event: cart_updated}
        steps:
          - id: spam
            send: {channel: sms, template: cart_nudge}
            next: spam
        """,
        "spam -> spam",
        "loop without a wait",
    )
    assert_at(err, jpath, 3, 9)


def test_loop_with_a_wait_is_accepted(tp: TmpProject) -> None:
    m = compiled(
        tp,
        """
        trigger: {event: cart_updated}
        steps:
          - id: pause
            wait: 1d
          - id: check
            branch:
              cases:
                - when: "not user.has_purchased"
                  next: nudge
              else: end
          - id: nudge
            send: {channel: email, template: cart_nudge}
            next: pause
        """,
    )
    assert m.states["nudge"].next == "pause"  # type: ignore[union-attr]
    branch = m.states["check"]
    assert isinstance(branch, BranchState)
    assert branch.cases == (("not user.has_purchased", "nudge"),) and branch.otherwise is None


def test_loop_through_a_wait_for_is_accepted(tp: TmpProject) -> None:
    m = compiled(
        tp,
        """
        trigger: {event: cart_updated}
        steps:
          - id: nudge
            send: {channel: sms, template: cart_nudge}
          - id: wait_for_order
            wait_for: {event: order_completed, timeout: 1d, on_timeout: nudge, on_event: end}
        """,
    )
    state = m.states["wait_for_order"]
    assert isinstance(state, WaitForState)
    assert (state.on_event, state.on_timeout) == (None, "nudge")


@pytest.mark.parametrize("word", ["end", "complete"])
def test_end_and_complete_finish_the_journey(tp: TmpProject, word: str) -> None:
    m = compiled(
        tp,
        f"""
        trigger: {{event: cart_updated}}
        steps:
          - id: a
            wait: 1h
          - id: c
            wait_for: {{event: order_completed, timeout: 1h, on_event: {word}}}
          - id: b
            send: {{channel: email, template: cart_nudge}}
            next: {word}
        """,
    )
    assert m.states["a"].next == "c"  # type: ignore[union-attr]
    assert m.states["c"].on_event is None  # type: ignore[union-attr]
    assert m.states["c"].on_timeout == "b"  # type: ignore[union-attr]
    assert m.states["b"].next is None  # type: ignore[union-attr]


def test_split_weights_must_add_up_to_100(tp: TmpProject, jpath: str) -> None:
    err = only_error(
        tp,
        """
        trigger: {event: cart_updated}
        steps:
          - id: offer
            split:
              - {name: discount, weight: 50%, next: end}
              - {name: free_shipping, weight: 40%, next: end}
        """,
        "split weights add up to 90%",
        "100%",
    )
    assert_at(err, jpath, 5)


def test_variants_with_the_same_name(tp: TmpProject, jpath: str) -> None:
    err = only_error(
        tp,
        """
        trigger: {event: cart_updated}
        steps:
          - id: offer
            split:
              - {name: discount, weight: 50%, next: end}
              - {name: discount, weight: 50%, next: end}
        """,
        "share the name 'discount'",
    )
    assert_at(err, jpath, 6, 16)


@pytest.mark.parametrize(
    "kind, body",
    [
        ("branch", "branch: {cases: [{when: 'true', next: last}], else: last}"),
        ("split", "split: [{name: x, weight: 50, next: last}, {name: y, weight: 50, next: last}]"),
        ("wait_for", "wait_for: {event: order_completed, timeout: 1h}"),
        ("exit", "exit: true"),
    ],
)
def test_next_on_a_step_that_chooses_itself(
    tp: TmpProject, jpath: str, kind: str, body: str
) -> None:
    text = (
        "trigger: {event: cart_updated}\n"
        "steps:\n"
        "  - id: chooser\n"
        f"    {body}\n"
        "    next: last\n"  # 5
        "  - id: last\n"
        "    wait: 1h\n"
    )
    errors = errors_of(tp, text)
    article = "an" if kind == "exit" else "a"
    err = the_error(errors, f"step 'chooser' is {article} {kind}", "takes no 'next'")
    assert_at(err, jpath, 5, 11)


# --- templates --------------------------------------------------------------------------------


def test_missing_template(tp: TmpProject, jpath: str) -> None:
    err = only_error(
        tp,
        """
        trigger: {event: cart_updated}
        steps:
          - id: nudge
            send:
              channel: sms
              template: cart_nudg
        """,
        "template 'cart_nudg' has no sms version",
        "templates/sms/cart_nudg.txt does not exist",
        "did you mean 'cart_nudge'?",
    )
    assert_at(err, jpath, 6, 17)


def test_missing_template_for_each_fallback_channel(tp: TmpProject, jpath: str) -> None:
    # welcome exists for email only: push and sms are each reported.
    errors = errors_of(
        tp,
        """
        trigger: {event: app_installed}
        steps:
          - id: hello
            send:
              channel: preferred
              fallback: [push, email, sms]
              template: welcome
        """,
    )
    assert len(errors) == 2, errors
    push = the_error(errors, "template 'welcome' has no push version", "push/welcome.txt")
    sms = the_error(errors, "template 'welcome' has no sms version", "sms/welcome.txt")
    assert_at(push, jpath, 7, 17)
    assert_at(sms, jpath, 7, 17)


def test_preferred_without_fallback_needs_every_channel(tp: TmpProject, jpath: str) -> None:
    errors = errors_of(
        tp,
        """
        trigger: {event: lesson_completed}
        steps:
          - id: remind
            send: {channel: preferred, template: streak_reminder}
        """,
    )
    err = the_error(errors, "has no sms version", "sms/streak_reminder.txt")
    assert_at(err, jpath, 4)
    assert len(errors) == 1


def test_channel_list_needs_each_channel(tp: TmpProject, jpath: str) -> None:
    err = only_error(
        tp,
        """
        trigger: {event: app_installed}
        steps:
          - id: hello
            send: {channel: [email, push], template: welcome}
        """,
        "has no push version",
    )
    assert_at(err, jpath, 4)


def test_template_syntax_error(tp: TmpProject) -> None:
    tp.write_template("sms/broken.txt", "Hi {{ user.first_name }},\nyour cart: {{ event.total | }}\n")
    err = only_error(
        tp,
        """
        trigger: {event: cart_updated}
        steps:
          - id: nudge
            send: {channel: sms, template: broken}
        """,
        "template syntax",
    )
    assert_at(err, tp.template_path("sms/broken.txt"), 2)


def test_template_syntax_error_in_a_layout(tp: TmpProject) -> None:
    tp.write_template("layouts/email.txt", "{% block content %}{% endblock %}\n\n{% if %}\n")
    errors = errors_of(
        tp,
        """
        trigger: {event: app_installed}
        steps:
          - id: hello
            send: {channel: email, template: welcome}
        """,
    )
    err = the_error(errors, "template syntax")
    assert_at(err, tp.template_path("layouts/email.txt"), 3)


def test_email_template_without_subject(tp: TmpProject) -> None:
    tp.write_template(
        "email/no_subject.html",
        '{% extends "layouts/email.html" %}\n{% block content %}<p>Hi</p>{% endblock %}\n',
    )
    tp.write_template(
        "email/no_subject.txt", '{% extends "layouts/email.txt" %}\n{% block content %}Hi{% endblock %}\n'
    )
    err = only_error(
        tp,
        """
        trigger: {event: app_installed}
        steps:
          - id: hello
            send: {channel: email, template: no_subject}
        """,
        "email/no_subject.html must define {% block subject %}",
    )
    assert_at(err, tp.template_path("email/no_subject.html"), 1)


def test_email_template_without_layout_or_subject(tp: TmpProject) -> None:
    tp.write_template("email/bare.html", "<p>Hi</p>\n")
    tp.write_template("email/bare.txt", "Hi\n")
    err = only_error(
        tp,
        """
        trigger: {event: app_installed}
        steps:
          - id: hello
            send: {channel: email, template: bare}
        """,
        "must define {% block subject %}",
    )
    assert_at(err, tp.template_path("email/bare.html"), 1)


@pytest.mark.parametrize(
    "text, missing",
    [
        ("{% block title %}Hi{% endblock %}\n", ["body"]),
        ("{% block body %}Your cart is waiting{% endblock %}\n", ["title"]),
        ("{% block title %}Hi{% endblock %}\n{% block body %}  {% endblock %}\n", ["body"]),
        ("Just text\n", ["title", "body"]),
    ],
)
def test_push_template_without_title_or_body(
    tp: TmpProject, text: str, missing: list[str]
) -> None:
    tp.write_template("push/partial.txt", text)
    errors = errors_of(
        tp,
        """
        trigger: {event: cart_updated}
        steps:
          - id: nudge
            send: {channel: push, template: partial}
        """,
    )
    assert len(errors) == len(missing), errors
    for block in missing:
        err = the_error(errors, f"push/partial.txt must define {{% block {block} %}}")
        assert_at(err, tp.template_path("push/partial.txt"), 1)


def test_template_uses_an_event_property_the_trigger_lacks(tp: TmpProject) -> None:
    tp.write_template(
        "sms/count.txt",
        "Hi {{ user.first_name | default('there', true) }},\n"
        "you left {{ event.itmes | length }} items: {{ event.cart_id }}\n",
    )
    err = only_error(
        tp,
        """
        trigger: {event: cart_updated}
        steps:
          - id: nudge
            send: {channel: sms, template: count}
        """,
        "event.itmes",
        "'cart_updated'",
        "did you mean 'items'?",
    )
    assert_at(err, tp.template_path("sms/count.txt"), 2)
    assert "step 'nudge'" in err.message


def test_template_event_is_the_trigger_event(tp: TmpProject) -> None:
    # cart_nudge reads event.items: fine for cart_updated, wrong for order_completed.
    errors = errors_of(
        tp,
        """
        trigger: {event: order_completed}
        steps:
          - id: nudge
            send: {channel: sms, template: cart_nudge}
        """,
    )
    err = the_error(errors, "event.items", "'order_completed' does not provide")
    assert_at(err, tp.template_path("sms/cart_nudge.txt"), 1)


def test_template_uses_an_unknown_profile_attribute(tp: TmpProject) -> None:
    tp.write_template("sms/hello.txt", "Northwind:\nHi {{ user.frist_name }}!\n")
    err = only_error(
        tp,
        """
        trigger: {event: app_installed}
        steps:
          - id: hello
            send: {channel: sms, template: hello}
        """,
        "user.frist_name",
        "did you mean 'first_name'?",
        "catalog.yaml",
    )
    assert_at(err, tp.template_path("sms/hello.txt"), 2)


def test_template_uses_an_unknown_name(tp: TmpProject) -> None:
    tp.write_template("sms/hello.txt", "Northwind:\n\n\nHi {{ usr.first_name }}!\n")
    err = only_error(
        tp,
        """
        trigger: {event: app_installed}
        steps:
          - id: hello
            send: {channel: sms, template: hello}
        """,
        "'usr', which is not defined",
        "did you mean 'user'?",
    )
    assert_at(err, tp.template_path("sms/hello.txt"), 4)


def test_template_loop_and_set_variables_are_not_unknown_names(tp: TmpProject) -> None:
    tp.write_template(
        "sms/loop.txt",
        "{% set n = event['items'] | length %}{{ n }} items:\n"
        "{% for item in event['items'] %}{{ item.name }} {{ loop.index }}{% endfor %}\n"
        "{{ now }} {{ journey }} {{ step }} {{ variant }} {{ unsubscribe_url }} {{ trigger.total }}\n",
    )
    compiled(
        tp,
        """
        trigger: {event: cart_updated}
        steps:
          - id: nudge
            send: {channel: sms, template: loop}
        """,
    )


def test_template_error_in_an_included_file_points_at_that_file(tp: TmpProject) -> None:
    tp.write_template("layouts/footer.txt", "--\nTotal: {{ event.totl }}\n")
    tp.write_template("sms/with_footer.txt", 'Hi\n{% include "layouts/footer.txt" %}\n')
    err = only_error(
        tp,
        """
        trigger: {event: cart_updated}
        steps:
          - id: nudge
            send: {channel: sms, template: with_footer}
        """,
        "event.totl",
        "did you mean 'total'?",
    )
    assert_at(err, tp.template_path("layouts/footer.txt"), 2)


def test_template_including_a_missing_file(tp: TmpProject) -> None:
    tp.write_template("sms/with_footer.txt", 'Hi\n{% include "layouts/nope.txt" %}\n')
    err = only_error(
        tp,
        """
        trigger: {event: cart_updated}
        steps:
          - id: nudge
            send: {channel: sms, template: with_footer}
        """,
        "template sms/with_footer.txt refers to layouts/nope.txt, which does not exist",
    )
    assert_at(err, tp.template_path("sms/with_footer.txt"), 2)


def test_layout_including_a_missing_file_points_at_the_layout(tp: TmpProject) -> None:
    tp.write_template(
        "layouts/email.txt", '{% block content %}{% endblock %}\n--\n{% include "layouts/sig.txt" %}\n'
    )
    err = only_error(
        tp,
        """
        trigger: {event: app_installed}
        steps:
          - id: hello
            send: {channel: email, template: welcome}
        """,
        "template layouts/email.txt refers to layouts/sig.txt, which does not exist",
    )
    assert_at(err, tp.template_path("layouts/email.txt"), 3)


# --- conditions -------------------------------------------------------------------------------


def test_condition_syntax_error(tp: TmpProject, jpath: str) -> None:
    err = only_error(
        tp,
        """
        trigger:
          event: cart_updated
          when: "event['items'] | length >"
        steps:
          - {id: a, wait: 1h}
        """,
        "does not parse",
        "event['items'] | length >",
    )
    assert_at(err, jpath, 3, 9)


def test_condition_with_braces(tp: TmpProject, jpath: str) -> None:
    err = only_error(
        tp,
        """
        trigger:
          event: cart_updated
          audience: "{{ user.plan == 'pro' }}"
        steps:
          - {id: a, wait: 1h}
        """,
        "without {{ }}",
    )
    assert_at(err, jpath, 3, 13)


def test_condition_uses_an_unknown_profile_attribute(tp: TmpProject, jpath: str) -> None:
    err = only_error(
        tp,
        """
        trigger:
          event: cart_updated
          audience: "user.contry == 'FR'"
        steps:
          - {id: a, wait: 1h}
        """,
        "user.contry",
        "did you mean 'country'?",
    )
    assert_at(err, jpath, 3, 13)


def test_condition_uses_an_unknown_name(tp: TmpProject, jpath: str) -> None:
    err = only_error(
        tp,
        """
        trigger: {event: cart_updated}
        steps:
          - id: check
            branch:
              cases:
                - {when: "usr.plan == 'pro'", next: end}
        """,
        "'usr', which is not defined",
        "did you mean 'user'?",
    )
    assert_at(err, jpath, 6, 18)


def test_condition_uses_an_unknown_event_property(tp: TmpProject, jpath: str) -> None:
    err = only_error(
        tp,
        """
        trigger:
          event: cart_updated
          when: "event.itmes | length > 0"
        steps:
          - {id: a, wait: 1h}
        """,
        "event.itmes",
        "'cart_updated'",
        "did you mean 'items'?",
    )
    assert_at(err, jpath, 3, 9)


def test_event_in_wait_for_and_goals_is_that_event(tp: TmpProject, jpath: str) -> None:
    # order_id belongs to order_completed; items to cart_updated (the trigger).
    errors = errors_of(
        tp,
        """
        trigger: {event: cart_updated}
        goals:
          - event: order_completed
            when: "event.order_id and trigger['items'] | length > 0"
          - event: first_purchase
            when: "event.items"
        steps:
          - id: wait_for_order
            wait_for:
              event: order_completed
              when: "event.total > trigger.total and event.cart_id == trigger.cart_id"
              timeout: 1h
          - id: wait_again
            wait_for:
              event: order_completed
              when: "event['items'] | length > 0"
              timeout: 1h
        """,
    )
    assert len(errors) == 2, errors
    goal = the_error(errors, "event.items", "'first_purchase' does not provide")
    assert_at(goal, jpath, 6, 11)
    wait = the_error(errors, "event.items", "'order_completed' does not provide")
    assert_at(wait, jpath, 16, 13)


def test_event_in_branch_conditions_is_the_trigger_event(tp: TmpProject, jpath: str) -> None:
    errors = errors_of(
        tp,
        """
        trigger: {event: cart_updated}
        steps:
          - id: wait_for_order
            wait_for: {event: order_completed, timeout: 1h}
          - id: check
            branch:
              cases:
                - when: "event.total > 100"
                  next: end
                - when: "event.order_id"
                  next: end
        """,
    )
    assert len(errors) == 1, errors
    err = the_error(errors, "event.order_id", "'cart_updated' does not provide")
    assert_at(err, jpath, 10, 17)


# --- the catalog ------------------------------------------------------------------------------


def test_unknown_trigger_event(tp: TmpProject, jpath: str) -> None:
    err = only_error(
        tp,
        """
        trigger:
          event: cart_update
        steps:
          - {id: a, wait: 1h}
        """,
        "event 'cart_update' is not in catalog.yaml",
        "did you mean 'cart_updated'?",
    )
    assert_at(err, jpath, 2, 10)


def test_unknown_goal_and_exit_events(tp: TmpProject, jpath: str) -> None:
    errors = errors_of(
        tp,
        """
        trigger: {event: cart_updated}
        goals:
          - order_complete
          - {event: first_purchas}
        exit_on: [profile_complete]
        steps:
          - {id: a, wait: 1h}
        """,
    )
    assert len(errors) == 3
    assert_at(the_error(errors, "'order_complete'", "did you mean 'order_completed'?"), jpath, 3, 5)
    assert_at(the_error(errors, "'first_purchas'", "did you mean 'first_purchase'?"), jpath, 4, 13)
    assert_at(
        the_error(errors, "'profile_complete'", "did you mean 'profile_completed'?"), jpath, 5, 11
    )


def test_unknown_wait_for_event(tp: TmpProject, jpath: str) -> None:
    err = only_error(
        tp,
        """
        trigger: {event: cart_updated}
        steps:
          - id: wait_for_order
            wait_for:
              timeout: 1h
              event: order_complted
        """,
        "event 'order_complted' is not in catalog.yaml",
        "did you mean 'order_completed'?",
    )
    assert_at(err, jpath, 6, 14)


def test_quiet_hours_start_equals_end(tp: TmpProject, jpath: str) -> None:
    err = only_error(
        tp,
        """
        trigger: {event: cart_updated}
        delivery:
          quiet_hours: {start: "8:00", end: "08:00"}
        steps:
          - {id: a, wait: 1h}
        """,
        "quiet hours start and end at the same time",
    )
    assert_at(err, jpath, 3, 16)


def test_update_profile_key_not_in_catalog(tp: TmpProject, jpath: str) -> None:
    err = only_error(
        tp,
        """
        trigger: {event: cart_updated}
        steps:
          - id: mark
            update_profile:
              onboarding_nudged: true
              plann: pro
        """,
        "update_profile sets 'plann'",
        "did you mean 'plan'?",
    )
    assert_at(err, jpath, 6)


def test_without_a_catalog_names_are_not_checked(make_project: MakeProject) -> None:
    tp = make_project(catalog=None)
    tp.write_template("sms/any.txt", "{{ user.anything }} {{ event.whatever }}\n")
    result = tp.compile(
        yaml_text(
            """
            trigger: {event: some_event, when: "event.foo"}
            steps:
              - {id: mark, update_profile: {whatever: 1}}
              - {id: nudge, send: {channel: sms, template: any}}
            """
        )
    )
    assert isinstance(result, Machine), str(result)
    # Unknown names at the top level are still caught.
    tp.write_template("sms/any.txt", "{{ usr }}\n")
    result = tp.compile()
    assert isinstance(result, JourneyErrors)
    assert "'usr', which is not defined" in str(result)


# --- many errors at once ----------------------------------------------------------------------


def test_all_schema_errors_are_reported_sorted_by_line(tp: TmpProject, jpath: str) -> None:
    errors = errors_of(
        tp,
        """
        trigger: {event: cart_updated}
        holdout: 10%
        conversion_window: 3x
        delivery:
          timezone: Nowhere/City
        steps:
          - id: a
            wait: 0m
          - id: b
            sned: {channel: email, template: cart_nudge}
          - id: c
            send: {channel: emial, template: cart_nudge}
        """,
    )
    assert [e.location.line for e in errors] == [3, 5, 8, 10, 12]  # type: ignore[union-attr]
    the_error(errors, "'3x' is not a duration")
    the_error(errors, "unknown time zone 'Nowhere/City'")
    the_error(errors, "'0m' must be longer than zero")
    the_error(errors, "'sned'", "did you mean 'send'?")
    the_error(errors, "unknown channel 'emial'")
    assert str(JourneyErrors(errors)).splitlines() == [str(e) for e in errors]


def test_all_semantic_errors_are_reported_sorted(tp: TmpProject, jpath: str) -> None:
    tp.write_template("sms/oops.txt", "Hi {{ user.frist_name }}\n")
    errors = errors_of(
        tp,
        """
        trigger:
          event: cart_update
          when: "event.itmes"
        steps:
          - id: a
            wait: 1h
            next: nudeg
          - id: nudge
            send: {channel: sms, template: oops}
          - id: nudge
            wait: 1h
          - id: offer
            split:
              - {name: x, weight: 30%, next: end}
              - {name: y, weight: 30%, next: end}
        """,
    )
    in_journey = [e for e in errors if e.location and e.location.path == jpath]
    lines = [e.location.line for e in in_journey]  # type: ignore[union-attr]
    assert lines == sorted(lines)
    assert len(set(lines)) >= 5, errors
    assert_at(the_error(errors, "event 'cart_update' is not in catalog.yaml"), jpath, 2, 10)
    # The trigger event is unknown, so its properties are not checked.
    assert_at(the_error(errors, "'nudeg' is not a step"), jpath, 7, 11)
    assert_at(the_error(errors, "step 'nudge' is unreachable"), jpath, 8, 9)
    assert_at(the_error(errors, "duplicate step id 'nudge'"), jpath, 10, 9)
    assert_at(the_error(errors, "step 'offer' is unreachable"), jpath, 12, 9)
    assert_at(the_error(errors, "split weights add up to 60%"), jpath, 14)
    # The template of the unreachable send step is still checked.
    assert_at(the_error(errors, "user.frist_name"), tp.template_path("sms/oops.txt"), 1)
    # JourneyErrors sorts by file, then line: journey lines stay in order around the template.
    assert len(errors) == 7


# --- the machine ------------------------------------------------------------------------------


FULL = """\
description: Every kind of step.
trigger:
  event: cart_updated
  when: "event['items'] | length > 0"
  audience: "user.country == 'FR'"
re_entry: parallel
holdout: 5%
goals: [order_completed, {event: first_purchase, when: "event.total > 0"}]
exit_on: [profile_completed]
conversion_window: 2d
delivery:
  quiet_hours: {start: "21:00", end: "8:00"}
  timezone: Europe/Paris
  frequency_caps:
    - {max: 2, per: 1d}
    - {max: 1, per: 12h, channel: sms}
steps:
  - id: pause
    wait: {until: "9:30"}
  - id: nudge
    send: {channel: preferred, fallback: [push, sms], template: cart_nudge}
  - id: wait_for_order
    wait_for: {event: order_completed, timeout: 23.5h, on_event: done, on_timeout: check}
  - id: check
    branch:
      cases:
        - {when: "user.plan == 'pro'", next: offer}
      else: mark
  - id: offer
    split:
      - {name: a, weight: 33.5%, next: mark}
      - {name: b, weight: 66.5, next: mark}
  - id: mark
    update_profile: {onboarding_nudged: true, streak_days: 0}
  - id: done
    exit: {reason: bought, converted: true}
"""


def test_machine_content(tp: TmpProject) -> None:
    m = compiled(tp, FULL)
    assert m.journey == "j" and m.description == "Every kind of step."
    assert m.audience == "user.country == 'FR'" and m.re_entry == "parallel"
    assert m.holdout == 5.0 and m.conversion_window == 2 * 86400
    assert [g.event for g in m.goals] == ["order_completed", "first_purchase"]
    assert m.goals[1].when == "event.total > 0"
    assert [g.event for g in m.exits] == ["profile_completed"]
    assert m.delivery.quiet_hours == ("21:00", "08:00")
    assert m.delivery.timezone == "Europe/Paris"
    assert [(c.max, c.per, c.channel) for c in m.delivery.frequency_caps] == [
        (2, 86400, None),
        (1, 12 * 3600, "sms"),
    ]
    assert m.states["pause"].until == "09:30"  # type: ignore[union-attr]
    assert m.states["wait_for_order"].timeout == 84600  # type: ignore[union-attr]
    assert m.states["mark"].next == "done"  # type: ignore[union-attr]
    assert m.states["done"].converted is True  # type: ignore[union-attr]
    assert list(m.states) == ["pause", "nudge", "wait_for_order", "check", "offer", "mark", "done"]
    assert m.profile_defaults["plan"] == "free" and m.profile_defaults["push_tokens"] == []


def test_machine_round_trips_through_dict_and_json(tp: TmpProject, project_root: Path) -> None:
    machines = [compiled(tp, FULL)]
    shipped, errors = compile_all(Project(project_root))
    assert not errors
    machines += shipped.values()
    for m in machines:
        again = Machine.from_dict(m.to_dict())
        assert again == m
        assert again.version == m.version
        via_json = Machine.from_dict(json.loads(m.to_json()))
        assert via_json == m
        assert via_json.to_json() == m.to_json()
        assert via_json.with_version().version == m.version


def test_same_source_same_version(make_project: MakeProject) -> None:
    a, b = make_project(), make_project()
    ma, mb = compiled(a, FULL), compiled(b, FULL)
    assert ma.version == mb.version
    assert ma == mb
    assert compiled(a, FULL).version == ma.version
    # Comments and layout do not change what the machine is.
    reformatted = "# a comment\n" + FULL.replace(
        'wait: {until: "9:30"}', "wait:\n      until: '09:30'  # half past nine"
    )
    assert reformatted.count("until: '09:30'") == 1
    assert compiled(a, reformatted).version == ma.version


def test_editing_the_journey_changes_the_version(tp: TmpProject) -> None:
    before = compiled(tp, FULL).version
    assert compiled(tp, FULL.replace("timeout: 23.5h", "timeout: 23h")).version != before


@pytest.mark.parametrize(
    "template",
    ["sms/cart_nudge.txt", "push/cart_nudge.txt", "layouts/email.html", "layouts/cart_items.txt"],
)
def test_editing_a_template_changes_the_version(make_project: MakeProject, template: str) -> None:
    tp = make_project(journeys=True)
    before = tp.compile(name="cart_abandonment")
    assert isinstance(before, Machine), str(before)
    path = tp.templates_dir / template
    original = path.read_text(encoding="utf-8")
    path.write_text(original + "\n", encoding="utf-8")
    after = tp.compile(name="cart_abandonment")
    assert isinstance(after, Machine), str(after)
    assert after.version != before.version
    assert after.templates[template] != before.templates[template]
    path.write_text(original, encoding="utf-8")
    restored = tp.compile(name="cart_abandonment")
    assert isinstance(restored, Machine)
    assert restored.version == before.version


def test_editing_an_unused_template_keeps_the_version(make_project: MakeProject) -> None:
    tp = make_project(journeys=True)
    before = tp.compile(name="lesson_reminder")
    assert isinstance(before, Machine)
    tp.write_template("sms/cart_nudge.txt", "changed\n")
    after = tp.compile(name="lesson_reminder")
    assert isinstance(after, Machine)
    assert after.version == before.version


def test_compile_text_raises_journey_errors(tp: TmpProject) -> None:
    with pytest.raises(JourneyErrors) as info:
        tp.compile_text("trigger: {event: cart_updated}\nsteps:\n  - {id: a, wait: nope}\n")
    assert len(info.value.errors) == 1
    assert isinstance(tp.compile_text(FULL), Machine)


def test_a_frequency_cap_window_longer_than_production_can_enforce_is_an_error(make_project) -> None:  # type: ignore[no-untyped-def]
    """Production keeps 31 days of message history; a longer window is refused up front."""
    from orchestrator.compiler import compile_journey
    from orchestrator.errors import JourneyErrors

    tp = make_project()
    path = tp.write("journeys/j.yaml", (
        "trigger: {event: app_installed}\n"
        "delivery:\n"
        "  frequency_caps:\n"
        "    - {max: 1, per: 40d}\n"
        "steps:\n"
        "  - id: hello\n"
        "    send: {channel: email, template: welcome}\n"
    ))
    with pytest.raises(JourneyErrors) as err:
        compile_journey(path, tp.project)
    assert "at most 31d (got 40d)" in str(err.value)
    assert "j.yaml:4" in str(err.value)
    tp.write("journeys/j.yaml", path.read_text().replace("40d", "31d"))
    compile_journey(path, tp.project)
