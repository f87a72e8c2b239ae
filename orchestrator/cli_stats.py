"""``journey stats`` and ``journey report``: how a journey is doing in production. Shell.

Both read the journey's runs from the database (``stats.from_store``), count them with the
same code the dry-run summary uses (``orchestrator.stats``) against the machine that ran (the
deployed current version; the project's YAML only if none was ever deployed), and print tables
(``stats_text``), JSON, or write an HTML report (``report_html``). Every expected failure (an
unknown journey, a database that cannot be reached, a bad ``--since``) is one line on stderr
and exit code 1 (2 for bad usage), never a traceback.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import click

from .cli import _console, _fail, _project, cli
from .errors import OrchestratorError, did_you_mean

if TYPE_CHECKING:  # without importing SQLAlchemy when the command line starts
    from sqlalchemy import Engine

    from .machine import Machine
    from .stats import JourneyStats


def _stats_options(f: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--since", help="Runs entered since: a duration back from now (7d, 12h) or an "
                                     "ISO 8601 date or time (2026-03-01, 2026-03-01T09:00:00Z). "
                                     "Default: all runs."),
        click.option("--until", help="Runs entered before this (same forms as --since). Default: now."),
        click.option("--database-url", help="Default: $DATABASE_URL, else sqlite:///journey.db."),
        click.option("--confidence", type=click.FloatRange(0, 1, min_open=True, max_open=True),
                     default=0.95, show_default=True, help="Confidence level of intervals and verdicts."),
        click.option("--min-users", type=click.IntRange(min=1), default=None,
                     help="Users each group needs before a verdict (default 100)."),
        click.option("--min-conversions", type=click.IntRange(min=1), default=None,
                     help="Conversions two groups need together before a verdict (default 10)."),
        click.option("--project", type=click.Path(file_okay=False),
                     help="Project folder, to compile the journey if it was never deployed."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@cli.command("stats")
@click.argument("journey")
@_stats_options
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def stats_command(journey: str, fmt: str, **options: Any) -> None:
    """How JOURNEY is doing in production: funnel, channels, exits, conversions and who gets
    the credit, and its experiments (holdout, splits) with their significance."""
    stats = load_stats(journey, **options)
    if fmt == "json":
        click.echo(json.dumps(stats.to_dict(), indent=2, ensure_ascii=False))
        return
    from .stats_text import print_stats

    print_stats(stats, _console())


@cli.command("report")
@click.argument("journey")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The HTML file to write.")
@_stats_options
def report_command(journey: str, out: str, **options: Any) -> None:
    """Write JOURNEY's statistics as one self-contained HTML page, with charts."""
    stats = load_stats(journey, **options)
    from .report_html import render_report

    try:
        Path(out).write_text(render_report(stats), encoding="utf-8")
    except OSError as exc:
        _fail(f"error: cannot write {out}: {exc.strerror or exc}")
    click.echo(f"wrote {out}")


def load_stats(
    journey: str,
    *,
    since: str | None = None,
    until: str | None = None,
    database_url: str | None = None,
    confidence: float = 0.95,
    min_users: int | None = None,
    min_conversions: int | None = None,
    project: str | None = None,
    now: datetime | None = None,
) -> "JourneyStats":
    """The statistics of ``journey``'s runs entered in [since, until), or exit with one line."""
    from sqlalchemy.exc import SQLAlchemyError

    from .cli_runtime import _settings, _where
    from .gcpause import gc_paused
    from .stats import journey_stats
    from .stats.experiments import MIN_CONVERSIONS, MIN_USERS
    from .stats.from_store import load_history

    now = now or datetime.now(timezone.utc)
    since_at = _moment("--since", since, now)
    until_at = _moment("--until", until, now)
    if since_at is not None and until_at is not None and since_at >= until_at:
        _fail(f"error: --since ({since_at:%Y-%m-%d %H:%M} UTC) must be before --until "
              f"({until_at:%Y-%m-%d %H:%M} UTC)", 2)
    try:
        url = _settings(database_url).database_url
    except ValueError as exc:  # a malformed environment variable
        _fail(f"error: {exc}")
    where = _where(url)
    engine = _open(url, where)
    try:
        try:
            _check_tables(engine, where)
            machine = _machine(engine, journey, project, where)
            history = load_history(engine, journey, since=since_at, until=until_at,
                                   lookback=timedelta(seconds=machine.conversion_window))
        except SQLAlchemyError as exc:
            _fail(f"error: cannot read the database at {where}: {_first_line(exc)}")
    finally:
        engine.dispose()
    with gc_paused():
        return journey_stats(machine, history, confidence=confidence,
                             min_users=min_users or MIN_USERS,
                             min_conversions=min_conversions or MIN_CONVERSIONS)


