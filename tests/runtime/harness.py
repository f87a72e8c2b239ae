"""A small harness for in-process runtime tests: a real Runtime on a real store (SQLite file or
a fresh PostgreSQL database), the real FileChannel writing to a file under tmp_path, an
InlineDispatcher, a Pump and the ManualClock. Also small channel classes implementing our own
``channels.base.Channel`` protocol that answer Retryable / Rejected / an error, to drive the
delivery ledger. No SDK is mocked: there is none involved."""

from __future__ import annotations

import json
import shutil
import textwrap
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import pytest
from sqlalchemy import and_, select

from channels.base import Delivery, OutboundMessage, Rejected, Retryable
from channels.file import FileChannel
from orchestrator.runtime.config import Settings
from orchestrator.runtime.context import Runtime
from orchestrator.runtime.dispatch import InlineDispatcher
from orchestrator.runtime.ingest import IncomingEvent, Stored, put_profile, store_events
from orchestrator.runtime.pump import Pump, Tick
from orchestrator.runtime.sending import ChannelRouter

FILE_CHANNELS = {"email": "file", "sms": "file", "push": "file"}
LEASE = 5.0


class Harness:
    def __init__(self, db_url: str, project: Path, clock: Any, sink: Path, *,
                 router: ChannelRouter | None = None, lease: float = LEASE, max_attempts: int = 5,
                 api_keys: Sequence[str] = (), **settings: Any) -> None:
        """``settings``: more :class:`Settings` fields (``metrics_token=...``, say)."""
        self.clock = clock
        self.sink = sink
        self.project = project
        self.settings = Settings(database_url=db_url, project=str(project), channels=dict(FILE_CHANNELS),
                                 lease=lease, max_attempts=max_attempts, api_keys=frozenset(api_keys),
                                 **settings)
        self.runtime = Runtime.create(self.settings, clock=clock, router=router)
        self.deployed = self.runtime.deploy()
        self.dispatcher = InlineDispatcher(self.runtime)
        self.pump = self.new_pump()

    @property
    def engine(self) -> Any:
        return self.runtime.engine

    @property
    def now(self) -> datetime:
        return self.clock()  # type: ignore[no-any-return]

    def new_pump(self, dispatcher: Any = None, **kwargs: Any) -> Pump:
        return Pump(self.engine, dispatcher or self.dispatcher, lease=self.settings.lease, **kwargs)

    def version(self, journey: str) -> str:
        return next(d.version for d in self.deployed if d.journey == journey)  # type: ignore[attr-defined]

    # -- input -------------------------------------------------------------------------------
    def profile(self, user_id: str, *, attributes: dict[str, Any] | None = None,
                consent: dict[str, str] | None = None, **contact: Any) -> None:
        put_profile(self.engine, user_id, self.now, contact=contact, attributes=attributes,
                    consent=consent or {})

    def store(self, *events: tuple[Any, ...]) -> Stored:
        """Store events (user, name, properties[, event_id]) without dispatching them."""
        batch = [IncomingEvent(e[0], e[1], self.now, e[2], e[3] if len(e) > 3 else None) for e in events]
        return store_events(self.engine, batch, self.now)

    def track(self, user_id: str, name: str, properties: dict[str, Any], event_id: str | None = None) -> Stored:
        """Store one event and process its user at once (what the API does with Inline)."""
        stored = self.store((user_id, name, properties, event_id))
        if stored.user_ids:
            self.dispatcher.process_users(stored.user_ids)
        return stored

    def tick(self, **advance: float) -> Tick:
        if advance:
            self.clock.advance(**advance)
        return self.pump.tick(self.now)

    # -- output ------------------------------------------------------------------------------
    def lines(self) -> list[dict[str, Any]]:
        if not self.sink.exists():
            return []
        return [json.loads(line) for line in self.sink.read_text(encoding="utf-8").splitlines()]

    def rows(self, table: Any, order_by: str | None = None, **where: Any) -> list[dict[str, Any]]:
        q = select(table)
        if where:
            q = q.where(and_(*(table.c[k] == v for k, v in where.items())))
        q = q.order_by(table.c[order_by] if order_by else list(table.primary_key.columns)[0])
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def one(self, table: Any, **where: Any) -> dict[str, Any]:
        found = self.rows(table, **where)
        assert len(found) == 1, found
        return found[0]

    def close(self) -> None:
        self.engine.dispose()


def _factory(url: str, fast_project: Path, clock: Any, tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Harness]]:
    sink = tmp_path / "sink.jsonl"
    monkeypatch.setenv("JOURNEY_FILE_SINK", str(sink))
    made: list[Harness] = []

    def make(project: Path | None = None, **kwargs: Any) -> Harness:
        h = Harness(url, project or fast_project, clock, sink, **kwargs)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


@pytest.fixture
def make_harness(db_url: str, fast_project: Path, clock: Any, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Harness]]:
    """Harnesses on both stores (the test runs once on each)."""
    yield from _factory(db_url, fast_project, clock, tmp_path, monkeypatch)


@pytest.fixture
def make_sqlite_harness(sqlite_url: str, fast_project: Path, clock: Any, tmp_path: Path,
                        monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Harness]]:
    """For behaviour that does not depend on the store (HTTP details, say): SQLite only."""
    yield from _factory(sqlite_url, fast_project, clock, tmp_path, monkeypatch)


@pytest.fixture
def h(make_harness: Callable[..., Harness]) -> Harness:
    return make_harness()


def write_journey(project: Path, name: str, text: str) -> None:
    (project / "journeys" / f"{name}.yaml").write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")


def only_journeys(project: Path, **journeys: str) -> Path:
    """Replace the project's journeys with these."""
    shutil.rmtree(project / "journeys")
    (project / "journeys").mkdir()
    for name, text in journeys.items():
        write_journey(project, name, text)
    return project


# -- channels speaking our own protocol (channels.base.Channel) -----------------------------

@dataclass
class ScriptedChannel:
    """Answers each send with the next scripted outcome ("ok", a Retryable, a Rejected, or any
    exception), then "ok" once the script is used up; "ok" appends to the real FileChannel."""

    sink: Path
    script: list[Any] = field(default_factory=list)
    calls: list[OutboundMessage] = field(default_factory=list)
    name: str = "scripted"

    def send(self, message: OutboundMessage) -> Delivery:
        self.calls.append(message)
        outcome = self.script.pop(0) if self.script else "ok"
        if isinstance(outcome, BaseException):
            raise outcome
        return FileChannel(self.sink).send(message)


def retry_later(after: float | None = None) -> Retryable:
    return Retryable("429 Too Many Requests", after=after)


def rejected() -> Rejected:
    return Rejected("550 mailbox does not exist")


class ProcessDied(BaseException):
    """Stands for the process dying in the middle of a provider call (not an Exception: the
    sending code cannot catch it, exactly as it cannot catch a SIGKILL)."""
