"""The ``journey`` command as a user runs it: dry-run tables, graph, schema, render, and the
one-line errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from orchestrator.inputs import read_users

try:
    from dryrun_helpers import JOURNEYS, SAMPLE_USERS, invoke, machine, run_cli
except ImportError:  # tests/ imported as a package
    from tests.dryrun_helpers import JOURNEYS, SAMPLE_USERS, invoke, machine, run_cli

USERS = "samples/users.yaml"


def _one_line_error(proc, *needles: str, code: int = 1) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def cart_table() -> str:
    proc = invoke("dry-run", "cart_abandonment", "--users", USERS)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stdout


def test_table_names_every_user(cart_table: str) -> None:
    for u in read_users(SAMPLE_USERS):
        assert re.search(rf"^{re.escape(u['id'])}\b", cart_table, re.M), u["id"]
        assert u.get("timezone", "America/New_York") in cart_table
    assert "Journey cart_abandonment" in cart_table
    assert "from 2026-01-05 14:00 UTC to 2026-02-04 14:00 UTC" in cart_table


def test_table_has_summary_and_reasons(cart_table: str) -> None:
    assert "\nSummary" in cart_table
    summary = cart_table[cart_table.index("\nSummary") :]
    assert re.search(r"users\s+10\b", summary)
    assert re.search(r"entered\s+10\b", summary)
    assert re.search(r"held out \(control\)\s+1\b", summary)
    assert re.search(r"deferred by quiet hours\s+4\b", summary)
    # With the 1-per-12h SMS cap no sample user is capped (Bruno's two texts are 23h apart);
    # the cap has its own test below. Jo never opted in to texts.
    assert re.search(r"skipped: unsubscribed\s+4\b", summary)
    assert re.search(r"skipped: no_consent\s+1\b", summary)
    assert re.search(r"skipped: no_contact\s+1\b", summary)
    assert "frequency_cap" not in cart_table
    assert re.search(r"sent: free_shipping_sms by sms\s+3\b", summary)
    assert re.search(r"exited: completed\s+9\b", summary)
    assert re.search(r"exited: holdout_window_ended\s+1\b", summary)
    assert re.search(r"converted\s+0\b", summary)
    body = cart_table[: cart_table.index("\nSummary")]
    for phrase in (
        "quiet hours: held until",
        "not sent: unsubscribed",
        "not sent: no_consent (sms: not opted in)",
        "not sent: no_contact",
        "held out: control group, receives nothing",
        "fell back from push",
        "(steps done)",
        "left the journey: completed; conversion window over, no goal reached",
        "left the journey: holdout_window_ended",
        "SMS segment",
        "variant discount",
        "variant free_shipping",
    ):
        assert phrase in body, phrase


def test_table_shows_the_exit_at_the_end_of_the_conversion_window(cart_table: str) -> None:
    # Ivan (Chicago) enters Monday 08:00 local; his run leaves three days later.
    block = cart_table[cart_table.index("u-ivan") : cart_table.index("u-jo")]
    assert re.search(r"01-08 14:00\s+Thu 08:00\s+exit\s+\(steps done\)\s+left the journey: completed", block)


def test_table_shows_a_frequency_cap(tmp_path: Path) -> None:
    users = tmp_path / "users.yaml"
    users.write_text(
        "- {id: u-txt, first_name: Tex, phone: '+14155550100', timezone: UTC,"
        " preferred_channel: sms, sms_opt_in: true}\n",
        encoding="utf-8",
    )
    events = tmp_path / "events.yaml"
    cart = (
        "{cart_id: c-1, total: 5, currency: USD,"
        " items: [{sku: A, name: Pen, price: 5, quantity: 1, image_url: x}]}"
    )
    # SMS is the only channel: the second cart's nudge, 2h after the first text, is capped
    events.write_text(
        f"- {{user: u-txt, event: cart_updated, properties: {cart}}}\n"
        f"- {{user: u-txt, event: cart_updated, at: +2h, properties: {cart}}}\n",
        encoding="utf-8",
    )
    proc = invoke(
        "dry-run", "cart_abandonment", "--users", str(users), "--events", str(events), "--until", "12h"
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert re.search(r"01-05 15:00\s+Mon 15:00\s+send\s+nudge\s+sms", out), out
    capped = r"not sent: frequency_cap \(sms: capped at 1 per 12h\)"
    assert re.search(r"01-05 17:00\s+Mon 17:00\s+skip\s+nudge\s+" + capped, out), out
    summary = out[out.index("\nSummary") :]
    assert re.search(r"skipped: frequency_cap\s+1\b", summary)


def test_table_shows_local_time(cart_table: str) -> None:
    # Ana (Los Angeles) enters at 14:00 UTC, which is Monday 06:00 for her.
    block = cart_table[cart_table.index("u-ana") : cart_table.index("u-bruno")]
    assert re.search(r"01-05 14:00\s+Mon 06:00\s+enter", block)


def test_table_utc_column_is_utc_for_events_given_with_an_offset(tmp_path: Path) -> None:
    events = tmp_path / "events.yaml"
    events.write_text(
        "- user: u-emi\n"
        "  event: cart_updated\n"
        '  at: "2026-01-06T09:00:00+09:00"\n'  # 00:00 UTC, 09:00 in Tokyo
        "  properties: {cart_id: c-1, total: 5, currency: USD,"
        " items: [{sku: A, name: Pen, price: 5, quantity: 1, image_url: x}]}\n",
        encoding="utf-8",
    )
    proc = invoke(
        "dry-run", "cart_abandonment", "--users", USERS, "--events", str(events), "--until", "2h",
        "--start", "2026-01-06T08:00:00+09:00",
    )
    assert proc.returncode == 0, proc.stderr
    assert "from 2026-01-05 23:00 UTC to 2026-01-06 01:00 UTC" in proc.stdout
    assert re.search(r"01-06 00:00\s+Tue 09:00\s+enter", proc.stdout), proc.stdout
    assert re.search(r"01-06 01:00\s+Tue 10:00\s+send", proc.stdout), proc.stdout


def test_until_stops_early_and_reports_runs_in_progress() -> None:
    proc = invoke("dry-run", "cart_abandonment", "--users", USERS, "--until", "2h")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "to 2026-01-05 16:00 UTC" in out
    assert re.search(r"still in progress at the end\s+10\b", out)
    assert "free_shipping_sms" not in out and "discount_email" not in out
    as_json = invoke(
        "dry-run", "cart_abandonment", "--users", USERS, "--until", "2h", "--format", "json"
    )
    data = json.loads(as_json.stdout)
    assert data["until"] == "2026-01-05T16:00:00Z"
    assert data["summary"]["in_progress"] == 10
    assert all(e["at"] <= "2026-01-05T16:00:00Z" for e in data["timeline"])
    assert "exit" not in {e["action"] for e in data["timeline"]}


def test_bad_until_is_a_usage_error() -> None:
    _one_line_error(
        invoke("dry-run", "cart_abandonment", "--users", USERS, "--until", "2x"),
        "'2x'",
        code=2,
    )


def test_out_writes_the_file(tmp_path: Path) -> None:
    target = tmp_path / "preview.json"
    proc = invoke(
        "dry-run", "lesson_reminder", "--users", USERS, "--format", "json", "--out", str(target)
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert json.loads(target.read_text(encoding="utf-8"))["journey"] == "lesson_reminder"


# -- graph ------------------------------------------------------------------------------------


@pytest.mark.parametrize("journey", JOURNEYS)
def test_graph_is_a_mermaid_flowchart_with_every_step(journey: str) -> None:
    result = invoke("graph", journey)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "flowchart TD"
    for sid in machine(journey).states:
        assert re.search(rf"^\s+{sid}\b", result.stdout, re.M), sid  # a node for the step
        assert re.search(rf"-->\s*{sid}$|^\s+{sid}\s+(--|-\.)", result.stdout, re.M), sid


def test_graph_of_cart_abandonment_shows_the_split_and_goal() -> None:
    proc = invoke("graph", "cart_abandonment")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("flowchart TD\n")
    for sid in ("wait_an_hour", "nudge", "wait_for_order", "offer", "discount_email", "free_shipping_sms"):
        assert sid in proc.stdout
    assert "offer -- discount 50% --> discount_email" in proc.stdout
    assert "wait_for_order -- timeout --> offer" in proc.stdout
    assert "holdout 10%" in proc.stdout
    assert "goal: order_completed" in proc.stdout


def test_graph_image_without_mmdc_fails_with_one_line(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "f.svg"
    monkeypatch.setenv("PATH", str(tmp_path))  # no mmdc anywhere on it
    proc = invoke("graph", "cart_abandonment", "--out", str(target))
    _one_line_error(proc, "Mermaid CLI", ".mmd")
    assert proc.stdout == ""
    assert not target.exists() and not target.with_suffix(".mmd").exists()


def test_graph_to_mmd_file(tmp_path: Path) -> None:
    target = tmp_path / "cart.mmd"
    proc = invoke("graph", "cart_abandonment", "--out", str(target))
    assert proc.returncode == 0, proc.stderr
    assert target.read_text(encoding="utf-8").startswith("flowchart TD")


# -- schema -----------------------------------------------------------------------------------


def test_schema_is_json_with_trigger_and_steps() -> None:
    proc = invoke("schema")
    assert proc.returncode == 0, proc.stderr
    schema = json.loads(proc.stdout)
    assert {"trigger", "steps"} <= set(schema["properties"])
    assert "trigger" in schema.get("required", []) and "steps" in schema.get("required", [])
    assert schema["$schema"].startswith("https://json-schema.org/")


# -- render -----------------------------------------------------------------------------------


def test_render_prints_all_three_channels() -> None:
    proc = invoke("render", "cart_nudge", "--user", "u-ana", "--users", USERS)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for channel in ("email", "sms", "push"):
        assert f"{channel} · cart_nudge · u-ana" in out
    assert "Subject: Ana, your cart is waiting" in out
    assert "- Black tee (M) x 2: $50.00" in out
    assert "Northwind: Ana, your cart (2 items, $87.50)" in out
    assert "[1 segment(s), GSM-7]" in out
    assert "Title: Still thinking it over?" in out
    assert "link: northwind://cart/cart-1001" in out


def test_render_one_channel_with_segment_count() -> None:
    proc = invoke("render", "cart_nudge", "--user", "u-ana", "--users", USERS, "--channel", "sms")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "sms · cart_nudge · u-ana" in out
    assert "email ·" not in out and "push ·" not in out and "Subject:" not in out
    assert re.search(r"\[(\d+) segment\(s\), (GSM-7|UCS-2)\]", out)
    assert out.count("segment(s)") == 1


def test_render_channel_prefix_form() -> None:
    proc = invoke("render", "push/streak_reminder", "--user", "u-farah", "--users", USERS)
    assert proc.returncode == 0, proc.stderr
    assert "push · streak_reminder · u-farah" in proc.stdout
    assert "Hey, a quick Spanish lesson" in proc.stdout
    assert "email ·" not in proc.stdout


def test_render_unknown_template_and_user() -> None:
    _one_line_error(
        invoke("render", "cart_nudg", "--user", "u-ana", "--users", USERS),
        "no template named 'cart_nudg'",
        "did you mean 'cart_nudge'",
    )
    _one_line_error(
        invoke("render", "cart_nudge", "--user", "u-anna", "--users", USERS),
        "no user 'u-anna'",
        "did you mean 'u-ana'",
    )


# -- errors -----------------------------------------------------------------------------------


def test_unknown_journey_is_one_clear_line() -> None:
    # A real process: what a user sees in a terminal, exit code included.
    proc = run_cli("dry-run", "cart_abandonmnet", "--users", USERS)
    line = _one_line_error(proc, "cart_abandonmnet", "did you mean 'cart_abandonment'")
    assert line.startswith("error:")
    assert proc.stdout == ""


def test_unknown_journey_in_graph_too() -> None:
    _one_line_error(invoke("graph", "onbording"), "did you mean 'onboarding'")


def test_missing_users_file_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nobody.yaml"
    proc = invoke("dry-run", "cart_abandonment", "--users", str(missing))
    _one_line_error(proc, "nobody.yaml", "not found")
    assert proc.stdout == ""


def test_broken_users_file_is_one_line_with_location(tmp_path: Path) -> None:
    bad = tmp_path / "users.yaml"
    bad.write_text("- id: u-1\n- id: u-1\n", encoding="utf-8")
    _one_line_error(
        invoke("dry-run", "onboarding", "--users", str(bad)), f"{bad}:2:", "already used"
    )


def test_events_for_unknown_user_is_one_line(tmp_path: Path) -> None:
    events = tmp_path / "events.yaml"
    events.write_text("- {user: u-nobody, event: cart_updated}\n", encoding="utf-8")
    _one_line_error(
        invoke("dry-run", "cart_abandonment", "--users", USERS, "--events", str(events)),
        "u-nobody",
        f"{events}:1:",
    )


def test_dry_run_writes_the_html_report_of_the_simulated_data(tmp_path: Path) -> None:
    """The report a marketer previews before launch: the same funnel numbers the summary
    table shows, marked as simulated, with no provider feedback invented."""
    report = tmp_path / "preview.html"
    proc = invoke("dry-run", "cart_abandonment", "--users", USERS, "--report", str(report))
    assert proc.returncode == 0, proc.stderr
    html = report.read_text(encoding="utf-8")
    for chart in ("funnel", "daily", "experiment-holdout", "experiment-offer"):
        assert f'data-chart="{chart}"' in html, chart
    assert "Dry-run" in html or "dry-run" in html
    assert "no provider feedback" in html
    assert "not enough data yet" in html  # ten sample users decide nothing
    summary = proc.stdout[proc.stdout.index("\nSummary"):]
    assert re.search(r"entered\s+10\b", summary)
