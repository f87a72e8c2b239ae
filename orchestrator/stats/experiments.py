"""A journey's experiments: the holdout, and each split. Core: pure.

The unit is the user (not the run): a user is in the holdout group if their runs were held
out, and converted if a goal event ended one of their runs inside the conversion window (an
``exit`` step marked ``converted: true`` counts in the funnel but not here: held-out runs never
reach exit steps, so it would favour the treated group). Groups:

* **holdout experiment**: everyone treated against everyone held out;
* **split experiment**: every treated user in the variant the split assigns them — whether or
  not they reached the split ("intent to treat"; the assignment is a hash of journey, user and
  step, so it is known for everyone). Counting only users who reached the split would drop
  those who converted before it from the variants but not from the holdout, and make every
  variant look worse than it is. The holdout group is shown alongside as the baseline.

Each comparison gives the difference in conversion rate with its confidence interval, the
relative lift, the two-sided two-proportion z-test, and the probability that the group beats
its baseline (Beta(1+conversions, 1+non-conversions) posteriors, computed exactly). Below
``min_users`` users in either group, or ``min_conversions`` conversions in both together, the
verdict is "not enough data yet" and no significance is claimed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations
from statistics import NormalDist
from typing import Any

from ..engine import pick_variant
from ..machine import Machine, SplitState
from .facts import History
from .significance import Comparison, compare, wilson

MIN_USERS = 100
MIN_CONVERSIONS = 10
HOLDOUT = "holdout"
TREATED = "treated"


@dataclass(frozen=True)
class Group:
    name: str
    users: int
    conversions: int
    ci: tuple[float, float]

    @property
    def rate(self) -> float:
        return self.conversions / self.users if self.users else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "users": self.users, "conversions": self.conversions,
                "rate": self.rate, "ci": list(self.ci)}


@dataclass(frozen=True)
class Versus:
    group: str
    baseline: str
    enough_data: bool
    verdict: str
    significant: bool = False
    comparison: Comparison | None = None
    prob_beats_baseline: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"group": self.group, "baseline": self.baseline,
                               "enough_data": self.enough_data, "significant": self.significant,
                               "verdict": self.verdict,
                               "prob_beats_baseline": self.prob_beats_baseline}
        c = self.comparison
        if c is not None:
            out |= {"difference": c.difference, "difference_ci": list(c.difference_ci),
                    "lift": c.lift, "z": c.z, "p_value": c.p_value}
        return out


@dataclass
class Experiment:
    kind: str  # holdout | split
    step: str | None  # the split step
    groups: list[Group]
    comparisons: list[Versus] = field(default_factory=list)
    assigned_by_hash: int = 0  # users placed in a variant without reaching the split

    @property
    def title(self) -> str:
        return "Holdout: treated vs held out" if self.kind == "holdout" else f"Split '{self.step}'"

    def headline(self) -> str:
        """One sentence: the best group against the holdout (or the first comparison)."""
        against_holdout = [v for v in self.comparisons if v.baseline == HOLDOUT]
        pool = against_holdout or self.comparisons
        if not pool:
            return "no comparison: the journey has no holdout group and a single variant"
        best = max(pool, key=lambda v: (v.comparison.difference if v.comparison else -1.0))
        return best.verdict

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "step": self.step, "title": self.title,
                "groups": [g.to_dict() for g in self.groups],
                "comparisons": [v.to_dict() for v in self.comparisons],
                "assigned_by_hash": self.assigned_by_hash, "headline": self.headline()}


def prob_beats(conv_a: int, n_a: int, conv_b: int, n_b: int) -> float:
    """P(rate_a > rate_b) with uniform priors: Beta(1+conversions, 1+non-conversions)
    posteriors. Exact (Evan Miller's closed form, a sum over one group's conversions) up to
    ``_EXACT_UP_TO`` conversions; beyond that the normal approximation is as good."""
    aa, ba, ab, bb = 1 + conv_a, 1 + n_a - conv_a, 1 + conv_b, 1 + n_b - conv_b
    if aa > _EXACT_UP_TO:
        ma, va = aa / (aa + ba), aa * ba / ((aa + ba) ** 2 * (aa + ba + 1))
        mb, vb = ab / (ab + bb), ab * bb / ((ab + bb) ** 2 * (ab + bb + 1))
        return NormalDist().cdf((ma - mb) / math.sqrt(va + vb))

    def lbeta(x: float, y: float) -> float:
        return math.lgamma(x) + math.lgamma(y) - math.lgamma(x + y)

    base = -lbeta(ab, bb)
    total = 0.0
    for i in range(aa):  # P(B < A) = sum_i B(ab+i, bb+ba) / ((ba+i) B(1+i, ba) B(ab, bb))
        total += math.exp(lbeta(ab + i, bb + ba) - math.log(ba + i) - lbeta(1 + i, ba) + base)
    return min(1.0, max(0.0, total))


_EXACT_UP_TO = 20_000


def versus(a: Group, base: Group, *, confidence: float, min_users: int,
           min_conversions: int) -> Versus:
    small = [g for g in (a, base) if g.users < min_users]
    if small:
        g = min(small, key=lambda g: g.users)
        why = f"'{g.name}' has {g.users} user{'s' * (g.users != 1)}, need {min_users}"
        return Versus(a.name, base.name, False, f"not enough data yet: {why}")
    total = a.conversions + base.conversions
    if total < min_conversions:
        return Versus(a.name, base.name, False,
                      f"not enough data yet: {total} conversion{'s' * (total != 1)} in "
                      f"'{a.name}' and '{base.name}' together, need {min_conversions}")
    c = compare(a.conversions, a.users, base.conversions, base.users, confidence)
    p_beat = prob_beats(a.conversions, a.users, base.conversions, base.users)
    points = f"{c.difference * 100:+.1f} points"
    lift = f", lift {c.lift:+.0%}" if c.lift is not None else ""
    level = f"{confidence:.0%}"
    if c.p_value is None:
        return Versus(a.name, base.name, True, f"no difference: '{a.name}' and '{base.name}' "
                      "convert at the same rate (all or none converted)", False, c, p_beat)
    significant = c.p_value < 1 - confidence
    p = f"p = {c.p_value:.3g}" if c.p_value >= 1e-16 else "p < 1e-16"
    if significant:
        better = "better" if c.difference > 0 else "worse"
        verdict = (f"'{a.name}' converts {better} than '{base.name}': {points}{lift}, {p}, "
                   f"significant at {level}")
    else:
        verdict = (f"no significant difference between '{a.name}' and '{base.name}' yet: "
                   f"{points}{lift}, {p} (needs p < {1 - confidence:.2g})")
    return Versus(a.name, base.name, True, verdict, significant, c, p_beat)


def build_experiments(machine: Machine, history: History, *, confidence: float = 0.95,
                      min_users: int = MIN_USERS,
                      min_conversions: int = MIN_CONVERSIONS) -> list[Experiment]:
    # Users: held out if their first run was, converted if any run converted.
    held: dict[str, bool] = {}
    converted: dict[str, bool] = {}
    taken: dict[str, dict[str, str]] = {}  # user -> split step -> variant actually taken
    for r in sorted(history.runs, key=lambda r: r.entered_at):
        held.setdefault(r.user_id, r.holdout)
        # Goals only: an ``exit`` step marked ``converted`` is reached by treated runs alone,
        # so counting it would hand the treated group conversions the holdout cannot have.
        goal = r.converted and (r.exit_reason or "").startswith("goal:")
        converted[r.user_id] = converted.get(r.user_id, False) or goal
        for step, variant in r.variants:
            taken.setdefault(r.user_id, {}).setdefault(step, variant)

    def group(name: str, users: list[str]) -> Group:
        k = sum(converted[u] for u in users)
        return Group(name, len(users), k, wilson(k, len(users), confidence))

    def vs(a: Group, base: Group) -> Versus:
        return versus(a, base, confidence=confidence, min_users=min_users,
                      min_conversions=min_conversions)

    holdout_users = sorted(u for u, h in held.items() if h)
    treated_users = sorted(u for u, h in held.items() if not h)
    holdout = group(HOLDOUT, holdout_users)
    out: list[Experiment] = []
    if machine.holdout > 0 or holdout_users:
        treated = group(TREATED, treated_users)
        out.append(Experiment("holdout", None, [treated, holdout],
                              [vs(treated, holdout)]))
    for step, state in machine.states.items():
        if not isinstance(state, SplitState):
            continue
        members: dict[str, list[str]] = {name: [] for name, _, _ in state.variants}
        by_hash = 0
        for u in treated_users:
            chosen = taken.get(u, {}).get(step)
            if chosen is None:
                chosen = pick_variant(machine.journey, u, step, state)[0]
                by_hash += 1
            members.setdefault(chosen, []).append(u)
        groups = [group(name, users) for name, users in members.items()]
        comparisons: list[Versus] = []
        if holdout_users:
            comparisons += [vs(g, holdout) for g in groups]
        comparisons += [vs(b, a) for a, b in combinations(groups, 2)]
        if holdout_users:
            groups.append(holdout)
        out.append(Experiment("split", step, groups, comparisons, by_hash))
    return out
