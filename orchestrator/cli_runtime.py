"""``journey`` commands for the production runtime: ``db upgrade``, ``deploy``, ``scheduler``,
``serve``. Shell. Runtime modules (SQLAlchemy, Celery, uvicorn) are imported inside the
commands so the dry-run stays quick to start."""

from __future__ import annotations

import secrets
from dataclasses import replace

import click

from .cli import _project, cli


def _settings(database_url: str | None = None):  # type: ignore[no-untyped-def]
    from .runtime.config import Settings, _normalize_db_url

    s = Settings.from_env()
    return replace(s, database_url=_normalize_db_url(database_url)) if database_url else s


def _logging(settings, default_format: str = "json") -> None:  # type: ignore[no-untyped-def]
    """JSON lines (``JOURNEY_LOG_FORMAT=json``) or text, email addresses and phone numbers
    redacted (see ``orchestrator.logs``); ``default_format`` when the variable is unset."""
    from .logs import configure_from

    configure_from(settings.log_format, settings.log_level, default_format=default_format)


def _where(url: str) -> str:
    return url.split("@")[-1] if "@" in url else url


@cli.group()
def db() -> None:
    """The database: create or migrate its tables."""


@db.command()
@click.option("--database-url", help="Default: $DATABASE_URL, else sqlite:///journey.db.")
def upgrade(database_url: str | None) -> None:
    """Create the tables, or migrate them to this version (Alembic)."""
    from .store.database import upgrade as run_upgrade

    s = _settings(database_url)
    run_upgrade(s.database_url)
    click.echo(f"database {_where(s.database_url)} is up to date")


@cli.command()
@click.option("--database-url", help="Default: $DATABASE_URL.")
@click.option("--project", type=click.Path(file_okay=False), help="Project folder (default: found from here).")
def deploy(database_url: str | None, project: str | None) -> None:
    """Compile every journey and make it the current version for new entrants. Runs in flight
    finish on the version they entered with."""
    from .runtime.context import Runtime

    s = _settings(database_url)
    if project:
        s = replace(s, project=str(_project(project).root))
    runtime = Runtime.create(s)
    for d in runtime.deploy():
        click.echo(f"{d.journey}: version {d.version}" + (" (new)" if d.new else " (unchanged)"))  # type: ignore[attr-defined]


@cli.command()
def scheduler() -> None:
    """Run the timer pump: fire due timers and hand work to the Celery workers."""
    from .runtime.scheduler import run

    s = _settings()
    _logging(s)
    run(s)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--database-url", help="Default: $DATABASE_URL, else sqlite:///journey.db.")
def serve(host: str, port: int, database_url: str | None) -> None:
    """Embedded mode: API, timer pump and workers in one process (SQLite, no broker)."""
    from .runtime.embedded import serve as run_embedded

    s = _settings(database_url)
    _logging(s, default_format="text")  # a laptop: a person reads these
    if not s.api_keys:
        key = secrets.token_urlsafe(24)
        s = replace(s, api_keys=frozenset({key}))
        click.echo(f"No JOURNEY_API_KEYS set; this session's API key is: {key}")
    if not s.secret_key:
        s = replace(s, secret_key=secrets.token_urlsafe(32))  # signs this session's unsubscribe links
    run_embedded(s, host, port)
