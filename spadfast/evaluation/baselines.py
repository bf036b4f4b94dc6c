"""Trivial baselines printed beside every Dice spadfast reports: what thresholding the image alone reaches.

Two baselines, both without training a network:

- **Otsu per image**: OpenCV's Otsu threshold of each test image, foreground on the side the training images say
  (bright or dark objects: whichever polarity scores better on the training set);
- **tuned intensity threshold**: one global threshold (0..255 on 8-bit images) and polarity chosen for the best
  pooled Dice on the training images, applied to every test image.

Images are uint8 ``[H,W]`` (gray), masks bool ``[H,W]``; scores are the mean per-image Dice of
:func:`spadfast.evaluation.metrics.dice` (two empty masks score 1).

For three-class volumes (background and two tissues, e.g. grey and white matter) the **two-threshold** baseline
(:func:`tune_two_thresholds`, :func:`apply_two_thresholds`): two intensity thresholds on a 256-level grid of the
normalised image cut it into three intervals, each given one class; the pair and the classes' order along
intensity are searched exhaustively for the best mean per-class Dice pooled over the training volumes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from .metrics import dice

__all__ = ["tune_threshold", "trivial_baselines", "to_uint8", "TwoThresholds", "quantize", "tune_two_thresholds",
           "apply_two_thresholds"]


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A model-space image (float in [-1, 1], ``[C,H,W]`` or ``[H,W]``) as 8-bit gray ``[H,W]`` (channel mean)."""
    x = np.asarray(image, dtype=np.float32)
    x = x.mean(axis=0) if x.ndim == 3 else x
    return np.clip(np.rint((x + 1) * 127.5), 0, 255).astype(np.uint8)


def tune_threshold(images: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> tuple[int, bool]:
    """``(t, bright)``: the threshold and polarity (foreground ``> t`` when ``bright``, else ``<= t``) with the best
    pooled Dice over ``images``; one histogram pass per polarity."""
    fg_hist = np.zeros(256, np.int64)
    all_hist = np.zeros(256, np.int64)
    for im, m in zip(images, masks):
        all_hist += np.bincount(im.ravel(), minlength=256)
        fg_hist += np.bincount(im[m], minlength=256)
    fg_total = fg_hist.sum()
    # foreground = pixels > t: counts above t
    above_fg = fg_total - np.cumsum(fg_hist)
    above_all = all_hist.sum() - np.cumsum(all_hist)
    bright = 2 * above_fg / np.maximum(fg_total + above_all, 1)
    dark = 2 * (fg_total - above_fg) / np.maximum(fg_total + (all_hist.sum() - above_all), 1)
    if bright.max() >= dark.max():
        return int(bright.argmax()), True
    return int(dark.argmax()), False


def _scores(preds: list[np.ndarray], masks: Sequence[np.ndarray]) -> float:
    return float(np.mean([float(dice(p, m)) for p, m in zip(preds, masks)]))


def trivial_baselines(train_images: Sequence[np.ndarray], train_masks: Sequence[np.ndarray],
                      test_images: Sequence[np.ndarray], test_masks: Sequence[np.ndarray]) -> dict[str, float]:
    """Mean test Dice of Otsu per image and of a threshold tuned on the training images (module docstring)."""
    t, bright = tune_threshold(train_images, train_masks)

    def otsu(im: np.ndarray, bright_side: bool) -> np.ndarray:
        level, _ = cv2.threshold(im, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        return im > level if bright_side else im <= level

    otsu_bright = _scores([otsu(im, True) for im in train_images], train_masks)
    otsu_dark = _scores([otsu(im, False) for im in train_images], train_masks)
    side = otsu_bright >= otsu_dark
    return {
        "Otsu per image": _scores([otsu(im, side) for im in test_images], test_masks),
        "intensity threshold tuned on training images": _scores(
            [(im > t) if bright else (im <= t) for im in test_images], test_masks),
    }


# ------------------------------------------------------------------------------------------------ two thresholds

# the 6 ways to give the three intensity intervals (low, middle, high) to (background, class A, class B)
_ORDERS = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))


@dataclass(frozen=True)
class TwoThresholds:
    """The two-threshold baseline tuned by :func:`tune_two_thresholds`.

    Attributes:
        t1, t2: grid levels, ``0 <= t1 < t2 <= levels - 1``: a voxel at level q falls in interval
            ``(q > t1) + (q > t2)`` (0: low, 1: middle, 2: high).
        order: the class (0, 1 or 2) each interval is given, low to high.
        value_range: ``(lo, hi)``: the intensities the grid spans (level ``round((v - lo) / (hi - lo) * (levels -
            1))``, clipped), e.g. ``(-1, 1)`` for spadfast's normalised volumes.
        levels: grid size (256).
        train_dice: the pooled mean per-class Dice (classes 1 and 2) it reached on the training volumes.
    """

    t1: int
    t2: int
    order: tuple[int, int, int]
    value_range: tuple[float, float]
    levels: int
    train_dice: float

    def intensities(self) -> tuple[float, float]:
        """``t1`` and ``t2`` as intensities: the upper edge of their grid level (a value above it is above t)."""
        lo, hi = self.value_range
        step = (hi - lo) / (self.levels - 1)
        return lo + (self.t1 + 0.5) * step, lo + (self.t2 + 0.5) * step


