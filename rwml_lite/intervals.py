"""95 % intervals over tasks, for the numbers a run reports: task success and world-model hit rates.

Why over tasks: the evaluation replays the same games in every run (TextWorldExpress and ALFWorld games
are deterministic), so a +- over runs measures the agent's sampling, not how the number would move on
other games. The unit that varies is the task: a game, a tau2 task, the held-out game a triplet comes
from. Several observations of one task (runs, triplets, predictions) are correlated, so they form a
cluster, and the interval uses the spread between clusters:

- `wilson`: the score interval of a binomial proportion, for success over games (each game one trial,
  weighted by its share of won runs). It stays inside [0, 1] and is honest at 0/n and n/n.
- `clustered_mean`: the mean of all observations with a cluster-robust standard error and Student's t
  with (clusters - 1) degrees of freedom, for hit rates over the triplets of held-out tasks.
- `paired_difference`: the same for the difference of two policies on the same observations
  (a paired comparison: the tasks' own difficulty cancels out).
- `sign_test`: tasks where one policy did better, worse, the same, and the exact two-sided p-value.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile


@dataclass(frozen=True)
class Estimate:
    """A mean with its 95 % interval (nan when fewer than two clusters give no spread) over `units` clusters."""

    mean: float
    low: float
    high: float
    units: int

    def as_dict(self) -> dict:
        """The estimate as JSON holds it: a missing interval as null."""
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


def wilson(successes: float, n: int) -> tuple[float, float]:
    """The Wilson score 95 % interval of `successes` out of `n` trials (successes may be fractional: a
    game won in 2 of 3 runs counts 2/3)."""
    if n <= 0:
        return (math.nan, math.nan)
    p, z2 = successes / n, Z95**2
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def clustered_mean(clusters: list[list[float]]) -> Estimate:
    """The mean of every value, with a 95 % interval from the spread between clusters (the ratio
    estimator's cluster-robust variance, G / (G - 1) * sum_g (s_g - mean * m_g)^2 / M^2, and t with G - 1
    degrees of freedom). With clusters of equal size it is the t interval of the cluster means."""
    clusters = [c for c in clusters if c]
    total = sum(len(c) for c in clusters)
    if not total:
        return Estimate(math.nan, math.nan, math.nan, 0)
    mean = sum(sum(c) for c in clusters) / total
    g = len(clusters)
    if g < 2:
        return Estimate(mean, math.nan, math.nan, g)
    from scipy.stats import t

    variance = g / (g - 1) * sum((sum(c) - mean * len(c)) ** 2 for c in clusters) / total**2
    half = float(t.ppf(0.975, g - 1)) * math.sqrt(variance)
    return Estimate(mean, mean - half, mean + half, g)


def paired_difference(a: list[list[float]], b: list[list[float]]) -> Estimate:
    """Mean of a - b over paired observations (the same clusters, the same positions), with its
    cluster-robust 95 % interval."""
    if [len(c) for c in a] != [len(c) for c in b]:
        raise ValueError("a paired difference needs the same observations on both sides")
    return clustered_mean([[x - y for x, y in zip(ca, cb)] for ca, cb in zip(a, b)])


def sign_test(a: list[float], b: list[float]) -> dict:
    """Units where a > b, a < b and a == b, and the exact two-sided binomial p-value of the units that differ
    (1.0 when none does)."""
    better = sum(x > y for x, y in zip(a, b))
    worse = sum(x < y for x, y in zip(a, b))
    n = better + worse
    if n == 0:
        p = 1.0
    else:
        from scipy.stats import binomtest

        p = float(binomtest(better, n, 0.5).pvalue)
    return {"better": better, "worse": worse, "same": len(a) - n, "p": p}
