"""Opening the database and creating its tables. Shell.

``upgrade`` runs the Alembic migrations shipped in ``store/migrations`` (what ``journey db
upgrade`` does). SQLite gets WAL mode and a busy timeout so the API thread and the embedded
worker can share one file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.pool import NullPool

MIGRATIONS = Path(__file__).with_name("migrations")


def make_engine(url: str, **kwargs: Any) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()
            # Let SQLAlchemy issue BEGIN itself so transactions really start (pysqlite quirk).
            dbapi_conn.isolation_level = None

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    engine = create_engine(url, **kwargs)
    if url.startswith("postgresql"):

        @event.listens_for(engine, "connect")
        def _pg_session(dbapi_conn: Any, _record: Any) -> None:
            # Plan every statement for the tables as they are now. psycopg prepares a statement
            # run a few times, and PostgreSQL may then keep one generic plan for the life of the
            # connection: one made while a table was small (a fresh database) scans the whole
            # table for each row of a batched UPDATE once it has grown (measured: 148 million
            # rows read to send 28,000 messages, bench/runtime_throughput.py).
            autocommit = dbapi_conn.autocommit
            dbapi_conn.autocommit = True
            dbapi_conn.execute("SET plan_cache_mode = force_custom_plan")
            dbapi_conn.autocommit = autocommit

    return engine


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` to the latest schema."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def single_use_engine(url: str) -> Engine:
    return make_engine(url, poolclass=NullPool)
