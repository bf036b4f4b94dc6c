"""Intensity normalisation of volumes, per modality and computed per volume, identical for training
(:class:`spadfast.data.volumes.VolumeSlices`) and prediction (:mod:`spadfast.infer.volumes`); it never looks at labels,
which prediction does not have:

- the *body* is the voxels above the volume's 1st percentile (all voxels when that is empty);
- CT (modality name ``"CT"``, any case): clip to the 0.5 / 99.5 percentiles of the body voxels and map linearly
  to [-1, 1];
- anything else (MR, ...): z-score with the body's mean and standard deviation, clip to [-3, 3], divide by 3;
- ``window=(lo, hi)``: every channel is clipped to ``[lo, hi]`` (e.g. Hounsfield units) and mapped to [-1, 1].

Percentiles, mean and standard deviation are estimated on about ``STATS_VOXELS`` voxels (a regular sub-grid of
the volume), so large CTs normalise quickly and deterministically.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["BODY_PERCENTILE", "CT_PERCENTILES", "STATS_VOXELS", "NormParams", "normalization_params",
           "apply_normalization", "normalize_volume", "modality_of"]

BODY_PERCENTILE = 1.0
CT_PERCENTILES = (0.5, 99.5)
STATS_VOXELS = 1 << 21


@dataclass(frozen=True)
class NormParams:
    """How one channel of one volume maps to [-1, 1]: ``kind`` ``"window"`` (``a``, ``b`` = lo, hi) or
    ``"zscore"`` (``a``, ``b`` = mean, std)."""

    kind: str
    a: float
    b: float


def _stats_sample(x: np.ndarray) -> np.ndarray:
    """At most ~``STATS_VOXELS`` voxels of ``x`` on a regular sub-grid (the same stride along every axis): a view
    whatever the memory order, and the same voxels for C- and Fortran-ordered copies of one volume."""
    if x.size <= STATS_VOXELS or x.ndim == 0:
        return x.astype(np.float64).reshape(-1)
    stride = math.ceil((x.size / STATS_VOXELS) ** (1.0 / x.ndim))
    return x[(slice(None, None, stride),) * x.ndim].astype(np.float64).reshape(-1)


def normalization_params(
    volume: np.ndarray, modality: str | None, window: tuple[float, float] | None = None
) -> NormParams:
    """The normalisation of one channel (see the module docstring), from the voxels alone (no labels).

    Args:
        volume: one channel's raw intensities, any shape.
        modality: the channel's name in dataset.json (``"CT"`` selects the percentile window; anything else or
            None the body z-score).
        window: ``(lo, hi)``: a fixed window for every modality instead.
    """
    if window is not None:
        return NormParams("window", float(window[0]), float(window[1]))
    sample = _stats_sample(volume)
    if sample.size == 0:
        return NormParams("zscore", 0.0, 0.0)
    body = sample[sample > np.percentile(sample, BODY_PERCENTILE)]
    if body.size == 0:
        body = sample
    if modality is not None and modality.strip().upper() == "CT":
        lo, hi = np.percentile(body, CT_PERCENTILES)
        return NormParams("window", float(lo), float(hi))
    return NormParams("zscore", float(body.mean()), float(body.std()))


def apply_normalization(volume: np.ndarray, params: NormParams) -> np.ndarray:
    """``volume`` mapped to [-1, 1] as float32 (a degenerate window or zero std gives zeros)."""
    x = volume.astype(np.float32, copy=False)
    if params.kind == "window":
        lo, hi = params.a, params.b
        if not hi > lo:
            return np.zeros(x.shape, np.float32)
        out = (np.clip(x, lo, hi) - np.float32(lo)) * np.float32(2.0 / (hi - lo)) - np.float32(1.0)
    else:
        if not params.b > 0:
            return np.zeros(x.shape, np.float32)
        out = np.clip((x - np.float32(params.a)) / np.float32(params.b), -3.0, 3.0) / np.float32(3.0)
    return np.clip(out, -1.0, 1.0).astype(np.float32, copy=False)


def normalize_volume(
    image: np.ndarray | Sequence[np.ndarray], modalities: Sequence[str] | None = None,
    window: tuple[float, float] | None = None,
) -> tuple[list[np.ndarray], list[NormParams]]:
    """Normalise every channel of ``image`` (float ``[C,I,J,K]``, or a list of ``[I,J,K]`` channels); returns one
    float32 ``[I,J,K]`` array in [-1, 1] per channel and the per-channel :class:`NormParams`. ``modalities``: one
    name per channel (None or empty: not CT)."""
    params = [normalization_params(ch, modality_of(modalities, c), window) for c, ch in enumerate(image)]
    return [apply_normalization(ch, p) for ch, p in zip(image, params)], params


def modality_of(modalities: Sequence[str] | None, c: int) -> str | None:
    """Channel ``c``'s modality name, or None when ``modalities`` does not name it."""
    return modalities[c] if modalities and c < len(modalities) else None
