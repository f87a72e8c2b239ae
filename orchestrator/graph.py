"""A journey as a Mermaid flowchart, for docs and reviews. Core: text from a Machine."""

from __future__ import annotations

from .durations import format_duration
from .machine import (
    BranchState,
    ExitState,
    Machine,
    SendState,
    SplitState,
    UpdateProfileState,
    WaitForState,
    WaitState,
)


def _q(text: str) -> str:
    return text.replace('"', "#quot;")


def to_mermaid(m: Machine) -> str:
    lines = ["flowchart TD"]
    trigger = m.trigger_event + (f"<br/>when {m.trigger_when}" if m.trigger_when else "")
    if m.audience:
        trigger += f"<br/>audience {m.audience}"
    lines.append(f'  start(["⚡ {_q(trigger)}"])')
    if m.holdout:
        lines.append(f'  holdout(["holdout {m.holdout:g}%: receives nothing"])')
        lines.append("  start -. holdout .-> holdout")
    lines.append(f"  start --> {m.start}")
    ends_needed = False
    for sid, state in m.states.items():
        match state:
            case SendState():
                how = ("preferred, then " if state.prefer_user else "") + " → ".join(state.channels)
                lines.append(f'  {sid}["✉ {sid}<br/>{_q(state.template)} via {how}"]')
            case WaitState():
                what = format_duration(state.seconds) if state.seconds else f"until {state.until} local"
                lines.append(f'  {sid}(["⏱ {sid}<br/>wait {what}"])')
            case WaitForState():
                lines.append(
                    f'  {sid}(["⏳ {sid}<br/>wait for {state.event}, up to {format_duration(state.timeout)}"])'
                )
            case BranchState():
                lines.append(f'  {sid}{{"{sid}"}}')
            case SplitState():
                lines.append(f'  {sid}{{"🔀 {sid}"}}')
            case UpdateProfileState():
                keys = ", ".join(state.changes)
                lines.append(f'  {sid}[/"{sid}<br/>set {_q(keys)}"/]')
            case ExitState():
                conv = " (converted)" if state.converted else ""
                lines.append(f'  {sid}(["■ {sid}<br/>exit: {_q(state.reason)}{conv}"])')

    def edge(src: str, dst: str | None, label: str | None = None) -> None:
        nonlocal ends_needed
        target = dst if dst is not None else "done"
        if dst is None:
            ends_needed = True
        arrow = f" -- {_q(label)} --> " if label else " --> "
        lines.append(f"  {src}{arrow}{target}")

    for sid, state in m.states.items():
        match state:
            case SendState() | WaitState() | UpdateProfileState():
                edge(sid, state.next)
            case WaitForState():
                edge(sid, state.on_event, state.event)
                edge(sid, state.on_timeout, "timeout")
            case BranchState():
                for cond, target in state.cases:
                    edge(sid, target, cond)
                edge(sid, state.otherwise, "else")
            case SplitState():
                for name, weight, target in state.variants:
                    edge(sid, target, f"{name} {weight:g}%")
    if ends_needed:
        lines.append('  done(["✔ complete"])')
    for g in m.goals:
        lines.append(f'  goal_{g.event}>"goal: {g.event} ends the run, converted"]')
    for g in m.exits:
        lines.append(f'  exit_{g.event}>"exit: {g.event} ends the run"]')
    return "\n".join(lines) + "\n"
