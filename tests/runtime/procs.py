"""Real processes for the end-to-end tests: a web, worker and scheduler started from the
``Procfile`` (or ``journey serve`` for embedded mode) against a fresh database, a unique Celery
queue and a file sink, each in its own process group so that it can be killed whole.

Nothing here sleeps for a fixed time: :func:`wait_until` polls a condition until a deadline.
When a test fails, :func:`diagnosed` prints the tail of every process's log.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

import httpx
from sqlalchemy import Engine, create_engine, text

from orchestrator.client import JourneyClient

from .conftest import FAST_JOURNEYS, PG_ADMIN, REDIS_URL, ROOT, create_pg_database, drop_pg_database

T = TypeVar("T")
BIN = Path(sys.executable).parent  # the virtualenv's bin: celery, uvicorn, journey
if not (BIN / "celery").exists():
    BIN = ROOT / ".venv" / "bin"
API_KEY = "e2e-test-key"
AMQP_URL = os.environ.get("JOURNEY_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672//")
STARTUP = 40.0  # seconds a process may take to become ready (slow CI machines)
STARTED: list["Proc"] = []  # every process started in this test session, for log dumps


def procfile() -> dict[str, str]:
    out = {}
    for line in (ROOT / "Procfile").read_text(encoding="utf-8").splitlines():
        name, sep, cmd = line.partition(":")
        if sep and name.strip() and not name.startswith("#"):
            out[name.strip()] = cmd.strip()
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require_service(url: str, default_port: int) -> None:
    """Fail (never skip) when a service the tests need is unreachable."""
    host_port = url.split("@")[-1].split("://")[-1].split("/")[0]
    host, _, port = host_port.partition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port or default_port)), 3).close()
    except OSError as exc:
        where = url.split("@")[-1]
        raise AssertionError(f"{where} is unreachable ({exc}); start it (see .ci/run)") from None


def wait_until(cond: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``cond`` until it returns something truthy; fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; "
                                 f"last value: {value!r}")
        time.sleep(interval)


@dataclass
class Proc:
    name: str
    cmd: str
    env: dict[str, str]
    log_path: Path
    cwd: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> "Proc":
        log = open(self.log_path, "ab")
        try:
            self.popen = subprocess.Popen(
                ["bash", "-c", f"exec {self.cmd}"], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=self.env, cwd=self.cwd, start_new_session=True,
            )
        finally:
            log.close()
        STARTED.append(self)
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def _killpg(self, sig: int) -> bool:
        try:
            os.killpg(self.pid, sig)  # start_new_session: the group id is the leader's pid
            return True
        except ProcessLookupError:
            return False

    def group_alive(self) -> bool:
        return self._killpg(0)

    def kill9(self) -> None:
        """SIGKILL the whole process group (a worker's main process and its pool children)."""
        self._killpg(signal.SIGKILL)
        assert self.popen is not None
        self.popen.wait(timeout=10)
        wait_until(lambda: not self.group_alive(), 10, f"{self.name}'s process group to die", 0.02)

    def terminate(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self._killpg(signal.SIGTERM)

    def stop(self, timeout: float = 8.0) -> None:
        """SIGTERM the group, SIGKILL what is left after ``timeout``, and reap."""
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self._killpg(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        self._killpg(signal.SIGKILL)  # pool children or a leader that ignored SIGTERM
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - should not happen after SIGKILL
            pass

    def wait_for_log(self, pattern: str, timeout: float = STARTUP) -> None:
        rx = re.compile(pattern)

        def seen() -> bool:
            if rx.search(self.log()):
                return True
            if not self.alive():
                raise AssertionError(f"{self.name} exited ({self.popen and self.popen.returncode}) "
                                     f"before logging /{pattern}/:\n{self.tail()}")
            return False

        try:
            wait_until(seen, timeout, f"{self.name} to log /{pattern}/", 0.05)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- {self.name} log ---\n{self.tail()}") from None

    def wait_http_ok(self, url: str, timeout: float = STARTUP) -> None:
        def ok() -> bool:
            if not self.alive():
                raise AssertionError(f"{self.name} exited "
                                     f"({self.popen and self.popen.returncode}):\n{self.tail()}")
            try:
                return httpx.get(url, timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            wait_until(ok, timeout, f"{self.name} to answer 200 on {url}", 0.1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- {self.name} log ---\n{self.tail()}") from None


def dump_logs(procs: list[Proc], lines: int = 60) -> None:
    for p in procs:
        state = "running" if p.alive() else f"exited {p.popen.returncode if p.popen else '-'}"
        print(f"\n----- {p.name} [{state}] {p.cmd}\n----- log {p.log_path} (last {lines} lines)")
        print(p.tail(lines))


def diagnosed(test: Callable[..., Any]) -> Callable[..., Any]:
    """On failure, print the tail of the log of every process started in this session that is
    still running or was started during the test (shown by pytest as captured output)."""

    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        before = len(STARTED)
        try:
            return test(*args, **kwargs)
        except BaseException:
            dump_logs([p for i, p in enumerate(STARTED) if i >= before or p.alive()])
            raise

    return wrapper


def write_project(root: Path) -> Path:
    """The project of conftest's ``fast_project`` (journeys waiting seconds), at ``root``."""
    import shutil

    (root / "journeys").mkdir(parents=True)
    shutil.copy(ROOT / "catalog.yaml", root / "catalog.yaml")
    shutil.copytree(ROOT / "templates", root / "templates")
    for name, body in FAST_JOURNEYS.items():
        (root / "journeys" / f"{name}.yaml").write_text(body.lstrip(), encoding="utf-8")
    return root


@dataclass
class Stack:
    """One deployment: a database, a queue, a sink and the processes that share them."""

    dir: Path
    env: dict[str, str]
    db_url: str  # for the test's own queries (SQLAlchemy URL)
    db_name: str | None  # PostgreSQL database to drop at the end
    sink_path: Path
    queue: str
    port: int
    procs: dict[str, Proc] = field(default_factory=dict)  # the latest process of each name
    started: list[Proc] = field(default_factory=list)  # all of them, replaced ones included
    _engine: Engine | None = None
    _n: int = 0

    # -- setting up --------------------------------------------------------------------------
    @classmethod
    def create(cls, dir: Path, project: Path, *, broker: str = REDIS_URL, sqlite: bool = False,
               **extra_env: str) -> "Stack":
        dir.mkdir(parents=True, exist_ok=True)
        queue = f"e2e-{uuid.uuid4().hex[:10]}"  # this stack's own queue: runs never share one
        if sqlite:
            db_name, db_url = None, f"sqlite:///{dir / 'journey.db'}"
            process_db_url = db_url
        else:
            require_service(PG_ADMIN, 5432)
            require_service(broker, 5672 if broker.startswith("amqp") else 6379)
            db_name, db_url = create_pg_database()
            # A plain postgresql:// URL, as an operator writes it in .env.
            process_db_url = f"{PG_ADMIN.rsplit('/', 1)[0]}/{db_name}"
        sink = dir / "sink.jsonl"
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("JOURNEY_", "DATABASE_URL", "BROKER_URL", "WORKER_", "PORT"))}
        port = free_port()
        env.update({
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1",
            "DATABASE_URL": process_db_url,
            "BROKER_URL": broker,
            "JOURNEY_QUEUE": queue,
            "JOURNEY_PROJECT": str(project),
            "JOURNEY_CHANNELS": "email=file,sms=file,push=file",
            "JOURNEY_FILE_SINK": str(sink),
            "JOURNEY_API_KEYS": f"some-other-key,{API_KEY}",
            "JOURNEY_TICK": "0.2",
            "JOURNEY_LEASE": "3",
            "JOURNEY_LINKS_BASE": f"http://127.0.0.1:{port}",
            "PORT": str(port),
            "WORKER_CONCURRENCY": "2",
        })
        env.update(extra_env)
        return cls(dir, env, db_url, db_name, sink, queue, port)

    def journey(self, *args: str, timeout: float = 60) -> str:
        """Run a ``journey`` command to completion (``db upgrade``, ``deploy``)."""
        done = subprocess.run([str(BIN / "journey"), *args], env=self.env, cwd=self.dir,
                              capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, \
            f"journey {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def _proc(self, name: str, cmd: str) -> Proc:
        self._n += 1
        proc = Proc(name, cmd, self.env, self.dir / f"{self._n:02d}-{name}.log", self.dir)
        self.procs[name] = proc
        self.started.append(proc)
        return proc.start()

    def start_web(self) -> Proc:
        return self._proc("web", procfile()["web"])

    def start_worker(self, name: str = "worker") -> Proc:
        # The Procfile's command, with a node name of its own (other test runs may share the
        # broker) and without the start-up chatter with other workers.
        node = f"{name}-{self.queue}-{self._n + 1}@%h"
        options = f"-n {shlex.quote(node)} --without-mingle --without-gossip"
        return self._proc(name, f"{procfile()['worker']} {options}")

    def start_scheduler(self, name: str = "scheduler") -> Proc:
        return self._proc(name, procfile()["scheduler"])

    def start_embedded(self) -> Proc:
        return self._proc("serve", f"journey serve --port {self.port}")

    def wait_web(self, proc: Proc | None = None) -> None:
        (proc or self.procs["web"]).wait_http_ok(f"{self.base_url}/healthz")

    @staticmethod
    def wait_worker(proc: Proc) -> None:
        proc.wait_for_log(r"@\S+ ready\.")

    @staticmethod
    def wait_scheduler(proc: Proc) -> None:
        proc.wait_for_log(r"scheduler: pump every")

    def start_all(self) -> None:
        web, worker, scheduler = self.start_web(), self.start_worker(), self.start_scheduler()
        self.wait_web(web)
        self.wait_worker(worker)
        self.wait_scheduler(scheduler)

    def close(self) -> None:
        for proc in self.started:  # all at once, then wait for each
            proc.terminate()
        for proc in self.started:
            proc.stop()
        if self._engine is not None:
            self._engine.dispose()
        if self.db_name:
            drop_pg_database(self.db_name)
        self._forget_queue()

    def _forget_queue(self) -> None:
        """Drop what this stack's queue left in the broker (tasks nobody will consume)."""
        try:
            if self.env["BROKER_URL"].startswith("redis"):
                import redis

                r = redis.Redis.from_url(self.env["BROKER_URL"])
                keys = list(r.scan_iter(match=f"*{self.queue}*", count=1000))
                if keys:
                    r.delete(*keys)
                r.close()
            elif self.env["BROKER_URL"].startswith("amqp"):
                from kombu import Connection

                with Connection(self.env["BROKER_URL"], connect_timeout=5) as conn:
                    conn.default_channel.queue_delete(self.queue)
        except Exception as exc:  # noqa: BLE001 - tidying only
            print(f"could not clean queue {self.queue}: {exc!r}")

    # -- using it ----------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, **kwargs: Any) -> JourneyClient:
        return JourneyClient(self.base_url, API_KEY, **kwargs)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = create_engine(self.db_url, pool_size=2, max_overflow=2) if self.db_name \
                else create_engine(self.db_url, connect_args={"timeout": 30})
        return self._engine

    def rows(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(text(sql), params))

    def value(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()

    def select(self, stmt: Any) -> list[dict[str, Any]]:
        """A SQLAlchemy Core query over the schema's tables (aware UTC datetimes on both stores)."""
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(stmt).mappings()]

    def sink(self) -> list[dict[str, Any]]:
        """Every message the file adapter wrote (whole lines only)."""
        try:
            data = self.sink_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in data.splitlines(keepends=True) if line.endswith("\n")]

    def sink_lines(self) -> int:
        try:
            with open(self.sink_path, "rb") as fh:
                return fh.read().count(b"\n")
        except FileNotFoundError:
            return 0

    def sent_to(self, user_id: str) -> list[dict[str, Any]]:
        return [m for m in self.sink() if m["metadata"]["user_id"] == user_id]

