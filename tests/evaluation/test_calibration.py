"""Calibration, AURC, ambiguity and tile endpoints against brute-force computations and hand-computed cases."""

import itertools
import math

import numpy as np
import pytest

from spadfast.evaluation.ambiguity import ged, hm_iou, pairwise_iou
from spadfast.evaluation.calibration import aurc, boundary, brier, ece, near_boundary, pixel_uncertainty, risk_coverage
from spadfast.evaluation.metrics import iou
from spadfast.evaluation.tiles import tile_scores
from spadfast.ops.blobs import blob_masks


def _blobs(seed, shape=(19, 23)):
    return blob_masks(shape, seed=seed, cell=6, threshold=0.6).numpy().astype(bool)


def _ece_brute(p, y, bins):
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        sel = [(pi, yi) for pi, yi in zip(p, y) if lo <= pi < hi or (b == bins - 1 and pi == 1.0)]
        total += abs(sum(s[0] for s in sel) - sum(s[1] for s in sel))
    return total / len(p)


@pytest.mark.parametrize("bins", [1, 5, 10, 15])
def test_ece_and_brier_match_brute_force(bins):
    rng = np.random.default_rng(bins)
    y = _blobs(bins)
    p = np.clip(y * 0.6 + rng.random(y.shape) * 0.4, 0, 1)
    p[0, :3] = [0.0, 1.0, 0.5]
    assert ece(p, y, bins) == pytest.approx(_ece_brute(p.ravel().tolist(), y.ravel().tolist(), bins))
    assert brier(p, y) == pytest.approx(sum((a - b) ** 2 for a, b in zip(p.ravel(), y.ravel())) / p.size)
    band = near_boundary(y, 3)
    assert ece(p, y, bins, band) == pytest.approx(_ece_brute(p[band].tolist(), y[band].tolist(), bins))
    assert brier(p, y, band) == pytest.approx(((p[band] - y[band]) ** 2).mean())


def test_calibration_hand_cases_and_empty_selection():
    p, y = np.array([0.9, 0.9, 0.1, 0.1]), np.array([1, 0, 0, 0])
    assert ece(p, y, 10) == pytest.approx(0.25)  # bin 9: |1.8 - 1|, bin 1: |0.2 - 0|
    assert ece(p, y, 1) == pytest.approx(abs(2.0 - 1) / 4)
    assert brier(p, y) == pytest.approx((0.01 + 0.81 + 0.01 + 0.01) / 4)
    assert ece(np.ones((3, 3)), np.ones((3, 3), bool)) == 0.0
    assert math.isnan(brier(p, y, np.zeros(4, bool))) and math.isnan(ece(p, y, 10, np.zeros(4, bool)))


def test_near_boundary_matches_brute_force_distances():
    y = _blobs(4)
    edge = np.argwhere(boundary(y))
    for width in (0, 1, 3, 4.5):
        want = np.array([[np.sqrt(((edge - [r, c]) ** 2).sum(1)).min() <= width for c in range(y.shape[1])]
                         for r in range(y.shape[0])])
        assert np.array_equal(near_boundary(y, width), want), width
    assert not near_boundary(np.zeros((5, 5), bool)).any()


def _aurc_brute(u, e):
    """Mean over every order of the pixels that sorts the uncertainty ascending (ties in all orders)."""
    values = []
    for order in itertools.permutations(range(len(u))):
        if all(u[order[i]] <= u[order[i + 1]] for i in range(len(u) - 1)):
            errs = np.cumsum([e[i] for i in order])
            values.append(np.mean(errs / np.arange(1, len(u) + 1)))
    return float(np.mean(values))


@pytest.mark.parametrize("seed", range(8))
def test_aurc_matches_brute_force_over_tie_orders(seed):
    rng = np.random.default_rng(seed)
    n = 6
    u = rng.integers(0, 3, n).astype(float)  # many ties
    e = rng.random(n) < 0.4
    assert aurc(u, e) == pytest.approx(_aurc_brute(u, e))
    coverage, risk = risk_coverage(u, e)
    assert coverage[-1] == 1.0 and risk[-1] == pytest.approx(e.mean())


def test_aurc_hand_cases():
    assert aurc(np.array([0.0, 0.1, 0.2, 0.3]), np.array([0, 0, 0, 1])) == pytest.approx(0.25 / 4)
    worst = aurc(np.array([0.3, 0.1, 0.2, 0.0]), np.array([0, 0, 0, 1]))  # the error is the most certain pixel
    assert worst == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)
    assert aurc(np.zeros(4), np.array([0, 0, 0, 1])) == pytest.approx(0.25)  # all tied: the error rate
    assert aurc(np.arange(5.0), np.zeros(5)) == 0.0
    assert math.isnan(aurc(np.zeros(0), np.zeros(0)))


