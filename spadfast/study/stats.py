"""Statistics of the SPAD study with the training run as the unit.

A *unit* is one (fold, seed) pair: the variant and the reference were trained on the same split with the same seed
and evaluated with the same sampling noise. Per unit, the difference is the mean over the held-out images of the
per-image difference (images where either value is not finite are skipped). Over units:

- :func:`t_interval`: mean paired difference with its two-sided 95 % t-interval (n - 1 degrees of freedom).
- :func:`hierarchical_bootstrap`: percentile interval of the same mean when seeds are resampled within each fold and
  images within each resampled run (folds are the design and are kept).
- :func:`holm`: Holm's step-down adjustment of p-values for the secondary comparisons.
- :func:`verdict`: ``"null"`` when the whole interval lies within +-``margin``, ``"higher"``/``"lower"`` when it
  excludes 0, else ``"inconclusive"``.

Image-level standard errors describe one run's spread only; they are never used as the unit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["unit_differences", "t_interval", "hierarchical_bootstrap", "holm", "verdict"]

Unit = tuple[str, int]  # (fold, seed)


def unit_differences(
    variant: Mapping[Unit, Mapping[str, float]], reference: Mapping[Unit, Mapping[str, float]]
) -> dict[Unit, np.ndarray]:
    """Per unit present in both: the per-image differences ``variant - reference`` (float64, finite pairs only)."""
    out = {}
    for unit, cases in variant.items():
        ref = reference.get(unit)
        if ref is None:
            continue
        d = np.array([v - ref[name] for name, v in sorted(cases.items()) if name in ref], dtype=np.float64)
        d = d[np.isfinite(d)]
        if d.size:
            out[unit] = d
    return out


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)`` of the two-sided t-interval; NaN bounds with fewer than 2 values."""
    from scipy import stats

    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(a.mean())
    if a.size < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + level / 2, a.size - 1)) * float(a.std(ddof=1)) / math.sqrt(a.size)
    return mean, mean - half, mean + half


def t_pvalue(values: Sequence[float]) -> float:
    """Two-sided one-sample t-test p-value of mean 0 (NaN with fewer than 2 values or zero spread)."""
    from scipy import stats

    a = np.asarray(values, dtype=np.float64)
    if a.size < 2 or a.std(ddof=1) == 0:
        return math.nan
    return float(stats.ttest_1samp(a, 0.0).pvalue)


def hierarchical_bootstrap(
    diffs: Mapping[Unit, np.ndarray], n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of the mean unit difference, resampling seeds within folds, then images within runs."""
    rng = np.random.default_rng(seed)
    folds: dict[str, list[np.ndarray]] = {}
    for (fold, _), d in sorted(diffs.items()):
        folds.setdefault(fold, []).append(d)
    if not folds:
        return math.nan, math.nan
    stats = np.empty(n_boot)
    for b in range(n_boot):
        unit_means = []
        for runs in folds.values():
            for i in rng.integers(0, len(runs), len(runs)):
                d = runs[i]
                unit_means.append(d[rng.integers(0, d.size, d.size)].mean())
        stats[b] = np.mean(unit_means)
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def holm(pvalues: Mapping[str, float]) -> dict[str, float]:
    """Holm-adjusted p-values (NaN stays NaN and is not counted)."""
    finite = sorted((p, k) for k, p in pvalues.items() if not math.isnan(p))
    m, running, out = len(finite), 0.0, {k: math.nan for k in pvalues}
    for i, (p, k) in enumerate(finite):
        running = max(running, min(1.0, (m - i) * p))
        out[k] = running
    return out


def verdict(low: float, high: float, margin: float = 0.003) -> str:
    """What an interval says about a difference (``higher is better`` metrics read ``higher`` as a gain)."""
    if math.isnan(low) or math.isnan(high):
        return "inconclusive"
    if -margin <= low and high <= margin:
        return "null"
    if low > 0:
        return "higher"
    if high < 0:
        return "lower"
    return "inconclusive"
