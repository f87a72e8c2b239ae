"""The ``journey`` command. Shell: arguments, files, terminal output, exit codes.

Exit codes: 0 success, 1 the input has mistakes (journeys, users, events), 2 bad usage.
No input, however broken, prints a Python traceback: every failure is one clear line.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console

from .catalog import load_catalog
from .compiler import compile_all, compile_journey
from .durations import parse_duration
from .engine import user_view
from .errors import JourneyError, JourneyErrors, OrchestratorError, did_you_mean
from .graph import to_mermaid
from .inputs import parse_instant, read_events, read_users
from .loader import load_file
from .machine import Machine, SendState
from .outbox import message_context
from .effects import Send
from .engine import Run
from .project import Project
from .render import Renderer
from .simulate import Simulator, default_events
from .spec import CHANNELS, json_schema

# Previews are reproducible: the same input gives the same output on any day. A Monday,
# 14:00 UTC: morning in the Americas, evening in Europe, night in Asia (quiet hours show).
DEFAULT_START = datetime(2026, 1, 5, 14, 0, tzinfo=timezone.utc)
DEFAULT_UNTIL = "30d"


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(message, err=True)
    sys.exit(code)


def _project(project: str | None) -> Project:
    return Project.find(project) if project else Project.find()


def _compile(project: Project, name: str) -> Machine:
    path = project.journey_path(name)
    try:
        return compile_journey(path, project)
    except JourneyErrors as exc:
        _fail(f"{exc}\n{path}: {len(exc.errors)} error(s); fix them and run again")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="journey-orchestrator")
def cli() -> None:
    """Journeys as YAML: validate them, preview them on sample users, draw them."""


project_option = click.option(
    "--project", type=click.Path(file_okay=False), help="Project folder (default: found from here)."
)


@cli.command()
@click.argument("files", nargs=-1, type=click.Path())
@project_option
def validate(files: tuple[str, ...], project: str | None) -> None:
    """Compile every journey (or FILES) and report every mistake, one line each."""
    proj = _project(project)
    targets = [Path(f) for f in files] if files else proj.journey_files()
    if not targets:
        _fail(f"no journeys found in {proj.journeys_dir}")
    machines, errors = compile_all(proj, targets)
    for err in errors:
        click.echo(str(err))
    for name, m in sorted(machines.items()):
        click.echo(f"ok  {name}  version {m.version}  ({len(m.states)} steps)")
    if errors:
        failed = len(targets) - len(machines)
        _fail(f"{len(errors)} error(s) in {failed} of {len(targets)} journey(s)")


@cli.command("dry-run")
@click.argument("journey")
@click.option("--users", "users_file", required=True, type=click.Path(), help="Users: YAML, JSON, JSONL or CSV.")
@click.option("--events", "events_file", type=click.Path(), help="Events {user, event, at, properties}.")
@click.option("--start", default=None, help="Simulated start, ISO 8601 (default 2026-01-05T14:00:00Z).")
@click.option("--until", default=DEFAULT_UNTIL, show_default=True, help="How long to simulate, e.g. 3d.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), help="Write to this file instead of stdout.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False),
              help="Also write the HTML report (funnel, experiments, charts) of the simulated data.")
@project_option
def dry_run(
    journey: str,
    users_file: str,
    events_file: str | None,
    start: str | None,
    until: str,
    fmt: str,
    out: str | None,
    report_path: str | None,
    project: str | None,
) -> None:
    """Play JOURNEY against sample users on a simulated clock: who gets what, when, why not."""
    proj = _project(project)
    machine = _compile(proj, journey)
    try:
        start_at = parse_instant(start, DEFAULT_START) if start else DEFAULT_START
        horizon = timedelta(seconds=parse_duration(until))
    except ValueError as exc:
        _fail(f"error: {exc}", 2)
    users = read_users(users_file)
    ids = {u["id"] for u in users}
    if events_file:
        events = read_events(events_file, start_at, ids)
    else:
        catalog = load_catalog(proj.catalog_path)
        example = catalog.events.get(machine.trigger_event)
        events = default_events(machine, users, start_at, example.example if example else {})
    progress = _progress(len(events)) if fmt == "table" or out else None
    sim = Simulator(
        machine,
        Renderer(proj.templates_dir),
        users,
        preview_chars=None if fmt == "json" else 600,
        on_progress=progress,
    )
    result = sim.run(events, start_at, start_at + horizon)
    if progress:
        progress(-1)
    if report_path:
        from .report_html import render_report

        Path(report_path).write_text(render_report(result.stats(), generated_at=start_at + horizon),
                                     encoding="utf-8")
    if fmt == "json":
        text = json.dumps(result.to_dict(), indent=2, ensure_ascii=False) + "\n"
        if out:
            Path(out).write_text(text, encoding="utf-8")
        else:
            click.echo(text, nl=False)
        return
    if out:
        with open(out, "w", encoding="utf-8") as fh:
            from .report import print_table

            print_table(result, Console(file=fh, width=140, no_color=True, markup=False))
        return
    from .report import print_table

    print_table(result, _console())


def _console() -> Console:
    term = sys.stdout.isatty()
    # No markup: journey, step and variant names and message bodies are printed as written.
    return Console(width=None if term else 140, no_color=not term, highlight=False, markup=False)


def _progress(total: int) -> Any:
    """A progress bar on stderr for large runs in a terminal; otherwise nothing."""
    if total < 2000 or not sys.stderr.isatty():
        return None
    from rich.progress import Progress

    bar = Progress(console=Console(stderr=True), transient=True)
    task = bar.add_task("simulating events", total=total)
    bar.start()

    def update(done: int) -> None:
        if done < 0:
            bar.stop()
        else:
            bar.update(task, completed=done)

    return update


@cli.command()
@click.argument("journey")
@click.option("--out", type=click.Path(dir_okay=False), help="Write .mmd text, or .svg/.png if mmdc is installed.")
@project_option
def graph(journey: str, out: str | None, project: str | None) -> None:
    """Draw JOURNEY as a Mermaid flowchart (paste it into Markdown inside ```mermaid)."""
    machine = _compile(_project(project), journey)
    text = to_mermaid(machine)
    if not out:
        click.echo(text, nl=False)
        return
    target = Path(out)
    if target.suffix in (".svg", ".png", ".pdf"):
        mmdc = shutil.which("mmdc")
        if not mmdc:
            _fail(
                "error: drawing an image needs the Mermaid CLI (npm install -g @mermaid-js/mermaid-cli);"
                " without it, write .mmd and paste the text into any Mermaid viewer"
            )
        src = target.with_suffix(".mmd")
        src.write_text(text, encoding="utf-8")
        proc = subprocess.run([mmdc, "-i", str(src), "-o", str(target)], capture_output=True, text=True)
        if proc.returncode != 0:
            _fail(f"error: mmdc failed: {proc.stderr.strip()[:500]}")
        click.echo(f"wrote {target}")
        return
    target.write_text(text, encoding="utf-8")
    click.echo(f"wrote {target}")


@cli.command()
@click.argument("template")
@click.option("--user", "user_id", required=True, help="The id of the user to render for.")
@click.option("--users", "users_file", required=True, type=click.Path())
@click.option("--event", "event_file", type=click.Path(), help="YAML/JSON with the trigger event's properties.")
@click.option("--journey", "journey_name", help="Journey whose trigger and settings apply (default: the first that uses TEMPLATE).")
@click.option("--channel", type=click.Choice(CHANNELS), help="Only this channel's version.")
@project_option
def render(
    template: str,
    user_id: str,
    users_file: str,
    event_file: str | None,
    journey_name: str | None,
    channel: str | None,
    project: str | None,
) -> None:
    """Preview TEMPLATE (e.g. cart_nudge or email/cart_nudge) for one user."""
    proj = _project(project)
    if "/" in template and template.split("/", 1)[0] in CHANNELS:
        channel, template = template.split("/", 1)
    renderer = Renderer(proj.templates_dir)
    channels = [channel] if channel else [c for c in CHANNELS if not renderer.missing_files(c, template)]
    if not channels:
        known = sorted({p.stem for c in CHANNELS for p in (proj.templates_dir / c).glob("*.*")})
        _fail(f"error: no template named '{template}'{did_you_mean(template, known)}")
    users = {u["id"]: u for u in read_users(users_file)}
    if user_id not in users:
        _fail(f"error: no user '{user_id}' in {users_file}{did_you_mean(user_id, users)}")
    machine = _machine_for_template(proj, template, journey_name)
    if event_file:
        data = load_file(event_file)
        if isinstance(data, dict) and isinstance(data.get("properties"), dict):
            data = data["properties"]
        if not isinstance(data, dict):
            _fail(f"error: {event_file}: expected a mapping of event properties")
        props = {str(k): v for k, v in data.items()}
    else:
        example = load_catalog(proj.catalog_path).events.get(machine.trigger_event)
        props = dict(example.example) if example else {}
    now = DEFAULT_START
    run = Run("preview", machine.journey, machine.version, user_id, now, props)
    user = user_view(machine, users[user_id])
    console = _console()
    for ch in channels:
        if renderer.missing_files(ch, template):
            _fail(f"error: template '{template}' has no {ch} version ({', '.join(renderer.missing_files(ch, template))} missing)")
        send = Send("preview", "preview", template, (ch,), False, 0)
        ctx = message_context(machine, run, user, send, ch, now, "https://example.invalid")
        msg = renderer.render(ch, template, ctx)
        console.rule(f"{ch} · {template} · {user_id}")
        if msg.subject is not None:
            console.print(f"{'Subject' if ch == 'email' else 'Title'}: {msg.subject}", markup=False)
        console.print(msg.body, markup=False)
        if msg.segments is not None:
            console.print(f"[{msg.segments} segment(s), {msg.encoding}]", markup=False)
        if msg.link:
            console.print(f"link: {msg.link}", markup=False)


def _machine_for_template(proj: Project, template: str, journey_name: str | None) -> Machine:
    if journey_name:
        return _compile(proj, journey_name)
    machines, _ = compile_all(proj)
    for m in machines.values():
        if any(isinstance(s, SendState) and s.template == template for s in m.states.values()):
            return m
    if machines:
        return next(iter(machines.values()))
    _fail("error: no journey compiles; run 'journey validate' first, or pass --journey")


@cli.command()
@click.option("--out", type=click.Path(dir_okay=False), help="Write to this file.")
def schema(out: str | None) -> None:
    """Print the JSON Schema of the journey language, for editors."""
    text = json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"
    if out:
        Path(out).write_text(text, encoding="utf-8")
        click.echo(f"wrote {out}")
    else:
        click.echo(text, nl=False)


def _register_runtime_commands() -> None:
    from . import cli_runtime  # noqa: F401 - registers db, deploy, scheduler, serve
    from . import cli_stats  # noqa: F401 - registers stats, report


_register_runtime_commands()


def main() -> None:
    """Entry point: every expected failure is one line on stderr, never a traceback."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        _fail("aborted", 130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except JourneyError as exc:  # already "path:line:col: error: ..."
        _fail(str(exc))
    except OrchestratorError as exc:
        _fail(f"error: {exc}")
    except BrokenPipeError:
        sys.exit(0)
    except Exception as exc:  # noqa: BLE001 - the promise: never a traceback
        _fail(f"internal error: {type(exc).__name__}: {exc} (please report this with the input)", 70)


if __name__ == "__main__":
    main()
