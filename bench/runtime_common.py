"""Shared helpers of the production-runtime benchmarks (``runtime_throughput``, ``timers``,
``waiting``). Not a benchmark itself.

Each benchmark gets, and removes at the end:
  * a fresh PostgreSQL database (migrated with the shipped Alembic migrations);
  * a project folder in a temporary directory: the repository's catalog.yaml and templates/
    and the benchmark's own journeys/;
  * its own Celery queue (``JOURNEY_QUEUE``) on an otherwise empty Redis database number, so
    queue depths and broker memory are the benchmark's alone;
  * real processes: ``celery -A orchestrator.runtime.celery_app worker`` with
    ``--concurrency os.cpu_count()`` and, where timers must fire, ``journey scheduler``.

Messages go through the real ``file`` channel adapter to a file in /dev/shm (tmpfs: the
adapter's per-message fsync costs nothing there), so every delivery is real and countable.
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import psycopg
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BIN = Path(sys.executable).parent
PG_ADMIN = os.environ.get("JOURNEY_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_BASE = os.environ.get("JOURNEY_BENCH_REDIS", "redis://127.0.0.1:6379")
CHANNELS = "email=file,sms=file,push=file"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- PostgreSQL -------------------------------------------------------------------------------
def create_database(tag: str) -> tuple[str, str]:
    """A fresh, migrated database; returns (name, SQLAlchemy URL)."""
    from orchestrator.store.database import upgrade

    name = f"journey_bench_{tag}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    url = f"{base}/{name}"
    upgrade(url)
    return name, url


def drop_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg_settings() -> str:
    with psycopg.connect(PG_ADMIN) as conn:
        rows = dict(conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN "
            "('shared_buffers','synchronous_commit','fsync','max_connections','server_version')"
        ).fetchall())
    return (f"PostgreSQL {rows.get('server_version')}, shared_buffers={rows.get('shared_buffers')}x8kB, "
            f"synchronous_commit={rows.get('synchronous_commit')}, fsync={rows.get('fsync')}")


def autovacuum_on() -> bool:
    with psycopg.connect(PG_ADMIN) as conn:
        return conn.execute("SHOW autovacuum").fetchone()[0] == "on"


class Analyzer:
    """Keeps the planner's statistics current while a benchmark writes, by autovacuum's rule
    (ANALYZE a table once more than 50 + 10% of its rows changed), checked every ``every``
    seconds; only when autovacuum is off on the server (it is on some test servers). Without
    statistics PostgreSQL estimates that ``user_id IN (200 ids)`` matches the whole table and
    scans it, once per batch: a run would measure that, not the runtime."""

    QUERY = ("SELECT s.relname FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid "
             "WHERE s.n_mod_since_analyze > 50 + 0.1 * greatest(c.reltuples, 0)")

    def __init__(self, db_url: str, every: float = 10.0) -> None:
        self.url = psql_url(db_url)
        self.every = every
        self.active = not autovacuum_on()
        self.runs = 0
        self.seconds = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="analyzer", daemon=True)

    def __enter__(self) -> "Analyzer":
        if self.active:
            self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        if self.active:
            self._thread.join(60)

    def _loop(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self._stop.wait(self.every):
                t0 = time.perf_counter()
                for (table,) in conn.execute(self.QUERY).fetchall():
                    conn.execute(f'ANALYZE "{table}"')
                    self.runs += 1
                self.seconds += time.perf_counter() - t0

    def describe(self) -> str:
        if not self.active:
            return "autovacuum is on: statistics kept by the server"
        return (f"autovacuum is off on this server: the benchmark analyzed tables by autovacuum's rule "
                f"(>50 + 10% rows changed), checked every {self.every:g} s ({self.runs} ANALYZE, "
                f"{self.seconds:.1f} s in all)")


def psql_url(sa_url: str) -> str:
    return sa_url.replace("postgresql+psycopg://", "postgresql://", 1)


# -- Redis ------------------------------------------------------------------------------------
def pick_redis_db(avoid: Iterable[int] = ()) -> int:
    """An empty Redis database number (from 15 down), so the benchmark's broker keys are alone."""
    skip = set(avoid)
    for db in range(15, 0, -1):
        if db in skip:
            continue
        r = redis.Redis.from_url(f"{REDIS_BASE}/{db}")
        if r.dbsize() == 0:
            return db
    raise SystemExit("no empty Redis database number among 1..15")


def clear_redis_db(url: str) -> None:
    r = redis.Redis.from_url(url)
    keys = list(r.scan_iter(count=1000))
    for i in range(0, len(keys), 500):
        r.delete(*keys[i:i + 500])


