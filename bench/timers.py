"""Benchmark: N timers due in the same second, fired by the production runtime (the timer
pump in ``journey scheduler`` + Celery workers on PostgreSQL and Redis).

    python bench/timers.py [--users 100000] [--lead 15]

Setup (untimed): N users enter this journey through the engine (``store_events`` and
``journey.process_users`` tasks run by the workers)::

    trigger: {event: app_installed}
    steps: hold (wait 1h) -> follow_up (send push)

so every run waits at ``hold`` with a pending timer. Then every timer's ``fire_at`` (and its
run's ``wake_at``) is moved to the same instant T, a whole second ``--lead`` seconds ahead, and
the scheduler is started (it ticks every ``JOURNEY_TICK`` = 1 s, with its phase relative to T
left to chance, as in production). The benchmark waits until every follow-up is sent.

Printed, from the database:
  * when the first timer was claimed and fired, relative to T (target: first fire within 1.5 s);
  * lateness of each timer (fired_at - fire_at) and of its step's message (ledger sent_at -
    fire_at) at p50, p99 and max. ``fired_at`` and ``sent_at`` are the clock readings a worker
    takes when it starts a batch, so they are early by at most one batch's run time;
  * the drain rate: timers fired per second from T to the last fire, and steps (timer fired and
    message sent) per second from T to the last message sent.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import time
from datetime import datetime, timezone
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
    percentile,
    pg_settings,
    utcnow,
    wait_until,
)

JOURNEY = """
description: Benchmark journey - wait, then one push.
trigger: {event: app_installed}
re_entry: ignore
steps:
  - id: hold
    wait: 1h
  - id: follow_up
    send: {channel: push, template: complete_profile}