def _moment(option: str, text: str | None, now: datetime) -> datetime | None:
    """A duration back from ``now`` (7d) or an ISO 8601 date or time (naive = UTC)."""
    if text is None:
        return None
    from .durations import parse_duration

    try:
        return now - timedelta(seconds=parse_duration(text))
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        _fail(f"error: {option} '{text}' is neither a duration such as 7d or 12h nor an ISO 8601 "
              "date such as 2026-03-01 or 2026-03-01T09:00:00Z", 2)
    return moment.astimezone(timezone.utc) if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
    return lines[0] if lines else type(orig).__name__


def _open(url: str, where: str) -> "Engine":
    """An engine for reading, without creating anything: a SQLite file must already exist.
    On SQLite the reads share one deferred transaction (one snapshot in WAL mode, and no
    write lock: the runtime's engines begin ``IMMEDIATE``, which would hold up its workers)."""
    from sqlalchemy import create_engine, event
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.pool import NullPool

    from .store.database import single_use_engine

    try:
        parsed = make_url(url)
        if parsed.get_backend_name() != "sqlite":
            return single_use_engine(url)
        path = parsed.database or ""
        if path and path != ":memory:" and not path.startswith("file:") and not Path(path).is_file():
            _fail(f"error: no database at {where}: the file does not exist "
                  "(pass --database-url, or set DATABASE_URL)")
        engine = create_engine(url, poolclass=NullPool, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _autocommit(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # SQLAlchemy issues BEGIN itself (below)

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN")

        return engine
    except (SQLAlchemyError, ImportError) as exc:
        _fail(f"error: cannot open the database at {where}: {_first_line(exc)}")


def _check_tables(engine: "Engine", where: str) -> None:
    from sqlalchemy import inspect
    from sqlalchemy.exc import OperationalError

    try:
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
    except OperationalError as exc:
        _fail(f"error: cannot connect to the database at {where}: {_first_line(exc)}")
    missing = sorted({"runs", "activity", "deliveries", "journey_versions"} - tables)
    if missing:
        _fail(f"error: the database at {where} has no journey tables ({', '.join(missing)} missing); "
              "check --database-url, or run 'journey db upgrade' and 'journey deploy'")


def _machine(engine: "Engine", journey: str, project: str | None, where: str) -> "Machine":
    """The machine that ran: the deployed current version (else the latest deployed one), or
    the project's YAML when the journey has runs but no recorded version."""
    from sqlalchemy import select

    from .machine import Machine
    from .store.schema import journey_versions, runs

    with engine.connect() as conn:
        row = conn.execute(
            select(journey_versions.c.machine, journey_versions.c.version)
            .where(journey_versions.c.journey == journey)
            .order_by(journey_versions.c.current.desc(), journey_versions.c.deployed_at.desc())
            .limit(1)
        ).first()
        has_runs = row is not None or conn.execute(
            select(runs.c.run_id).where(runs.c.journey == journey).limit(1)).first() is not None
        if not has_runs:
            known = sorted(set(conn.execute(select(journey_versions.c.journey).distinct()).scalars()))
    if not has_runs:
        listed = f" Journeys deployed there: {', '.join(known)}." if known else " No journey is deployed there."
        _fail(f"error: no journey named '{journey}' in the database at {where}"
              f"{did_you_mean(journey, known)}{listed}")
    if row is not None:
        try:
            return Machine.from_dict(row.machine)
        except (KeyError, TypeError, ValueError):
            pass  # recorded by an older release in another shape: compile the project's YAML
    return _compile(journey, project)


def _compile(journey: str, project: str | None) -> "Machine":
    from .compiler import compile_journey
    from .errors import JourneyErrors

    try:
        proj = _project(project)
        path = proj.journey_path(journey)
        return compile_journey(path, proj)
    except JourneyErrors as exc:
        _fail(f"{exc}\nerror: '{journey}' has runs but no deployed version, and its YAML does not compile")
    except OrchestratorError as exc:
        _fail(f"error: '{journey}' has runs but no deployed version, and the project has no such "
              f"journey to compile: {exc}")
