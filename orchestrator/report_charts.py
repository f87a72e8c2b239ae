"""The charts of the HTML journey report, as inline SVG. Core: a :class:`JourneyStats` (or part
of it) in, SVG text out; no files, no display, no pyplot (``matplotlib.figure.Figure`` only).

Owns what the charts look like and how they are made safe to inline in a page:

* :func:`funnel_chart` - horizontal bars: entered, held out, then per step reached, sent,
  delivered, opened, clicked, conversions credited (``None`` means no data and is said, not
  drawn as 0), and conversions overall;
* :func:`daily_chart` - entries and conversions per day for treated and held-out users, and the
  cumulative conversion rate;
* :func:`experiment_chart` - the conversion rate of each group of an experiment with its
  confidence interval, the holdout drawn apart (grey, hatched, and as a dashed baseline).

The output is deterministic (``svg.hashsalt`` fixed for the duration of ``savefig`` through
``matplotlib.rc_context``, no date), every ``id`` in an SVG is prefixed
with the chart's key so several SVGs can share one page, and the parts tests look for carry
ids of the form ``<key>-bar-<n>``, ``<key>-ci-<n>``, ``<key>-entries-<group>-<n>``... Labels are
passed through :func:`_plain` so a ``$`` in a name is never read as mathtext.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from html import escape
from typing import Any, Literal

import matplotlib
import matplotlib.dates
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.legend_handler import HandlerTuple
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator, PercentFormatter

from .stats import JourneyStats
from .stats.daily import Day
from .stats.experiments import HOLDOUT, Experiment
from .stats.funnel import Funnel

_DATES: Any = matplotlib.dates  # its functions have no type annotations

# Colour-blind safe (Okabe-Ito) where colours carry meaning; grey is always the holdout.
COLORS = {
    "entered": "#1f4e79", "holdout": "#8c8c8c", "reached": "#7fa7cf", "sent": "#0072b2",
    "delivered": "#009e73", "opened": "#56b4e9", "clicked": "#cc79a7", "credited": "#e69f00",
    "variant": "#b8a9d9", "converted": "#d55e00", "nodata": "#777777",
}
GROUP_COLORS = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442")
TREATED_COLOR = "#0072b2"
HOLDOUT_FILL = "#d9d9d9"
TEXT = "#222222"
MUTED = "#666666"
_RC: dict[str, Any] = {
    "svg.hashsalt": "journey-report",  # stable ids: the same stats give the same page
    "svg.fonttype": "path",  # glyphs as paths: looks the same with no fonts installed
    "font.size": 9.5,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.labelcolor": TEXT,
    "axes.edgecolor": "#999999",
    "xtick.color": MUTED,
    "ytick.color": TEXT,
    "hatch.color": "#555555",
}
_GROUP = {"treated": ("treated", TREATED_COLOR),
          "holdout": ("held out (control)", COLORS["holdout"])}
WIDE, NARROW = 10.0, 6.4  # inches: a full-width chart, a chart beside a table (1 in = 96 px)


@dataclass(frozen=True)
class Chart:
    key: str  # the figure's data-chart: funnel | daily | experiment-<step or holdout>
    title: str  # the SVG's <title> and aria-label
    svg: str  # trusted markup, made here
    empty: bool = False  # drawn as "no data yet"


@dataclass(frozen=True)
class FunnelRow:
    label: str
    value: int | None  # None: no data (not zero)
    kind: str  # a COLORS key
    note: str = ""  # said instead of a bar when value is None
    group: str = ""  # the step the row belongs to ("" for journey-wide rows)


def charts(stats: JourneyStats) -> list[Chart]:
    """Every chart of the report, in page order."""
    return ([funnel_chart(stats.funnel), daily_chart(stats.daily)]
            + [experiment_chart(e, stats.confidence) for e in stats.experiments])


def experiment_key(exp: Experiment) -> str:
    return "experiment-" + (exp.step if exp.kind == "split" and exp.step else "holdout")


# -- funnel ------------------------------------------------------------------------------------

def funnel_rows(funnel: Funnel) -> list[FunnelRow]:
    """The funnel chart's bars, top to bottom."""
    rows = [FunnelRow("entered", funnel.entries, "entered"),
            FunnelRow("held out (control)", funnel.held_out_entries, "holdout")]
    for step in funnel.steps:
        at = step.step
        if step.kind != "send":
            if step.reached is not None:
                rows.append(FunnelRow(f"{at}: reached", step.reached, "reached", group=at))
            rows += [FunnelRow(f"{at} \u2192 {variant}", n, "variant", group=at)
                     for variant, n in sorted(step.variants.items())]
            continue
        rows += [FunnelRow(f"{at}: reached", step.reached, "reached", group=at),
                 FunnelRow(f"{at}: sent", sum(step.sent.values()), "sent", group=at)]
        feedback = {"delivered": step.delivered, "opened": step.opened, "clicked": step.clicked}
        if all(v is None for v in feedback.values()):
            why = ("a dry-run has no provider feedback" if funnel.simulated
                   else "no provider feedback")
            rows.append(FunnelRow(f"{at}: delivered, opened, clicked", None, "nodata",
                                  f"no data: {why}", at))
        else:
            rows += [FunnelRow(f"{at}: {metric}", value, metric, "no data", at)
                     for metric, value in feedback.items()]
        rows.append(FunnelRow(f"{at}: conversions credited", sum(step.credited.values()),
                              "credited", group=at))
    held = f" (incl. {funnel.converted_held_out:,} held out)" if funnel.converted_held_out else ""
    rows.append(FunnelRow(f"converted{held}", funnel.converted, "converted"))
    return rows


