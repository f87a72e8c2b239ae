"""``journey validate``: one line per mistake, exit 1; ``ok  NAME`` and exit 0 when all is well;
never a traceback, whatever the files hold."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable

from click.testing import CliRunner

from orchestrator.cli import cli

from conftest import TmpProject

MakeProject = Callable[..., TmpProject]
ERROR_LINE = re.compile(r"^(?P<path>[^:]+)(:(?P<line>\d+):(?P<col>\d+))?: error: .+$")

BROKEN = """\
trigger:
  event: cart_update
steps:
  - id: nudge
    send: {channel: email, template: cart_nudge}
    next: nowhere
"""

GOOD = """\
trigger: {event: cart_updated}
steps:
  - id: pause
    wait: 1h
  - id: nudge
    send: {channel: sms, template: cart_nudge}
"""


def run_validate(project: TmpProject, *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, ["validate", "--project", str(project.root), *args])


def run_main(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real entry point (``main``), in a fresh interpreter, as a user runs it."""
    env = {k: v for k, v in os.environ.items() if k != "JOURNEY_PROJECT"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_broken_journey_prints_one_line_per_error(make_project: MakeProject) -> None:
    tp = make_project()
    path = tp.write_journey(BROKEN, "broken")
    result = run_validate(tp)
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines == [
        f"{path}:2:10: error: event 'cart_update' is not in catalog.yaml; did you mean "
        "'cart_updated'?; known events: app_installed, cart_updated, first_purchase, "
        "lesson_completed, order_completed, profile_completed",
        f"{path}:6:11: error: 'nowhere' is not a step in this journey; expected one of "
        "'nudge' or 'end'",
    ]
    assert "2 error(s) in 1 of 1 journey(s)" in result.stderr
    assert "Traceback" not in result.output


def test_all_good_exits_0(make_project: MakeProject) -> None:
    tp = make_project()
    tp.write_journey(GOOD, "cart_sms")
    tp.write_journey(GOOD.replace("wait: 1h", "wait: 2h"), "another")
    result = run_validate(tp)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert re.fullmatch(r"ok  another  version [0-9a-f]{16}  \(2 steps\)", lines[0])
    assert re.fullmatch(r"ok  cart_sms  version [0-9a-f]{16}  \(2 steps\)", lines[1])
    assert result.stderr == ""


def test_good_and_broken_together(make_project: MakeProject) -> None:
    tp = make_project(journeys=True)
    tp.write_journey(BROKEN, "broken")
    result = run_validate(tp)
    assert result.exit_code == 1
    out = result.stdout.splitlines()
    assert [line for line in out if line.startswith("ok  ")] == [
        line for line in out if re.match(r"ok  (cart_abandonment|lesson_reminder|onboarding)  ", line)
    ]
    assert len([line for line in out if line.startswith("ok  ")]) == 3
    errors = [line for line in out if not line.startswith("ok  ")]
    assert len(errors) == 2 and all(ERROR_LINE.match(line) for line in errors)
    assert "2 error(s) in 1 of 4 journey(s)" in result.stderr


def test_shipped_project_validates(project_root: Path) -> None:
    result = CliRunner().invoke(cli, ["validate", "--project", str(project_root)])
    assert result.exit_code == 0, result.output
    names = [line.split()[1] for line in result.stdout.splitlines()]
    assert names == ["cart_abandonment", "lesson_reminder", "onboarding"]


def test_validate_named_files(make_project: MakeProject) -> None:
    tp = make_project()
    good = tp.write_journey(GOOD, "good")
    tp.write_journey(BROKEN, "broken")
    result = run_validate(tp, str(good))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ok  good  version ")


def test_no_journeys(make_project: MakeProject) -> None:
    tp = make_project()
    result = run_validate(tp)
    assert result.exit_code == 1
    assert f"no journeys found in {tp.journeys_dir}" in result.stderr


def test_broken_catalog_is_reported(make_project: MakeProject) -> None:
    tp = make_project(catalog="profile:\n  plan: {type: strnig}\nevents: {}\n")
    tp.write_journey(GOOD, "good")
    result = run_validate(tp)
    assert result.exit_code == 1
    line = result.stdout.splitlines()[0]
    assert line.startswith(f"{tp.root / 'catalog.yaml'}:2:")
    assert "profile.plan.type" in line


def test_garbage_and_wrong_shapes_never_traceback(make_project: MakeProject) -> None:
    tp = make_project()
    tp.write_journey(bytes(range(256)) * 4, "garbage")  # not UTF-8
    tp.write_journey(b"\x00\x01\x02 binary: yes\n", "control")  # UTF-8, but not YAML
    tp.write_journey("- trigger: {event: cart_updated}\n- steps: []\n", "listy")
    tp.write_journey("just a sentence\n", "scalar")
    tp.write_journey("a: " + "[" * 400 + "]" * 400 + "\n", "deep")
    tp.write_journey(GOOD, "good")
    proc = run_main(tp.root, "validate")
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out
    assert "internal error" not in out, out
    assert proc.returncode == 1, out
    lines = proc.stdout.splitlines()
    by_name = {re.match(r"^journeys/(\w+)\.yaml", line)[1]: line for line in lines if line.startswith("journeys/")}  # type: ignore[index]
    assert set(by_name) == {"garbage", "control", "listy", "scalar", "deep"}, lines
    assert "cannot read file" in by_name["garbage"]
    assert by_name["garbage"].startswith("journeys/garbage.yaml: error: ")
    assert by_name["control"].startswith("journeys/control.yaml:1:1: error: YAML syntax:")
    for name in ("listy", "scalar"):
        assert by_name[name] == (
            f"journeys/{name}.yaml:1:1: error: a journey file must be a mapping with at least "
            "'trigger' and 'steps'"
        )
    assert "nesting too deep" in by_name["deep"]
    assert any(line.startswith("ok  good  version ") for line in lines)
    assert len(lines) == 6
    assert proc.stderr.strip() == "5 error(s) in 5 of 6 journey(s)"


def test_main_reports_a_broken_journey_in_one_line_per_error(make_project: MakeProject) -> None:
    tp = make_project()
    tp.write_journey(BROKEN, "broken")
    proc = run_main(tp.root, "validate", "--project", str(tp.root))
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [
        line for line in proc.stdout.splitlines() if ERROR_LINE.match(line)
    ]
    assert len(proc.stdout.splitlines()) == 2
    assert proc.stdout.startswith("journeys/broken.yaml:2:10: error: event 'cart_update'")
    assert "Traceback" not in proc.stdout + proc.stderr


def test_main_missing_file_argument(make_project: MakeProject) -> None:
    tp = make_project()
    proc = run_main(tp.root, "validate", "journeys/nope.yaml")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stdout.startswith("journeys/nope.yaml: error: cannot read file")