def redis_used_memory(r: redis.Redis) -> int:
    return int(r.info("memory")["used_memory"])


def keys_memory(r: redis.Redis) -> tuple[int, int]:
    """(number of keys, bytes) of every key in this Redis database (MEMORY USAGE, exact)."""
    n = total = 0
    for key in r.scan_iter(count=1000):
        n += 1
        total += int(r.memory_usage(key, samples=0) or 0)
    return n, total


def broker_pending(r: redis.Redis, queue: str) -> tuple[int, int]:
    """(ready messages in ``queue``, delivered-but-unacknowledged messages in this database).
    Tasks are acknowledged late (after they ran), so (0, 0) means every task sent has run."""
    return int(r.llen(queue)), int(r.hlen("unacked"))


# -- the project ------------------------------------------------------------------------------
def make_project(tmp: Path, journeys: Mapping[str, str]) -> Path:
    root = tmp / "project"
    (root / "journeys").mkdir(parents=True)
    shutil.copy(ROOT / "catalog.yaml", root / "catalog.yaml")
    shutil.copytree(ROOT / "templates", root / "templates")
    for name, text in journeys.items():
        (root / "journeys" / f"{name}.yaml").write_text(text.lstrip(), encoding="utf-8")
    return root


# -- processes --------------------------------------------------------------------------------
@dataclass
class Bench:
    """Everything one benchmark run owns; ``close`` stops its processes and removes it all."""

    tag: str
    db_name: str = ""
    db_url: str = ""
    broker_url: str = ""
    queue: str = ""
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="journey-bench-")))
    project: Path | None = None
    sink: Path | None = None
    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    redis_db: int = 0
    env_extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def open(cls, tag: str, journeys: Mapping[str, str], **env: str) -> "Bench":
        # SIGTERM / SIGINT (also when started in the background) end the run through
        # ``close``: processes stopped, database dropped, keys removed.
        def _exit(signum: int, _frame: Any) -> None:
            raise SystemExit(f"stopped by signal {signum}")

        signal.signal(signal.SIGTERM, _exit)
        signal.signal(signal.SIGINT, _exit)
        b = cls(tag)
        b.redis_db = pick_redis_db()
        b.broker_url = f"{REDIS_BASE}/{b.redis_db}"
        b.queue = f"bench-{tag}-{uuid.uuid4().hex[:8]}"
        b.db_name, b.db_url = create_database(tag)
        b.project = make_project(b.tmp, journeys)
        b.sink = Path("/dev/shm") / f"{b.queue}.jsonl" if Path("/dev/shm").is_dir() else b.tmp / "sink.jsonl"
        b.env_extra = dict(env)
        return b

    def env(self) -> dict[str, str]:
        e = dict(os.environ)
        e.update({
            "DATABASE_URL": self.db_url, "BROKER_URL": self.broker_url,
            "JOURNEY_PROJECT": str(self.project), "JOURNEY_CHANNELS": CHANNELS,
            "JOURNEY_FILE_SINK": str(self.sink), "JOURNEY_QUEUE": self.queue,
            "PYTHONPATH": str(ROOT),
        })
        e.update(self.env_extra)
        return e

    def settings(self) -> Any:
        from orchestrator.runtime.config import Settings

        return Settings.from_env(self.env())

    def runtime(self) -> Any:
        from orchestrator.runtime.context import Runtime

        return Runtime.create(self.settings())

    def celery(self) -> Any:
        """A Celery app of the benchmark's own, configured like ``orchestrator.runtime.celery_app``
        (same serializer and queue), for sending tasks by name and for remote control."""
        from celery import Celery

        app = Celery("journey-bench", broker=self.broker_url)
        app.conf.update(task_serializer="json", accept_content=["json"], task_ignore_result=True,
                        task_default_queue=self.queue, broker_connection_retry_on_startup=True,
                        broker_transport_options={"visibility_timeout": 3600})
        return app

    def worker_name(self, n: int = 0) -> str:
        return f"{self.queue}-w{n}@{socket.gethostname()}"

    def start_worker(self, concurrency: int | None = None, n: int = 0, extra: list[str] | None = None) -> subprocess.Popen[bytes]:
        concurrency = concurrency or os.cpu_count() or 1
        cmd = [str(BIN / "celery"), "-A", "orchestrator.runtime.celery_app", "worker",
               "--loglevel", "WARNING", "--concurrency", str(concurrency), "-Q", self.queue,
               "-n", self.worker_name(n), *(extra or [])]
        return self._start(f"worker{n}", cmd)

    def start_scheduler(self) -> subprocess.Popen[bytes]:
        return self._start("scheduler", [str(BIN / "journey"), "scheduler"])

    def _start(self, name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        logf = open(self.tmp / f"{name}.log", "ab")
        p = subprocess.Popen(cmd, env=self.env(), cwd=str(self.tmp), stdout=subprocess.DEVNULL,
                             stderr=logf, start_new_session=True)
        self.procs.append((name, p))
        return p

    def wait_workers(self, app: Any, names: list[str], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, p in self.procs:
                if p.poll() is not None:
                    raise SystemExit(f"{name} exited with {p.returncode}; see {self.tmp / (name + '.log')}:\n"
                                     + (self.tmp / f"{name}.log").read_text()[-3000:])
            replies = app.control.ping(destination=names, timeout=1.0) or []
            if {k for r in replies for k in r} >= set(names):
                return
        raise SystemExit(f"workers {names} not ready after {timeout}s")

    def stop(self, name_prefix: str | None = None, timeout: float = 30.0) -> None:
        """Stop our processes (by their own ids; each runs in its own session), warm first."""
        keep = []
        for name, p in self.procs:
            if name_prefix is not None and not name.startswith(name_prefix):
                keep.append((name, p))
                continue
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    p.wait(timeout)
                except subprocess.TimeoutExpired:
                    try:
                        os.killpg(p.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    p.wait(10)
        self.procs = keep

    def close(self, keep: bool = False) -> None:
        self.stop()
        if keep:
            log(f"kept: database {self.db_name}, folder {self.tmp}, Redis db {self.redis_db}")
            return
        drop_database(self.db_name)
        clear_redis_db(self.broker_url)
        if self.sink is not None and self.sink.exists():
            self.sink.unlink()
        shutil.rmtree(self.tmp, ignore_errors=True)


# -- memory of a process tree -----------------------------------------------------------------
def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                out += [int(c) for c in fh.read().split()]
    except FileNotFoundError:
        pass
    return out


def process_tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo += _children(p)
    return pids


def _status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (FileNotFoundError, PermissionError):
        pass
    return 0


def tree_memory(pid: int) -> tuple[int, int, int]:
    """(RSS bytes, PSS bytes, number of processes) of ``pid`` and all its descendants.
    psutil is used when installed; /proc otherwise (the same numbers)."""
    try:
        import psutil  # type: ignore[import-not-found]

        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
        rss = sum(p.memory_info().rss for p in procs)
        pss = sum(getattr(p.memory_full_info(), "pss", 0) for p in procs)
        return rss, pss, len(procs)
    except ImportError:
        pids = process_tree(pid)
        return (sum(_status_kb(p, "VmRSS") for p in pids) * 1024,
                sum(_pss_kb(p) for p in pids) * 1024, len(pids))


# -- waiting ----------------------------------------------------------------------------------
def wait_until(cond: Callable[[], bool], timeout: float, every: float = 0.2, what: str = "") -> float:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)
    return time.monotonic()


def machine_line() -> str:
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GB RAM, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def load_average() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[0:3])
    except OSError:
        return "?"


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, int(round(p / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


# -- profiles ---------------------------------------------------------------------------------
def bulk_profiles(db_url: str, n: int, prefix: str = "u") -> list[str]:
    """n profiles with an email address, a push token and a first name (untimed setup: in
    production the profiles exist before their events arrive). COPY, so 100,000 take seconds."""
    ids = [f"{prefix}{i:07d}" for i in range(n)]
    now = utcnow()
    with psycopg.connect(psql_url(db_url)) as conn:
        with conn.cursor() as cur:
            with cur.copy("COPY profiles (user_id, email, push_tokens, timezone, attributes, created_at, updated_at) FROM STDIN") as cp:
                for uid in ids:
                    cp.write_row((uid, f"{uid}@example.com", f'["tok-{uid}"]', "UTC",
                                  f'{{"first_name": "U{uid[-5:]}"}}', now, now))
        conn.commit()
    return ids


def run_bench(tag: str, journeys: Mapping[str, str], keep: bool,
              run: Callable[["Bench", "Analyzer"], None]) -> None:
    """Open a benchmark's own database, project, queue and worker, run it with ANALYZE kept up
    (see :class:`Analyzer`), and clean everything up unless ``keep``."""
    bench = Bench.open(tag, journeys)
    try:
        with Analyzer(bench.db_url) as analyzer:
            run(bench, analyzer)
    finally:
        bench.close(keep=keep)
