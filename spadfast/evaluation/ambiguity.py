"""Scores of a set of sampled masks against a set of annotations of one image (ambiguous boundaries): the
generalized energy distance (GED) and the Hungarian-matched IoU (HM-IoU), as in the probabilistic U-Net literature
(Kohl et al., NeurIPS 2018; Kohl et al., 2019; PHiSeg, Baumgartner et al., MICCAI 2019).

Sets are bool arrays ``[N,H,W]`` (N masks of one image). IoU of two empty masks is 1 (distance 0), as
:func:`spadfast.evaluation.metrics.iou`.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["pairwise_iou", "ged", "hm_iou"]


def _set(masks: np.ndarray, name: str) -> np.ndarray:
    m = np.asarray(masks)
    if m.ndim != 3 or m.shape[0] < 1:
        raise ValueError(f"`{name}` must be a non-empty set of masks [N,H,W], got shape {m.shape}")
    return m.astype(bool).reshape(m.shape[0], -1)


def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Float64 ``[N,M]``: IoU of every mask of ``a`` ``[N,H,W]`` with every mask of ``b`` ``[M,H,W]`` (1 for two empty
    masks)."""
    x, y = _set(a, "a"), _set(b, "b")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"masks of `a` {np.shape(a)[1:]} and `b` {np.shape(b)[1:]} must have one shape")
    xf, yf = x.astype(np.float64), y.astype(np.float64)
    inter = xf @ yf.T
    union = xf.sum(1)[:, None] + yf.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def ged(samples: np.ndarray, annotations: np.ndarray) -> float:
    """Squared generalized energy distance ``2 E[d(S, Y)] - E[d(S, S')] - E[d(Y, Y')]`` with ``d = 1 - IoU``; the
    expectations are means over all pairs, a mask with itself included (V-statistics, as PHiSeg's evaluation code),
    so a set scored against itself gives 0. Lower is better.

    Example:
        >>> a, b = np.zeros((1, 2, 2), bool), np.ones((1, 2, 2), bool)
        >>> ged(a, b)  # 2 * 1 - 0 - 0
        2.0
    """
    d_sy = 1 - pairwise_iou(samples, annotations)
    d_ss = 1 - pairwise_iou(samples, samples)
    d_yy = 1 - pairwise_iou(annotations, annotations)
    return float(2 * d_sy.mean() - d_ss.mean() - d_yy.mean())


def hm_iou(samples: np.ndarray, annotations: np.ndarray) -> float:
    """Hungarian-matched IoU: both sets repeated to ``lcm(N, M)`` masks (each mask ``lcm / N`` resp. ``lcm / M``
    times), matched one-to-one to maximise the summed IoU, and the matched IoUs averaged. Higher is better; 1 when
    the sets hold the same masks in the same proportions."""
    iou = pairwise_iou(samples, annotations)
    n, m = iou.shape
    size = n * m // math.gcd(n, m)
    tiled = np.repeat(np.repeat(iou, size // n, axis=0), size // m, axis=1)
    rows, cols = linear_sum_assignment(tiled, maximize=True)
    return float(tiled[rows, cols].mean())
