"""The two-threshold baseline: the tuned pair scores as well as the best pair of a brute-force search, on small
random inputs; applying it follows the interval rule."""

import itertools

import numpy as np
import pytest

from spadfast.evaluation.baselines import apply_two_thresholds, quantize, tune_two_thresholds


def pooled_mean_dice(pred: np.ndarray, gt: np.ndarray) -> float:
    scores = []
    for c in (1, 2):
        p, g = pred == c, gt == c
        denom = p.sum() + g.sum()
        scores.append(1.0 if denom == 0 else 2.0 * (p & g).sum() / denom)
    return float(np.mean(scores))


def brute_force(volumes, labels, levels):
    """Best pooled mean Dice over every t1 < t2 and every order, computed voxel by voxel."""
    q = np.concatenate([quantize(v, (-1, 1), levels).ravel() for v in volumes])
    gt = np.concatenate([np.asarray(lab).ravel() for lab in labels])
    best = -1.0
    for order in itertools.permutations(range(3)):
        for t1, t2 in itertools.combinations(range(levels), 2):
            pred = np.asarray(order)[(q > t1).astype(int) + (q > t2)]
            best = max(best, pooled_mean_dice(pred, gt))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_tuned_pair_scores_as_well_as_brute_force(seed):
    rng = np.random.default_rng(seed)
    levels = 12
    volumes, labels = [], []
    for _ in range(int(rng.integers(1, 4))):
        shape = tuple(int(s) for s in rng.integers(2, 6, 3))
        lab = rng.integers(0, 3, shape)
        means = rng.uniform(-1, 1, 3)  # classes overlap in intensity: the best pair is not a perfect split
        volumes.append(means[lab] + rng.normal(0, 0.4, shape))
        labels.append(lab)
    tuned = tune_two_thresholds(volumes, labels, levels=levels)
    assert 0 <= tuned.t1 < tuned.t2 < levels
    pred = [apply_two_thresholds(v, tuned) for v in volumes]
    achieved = pooled_mean_dice(np.concatenate([p.ravel() for p in pred]),
                                np.concatenate([lab.ravel() for lab in labels]))
    assert achieved == pytest.approx(tuned.train_dice, abs=1e-12)
    assert achieved == pytest.approx(brute_force(volumes, labels, levels), abs=1e-12)


def test_separable_classes_are_recovered_in_any_order():
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 3, (6, 7, 5))
    intensity = np.array([0.6, -0.7, 0.0])  # class 1 darkest, background brightest
    tuned = tune_two_thresholds([intensity[lab]], [lab])
    assert tuned.order == (1, 2, 0) and tuned.train_dice == 1.0
    assert np.array_equal(apply_two_thresholds(intensity[lab], tuned), lab)
    assert apply_two_thresholds(intensity[lab], tuned).dtype == np.uint8
    lo, hi = tuned.intensities()
    assert -0.7 < lo < 0.0 < hi < 0.6


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="values must be 0, 1 or 2"):
        tune_two_thresholds([np.zeros((2, 2))], [np.full((2, 2), 3)])
    with pytest.raises(ValueError, match="shape"):
        tune_two_thresholds([np.zeros((2, 2))], [np.zeros((2, 3), int)])
    with pytest.raises(ValueError, match="at least one volume"):
        tune_two_thresholds([], [])
