"""Entries and conversions per day (UTC), for the treated and the held-out users. Core: pure.

``cumulative_rate`` is conversions so far over entries so far, per group: the line a marketer
watches settle as a journey runs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from .facts import History

GROUPS = ("treated", "holdout")


@dataclass(frozen=True)
class Day:
    day: date
    entries: dict[str, int]
    conversions: dict[str, int]
    cumulative_rate: dict[str, float | None]

    def to_dict(self) -> dict[str, Any]:
        return {"day": self.day.isoformat(), "entries": self.entries,
                "conversions": self.conversions, "cumulative_rate": self.cumulative_rate}


def by_day(history: History) -> list[Day]:
    holdout = {r.run_id: r.holdout for r in history.runs}
    entries: Counter[tuple[date, str]] = Counter()
    conversions: Counter[tuple[date, str]] = Counter()
    for r in history.runs:
        entries[(r.entered_at.date(), "holdout" if r.holdout else "treated")] += 1
    for conv in history.conversions:
        if conv.run_id in holdout:
            conversions[(conv.at.date(), "holdout" if holdout[conv.run_id] else "treated")] += 1
    days = {d for d, _ in entries} | {d for d, _ in conversions}
    if not days:
        return []
    out: list[Day] = []
    seen = {g: 0 for g in GROUPS}
    won = {g: 0 for g in GROUPS}
    day, last = min(days), max(days)
    while day <= last:
        e = {g: entries[(day, g)] for g in GROUPS}
        c = {g: conversions[(day, g)] for g in GROUPS}
        for g in GROUPS:
            seen[g] += e[g]
            won[g] += c[g]
        rate = {g: (won[g] / seen[g] if seen[g] else None) for g in GROUPS}
        out.append(Day(day, e, c, rate))
        day += timedelta(days=1)
    return out
