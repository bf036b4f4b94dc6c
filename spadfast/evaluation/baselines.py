"""Trivial baselines printed beside every Dice spadfast reports: what thresholding the image alone reaches.

Two baselines, both without training a network:

- **Otsu per image**: OpenCV's Otsu threshold of each test image, foreground on the side the training images say
  (bright or dark objects: whichever polarity scores better on the training set);
- **tuned intensity threshold**: one global threshold (0..255 on 8-bit images) and polarity chosen for the best
  pooled Dice on the training images, applied to every test image.

Images are uint8 ``[H,W]`` (gray), masks bool ``[H,W]``; scores are the mean per-image Dice of
:func:`spadfast.evaluation.metrics.dice` (two empty masks score 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from .metrics import dice

__all__ = ["tune_threshold", "trivial_baselines", "to_uint8"]


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