def test_pixel_uncertainty_kinds_and_bad_input():
    p = np.array([0.0, 0.5, 0.9])
    assert np.allclose(pixel_uncertainty(p), [0.0, 0.25, 0.09])
    assert np.array_equal(pixel_uncertainty(p, std=np.array([0.1, 0.2, 0.3]), kind="std"), [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="`std`"):
        pixel_uncertainty(p, kind="std")
    with pytest.raises(ValueError, match="`kind`"):
        pixel_uncertainty(p, kind="entropy")
    with pytest.raises(ValueError, match="`bins`"):
        ece(p, p > 0.5, 0)
    with pytest.raises(ValueError, match="`probs`"):
        brier(p + 0.5, p > 0.5)
    with pytest.raises(ValueError, match="`probs`"):
        ece(p, np.zeros(2))
    with pytest.raises(ValueError, match="`uncertainty`"):
        aurc(np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match="`width`"):
        near_boundary(p > 0.5, -1)


# ------------------------------------------------------------------------------------- ambiguity
def _sets(seed, n, shape=(9, 11)):
    return np.stack([_blobs(seed * 10 + i, shape) for i in range(n)])


def test_pairwise_iou_matches_the_metric():
    a, b = _sets(1, 3), _sets(2, 2)
    a[1] = False
    b[0] = False
    want = np.array([[float(iou(x, y)) for y in b] for x in a])
    assert np.allclose(pairwise_iou(a, b), want) and pairwise_iou(a, b)[1, 0] == 1.0


def _ged_brute(s, y):
    d = lambda a, b: 1 - float(iou(a, b))  # noqa: E731
    sy = np.mean([d(a, b) for a in s for b in y])
    ss = np.mean([d(a, b) for a in s for b in s])
    yy = np.mean([d(a, b) for a in y for b in y])
    return 2 * sy - ss - yy


def _hm_brute(s, y):
    n, m = len(s), len(y)
    size = n * m // math.gcd(n, m)
    left = [s[i // (size // n)] for i in range(size)]
    right = [y[j // (size // m)] for j in range(size)]
    return max(np.mean([float(iou(left[i], right[p[i]])) for i in range(size)])
               for p in itertools.permutations(range(size)))


@pytest.mark.parametrize("n,m", [(1, 1), (2, 3), (3, 2), (2, 4), (4, 4)])
def test_ged_and_hm_iou_match_brute_force(n, m):
    s, y = _sets(n, n), _sets(m + 7, m)
    assert ged(s, y) == pytest.approx(_ged_brute(s, y))
    if n * m // math.gcd(n, m) <= 6:  # permutations of at most 6 masks
        assert hm_iou(s, y) == pytest.approx(_hm_brute(s, y))
    assert ged(s, s) == pytest.approx(0.0, abs=1e-12) and hm_iou(s, s) == pytest.approx(1.0)
    assert ged(s, y) == pytest.approx(ged(y, s))


def test_ged_and_hm_iou_hand_cases():
    empty, full = np.zeros((1, 2, 2), bool), np.ones((1, 2, 2), bool)
    half = np.zeros((1, 2, 2), bool)
    half[0, 0] = True
    assert ged(empty, full) == 2.0 and hm_iou(empty, full) == 0.0 and hm_iou(empty, empty) == 1.0
    # samples {full, half} vs annotators {full}: d_sy = (0 + 0.5) / 2, d_ss = (0 + 0.5 + 0.5 + 0) / 4, d_yy = 0
    samples = np.concatenate([full, half])
    assert ged(samples, full) == pytest.approx(2 * 0.25 - 0.25)
    assert hm_iou(samples, full) == pytest.approx((1 + 0.5) / 2)
    with pytest.raises(ValueError, match="`a`"):
        ged(np.zeros((2, 2), bool), full)
    with pytest.raises(ValueError, match="one shape"):
        hm_iou(full, np.ones((1, 3, 3), bool))


# ------------------------------------------------------------------------------------- tiles
def test_tile_scores_match_a_direct_count():
    pred, gt = _blobs(5, (40, 37)), _blobs(6, (40, 37))
    gt[:16, :16] = False  # some empty tiles
    pred[:8, :8] = True
    out = tile_scores(pred, gt, tile=8)
    dice, fp = [], []
    for r in range(5):
        for c in range(5):
            pt, t = pred[8 * r:8 * r + 8, 8 * c:8 * c + 8], gt[8 * r:8 * r + 8, 8 * c:8 * c + 8]
            if t.sum():
                dice.append(2 * (pt & t).sum() / (pt.sum() + t.sum()))
            else:
                fp.append(pt.sum() > 0)
    assert out["nonempty_tiles"] == len(dice) and out["empty_tiles"] == len(fp) >= 4
    assert out["dice_nonempty_tiles"] == pytest.approx(np.mean(dice))
    assert out["empty_tile_fp_rate"] == pytest.approx(np.mean(fp))
    assert out["nonempty_tiles"] + out["empty_tiles"] == 25
    empty = tile_scores(np.zeros((4, 4), bool), np.zeros((4, 4), bool), 2)
    assert math.isnan(empty["dice_nonempty_tiles"]) and empty["empty_tile_fp_rate"] == 0.0
    with pytest.raises(ValueError, match="`tile`"):
        tile_scores(pred, gt, 0)
