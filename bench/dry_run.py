"""Benchmark: the dry-run of cart_abandonment for N generated users, against bare rendering.

    python bench/dry_run.py [--users 100000] [--seed 7]

Prints, measured in the same run:
  * simulated engine steps per second (events, timers and deferred messages handled);
  * peak memory of the process (ru_maxrss) after the dry-run;
  * the time to render the very same messages alone (same templates, same contexts), and the
    ratio dry-run time / bare rendering time. Target: ratio <= 2.0 and peak < 1 GB at 100,000.

The dry-run keeps its full timeline with message bodies, as ``journey dry-run --format json``
does, so the memory figure is what a marketer's run costs.
"""

from __future__ import annotations

import argparse
import gc
import random
import resource
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Mapping

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator.cli import DEFAULT_START  # noqa: E402
from orchestrator.compiler import compile_journey  # noqa: E402
from orchestrator.engine import Event  # noqa: E402
from orchestrator.project import Project  # noqa: E402
from orchestrator.render import Rendered, Renderer  # noqa: E402
from orchestrator.simulate import Simulator  # noqa: E402

ZONES = ["America/Los_Angeles", "America/New_York", "Europe/London", "Europe/Paris",
         "Asia/Kolkata", "Asia/Tokyo", "Australia/Sydney", "America/Sao_Paulo"]
PRODUCTS = [("TEE", "Tee", 25.0), ("CAP", "Cap", 19.5), ("SOCK", "Socks", 9.0),
            ("HOOD", "Hoodie", 59.0), ("BAG", "Tote bag", 14.0), ("MUG", "Mug", 12.0)]


class RecordingRenderer(Renderer):
    """Renders like the real one and remembers every (channel, template, context) it rendered."""

    def __init__(self, templates_dir: Path) -> None:
        super().__init__(templates_dir)
        self.calls: list[tuple[str, str, Mapping[str, Any]]] = []

    def render(self, channel: str, name: str, context: Mapping[str, Any]) -> Rendered:
        self.calls.append((channel, name, context))
        return super().render(channel, name, context)


def generate(n: int, seed: int) -> tuple[list[dict[str, Any]], list[Event]]:
    rng = random.Random(seed)
    users, events = [], []
    for i in range(n):
        uid = f"u{i:06d}"
        user: dict[str, Any] = {
            "id": uid,
            "first_name": f"User{i}",
            "timezone": rng.choice(ZONES),
            "preferred_channel": rng.choice(["push", "email", "sms", None]),
            "push_tokens": [f"tok-{i}"] if rng.random() < 0.6 else [],
            "unsubscribed": ["sms"] if rng.random() < 0.1 else [],
        }
        if rng.random() < 0.9:
            user["email"] = f"{uid}@example.com"
        if rng.random() < 0.7:
            user["phone"] = f"+1555{i:07d}"
        users.append(user)
        items = [
            {"sku": f"{sku}-{rng.randint(1, 9)}", "name": name, "price": price,
             "quantity": rng.randint(1, 3), "image_url": f"https://cdn.example.com/{sku}.jpg"}
            for sku, name, price in rng.sample(PRODUCTS, rng.randint(1, 4))
        ]
        total = round(sum(it["price"] * it["quantity"] for it in items), 2)
        at = DEFAULT_START + timedelta(minutes=rng.randint(0, 24 * 60))
        events.append(Event(uid, "cart_updated", at,
                            {"cart_id": f"c{i}", "items": items, "total": total, "currency": "USD"}))
        if rng.random() < 0.3:  # a third of them buy at some point in the next two days
            events.append(Event(uid, "order_completed", at + timedelta(minutes=rng.randint(10, 2880)),
                                {"order_id": f"o{i}", "cart_id": f"c{i}", "total": total, "currency": "USD"}))
    events.sort(key=lambda e: e.at)
    return users, events


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    project = Project(ROOT)
    machine = compile_journey(project.journey_path("cart_abandonment"), project)
    users, events = generate(args.users, args.seed)
    gc.collect()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    renderer = RecordingRenderer(project.templates_dir)
    sim = Simulator(machine, renderer, users)
    t0 = time.perf_counter()
    result = sim.run(events, DEFAULT_START, DEFAULT_START + timedelta(days=30))
    dry_run_s = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    steps = sim.steps_handled

    calls = renderer.calls
    bare = Renderer(project.templates_dir)
    for channel, name, ctx in calls[:50]:  # compile the templates, as the dry-run did
        bare.render(channel, name, ctx)
    t1 = time.perf_counter()
    for channel, name, ctx in calls:
        bare.render(channel, name, ctx)
    render_s = time.perf_counter() - t1

    s = result.summary.to_dict()
    print(f"users                      {args.users:>12,}")
    print(f"events                     {len(events):>12,}")
    print(f"timeline entries           {len(result.timeline):>12,}")
    print(f"messages rendered          {len(calls):>12,}   (sent {s['sent_total']:,}, "
          f"skipped {sum(s['skipped'].values()):,}, deferred {s['deferred']:,})")
    print(f"dry-run time               {dry_run_s:>12.2f} s")
    print(f"simulated steps            {steps:>12,}")
    print(f"steps per second           {steps / dry_run_s:>12,.0f}")
    print(f"bare rendering time        {render_s:>12.2f} s   (same {len(calls):,} messages)")
    print(f"ratio dry-run / rendering  {dry_run_s / render_s:>12.2f}x   (target <= 2.00x)")
    print(f"peak memory (maxrss)       {peak_kb / 1024:>12.0f} MB  (before the run: "
          f"{rss_before / 1024:.0f} MB; target < 1024 MB)")


if __name__ == "__main__":
    main()
