"""Confidence intervals and significance tests for conversion rates. Core: pure arithmetic on
counts (the standard library's ``NormalDist``; SciPy checks these figures in the tests).

* :func:`wilson` — the Wilson score interval for one rate: unlike the textbook ``p ± z·se`` it
  stays inside [0, 1] and behaves for small counts and rates near 0.
* :func:`compare` — two groups: the difference in rates with Newcombe's hybrid score interval
  (built from the two Wilson intervals: unlike the Wald interval it does not collapse at 0% or
  100%, and it agrees with the test far better on small or lopsided groups), the relative
  lift, and the two-sided two-proportion z-test (pooled standard error), which is the
  chi-squared test of the 2×2 table without continuity correction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

_NORMAL = NormalDist()


def z_for(confidence: float) -> float:
    return _NORMAL.inv_cdf(0.5 + confidence / 2)


def wilson(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    z = z_for(confidence)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class Comparison:
    """Group ``a`` against the ``baseline`` group."""

    rate_a: float
    rate_baseline: float
    difference: float  # rate_a - rate_baseline, in absolute terms (0.02 = 2 points)
    difference_ci: tuple[float, float]
    lift: float | None  # difference / rate_baseline; None when the baseline rate is 0
    z: float | None  # None when the test is undefined (no conversions, or all converted)
    p_value: float | None


def compare(
    conv_a: int, n_a: int, conv_base: int, n_base: int, confidence: float = 0.95
) -> Comparison:
    if n_a == 0 or n_base == 0:
        raise ValueError("both groups need at least one user")
    pa, pb = conv_a / n_a, conv_base / n_base
    diff = pa - pb
    la, ua = wilson(conv_a, n_a, confidence)
    lb, ub = wilson(conv_base, n_base, confidence)
    ci = (diff - math.sqrt((pa - la) ** 2 + (ub - pb) ** 2),
          diff + math.sqrt((ua - pa) ** 2 + (pb - lb) ** 2))
    pooled = (conv_a + conv_base) / (n_a + n_base)
    se_pooled = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_base))
    if se_pooled == 0:
        z = p_value = None
    else:
        z = diff / se_pooled
        p_value = math.erfc(abs(z) / math.sqrt(2))  # two-sided: 2 * (1 - Phi(|z|))
    lift = diff / pb if pb > 0 else None
    return Comparison(pa, pb, diff, ci, lift, z, p_value)