def funnel_chart(funnel: Funnel) -> Chart:
    key, title = "funnel", f"Funnel of journey {funnel.journey}"
    if funnel.entries == 0:
        return _empty(key, title, "No data yet: nobody has entered this journey.")
    rows = funnel_rows(funnel)
    fig = Figure(figsize=(WIDE, 1.0 + 0.25 * len(rows)), layout="constrained")
    ax = fig.add_subplot()
    top = max(r.value or 0 for r in rows) or 1
    for y, row in enumerate(rows):
        if row.value is None:
            ax.text(top * 0.01, y, _plain(row.note), va="center", ha="left", color=MUTED,
                    style="italic", gid=f"nodata-{y}")
            continue
        ax.barh(y, row.value, height=0.7, color=COLORS[row.kind], gid=f"bar-{y}")
        share = f"  ({row.value / funnel.entries:.1%} of entries)" if row.kind != "entered" else ""
        ax.text(row.value + top * 0.01, y, f"{row.value:,}{share}", va="center", ha="left",
                color=TEXT, fontsize=8.5)
    _stripes(ax, rows)
    ax.set_yticks(range(len(rows)), [_plain(r.label) for r in rows])
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlim(0, top * 1.32)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("runs (entries, restarts included)")
    ax.set_title("How far runs got", loc="left")
    _tidy(ax, grid="x")
    return Chart(key, title, _svg(fig, key, title))


def _stripes(ax: Axes, rows: list[FunnelRow]) -> None:
    """Shade every other step's rows, so that a step's bars read as one group."""
    steps = list(dict.fromkeys(r.group for r in rows if r.group))
    for n, step in enumerate(steps):
        at = [i for i, r in enumerate(rows) if r.group == step]
        if n % 2 == 0:
            ax.axhspan(at[0] - 0.5, at[-1] + 0.5, color="#eef2f7", zorder=0, linewidth=0)


# -- conversions per day -----------------------------------------------------------------------

