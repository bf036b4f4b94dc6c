"""Study statistics against direct computations on synthetic numbers; the unit is the run (fold x seed)."""

import math

import numpy as np
import pytest
from scipy import stats

from spadfast.study.stats import hierarchical_bootstrap, holm, t_interval, t_pvalue, unit_differences, verdict


def _cases(rng, n, shift):
    return {f"img{i:02d}": float(v) for i, v in enumerate(rng.normal(0.8 + shift, 0.05, n))}


def test_unit_differences_pair_on_run_and_image():
    rng = np.random.default_rng(0)
    ref = {("f0", s): _cases(rng, 6, 0) for s in range(3)}
    var = {u: {k: v + 0.01 * (u[1] + 1) for k, v in c.items()} for u, c in ref.items()}
    var[("f1", 0)] = _cases(rng, 6, 0)  # no reference run: not a unit
    var[("f0", 0)]["img00"] = math.inf  # not finite: skipped
    d = unit_differences(var, ref)
    assert sorted(d) == [("f0", 0), ("f0", 1), ("f0", 2)]
    assert d[("f0", 0)].size == 5 and np.allclose(d[("f0", 1)], 0.02)


def test_t_interval_equals_scipy_over_units_not_images():
    rng = np.random.default_rng(1)
    unit_means = rng.normal(0.004, 0.003, 6)
    mean, lo, hi = t_interval(unit_means)
    ref = stats.t.interval(0.95, 5, loc=unit_means.mean(), scale=stats.sem(unit_means))
    assert mean == pytest.approx(unit_means.mean()) and (lo, hi) == pytest.approx(ref)
    assert t_pvalue(unit_means) == pytest.approx(stats.ttest_1samp(unit_means, 0).pvalue)
    assert math.isnan(t_interval([0.1])[1]) and math.isnan(t_pvalue([0.1]))


def test_bootstrap_tracks_the_spread_between_runs():
    rng = np.random.default_rng(2)
    # runs differ a lot, images within a run little: the interval must reflect the between-run spread
    diffs = {(f"f{f}", s): rng.normal(rng.normal(0.0, 0.02), 0.001, 50) for f in range(2) for s in range(3)}
    lo, hi = hierarchical_bootstrap(diffs, n_boot=3000, seed=0)
    unit_means = np.array([d.mean() for d in diffs.values()])
    naive_half = 1.96 * np.concatenate(list(diffs.values())).std() / math.sqrt(300)  # images as the unit
    assert lo < unit_means.mean() < hi
    assert (hi - lo) / 2 > 5 * naive_half
    assert hierarchical_bootstrap(diffs, n_boot=500, seed=3) == hierarchical_bootstrap(diffs, n_boot=500, seed=3)


def test_holm_matches_the_step_down_rule():
    p = {"a": 0.01, "b": 0.04, "c": 0.03, "d": math.nan}
    adj = holm(p)
    assert adj["a"] == pytest.approx(0.03) and adj["c"] == pytest.approx(0.06) and adj["b"] == pytest.approx(0.06)
    assert math.isnan(adj["d"])


@pytest.mark.parametrize("lo,hi,want", [(-0.002, 0.0025, "null"), (0.001, 0.01, "higher"), (-0.01, -0.004, "lower"),
                                        (-0.004, 0.002, "inconclusive"), (math.nan, math.nan, "inconclusive")])
def test_verdicts(lo, hi, want):
    assert verdict(lo, hi) == want
