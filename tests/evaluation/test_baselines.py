"""Trivial baselines: the tuned threshold is the best of a brute-force search over every level and polarity, and both
baselines find objects on whichever side of the background they lie."""

import numpy as np
import pytest

from spadfast.evaluation.baselines import to_uint8, trivial_baselines, tune_threshold


def _pooled_dice(images, masks, t, bright):
    pred = np.concatenate([(im > t if bright else im <= t).ravel() for im in images])
    truth = np.concatenate([m.ravel() for m in masks])
    return 2 * (pred & truth).sum() / max(pred.sum() + truth.sum(), 1)


@pytest.mark.parametrize("seed", range(5))
def test_tuned_threshold_is_the_brute_force_best(seed):
    rng = np.random.default_rng(seed)
    masks = [rng.random((13, 17)) > 0.7 for _ in range(4)]
    images = [np.clip(m * rng.integers(-60, 60) + rng.normal(128, 30, m.shape), 0, 255).astype(np.uint8)
              for m in masks]
    t, bright = tune_threshold(images, masks)
    best = max(_pooled_dice(images, masks, level, side) for level in range(256) for side in (True, False))
    assert _pooled_dice(images, masks, t, bright) == pytest.approx(best, abs=1e-12)


@pytest.mark.parametrize("bright", [True, False])
def test_separable_objects_on_either_side_score_one(bright):
    rng = np.random.default_rng(1)
    masks = [rng.random((20, 20)) > 0.6 for _ in range(6)]
    images = [np.where(m == bright, 200, 40).astype(np.uint8) + rng.integers(0, 10, m.shape).astype(np.uint8)
              for m in masks]
    scores = trivial_baselines(images[:3], masks[:3], images[3:], masks[3:])
    assert scores == {"Otsu per image": 1.0, "intensity threshold tuned on training images": 1.0}
    noisy = [np.clip(im.astype(int) + rng.integers(-150, 150, im.shape), 0, 255).astype(np.uint8) for im in images]
    worse = trivial_baselines(noisy[:3], masks[:3], noisy[3:], masks[3:])
    assert all(v < 1.0 for v in worse.values())


def test_to_uint8_maps_model_range_to_bytes():
    x = np.array([[[-1.0, 0.0, 1.0]]], np.float32)
    assert to_uint8(x).tolist() == [[0, 128, 255]]