def daily_chart(days: list[Day]) -> Chart:
    key, title = "daily", "Entries, conversions and cumulative conversion rate per day"
    if not days:
        return _empty(key, title, "No data yet: no entries or conversions.")
    groups = ["treated"] + (["holdout"] if any(d.entries["holdout"] or d.conversions["holdout"]
                                               for d in days) else [])
    fig = Figure(figsize=(WIDE, 6.6), layout="constrained")
    ax_in, ax_conv, ax_rate = fig.subplots(3, 1, sharex=True, height_ratios=[1, 1, 1.2])
    x = [float(v) for v in _DATES.date2num([d.day for d in days])]
    width = 0.8 / len(groups)
    for j, g in enumerate(groups):
        offset = (j - (len(groups) - 1) / 2) * width
        for ax, part, values in ((ax_in, "entries", [d.entries[g] for d in days]),
                                 (ax_conv, "conversions", [d.conversions[g] for d in days])):
            bars = ax.bar([v + offset for v in x], values, width=width, color=_GROUP[g][1],
                          hatch="///" if g == "holdout" else None,
                          edgecolor="white" if g == "treated" else "#555555", linewidth=0.3)
            for n, bar in enumerate(bars):
                bar.set_gid(f"{part}-{g}-{n}")
    _rate_lines(ax_rate, x, days, groups)
    for ax, what, unit in ((ax_in, "Entries per day", "runs entered"),
                           (ax_conv, "Conversions per day", "conversions")):
        ax.set_title(what, loc="left")
        ax.set_ylabel(unit)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(0, max(1.0, ax.get_ylim()[1]))
        _tidy(ax, grid="y")
    ax_rate.set_xlabel("day (UTC)")
    span = x[-1] - x[0]
    locator = (_DATES.DayLocator(interval=max(1, round(span / 10))) if span <= 70
               else _DATES.AutoDateLocator())
    ax_rate.xaxis.set_major_locator(locator)
    ax_rate.xaxis.set_major_formatter(_DATES.ConciseDateFormatter(locator))
    right = max(x[-1] + max(1.6, span / 10), x[0] + 7)  # a week at least, room for the labels
    ax_rate.set_xlim(x[0] - 0.7, right)
    _tidy(ax_rate, grid="y")
    if not any(d.conversions[g] for d in days for g in groups):
        ax_conv.text(0.5, 0.5, "no conversions yet", transform=ax_conv.transAxes, ha="center",
                     va="center", color=MUTED, style="italic", gid="nodata")
    # one legend entry per group: its bar and its line side by side
    handles: Any = [(Patch(facecolor=_GROUP[g][1], hatch="///" if g == "holdout" else None,
                           edgecolor="#555555" if g == "holdout" else _GROUP[g][1]),
                     Line2D([], [], color=_GROUP[g][1], linewidth=2,
                            linestyle="--" if g == "holdout" else "-")) for g in groups]
    fig.legend(handles, [_GROUP[g][0] for g in groups], loc="outside upper right",
               ncols=len(groups), frameon=False, handler_map={tuple: HandlerTuple(ndivide=None)},
               handlelength=4)
    return Chart(key, title, _svg(fig, key, title))


def _rate_lines(ax: Axes, x: list[float], days: list[Day], groups: list[str]) -> None:
    """The cumulative conversion rate of each group, its last value written at the end."""
    last: dict[str, float] = {}
    for g in groups:
        rates = [d.cumulative_rate[g] for d in days]
        (line,) = ax.plot(x, [float("nan") if r is None else r for r in rates],
                          color=_GROUP[g][1], marker="o" if len(days) <= 31 else None,
                          markersize=3.5, linewidth=2, linestyle="--" if g == "holdout" else "-")
        line.set_gid(f"rate-{g}")
        known = [r for r in rates if r is not None]
        if known:
            last[g] = known[-1]
    top = max([r for d in days for r in d.cumulative_rate.values() if r is not None] or [0.0])
    ax.set_ylim(0, max(0.05, top * 1.15))
    # Two labels at (nearly) the same height would overlap: the higher goes up, the other down.
    ranked = sorted(last, key=lambda g: (last[g], g == "treated"), reverse=True)
    close = len(ranked) == 2 and last[ranked[0]] - last[ranked[1]] < 0.06 * max(0.05, top)
    for n, g in enumerate(ranked):
        dy = (6 if n == 0 else -6) if close else 0
        ax.annotate(f"{last[g]:.1%}", (x[-1], last[g]), xytext=(6, dy),
                    textcoords="offset points", va="center", color=_GROUP[g][1],
                    fontweight="bold")
    ax.set_title("Cumulative conversion rate (conversions so far / entries so far)", loc="left")
    ax.set_ylabel("conversion rate")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0 if top > 0.05 else 1))


# -- experiments -------------------------------------------------------------------------------

