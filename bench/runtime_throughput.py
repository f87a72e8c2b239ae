"""Benchmark: end-to-end engine throughput of the production runtime (PostgreSQL + Redis +
Celery workers + the timer pump), against a bare Celery no-op task on the same broker and
workers.

    python bench/runtime_throughput.py [--users 100000] [--noop-tasks 20000]

The journey (three steps: send welcome -> wait 1s -> send follow-up)::

    trigger: {event: app_installed}
    steps: welcome (send email) -> pause (wait 1s) -> follow_up (send push)

Each user gets one ``app_installed`` event. Events are fed as the ingest API feeds them:
``store_events`` in requests of 1,000 events (the API's maximum), each followed by
``journey.process_users`` tasks of ``JOURNEY_BATCH`` users sent through the Celery app (the
API's own dispatch); the HTTP layer itself is not exercised. Workers apply the entry and queue
and send the welcome; one second later the scheduler (``journey scheduler``) claims the timers
and workers fire them, queue and send the follow-up. Messages go through the real ``file``
channel adapter to a file in /dev/shm.

Engine steps counted, as ``bench/dry_run.py`` counts them: events handled + timers fired = 2 per
user (each with the message it sends; 2 messages delivered per user). The run is timed from
the first event stored to the last step applied, both read from the database.

The baseline, measured in the same run with the same worker processes and broker: the rate
of the bare ``journey.noop`` task, (a) with the tasks pre-loaded in a queue the workers then
start consuming (the workers' ceiling) and (b) sent while the workers run. Tasks are
acknowledged late, so "all done" is read from the broker: the queue is empty and no message is
delivered-but-unacknowledged; the worker's own task counters confirm the count.
Target: steps per second >= 5 x the bare no-op tasks per second.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import redis  # noqa: E402
from sqlalchemy import text  # noqa: E402

from runtime_common import (  # noqa: E402
    run_bench,
    Analyzer,
    Bench,
    broker_pending,
    bulk_profiles,
    load_average,
    log,
    machine_line,
    pg_settings,
    utcnow,
    wait_until,
)

JOURNEY = """
description: Benchmark journey - welcome, one second, follow-up.
trigger: {event: app_installed}
re_entry: ignore
steps:
  - id: welcome
    send: {channel: email, template: welcome}
  - id: pause
    wait: 1s
  - id: follow_up
    send: {channel: push, template: complete_profile}
"""
REQUEST = 1000  # events per store_events call: the ingest API's largest request


def feed(bench: Bench, runtime, app, user_ids: list[str]) -> tuple[datetime, float, int]:  # type: ignore[no-untyped-def]
    """Store one event per user and dispatch process_users batches, as the API does.
    Returns (wall time of the first store, seconds spent feeding, tasks sent)."""
    from orchestrator.runtime.dispatch import CeleryDispatcher
    from orchestrator.runtime.ingest import IncomingEvent, store_events

    dispatcher = CeleryDispatcher(app, bench.queue)
    batch = runtime.settings.batch
    first = utcnow()
    t0 = time.perf_counter()
    tasks = 0
    props = {"platform": "ios", "app_version": "4.2.0"}
    for i in range(0, len(user_ids), REQUEST):
        now = utcnow()
        stored = store_events(runtime.engine, [IncomingEvent(u, "app_installed", now, props)
                                               for u in user_ids[i:i + REQUEST]], now)
        for j in range(0, len(stored.user_ids), batch):
            dispatcher.process_users(list(stored.user_ids[j:j + batch]))
            tasks += 1
    return first, time.perf_counter() - t0, tasks


def count(conn, sql: str, **params) -> int:  # type: ignore[no-untyped-def]
    return int(conn.execute(text(sql), params).scalar_one())


def noop_prefilled(bench: Bench, app, r: redis.Redis, n: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Pre-load n no-op tasks in a side queue, then let the workers consume it.
    Returns (seconds to load, seconds for the workers to run them all)."""
    q = bench.queue + ".noop"
    t0 = time.perf_counter()
    with app.producer_or_acquire() as producer:
        for _ in range(n):
            app.send_task("journey.noop", queue=q, producer=producer)
    load_s = time.perf_counter() - t0
    assert r.llen(q) == n, (r.llen(q), n)
    t1 = time.perf_counter()
    app.control.add_consumer(q, destination=[bench.worker_name()], reply=True, timeout=5)
    wait_until(lambda: broker_pending(r, q) == (0, 0), timeout=3600, every=0.02, what="no-op tasks")
    run_s = time.perf_counter() - t1
    app.control.cancel_consumer(q, destination=[bench.worker_name()], reply=True, timeout=5)
    return load_s, run_s


