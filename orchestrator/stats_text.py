"""Journey statistics as terminal tables. Shell: writes to a rich Console.

:func:`print_stats` prints everything ``journey stats`` shows; the pieces (``overview_table``,
``funnel_table``, ``channel_table``, ``exits_table``, ``credit_table``, ``experiment_tables``)
return rich renderables so other reports (the dry-run summary) can reuse them. A figure that
does not exist (no provider feedback in a dry-run) prints as ``–``, never as 0.
"""

from __future__ import annotations

from collections import Counter

from rich import box
from rich.console import Console, RenderableType
from rich.console import Group as RenderGroup
from rich.table import Table
from rich.text import Text

from .engine import CONVERSION_STEP, HOLDOUT_STEP
from .stats import JourneyStats
from .stats.experiments import Experiment, Versus
from .stats.funnel import Funnel

NONE = "–"
_EXIT_STEP = {HOLDOUT_STEP: "(holdout)", CONVERSION_STEP: "(steps done)"}


def _n(value: int | None) -> str:
    return NONE if value is None else f"{value:,}"


def _pct(value: float | None, digits: int = 1) -> str:
    return NONE if value is None else f"{value * 100:.{digits}f}%"


def _points(value: float) -> str:
    return f"{value * 100:+.1f}"


def _counts(counter: Counter[str] | dict[str, int], empty: str = "") -> str:
    """``email 40`` / ``push 10`` on separate lines, largest first."""
    items = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
    return "\n".join(f"{k} {v:,}" for k, v in items if v) or empty


def _table(title: str, *columns: tuple[str, str]) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD)
    for i, (name, justify) in enumerate(columns):
        # The first column names things (steps, groups, channels) and "reason count" lines are
        # never cut or wrapped.
        table.add_column(name, justify=justify, no_wrap=i == 0 or name in _NO_WRAP)  # type: ignore[arg-type]
    return table


_NO_WRAP = frozenset({"sent", "skipped", "credited"})


def header(stats: JourneyStats) -> Text:
    h = stats.history
    if h.since or h.until:
        since = f"{h.since:%Y-%m-%d %H:%M}" if h.since else "the start"
        until = f"{h.until:%Y-%m-%d %H:%M}" if h.until else "now"
        span = f"runs entered from {since} to {until} UTC"
    else:
        span = "all runs"
    kind = "dry-run" if h.simulated else "production"
    return Text.assemble(("Journey ", "bold"), (stats.journey, "bold cyan"),
                         f"  version {stats.version}  ", (f"{span} ({kind})", "dim"))


def overview_table(funnel: Funnel) -> Table:
    table = _table("Overview", ("what", "left"), ("count", "right"))
    table.show_header = False
    table.add_row("users", _n(funnel.users))
    table.add_row("runs", _n(funnel.runs))
    table.add_row("entries (restarts included)", _n(funnel.entries))
    if funnel.restarts:
        table.add_row("  of which restarts", _n(funnel.restarts))
    table.add_row("held out (control)", _n(funnel.held_out))
    table.add_row("messages sent", _n(funnel.sent_total))
    table.add_row("converted", _n(funnel.converted))
    if funnel.converted_held_out:
        table.add_row("  of which held out", _n(funnel.converted_held_out))
    if funnel.in_progress:
        table.add_row("still in the journey", _n(funnel.in_progress))
    return table


def funnel_table(funnel: Funnel) -> Table:
    table = _table(
        "Funnel by step",
        ("step", "left"), ("kind", "left"), ("reached", "right"), ("sent", "right"),
        ("skipped", "right"), ("deferred", "right"), ("delivered", "right"),
        ("bounced", "right"), ("opened", "right"), ("clicked", "right"),
        ("credited", "right"),
    )
    for row in funnel.steps:
        if row.kind == "send":
            table.add_row(
                row.step, row.kind, _n(row.reached), _counts(row.sent, "0"),
                _counts(row.skipped, "0"), _n(row.deferred), _n(row.delivered), _n(row.bounced),
                _n(row.opened), _n(row.clicked), _counts(row.credited, "0"),
            )
        elif row.kind == "split":  # the variants: the steps they lead to, and the experiments
            table.add_row(row.step, row.kind, _n(row.reached), "", "", "", "", "", "", "", "")
        else:
            table.add_row(row.step, row.kind, "" if row.reached is None else _n(row.reached),
                          "", "", "", "", "", "", "", "")
    return table


def channel_table(funnel: Funnel) -> Table:
    table = _table(
        "By channel", ("channel", "left"), ("sent", "right"), ("delivered", "right"),
        ("bounced", "right"), ("failed", "right"), ("opened", "right"), ("clicked", "right"),
        ("conversions credited", "right"),
    )
    for name, c in sorted(funnel.channels.items()):
        table.add_row(name, _n(c.sent), _n(c.delivered), _n(c.bounced), _n(c.failed),
                      _n(c.opened), _n(c.clicked), _n(c.credited))
    if not funnel.channels:
        table.add_row(Text("no message sent", style="dim"), "", "", "", "", "", "", "")
    return table


