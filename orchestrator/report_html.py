"""The journey report: one self-contained HTML page a marketer opens to learn whether a journey
works. Core, but for the clock: :func:`render_report` turns a :class:`JourneyStats` into a
string and does no I/O (writing the file is the caller's job, ``journey report``); it reads the
clock only when it is not given ``generated_at``.

Owns the page: the header (journey, version, period, generated time, simulated or
production), the funnel, channel, exit and credit tables, the experiments with their verdicts,
and the number formats. The charts come from :mod:`orchestrator.report_charts` as inline SVG;
the layout is ``report_templates/report.html.j2``, rendered with autoescaping: the journey name,
step and variant names and verdicts are escaped, only the SVG we drew is marked safe. The page
loads nothing: no scripts, no fonts, no images, no external URLs, so it opens from file://,
offline, and prints.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from .report_charts import Chart, charts, experiment_key
from .stats import JourneyStats
from .stats.experiments import HOLDOUT, Experiment, Group, Versus

TEMPLATES = Path(__file__).with_name("report_templates")
NO_DATA = Markup('<span class="nodata" title="no data (no provider feedback)">no data</span>')


@dataclass(frozen=True)
class VerdictView:
    """A verdict with how it looks: ``state`` is better | worse | unclear | waiting | none."""

    text: str
    state: str
    badge: str
    versus: Versus | None = None


@dataclass(frozen=True)
class Row:
    """One comparison of an experiment: the verdict and the two groups compared."""

    verdict: VerdictView
    group: Group | None
    baseline: Group | None


@dataclass(frozen=True)
class ExperimentView:
    experiment: Experiment
    chart: Chart
    headline: VerdictView
    rows: list[Row]


def render_report(stats: JourneyStats, *, generated_at: datetime | None = None) -> str:
    """The report page for ``stats``, as one HTML document (UTF-8 text)."""
    moment = generated_at or datetime.now(UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    drawn = {c.key: c for c in charts(stats)}
    experiments = [ExperimentView(e, drawn[experiment_key(e)], headline(e), _rows(e))
                   for e in stats.experiments]
    h = stats.history
    page = _environment().get_template("report.html.j2").render(
        stats=stats,
        funnel=stats.funnel,
        simulated=h.simulated,
        since=_when(h.since) if h.since else None,
        until=_when(h.until) if h.until else None,
        days=(stats.daily[0].day, stats.daily[-1].day) if stats.daily else None,
        generated=_when(moment),
        funnel_chart=drawn["funnel"],
        daily_chart=drawn["daily"],
        experiments=experiments,
        glance=_glance(stats),
        exits=_shares(stats.funnel.exited),
        level=f"{stats.confidence:.0%}",
    )
    return page


def verdict_view(v: Versus) -> VerdictView:
    if not v.enough_data:
        return VerdictView(v.verdict, "waiting", "Not enough data yet", v)
    if v.significant and v.comparison is not None:
        if v.comparison.difference > 0:
            return VerdictView(v.verdict, "better", "Significant: better", v)
        return VerdictView(v.verdict, "worse", "Significant: worse", v)
    return VerdictView(v.verdict, "unclear", "No significant difference", v)


def headline(e: Experiment) -> VerdictView:
    text = e.headline()
    v = next((v for v in e.comparisons if v.verdict == text), None)
    return verdict_view(v) if v is not None else VerdictView(text, "none", "No comparison")


def _rows(e: Experiment) -> list[Row]:
    groups = {g.name: g for g in e.groups}
    return [Row(verdict_view(v), groups.get(v.group), groups.get(v.baseline))
            for v in e.comparisons]


def _glance(stats: JourneyStats) -> dict[str, Any]:
    """The numbers at the top of the page."""
    f = stats.funnel
    holdout = next((e for e in stats.experiments if e.kind == "holdout"), None)
    groups = {g.name: g for g in holdout.groups} if holdout else {}
    return {
        "users": f.users,
        "entries": f.entries,
        "sent": f.sent_total,
        "converted": f.converted,
        "treated": groups.get("treated"),
        "holdout": groups.get(HOLDOUT),
        "headline": headline(holdout) if holdout else None,
        "in_progress": f.in_progress,
    }


def _shares(counts: dict[str, int]) -> list[tuple[str, int, float]]:
    total = sum(counts.values())
    return [(k, n, n / total) for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def _when(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


# -- formats (Jinja filters) -------------------------------------------------------------------

def count(n: int | None) -> str | Markup:
    return NO_DATA if n is None else f"{n:,}"


def pct(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{x * 100:.{digits}f}%"


def share(n: int | None, total: int | None) -> str:
    """``n`` as a percentage of ``total`` (empty when either is missing or total is 0)."""
    return "" if n is None or not total else f"{n / total:.0%}"


def interval(ci: Iterable[float], points: bool = False) -> str:
    lo, hi = ci
    if points:
        return f"{lo * 100:+.1f} to {hi * 100:+.1f} pts"
    return f"{lo * 100:.1f}% – {hi * 100:.1f}%"


def signed_points(x: float) -> str:
    return f"{x * 100:+.1f} pts"


def signed_pct(x: float | None) -> str:
    return "–" if x is None else f"{x:+.0%}"


def pvalue(p: float | None) -> str:
    if p is None:
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def breakdown(counter: dict[str, int]) -> str:
    """``{"email": 3, "push": 1}`` -> ``email 3 · push 1`` (``–`` when empty)."""
    items = [(k, n) for k, n in sorted(counter.items()) if n]
    return " · ".join(f"{k} {n:,}" for k, n in items) or "–"


@lru_cache(maxsize=1)
def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES),
                      autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(count=count, pct=pct, share=share, interval=interval,
                       points=signed_points, lift=signed_pct, pvalue=pvalue, breakdown=breakdown)
    return env
