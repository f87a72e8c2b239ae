"""Dry-run results as a human-readable timeline and summary. Shell: writes to a rich Console.

One block per user (in the users file's order): when each thing happened in UTC and in the
user's own time, what it was, and why; then the journey's summary.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timezone
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .engine import CONVERSION_STEP, HOLDOUT_STEP
from .localtime import zone
from .simulate import Entry, Result

_STEP_LABEL = {HOLDOUT_STEP: "(holdout)", CONVERSION_STEP: "(steps done)"}
_STYLE = {"enter": "cyan", "send": "green", "skip": "yellow", "defer": "magenta", "exit": "blue"}


def _describe(entry: Entry, tz_name: str) -> str:
    if entry.action == "enter":
        parts = ["entered the journey"]
        if entry.reason == "restarted":
            parts = ["restarted by a new trigger"]
        if entry.holdout:
            parts.append("held out: control group, receives nothing")
        return "; ".join(parts)
    if entry.action == "send":
        lines = []
        if entry.subject:
            lines.append(entry.subject)
        if entry.body:
            body = " ".join(entry.body.split())
            lines.append(body if len(body) <= 160 else body[:159] + "…")
        extra = []
        if entry.segments is not None:
            extra.append(f"{entry.segments} SMS segment{'s' if entry.segments != 1 else ''}")
        if entry.variant:
            extra.append(f"variant {entry.variant}")
        if entry.detail:
            extra.append(entry.detail)
        if extra:
            lines.append(f"({', '.join(extra)})")
        return "\n".join(lines)
    if entry.action == "defer":
        assert entry.until is not None
        local = entry.until.astimezone(zone(tz_name)).strftime("%a %H:%M")
        return f"quiet hours: held until {local} local"
    if entry.action == "skip":
        text = f"not sent: {entry.reason}"
        if entry.detail:
            text += f" ({entry.detail})"
        if entry.variant:
            text += f", variant {entry.variant}"
        return text
    converted = " (converted)" if entry.converted else ""
    if entry.step == CONVERSION_STEP and entry.reason == "completed":
        return "left the journey: completed; conversion window over, no goal reached"
    return f"left the journey: {entry.reason}{converted}"


def print_table(result: Result, console: Console) -> None:
    m = result.machine
    console.print(
        Text.assemble(
            ("Journey ", "bold"),
            (m.journey, "bold cyan"),
            f"  version {m.version}  ",
            (f"from {result.start:%Y-%m-%d %H:%M} UTC to {result.until:%Y-%m-%d %H:%M} UTC", "dim"),
        )
    )
    by_user: dict[str, list[Entry]] = defaultdict(list)
    for entry in result.timeline:
        by_user[entry.user].append(entry)
    for user_id, profile in result.users.items():
        entries = by_user.get(user_id)
        tz_name = profile.get("timezone") or m.delivery.timezone
        title = f"{user_id}"
        if profile.get("first_name"):
            title += f" ({profile['first_name']})"
        title += f" · {tz_name}"
        if not entries:
            console.print(Text(f"\n{title}: not entered (trigger did not match)", style="dim"))
            continue
        table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, expand=False)
        table.add_column("UTC", no_wrap=True)
        table.add_column("local", no_wrap=True)
        table.add_column("what", no_wrap=True)
        table.add_column("step", no_wrap=True)
        table.add_column("channel", no_wrap=True)
        table.add_column("details", overflow="fold", max_width=70)
        for e in entries:
            local = e.at.astimezone(zone(tz_name))
            table.add_row(
                e.at.astimezone(timezone.utc).strftime("%m-%d %H:%M"),
                local.strftime("%a %H:%M"),
                Text(e.action, style=_STYLE.get(e.action, "")),
                _STEP_LABEL.get(e.step or "", e.step or ""),
                e.channel or "",
                _describe(e, tz_name),
            )
        console.print(table)
    print_summary(result.summary.to_dict(), console)


def print_summary(summary: dict[str, Any], console: Console) -> None:
    table = Table(title="Summary", title_justify="left", box=box.SIMPLE_HEAD, show_header=False)
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("users", str(summary["users"]))
    table.add_row("entered", str(summary["entered"]))
    if summary["restarted"]:
        table.add_row("  of which restarts", str(summary["restarted"]))
    table.add_row("held out (control)", str(summary["held_out"]))
    for step, channels in summary["sent"].items():
        for channel, n in channels.items():
            table.add_row(f"sent: {step} by {channel}", str(n))
    for reason, n in summary["skipped"].items():
        table.add_row(f"skipped: {reason}", str(n))
    if summary["deferred"]:
        table.add_row("deferred by quiet hours", str(summary["deferred"]))
    for step, variants in summary["variants"].items():
        for variant, n in variants.items():
            table.add_row(f"variant: {step} = {variant}", str(n))
    table.add_row("converted", str(summary["converted"]))
    if summary["converted_held_out"]:
        table.add_row("  of which held out", str(summary["converted_held_out"]))
    for reason, n in summary["exited"].items():
        table.add_row(f"exited: {reason}", str(n))
    if summary["in_progress"]:
        table.add_row("still in progress at the end", str(summary["in_progress"]))
    console.print(table)