def exits_table(funnel: Funnel) -> Table:
    table = _table("Exits", ("reason", "left"), ("runs", "right"))
    for reason, n in sorted(funnel.exited.items(), key=lambda kv: (-kv[1], kv[0])):
        table.add_row(reason, _n(n))
    if funnel.in_progress:
        table.add_row(Text("(still in the journey)", style="dim"), _n(funnel.in_progress))
    return table


def credit_table(funnel: Funnel) -> Table:
    table = _table("Conversions credited (last touch)", ("credited to", "left"), ("conversions", "right"))
    table.add_row("this journey's messages", _n(funnel.credited_to_messages))
    table.add_row("no message (held out, bought before any message, or none delivered in the window)", _n(funnel.credited_to_no_message))
    for journey, n in sorted(funnel.credited_elsewhere.items()):
        table.add_row(f"another journey: {journey}", _n(n))
    if not funnel.credited_elsewhere:
        table.add_row("other journeys", "0")
    table.add_row(Text("total conversions", style="bold"), Text(_n(funnel.converted), style="bold"))
    return table


def groups_table(exp: Experiment, confidence: float) -> Table:
    table = _table(
        exp.title, ("group", "left"), ("users", "right"), ("conversions", "right"),
        ("rate", "right"), (f"{confidence:.0%} CI", "right"),
    )
    for g in exp.groups:
        table.add_row(g.name, _n(g.users), _n(g.conversions), _pct(g.rate) if g.users else NONE,
                      f"{_pct(g.ci[0])} – {_pct(g.ci[1])}" if g.users else NONE)
    return table


def comparisons_table(exp: Experiment, confidence: float) -> Table:
    table = _table(
        "", ("group", "left"), ("vs", "left"), ("difference (points)", "right"),
        (f"{confidence:.0%} CI (points)", "right"), ("lift", "right"), ("p-value", "right"),
        ("P(beats)", "right"), ("verdict", "left"),
    )
    for v in exp.comparisons:
        table.add_row(*_comparison_cells(v))
    return table


def _verdict_word(v: Versus) -> Text:
    if not v.enough_data:
        return Text("not enough data yet", style="dim")
    c = v.comparison
    if v.significant and c is not None:
        return Text("better" if c.difference > 0 else "worse", style="bold green" if c.difference > 0 else "bold red")
    return Text("no significant difference", style="yellow")


def _comparison_cells(v: Versus) -> list[RenderableType]:
    c = v.comparison
    if c is None:
        return [v.group, v.baseline, NONE, NONE, NONE, NONE, NONE, _verdict_word(v)]
    lo, hi = c.difference_ci
    return [
        v.group, v.baseline, _points(c.difference), f"{_points(lo)} to {_points(hi)}",
        NONE if c.lift is None else f"{c.lift:+.0%}",
        NONE if c.p_value is None else f"{c.p_value:.3g}",
        NONE if v.prob_beats_baseline is None else _pct(v.prob_beats_baseline),
        _verdict_word(v),
    ]


def experiment_tables(exp: Experiment, confidence: float) -> RenderableType:
    """The groups and the comparisons of one experiment (the sentences are printed apart, see
    :func:`verdict_lines`, so that they are never wrapped)."""
    parts: list[RenderableType] = [groups_table(exp, confidence)]
    if exp.comparisons:
        parts.append(comparisons_table(exp, confidence))
    if exp.assigned_by_hash:
        parts.append(Text(f"  {exp.assigned_by_hash:,} user(s) counted in the variant they were "
                          "assigned without reaching the split (intent to treat)", style="dim"))
    return RenderGroup(*parts)


def verdict_lines(exp: Experiment) -> list[Text]:
    """Every comparison's sentence, then the experiment's headline, in bold."""
    headline = exp.headline()
    lines = [Text(f"  · {v.verdict}", style="dim") for v in exp.comparisons if v.verdict != headline]
    lines.append(Text.assemble("  ", (headline, "bold")))
    return lines


def print_stats(stats: JourneyStats, console: Console) -> None:
    f = stats.funnel
    console.print(header(stats))
    for table in (overview_table(f), funnel_table(f), channel_table(f), exits_table(f), credit_table(f)):
        console.print()
        console.print(table)
    if not stats.experiments:
        console.print()
        console.print(Text("No experiment: the journey has no holdout and no split.", style="dim"))
    for exp in stats.experiments:
        console.print()
        console.print(experiment_tables(exp, stats.confidence))
        console.print()
        for line in verdict_lines(exp):
            console.print(line, soft_wrap=True)