def noop_live(bench: Bench, app, r: redis.Redis, n: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Send n no-op tasks to the workers' queue while they run. Returns (seconds to send,
    seconds from the first send to the last task done)."""
    t0 = time.perf_counter()
    with app.producer_or_acquire() as producer:
        for _ in range(n):
            app.send_task("journey.noop", queue=bench.queue, producer=producer)
    send_s = time.perf_counter() - t0
    wait_until(lambda: broker_pending(r, bench.queue) == (0, 0), timeout=3600, every=0.02, what="no-op tasks")
    return send_s, time.perf_counter() - t0


def task_totals(app, name: str) -> dict[str, int]:  # type: ignore[no-untyped-def]
    stats = app.control.inspect(destination=[name], timeout=5).stats() or {}
    return dict((stats.get(name) or {}).get("total") or {})


def pump_ticks(log_path: Path) -> tuple[int, int]:
    """(timers claimed, events re-dispatched) summed over the scheduler's tick lines."""
    timers = events = 0
    if log_path.exists():
        for m in re.finditer(r"Tick\(timers=(\d+), reclaimed=\d+, messages=\d+, events=(\d+)", log_path.read_text()):
            timers += int(m.group(1))
            events += int(m.group(2))
    return timers, events


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--noop-tasks", type=int, default=20_000, help="no-op tasks per baseline measurement")
    ap.add_argument("--warmup", type=int, default=1000, help="users put through the journey before timing")
    ap.add_argument("--concurrency", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--keep", action="store_true", help="keep the database and folder for inspection")
    args = ap.parse_args()

    run_bench("thru", {"bench_three_step": JOURNEY}, args.keep, lambda bench, analyzer: run(bench, args, analyzer))


def run(bench: Bench, args: argparse.Namespace, analyzer: Analyzer) -> None:
    started = utcnow()
    runtime = bench.runtime()
    runtime.deploy()
    n, w = args.users, args.warmup
    log(f"database {bench.db_name}, queue {bench.queue} on {bench.broker_url}; creating {n + w:,} profiles")
    bulk_profiles(bench.db_url, n, "u")
    bulk_profiles(bench.db_url, w, "w")
    with runtime.engine.begin() as conn:
        conn.execute(text("ANALYZE"))

    app = bench.celery()
    r = redis.Redis.from_url(bench.broker_url)
    bench.start_worker(args.concurrency)
    bench.start_scheduler()
    bench.wait_workers(app, [bench.worker_name()])
    worker = bench.worker_name()

    def sent_total() -> int:
        with runtime.engine.connect() as conn:
            return count(conn, "SELECT count(*) FROM deliveries WHERE status = 'sent'")

    # Warm-up: every worker process creates its runtime, compiles templates, fills caches.
    log(f"warm-up: {w:,} users through the journey, {args.noop_tasks // 10:,} no-ops")
    feed(bench, runtime, app, [f"w{i:07d}" for i in range(w)])
    wait_until(lambda: sent_total() >= 2 * w, timeout=600, every=0.5, what="warm-up")
    noop_live(bench, app, r, args.noop_tasks // 10)

    log(f"baseline: {args.noop_tasks:,} no-op tasks pre-loaded, then {args.noop_tasks:,} sent live")
    pre_load_s, pre_run_s = noop_prefilled(bench, app, r, args.noop_tasks)
    live_send_s, live_s = noop_live(bench, app, r, args.noop_tasks)
    totals_noop = task_totals(app, worker)

    log(f"engine: {n:,} users")
    t_wall0 = time.perf_counter()
    first, feed_s, tasks = feed(bench, runtime, app, [f"u{i:07d}" for i in range(n)])
    last_seen = [0, time.monotonic()]

    def done() -> bool:
        s = sent_total()
        if s != last_seen[0]:
            last_seen[:] = [s, time.monotonic()]
        elif time.monotonic() - last_seen[1] > 180:
            raise SystemExit(f"no progress for 180 s at {s:,} messages sent; logs in {bench.tmp}")
        return s >= 2 * (n + w)

    wait_until(done, timeout=6 * 3600, every=1.0, what="the journey to finish")
    observed_s = time.perf_counter() - t_wall0
    totals = task_totals(app, worker)
    bench.stop("scheduler")
    pump_timers, pump_events = pump_ticks(bench.tmp / "scheduler.log")

    with runtime.engine.connect() as conn:
        u = "u%"
        q = lambda sql: count(conn, sql, u=u)  # noqa: E731
        events_done = q("SELECT count(*) FROM events WHERE user_id LIKE :u AND status = 'processed'")
        timers_done = q("SELECT count(*) FROM timers WHERE user_id LIKE :u AND status = 'done'")
        sent = q("SELECT count(*) FROM deliveries WHERE user_id LIKE :u AND status = 'sent'")
        finished = q("SELECT count(*) FROM runs WHERE user_id LIKE :u AND status = 'finished'")
        runs_total = q("SELECT count(*) FROM runs WHERE user_id LIKE :u")
        not_sent = q("SELECT count(*) FROM outbox WHERE user_id LIKE :u AND status <> 'sent'")
        t_first, t_last = conn.execute(text(
            "SELECT (SELECT min(received_at) FROM events WHERE user_id LIKE :u), "
            "greatest((SELECT max(processed_at) FROM events WHERE user_id LIKE :u), "
            "         (SELECT max(fired_at) FROM timers WHERE user_id LIKE :u), "
            "         (SELECT max(updated_at) FROM deliveries WHERE user_id LIKE :u))"), {"u": u}).one()
        last_event = conn.execute(text("SELECT max(processed_at) FROM events WHERE user_id LIKE :u"), {"u": u}).scalar_one()
    lines = sum(1 for _ in open(bench.sink, "rb")) if bench.sink and bench.sink.exists() else 0

    steps = events_done + timers_done
    span = (t_last - t_first).total_seconds()
    rate = steps / span
    noop_pre = args.noop_tasks / pre_run_s
    noop_live_rate = args.noop_tasks / live_s
    baseline = max(noop_pre, noop_live_rate)
    ok = (events_done == n and timers_done == n and sent == 2 * n and finished == n == runs_total
          and not_sent == 0 and lines == 2 * (n + w))

    print(f"date                         {started:%Y-%m-%d %H:%M} UTC")
    print(f"machine                      {machine_line()}; load average at the end {load_average()}")
    print(f"database                     {pg_settings()} (fresh database {bench.db_name})")
    print(f"statistics                   {analyzer.describe()}")
    print(f"broker                       Redis {bench.broker_url}, queue {bench.queue}")
    print(f"workers                      1 celery worker, prefork --concurrency {args.concurrency}, "
          f"JOURNEY_BATCH={runtime.settings.batch}, acks_late, prefetch 1; 1 `journey scheduler`, "
          f"JOURNEY_TICK={runtime.settings.tick:g}, JOURNEY_LEASE={runtime.settings.lease:g}")
    print("channel                      file adapter (JOURNEY_FILE_SINK in /dev/shm), email and push")
    print("feeding                      store_events x 1,000 events, then journey.process_users tasks "
          "via the Celery app (the API's path, no HTTP)")
    print(f"users                        {n:>12,}   (+{w:,} warm-up users before timing)")
    print(f"events processed             {events_done:>12,}")
    print(f"timers fired                 {timers_done:>12,}")
    print(f"messages sent                {sent:>12,}   (file sink lines incl. warm-up: {lines:,})")
    print(f"runs finished                {finished:>12,}   / {runs_total:,}")
    print(f"consistent                   {'yes' if ok else 'NO'}")
    print(f"feeding time                 {feed_s:>12.2f} s   ({tasks:,} process_users tasks)")
    print(f"last event applied at        {(last_event - t_first).total_seconds():>12.2f} s")
    print(f"first stored -> last applied {span:>12.2f} s   (database timestamps; observed by polling: {observed_s:.2f} s)")
    print(f"engine steps                 {steps:>12,}   (events handled + timers fired; 3 journey steps "
          f"and 2 messages per user)")
    print(f"steps per second             {rate:>12,.0f}   (polled wall time: {steps / observed_s:,.0f})")
    print(f"messages per second          {sent / span:>12,.0f}")
    print(f"tasks run (engine)           { {k: v - totals_noop.get(k, 0) for k, v in totals.items() if k != 'journey.noop'} }")
    print(f"pump                         claimed {pump_timers:,} timers; re-dispatched events of {pump_events:,} users")
    print(f"no-op, pre-loaded            {noop_pre:>12,.0f} tasks/s  ({args.noop_tasks:,} in {pre_run_s:.2f} s; "
          f"loading took {pre_load_s:.2f} s)")
    print(f"no-op, sent live             {noop_live_rate:>12,.0f} tasks/s  ({args.noop_tasks:,} in {live_s:.2f} s; "
          f"sending took {live_send_s:.2f} s)")
    print(f"no-op tasks counted by worker {totals_noop.get('journey.noop', 0):>11,}   "
          f"(expected {2 * args.noop_tasks + args.noop_tasks // 10:,})")
    print(f"ratio steps/s : no-op/s      {rate / baseline:>12.2f}x   (against the faster no-op figure; "
          f"target >= 5.00x; polled: {steps / observed_s / baseline:.2f}x)")


if __name__ == "__main__":
    main()