"""
REQUEST = 1000


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


def scalar(conn, sql: str, **params):  # type: ignore[no-untyped-def]
    return conn.execute(text(sql), params).scalar_one()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=100_000, help="timers due at the same second")
    ap.add_argument("--lead", type=float, default=15.0, help="seconds between moving the timers and T")
    ap.add_argument("--concurrency", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    run_bench("timers", {"bench_timer": JOURNEY}, args.keep, lambda bench, analyzer: run(bench, args, analyzer))


def run(bench: Bench, args: argparse.Namespace, analyzer: Analyzer) -> None:
    started = utcnow()
    n = args.users
    runtime = bench.runtime()
    runtime.deploy()
    log(f"database {bench.db_name}, queue {bench.queue}; {n:,} users enter the journey (untimed)")
    ids = bulk_profiles(bench.db_url, n)
    app = bench.celery()
    r = redis.Redis.from_url(bench.broker_url)
    bench.start_worker(args.concurrency)
    bench.wait_workers(app, [bench.worker_name()])
    t0 = time.perf_counter()
    enter(bench, runtime, app, ids)

    def entered() -> bool:
        with runtime.engine.connect() as conn:
            return scalar(conn, "SELECT count(*) FROM timers WHERE status = 'pending'") >= n
    wait_until(entered, timeout=3 * 3600, every=1.0, what="the users to enter")
    wait_until(lambda: broker_pending(r, bench.queue) == (0, 0), timeout=600, what="an idle queue")
    setup_s = time.perf_counter() - t0

    # Every timer due at the same instant T (a whole second), runs consistent with it.
    now = utcnow()
    T = datetime.fromtimestamp(math.ceil(now.timestamp() + args.lead), timezone.utc)
    with runtime.engine.begin() as conn:
        moved = conn.execute(text("UPDATE timers SET fire_at = :t WHERE status = 'pending'"), {"t": T}).rowcount
        conn.execute(text("UPDATE runs SET wake_at = :t WHERE status = 'waiting'"), {"t": T})
    with runtime.engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    log(f"{moved:,} timers due at T = {T:%H:%M:%S} UTC; starting the scheduler")
    bench.start_scheduler()

    def drained() -> bool:
        with runtime.engine.connect() as conn:
            return scalar(conn, "SELECT count(*) FROM deliveries WHERE status = 'sent'") >= n
    wait_until(drained, timeout=3 * 3600, every=1.0, what="every timer to fire and its message to go")
    observed = utcnow()
    time.sleep(2 * runtime.settings.tick)
    bench.stop("scheduler")
    ticks = (bench.tmp / "scheduler.log").read_text() if (bench.tmp / "scheduler.log").exists() else ""
    reclaimed = sum(int(m) for m in re.findall(r"reclaimed=(\d+)", ticks))
    claimed = sum(int(m) for m in re.findall(r"Tick\(timers=(\d+)", ticks))

    with runtime.engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT t.fire_at, t.claimed_at, t.fired_at, d.sent_at FROM timers t "
            "LEFT JOIN deliveries d ON d.run_id = t.run_id AND d.step = 'follow_up' AND d.status = 'sent'"
        )).all()
        done = scalar(conn, "SELECT count(*) FROM timers WHERE status = 'done'")
        finished = scalar(conn, "SELECT count(*) FROM runs WHERE status = 'finished'")
    fired = sorted((row.fired_at - row.fire_at).total_seconds() for row in rows if row.fired_at)
    sent = sorted((row.sent_at - row.fire_at).total_seconds() for row in rows if row.sent_at)
    first_claim = min((row.claimed_at - T).total_seconds() for row in rows if row.claimed_at)
    first_fire, last_fire = fired[0], fired[-1]
    last_sent = sent[-1]
    fire_rate = done / last_fire

    print(f"date                         {started:%Y-%m-%d %H:%M} UTC")
    print(f"machine                      {machine_line()}; load average at the end {load_average()}")
    print(f"database                     {pg_settings()} (fresh database {bench.db_name})")
    print(f"statistics                   {analyzer.describe()}")
    print(f"broker                       Redis {bench.broker_url}, queue {bench.queue}")
    print(f"workers                      1 celery worker, prefork --concurrency {args.concurrency}, "
          f"JOURNEY_BATCH={runtime.settings.batch}; 1 `journey scheduler`, JOURNEY_TICK="
          f"{runtime.settings.tick:g}, JOURNEY_LEASE={runtime.settings.lease:g}")
    print("channel                      file adapter (JOURNEY_FILE_SINK in /dev/shm), push")
    print(f"timers due at T              {moved:>12,}   (setup: {n:,} users entered through the engine "
          f"in {setup_s:.0f} s, untimed)")
    print(f"timers fired                 {done:>12,}   (runs finished: {finished:,}; messages sent: {len(sent):,})")
    print(f"first claimed                {first_claim:>+12.3f} s after T")
    print(f"first fired                  {first_fire:>+12.3f} s after T   (target <= 1.5 s)")
    print(f"fire lateness p50            {percentile(fired, 50):>12.3f} s   (fired_at - fire_at)")
    print(f"fire lateness p99            {percentile(fired, 99):>12.3f} s")
    print(f"fire lateness max            {last_fire:>12.3f} s")
    print(f"step applied p50             {percentile(sent, 50):>12.3f} s   (message sent: ledger sent_at - fire_at)")
    print(f"step applied p99             {percentile(sent, 99):>12.3f} s")
    print(f"step applied max             {last_sent:>12.3f} s   (observed by polling: "
          f"{(observed - T).total_seconds():.1f} s)")
    print(f"drain rate                   {fire_rate:>12,.0f} timers fired per second (T to the last fire)")
    print(f"                             {done / last_sent:>12,.0f} steps per second (timer fired and its message "
          f"sent; one step each, as bench/runtime_throughput.py counts; T to the last send)")
    print(f"pump                         claimed {claimed:,} timers; handed back {reclaimed:,} claims "
          f"older than the lease")


if __name__ == "__main__":
    main()
