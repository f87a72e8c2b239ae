"""Benchmark: what N runs waiting 23.5 hours cost the worker and the broker, against the same
number of Celery countdown tasks.

    python bench/waiting.py [--users 100000]

Ours: N users enter this journey through the engine (``store_events`` and
``journey.process_users`` tasks run by the workers), so N runs wait at ``hold`` with their
timers as rows in PostgreSQL::

    trigger: {event: app_installed}
    steps: hold (wait 23.5h) -> follow_up (send push)

The baseline: N ``journey.noop`` tasks sent with ``apply_async(countdown=84600)`` (23.5 h), the
usual way to "wait" with Celery: the worker reserves them and keeps them in memory until their
ETA, and the Redis transport keeps each one in its ``unacked`` hash meanwhile.

Each side gets a freshly started worker (``--concurrency os.cpu_count()``), warmed up (a few
hundred users through the journey, or as many immediate no-op tasks), then measured before and
after the N: the worker's process-tree RSS (and PSS, which counts pages shared between the
forked processes once), Redis ``used_memory`` (INFO memory; server-wide, so other clients of
the same server add noise) and the exact size of the benchmark's own Redis keys (MEMORY USAGE
over the benchmark's otherwise empty database number). Target: our growth under 5% of the
countdown baseline's.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import psycopg  # noqa: E402
import redis  # noqa: E402
from sqlalchemy import text  # noqa: E402

from runtime_common import (  # noqa: E402
    run_bench,
    Analyzer,
    Bench,
    broker_pending,
    bulk_profiles,
    keys_memory,
    load_average,
    log,
    machine_line,
    pg_settings,
    psql_url,
    redis_used_memory,
    tree_memory,
    utcnow,
    wait_until,
)

JOURNEY = """
description: Benchmark journey - a 23.5-hour wait, then one push.
trigger: {event: app_installed}
re_entry: ignore
steps:
  - id: hold
    wait: 23.5h
  - id: follow_up
    send: {channel: push, template: complete_profile}