def experiment_chart(exp: Experiment, confidence: float = 0.95) -> Chart:
    key = experiment_key(exp)
    title = f"{exp.title}: conversion rate per group with {confidence:.0%} confidence intervals"
    groups = exp.groups
    if not any(g.users for g in groups):
        return _empty(key, title, "No data yet: no users in this experiment.")
    level = f"{confidence:.0%}"
    fig = Figure(figsize=(NARROW, 1.9 + 0.55 * len(groups)), layout="constrained")
    ax = fig.add_subplot()
    colors = iter(GROUP_COLORS)
    for i, g in enumerate(groups):
        if g.users == 0:
            ax.text(0, i, "  no users yet", va="center", color=MUTED, style="italic",
                    gid=f"nodata-{i}")
            continue
        control = g.name == HOLDOUT
        ax.barh(i, g.rate, height=0.6, color=HOLDOUT_FILL if control else next(colors),
                hatch="///" if control else None, edgecolor="#555555" if control else "none",
                gid=f"bar-{i}")
        lo, hi = g.ci
        err = ax.errorbar(g.rate, i, xerr=[[max(0.0, g.rate - lo)], [max(0.0, hi - g.rate)]],
                          fmt="none", ecolor=TEXT, elinewidth=1.4, capsize=5, capthick=1.4)
        for lines in err.lines[2]:
            lines.set_gid(f"ci-{i}")
        ax.text(1.01, i, f"{g.rate:.1%}  ({level} CI {lo:.1%} \u2013 {hi:.1%})\n"
                         f"{g.conversions:,} of {g.users:,} users",
                va="center", ha="left", fontsize=8.5, color=TEXT,
                transform=ax.get_yaxis_transform())
    baseline = next((g for g in groups if g.name == HOLDOUT and g.users), None)
    if baseline is not None:
        ax.axvline(baseline.rate, color="#555555", linestyle="--", linewidth=1, zorder=0,
                   gid="baseline")
    ax.set_yticks(range(len(groups)),
                  [_plain("holdout (control)" if g.name == HOLDOUT else g.name) for g in groups])
    ax.set_ylim(len(groups) - 0.5, -0.5)
    top = max(g.ci[1] for g in groups if g.users)
    ax.set_xlim(0, min(1.0, top * 1.1) or 1.0)
    ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0 if top > 0.05 else 1))
    ax.set_xlabel("conversion rate (users who converted within the conversion window)")
    ax.set_title(_plain(exp.title), loc="left")
    handles: list[Artist] = [
        Patch(color=TREATED_COLOR, label="treated group / variant"),
        Line2D([], [], color=TEXT, marker="|", markersize=9, linewidth=1.4,
               label=f"{level} confidence interval")]
    if baseline is not None:
        handles[1:1] = [Patch(facecolor=HOLDOUT_FILL, hatch="///", edgecolor="#555555",
                              label="holdout (received nothing)"),
                        Line2D([], [], color="#555555", linestyle="--", label="holdout rate")]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, frameon=False,
               fontsize=8.5)
    _tidy(ax, grid="x")
    return Chart(key, title, _svg(fig, key, title))


# -- shared ------------------------------------------------------------------------------------

def _plain(text: str) -> str:
    """``text`` drawn as it is: a ``$`` would otherwise start mathtext."""
    return text.replace("$", r"\$")


def _tidy(ax: Axes, *, grid: Literal["x", "y"]) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis=grid, color="#e3e3e3", linewidth=0.8)
    ax.set_axisbelow(True)


def _empty(key: str, title: str, message: str) -> Chart:
    fig = Figure(figsize=(NARROW, 1.2))
    fig.text(0.5, 0.5, message, ha="center", va="center", color=MUTED, fontsize=12,
             style="italic", gid="nodata")
    return Chart(key, title, _svg(fig, key, title), empty=True)


_ID = re.compile(r'(\bid="|url\(#|href="#)([^")]+)')


def _svg(fig: Figure, key: str, title: str) -> str:
    """``fig`` as an ``<svg>`` element to inline: no XML prolog or doctype, no metadata, ids
    prefixed with ``key``, a ``<title>`` and ``role="img"`` with an aria-label."""
    buf = io.StringIO()
    with matplotlib.rc_context(_RC):  # type: ignore[arg-type]
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None,
                                                 "Format": None, "Type": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.DOTALL)
    prefix = re.sub(r"[^A-Za-z0-9_-]", "_", key) + "-"
    ids = set(re.findall(r'\bid="([^"]+)"', text))
    text = _ID.sub(lambda m: m[1] + prefix + m[2] if m[2] in ids else m[0], text)
    label = escape(title, quote=True)
    head, rest = text.split(">", 1)
    return (f'{head} role="img" aria-label="{label}">\n<title>{label}</title>{rest}').strip()


