"""Journey versions in production. Shell.

``deploy`` compiles every journey in the project and records each new version (the compiled
machine and its content hash) as the journey's current one. New entrants get the current
version; a run stays pinned to the version it entered with until it finishes, even when a new
trigger restarts it. Workers look machines up by version and cache them: a version never
changes once recorded.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from sqlalchemy import Connection, Engine, select, update

from ..compiler import compile_all
from ..errors import JourneyErrors
from ..machine import Machine
from ..project import Project
from ..store.rows import upsert_ignore
from ..store.schema import journey_versions


@dataclass(frozen=True)
class Deployed:
    journey: str
    version: str
    new: bool


def deploy(conn: Connection, project: Project, now: datetime) -> list[Deployed]:
    """Compile ``project``'s journeys and make each the current version of its journey.
    Raises :class:`JourneyErrors` (nothing is recorded) if any journey has an error."""
    machines, errors = compile_all(project)
    if errors:
        raise JourneyErrors(errors)
    existing = set(conn.execute(select(journey_versions.c.version)).scalars())
    upsert_ignore(
        conn,
        journey_versions,
        [
            {"version": m.version, "journey": m.journey, "machine": m.to_dict(),
             "deployed_at": now, "current": False}
            for m in machines.values()
        ],
        ["version"],
    )
    # A journey whose file was removed takes no new entrants; its runs in flight finish.
    conn.execute(
        update(journey_versions)
        .where(journey_versions.c.journey.not_in(sorted(machines)) if machines else journey_versions.c.current)
        .values(current=False)
    )
    out = []
    for name, m in sorted(machines.items()):
        conn.execute(
            update(journey_versions)
            .where(journey_versions.c.journey == name, journey_versions.c.version != m.version)
            .values(current=False)
        )
        conn.execute(
            update(journey_versions).where(journey_versions.c.version == m.version).values(current=True)
        )
        out.append(Deployed(name, m.version, m.version not in existing))
    return out


class JourneyRegistry:
    """Machines by version, and the current version of each journey (re-read every
    ``refresh`` seconds, so workers pick up a deploy without a restart)."""

    def __init__(self, engine: Engine, refresh: float = 5.0, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.engine = engine
        self.refresh = refresh
        self._monotonic = monotonic
        self._machines: dict[str, Machine] = {}
        self._current: dict[str, str] = {}
        self._loaded_at: float | None = None
        self._lock = threading.Lock()

    def machine(self, conn: Connection, version: str) -> Machine:
        m = self._machines.get(version)
        if m is None:
            data = conn.execute(
                select(journey_versions.c.machine).where(journey_versions.c.version == version)
            ).scalar_one()
            m = Machine.from_dict(data)
            with self._lock:
                self._machines[version] = m
        return m

    def current(self, conn: Connection) -> dict[str, Machine]:
        now = self._monotonic()
        if self._loaded_at is None or now - self._loaded_at >= self.refresh:
            rows = conn.execute(
                select(journey_versions.c.journey, journey_versions.c.version).where(
                    journey_versions.c.current.is_(True)
                )
            ).all()
            with self._lock:
                self._current = {j: v for j, v in rows}
                self._loaded_at = now
        return {j: self.machine(conn, v) for j, v in sorted(self._current.items())}

    def forget_current(self) -> None:
        self._loaded_at = None
