"""``journey db upgrade`` and the Alembic migrations against the schema in
``orchestrator.store.schema``."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Iterator

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from click.testing import CliRunner
from sqlalchemy import inspect

from orchestrator.cli import cli
from orchestrator.store.database import alembic_config, single_use_engine
from orchestrator.store.schema import metadata

from .conftest import PG_ADMIN, _pg_url, drop_pg_database

# The tables the runtime cannot work without (the schema may hold more).
TABLES = {"profiles", "consents", "events", "journey_versions", "runs", "timers", "outbox",
          "deliveries", "conversions", "activity", "delivery_events"}


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: no tables at all."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    name = f"journey_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _pg_url(name)
    finally:
        drop_pg_database(name)


def upgrade_cli(url: str) -> None:
    result = CliRunner().invoke(cli, ["db", "upgrade", "--database-url", url])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "is up to date" in result.output


def test_db_upgrade_creates_every_table_twice_is_fine_and_matches_the_schema(empty_db: str) -> None:
    engine = single_use_engine(empty_db)
    try:
        assert inspect(engine).get_table_names() == []
        upgrade_cli(empty_db)
        assert set(inspect(engine).get_table_names()) == set(metadata.tables) | {"alembic_version"}
        upgrade_cli(empty_db)  # again: nothing to do, nothing breaks

        head = ScriptDirectory.from_config(alembic_config(empty_db)).get_current_head()
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
            assert context.get_current_revision() == head
            diffs = compare_metadata(context, metadata)
        assert diffs == [], diffs
        assert TABLES <= set(metadata.tables)
    finally:
        engine.dispose()


def test_the_partial_unique_index_on_runs_exists_after_upgrade(empty_db: str) -> None:
    upgrade_cli(empty_db)
    engine = single_use_engine(empty_db)
    try:
        indexes = {i["name"]: i for i in inspect(engine).get_indexes("runs")}
        assert indexes["uq_runs_one_unfinished"]["unique"]
        assert indexes["uq_runs_one_unfinished"]["column_names"] == ["journey", "user_id"]
    finally:
        engine.dispose()


def test_db_upgrade_reads_database_url_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'env.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    result = CliRunner().invoke(cli, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    engine = single_use_engine(url)
    try:
        assert TABLES <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