def quantize(volume: np.ndarray, value_range: tuple[float, float] = (-1.0, 1.0), levels: int = 256) -> np.ndarray:
    """``volume`` (any shape, float) on a ``levels``-level grid over ``value_range``: int64 levels of the same shape
    (values outside the range clipped to the end levels)."""
    lo, hi = float(value_range[0]), float(value_range[1])
    if not hi > lo:
        raise ValueError(f"`value_range` must be (lo, hi) with hi > lo, got {value_range!r}")
    q = np.rint((np.asarray(volume, np.float64) - lo) / (hi - lo) * (levels - 1))
    return np.clip(q, 0, levels - 1).astype(np.int64)


def tune_two_thresholds(volumes: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                        value_range: tuple[float, float] = (-1.0, 1.0), levels: int = 256) -> TwoThresholds:
    """The two-threshold baseline: an exhaustive search over every pair of levels ``t1 < t2`` of a ``levels``-level
    grid and every order of (background, class 1, class 2) along intensity, maximising the mean of the two
    foreground classes' Dice pooled over all voxels of ``volumes`` (ties: the first in (order, t1, t2) order).

    Args:
        volumes: images, float arrays of any shape (e.g. ``[I,J,K]``), normalised as the model sees them.
        labels: label maps of the same shapes, integers in {0, 1, 2} (0 background).
        value_range, levels: the grid (:func:`quantize`).

    Returns:
        the tuned :class:`TwoThresholds`. One histogram per class and cumulative sums: O(levels^2), no voxel loop.

    Raises:
        ValueError: no volumes, a shape mismatch, or a label outside {0, 1, 2}.
    """
    levels = int(levels)
    if levels < 3:
        raise ValueError(f"`levels` must be at least 3, got {levels}")
    if len(volumes) == 0 or len(volumes) != len(labels):
        raise ValueError(f"need one label map per volume and at least one volume, got {len(volumes)} volumes and "
                         f"{len(labels)} label maps")
    hist = np.zeros((3, levels), np.int64)  # [class, level]
    for i, (v, lab) in enumerate(zip(volumes, labels)):
        lab = np.asarray(lab)
        if np.shape(v) != lab.shape:
            raise ValueError(f"volume {i}: shape {np.shape(v)} but its label map is {lab.shape}")
        if lab.size and (lab.min() < 0 or lab.max() > 2):
            raise ValueError(f"label map {i}: values must be 0, 1 or 2, got {int(lab.min())}..{int(lab.max())}")
        q = quantize(v, value_range, levels).ravel()
        hist += np.stack([np.bincount(q[lab.ravel() == c], minlength=levels) for c in range(3)])
    cum = np.concatenate([np.zeros((3, 1), np.int64), np.cumsum(hist, axis=1)], axis=1)  # cum[c, q]: levels < q
    total = hist.sum(axis=1)  # |G_c|
    t1, t2 = np.triu_indices(levels, k=1)  # every t1 < t2
    # voxels of class c in each interval, [c, pair]: low = levels <= t1, middle = t1 < q <= t2, high = q > t2
    inside = np.stack([cum[:, t1 + 1], cum[:, t2 + 1] - cum[:, t1 + 1], total[:, None] - cum[:, t2 + 1]])
    size = inside.sum(axis=1)  # [interval, pair]: voxels in the interval, all classes
    best: tuple[float, int, tuple[int, int, int]] = (-1.0, 0, _ORDERS[0])
    for order in _ORDERS:
        score = np.zeros(t1.shape, np.float64)
        for c in (1, 2):
            k = order.index(c)
            denom = size[k] + total[c]
            score += np.where(denom > 0, 2.0 * inside[k, c] / np.maximum(denom, 1), 1.0)
        j = int(score.argmax())
        if score[j] / 2 > best[0]:
            best = (float(score[j] / 2), j, order)
    score, j, order = best
    return TwoThresholds(int(t1[j]), int(t2[j]), tuple(order), (float(value_range[0]), float(value_range[1])),
                         levels, score)


def apply_two_thresholds(volume: np.ndarray, thresholds: TwoThresholds) -> np.ndarray:
    """The label map (uint8, ``volume``'s shape, values 0/1/2) the tuned thresholds give ``volume`` (float, any
    shape, normalised as the volumes they were tuned on)."""
    q = quantize(volume, thresholds.value_range, thresholds.levels)
    interval = (q > thresholds.t1).astype(np.int64) + (q > thresholds.t2)
    return np.asarray(thresholds.order, np.uint8)[interval]