"""
COUNTDOWN = 84_600
REQUEST = 1000
MB = 1024 * 1024


class Snapshot:
    def __init__(self, bench: Bench, r: redis.Redis, worker_pid: int) -> None:
        time.sleep(2.0)  # let the worker settle (acks, timers, freed buffers)
        self.rss, self.pss, self.procs = tree_memory(worker_pid)
        self.redis = redis_used_memory(r)
        self.keys, self.keys_bytes = keys_memory(r)
        with psycopg.connect(psql_url(bench.db_url)) as conn:
            self.db = int(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])


def enter(bench: Bench, runtime, app, user_ids: list[str]) -> None:  # type: ignore[no-untyped-def]
    from orchestrator.runtime.dispatch import CeleryDispatcher
    from orchestrator.runtime.ingest import IncomingEvent, store_events

    dispatcher = CeleryDispatcher(app, bench.queue)
    for i in range(0, len(user_ids), REQUEST):
        now = utcnow()
        stored = store_events(runtime.engine, [IncomingEvent(u, "app_installed", now, {"platform": "ios"})
                                               for u in user_ids[i:i + REQUEST]], now)
        for j in range(0, len(stored.user_ids), runtime.settings.batch):
            dispatcher.process_users(list(stored.user_ids[j:j + runtime.settings.batch]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=100_000, help="waiting runs, and countdown tasks")
    ap.add_argument("--warmup", type=int, default=400)
    ap.add_argument("--concurrency", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    run_bench("waiting", {"bench_wait": JOURNEY}, args.keep, lambda bench, analyzer: run(bench, args, analyzer))


def run(bench: Bench, args: argparse.Namespace, analyzer: Analyzer) -> None:
    started = utcnow()
    n, w = args.users, args.warmup
    runtime = bench.runtime()
    runtime.deploy()
    bulk_profiles(bench.db_url, n, "u")
    bulk_profiles(bench.db_url, w, "w")
    app = bench.celery()
    r = redis.Redis.from_url(bench.broker_url)

    def pending_timers() -> int:
        with runtime.engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM timers WHERE status = 'pending'")).scalar_one())

    # -- ours ---------------------------------------------------------------------------------
    log(f"ours: fresh worker, {w} warm-up users, then {n:,} users into a 23.5 h wait")
    worker = bench.start_worker(args.concurrency, n=1)
    bench.wait_workers(app, [bench.worker_name(1)])
    enter(bench, runtime, app, [f"w{i:07d}" for i in range(w)])
    wait_until(lambda: pending_timers() >= w, timeout=600, what="warm-up")
    wait_until(lambda: broker_pending(r, bench.queue) == (0, 0), timeout=600, what="an idle queue")
    a0 = Snapshot(bench, r, worker.pid)
    t0 = time.perf_counter()
    enter(bench, runtime, app, [f"u{i:07d}" for i in range(n)])
    wait_until(lambda: pending_timers() >= n + w, timeout=3 * 3600, every=1.0, what="the users to enter")
    wait_until(lambda: broker_pending(r, bench.queue) == (0, 0), timeout=600, what="an idle queue")
    ours_s = time.perf_counter() - t0
    a1 = Snapshot(bench, r, worker.pid)
    with runtime.engine.connect() as conn:
        waiting = int(conn.execute(text("SELECT count(*) FROM runs WHERE status = 'waiting' AND step = 'hold'")).scalar_one())
    bench.stop("worker1")

    # -- countdown tasks ----------------------------------------------------------------------
    log(f"countdown: fresh worker, {w} warm-up no-ops, then {n:,} noop tasks with countdown={COUNTDOWN}")
    worker = bench.start_worker(args.concurrency, n=2)
    bench.wait_workers(app, [bench.worker_name(2)])
    with app.producer_or_acquire() as producer:
        for _ in range(w):
            app.send_task("journey.noop", queue=bench.queue, producer=producer)
    wait_until(lambda: broker_pending(r, bench.queue) == (0, 0), timeout=600, what="warm-up no-ops")
    b0 = Snapshot(bench, r, worker.pid)
    t0 = time.perf_counter()
    with app.producer_or_acquire() as producer:
        for _ in range(n):
            app.send_task("journey.noop", queue=bench.queue, countdown=COUNTDOWN, producer=producer)
    # Reserved by the worker: out of the queue, held unacknowledged until the ETA.
    wait_until(lambda: broker_pending(r, bench.queue) == (0, n), timeout=3600, every=0.5,
               what="the worker to reserve every countdown task")
    countdown_s = time.perf_counter() - t0
    b1 = Snapshot(bench, r, worker.pid)
    bench.stop("worker2", timeout=10)

    def growth(before: Snapshot, after: Snapshot, attr: str) -> int:
        return getattr(after, attr) - getattr(before, attr)

    def ratio(a: int, b: int) -> str:
        return f"{100 * max(a, 0) / b:.2f}%" if b > 0 else "n/a"

    rows = [
        ("worker RSS (process tree)", "rss"),
        ("worker PSS (process tree)", "pss"),
        ("Redis used_memory (server)", "redis"),
        ("Redis keys of the benchmark", "keys_bytes"),
    ]
    print(f"date                         {started:%Y-%m-%d %H:%M} UTC")
    print(f"machine                      {machine_line()}; load average at the end {load_average()}")
    print(f"database                     {pg_settings()} (fresh database {bench.db_name})")
    print(f"statistics                   {analyzer.describe()}")
    print(f"broker                       Redis {bench.broker_url}, queue {bench.queue}")
    print(f"workers                      a fresh celery worker per side, prefork --concurrency {args.concurrency} "
          f"({a1.procs} processes), JOURNEY_BATCH={runtime.settings.batch}; no scheduler (nothing comes due)")
    print(f"waiting                      {n:,} runs at a 23.5 h wait (ours: {waiting - w:,} runs waiting, "
          f"entered in {ours_s:.0f} s) vs {n:,} noop tasks with countdown={COUNTDOWN} (sent and reserved in "
          f"{countdown_s:.0f} s)")
    print(f"{'':28} {'ours':>20} {'countdown':>20} {'ours/countdown':>15}")
    for label, attr in rows:
        g_a, g_b = growth(a0, a1, attr), growth(b0, b1, attr)
        print(f"{label:28} {g_a / MB:>+17.1f} MB {g_b / MB:>+17.1f} MB {ratio(g_a, g_b):>15}")
    print(f"{'  before -> after':28} {a0.rss / MB:>8.0f}->{a1.rss / MB:<6.0f} MB  {b0.rss / MB:>8.0f}->{b1.rss / MB:<6.0f} MB  (worker RSS)")
    print(f"{'  Redis keys':28} {a0.keys:>8}->{a1.keys:<6} keys {b0.keys:>7}->{b1.keys:<6} keys")
    print(f"PostgreSQL database growth   {(a1.db - a0.db) / MB:>+17.1f} MB  (ours: where the waiting runs and "
          f"timers live; {(a1.db - a0.db) / max(n, 1):.0f} bytes per user: event, run, timer and "
          f"activity rows with their indexes)")
    g_a, g_b = growth(a0, a1, "rss"), growth(b0, b1, "rss")
    k_a, k_b = growth(a0, a1, "keys_bytes"), growth(b0, b1, "keys_bytes")
    print(f"target                       worker RSS {ratio(g_a, g_b)} and broker {ratio(k_a, k_b)} "
          f"of the countdown baseline (target < 5%)")


if __name__ == "__main__":
    main()
