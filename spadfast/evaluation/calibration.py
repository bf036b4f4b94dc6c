"""Calibration and uncertainty endpoints of one binary segmentation: ECE, Brier, the boundary band, per-pixel
uncertainty and the area under the risk-coverage curve (AURC).

All functions take numpy arrays ``[H,W]`` (or any shape, flattened): probabilities float in [0, 1], ground truth bool
(or 0/1). ``mask`` (bool, same shape) restricts a score to some pixels, e.g. :func:`near_boundary`; an empty
selection scores NaN.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["UNCERTAINTY_KINDS", "boundary", "near_boundary", "ece", "brier", "pixel_uncertainty", "risk_coverage",
           "aurc"]

UNCERTAINTY_KINDS = ("bernoulli", "std")


def _pair(probs: np.ndarray, target: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    p, y = np.asarray(probs, dtype=np.float64), np.asarray(target)
    if p.shape != y.shape:
        raise ValueError(f"`probs` {p.shape} and `target` {y.shape} must have one shape")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != p.shape:
            raise ValueError(f"`mask` {mask.shape} must have the shape of `probs` {p.shape}")
        p, y = p[mask], y[mask]
    if p.size and not (np.isfinite(p).all() and p.min() >= 0 and p.max() <= 1):
        raise ValueError("`probs` must lie in [0, 1]")
    return p.ravel(), y.ravel().astype(np.float64)


def boundary(mask: np.ndarray) -> np.ndarray:
    """Bool ``[H,W]``: foreground pixels with a 4-neighbour in the background (the image border is not boundary)."""
    mask = np.asarray(mask, dtype=bool)
    padded = np.pad(mask, 1, mode="edge")
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def near_boundary(target: np.ndarray, width: float = 3.0) -> np.ndarray:
    """Bool ``[H,W]``: pixels within ``width`` px (Euclidean) of the boundary of ``target`` (all False without one)."""
    if not width >= 0:
        raise ValueError(f"`width` must be >= 0, got {width}")
    edge = boundary(target)
    if not edge.any():
        return np.zeros_like(edge)
    return ndimage.distance_transform_edt(~edge) <= width


def ece(probs: np.ndarray, target: np.ndarray, bins: int = 10, mask: np.ndarray | None = None) -> float:
    """Expected calibration error over ``bins`` equal-width bins of the foreground probability:
    ``sum_b |sum_{i in b} p_i - sum_{i in b} y_i| / n`` (bin of p: ``min(floor(p * bins), bins - 1)``).

    Example:
        >>> ece(np.array([0.9, 0.9, 0.1, 0.1]), np.array([1, 0, 0, 0]), bins=10)  # |1.8 - 1| + |0.2 - 0| over 4
        0.25
    """
    if not isinstance(bins, (int, np.integer)) or isinstance(bins, bool) or bins < 1:
        raise ValueError(f"`bins` must be an int >= 1, got {bins!r}")
    p, y = _pair(probs, target, mask)
    if p.size == 0:
        return float("nan")
    idx = np.minimum((p * bins).astype(np.int64), bins - 1)
    conf = np.bincount(idx, weights=p, minlength=bins)
    acc = np.bincount(idx, weights=y, minlength=bins)
    return float(np.abs(conf - acc).sum() / p.size)


def brier(probs: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean ``(p - y)^2`` over the (selected) pixels; NaN when none is selected."""
    p, y = _pair(probs, target, mask)
    return float(((p - y) ** 2).mean()) if p.size else float("nan")


def pixel_uncertainty(probs: np.ndarray, std: np.ndarray | None = None, kind: str = "bernoulli") -> np.ndarray:
    """Per-pixel uncertainty, float64 of ``probs``' shape.

    ``"bernoulli"`` (default): ``p (1 - p)`` of the (members' mean) probability, the variance of the pixel's label
    under the prediction; defined alike for a diffusion ensemble and a supervised sigmoid, so the two compare on one
    scale. ``"std"``: the members' standard deviation ``std`` (a diffusion ensemble's spread; 0 for one member or a
    deterministic network).
    """
    if kind == "bernoulli":
        p = np.asarray(probs, dtype=np.float64)
        return p * (1 - p)
    if kind == "std":
        if std is None:
            raise ValueError("`std` is needed for uncertainty kind 'std'")
        return np.asarray(std, dtype=np.float64)
    raise ValueError(f"`kind` must be one of {UNCERTAINTY_KINDS}, got {kind!r}")


def risk_coverage(uncertainty: np.ndarray, errors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The risk-coverage curve: pixels kept from the most to the least certain; returns ``(coverage, risk)``, float64
    ``[n]``: after keeping k pixels, coverage ``k / n`` and risk the share of errors among them. Pixels of equal
    uncertainty are kept together in any order, so the risk inside a tie is its expectation over their orders
    (errors counted at the tie's mean rate)."""
    u = np.asarray(uncertainty, dtype=np.float64).ravel()
    e = np.asarray(errors, dtype=np.float64).ravel()
    if u.shape != e.shape:
        raise ValueError(f"`uncertainty` {u.shape} and `errors` {e.shape} must have as many pixels")
    if not np.isfinite(u).all():
        raise ValueError("`uncertainty` must be finite")
    n = u.size
    if n == 0:
        return np.zeros(0), np.zeros(0)
    order = np.argsort(u, kind="stable")
    u, e = u[order], e[order]
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    ends = np.r_[starts[1:], n]
    group_err = np.add.reduceat(e, starts)
    before = np.r_[0.0, np.cumsum(group_err)[:-1]]
    k = np.arange(1, n + 1, dtype=np.float64)
    group = np.repeat(np.arange(starts.size), ends - starts)
    rate = group_err / (ends - starts)
    expected_errors = before[group] + (k - starts[group]) * rate[group]
    return k / n, expected_errors / k


def aurc(uncertainty: np.ndarray, errors: np.ndarray) -> float:
    """Area under the risk-coverage curve (Geifman et al., 2019): the mean of :func:`risk_coverage`'s risk over
    k = 1..n. Lower is better: with an error rate r, an uncertainty unrelated to the errors gives r in expectation
    and one that ranks every error last about ``r + (1 - r) ln(1 - r)``. NaN for no pixels.

    Example:
        >>> aurc(np.array([0.0, 0.1, 0.2, 0.3]), np.array([0, 0, 0, 1]))  # (0 + 0 + 0 + 1/4) / 4
        0.0625
    """
    _, risk = risk_coverage(uncertainty, errors)
    return float(risk.mean()) if risk.size else float("nan")
