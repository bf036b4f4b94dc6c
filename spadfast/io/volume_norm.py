"""Intensity normalisation of volumes, per modality and computed per volume, identical for training
(:class:`spadfast.data.volumes.VolumeSlices`) and prediction (:mod:`spadfast.infer.volumes`); it never looks at labels,
which prediction does not have:

- the *body* is the voxels above the volume's 1st percentile (all voxels when that is empty);
- CT (modality name ``"CT"``, any case), ``ct_normalization: dataset`` (new configs): nnU-Net's CTNormalization with
  statistics of the whole training set, computed once at training start from the foreground (labelled) voxels of
  every training case (:func:`dataset_ct_stats`) and stored in the config, so the checkpoint carries them: clip to
  their 0.5 / 99.5 percentiles, subtract their mean, divide by their std, and scale by the clip window's largest
  |z-score| so the input stays in [-1, 1] (spadfast's image convention; an affine map, so the network sees what
  nnU-Net's sees up to scale). Hounsfield units are absolute: a contrast and a native scan map alike;
- CT, ``ct_normalization: volume`` (checkpoints written before the key): clip to the 0.5 / 99.5 percentiles of the
  volume's own body voxels and map linearly to [-1, 1];
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

__all__ = ["BODY_PERCENTILE", "CT_PERCENTILES", "STATS_VOXELS", "FOREGROUND_SAMPLES", "NormParams",
           "normalization_params", "apply_normalization", "normalize_volume", "modality_of", "is_ct",
           "foreground_sample", "dataset_ct_stats", "CTStats", "ct_stats_from_flat", "ct_stats_to_flat"]

BODY_PERCENTILE = 1.0
CT_PERCENTILES = (0.5, 99.5)
STATS_VOXELS = 1 << 21
FOREGROUND_SAMPLES = 10_000  # foreground voxels sampled per case for the data-set statistics (nnU-Net's number)


@dataclass(frozen=True)
class NormParams:
    """How one channel of one volume maps to [-1, 1]: ``kind`` ``"window"`` (``a``, ``b`` = lo, hi), ``"zscore"``
    (``a``, ``b`` = mean, std) or ``"ct_dataset"`` (``a``, ``b`` = lo, hi; ``mean``, ``std`` of the training set)."""

    kind: str
    a: float
    b: float
    mean: float = 0.0
    std: float = 1.0


@dataclass(frozen=True)
class CTStats:
    """Data-set CT statistics of one channel, over the foreground voxels of every training case: the 0.5 and 99.5
    percentiles, the mean and the standard deviation (Hounsfield units)."""

    lo: float
    hi: float
    mean: float
    std: float


def is_ct(modality: str | None) -> bool:
    """A channel named ``"CT"`` (any case) in dataset.json."""
    return modality is not None and modality.strip().upper() == "CT"


def foreground_sample(channel: np.ndarray, label: np.ndarray, n: int = FOREGROUND_SAMPLES) -> np.ndarray:
    """At most ``n`` voxels of ``channel`` where ``label > 0``, float64, evenly spaced over the foreground in memory
    order (deterministic: the same case gives the same sample). ``channel`` and ``label`` share one shape."""
    if channel.shape != label.shape:
        raise ValueError(f"image channel {channel.shape} and label {label.shape} differ in shape")
    voxels = channel[label > 0]
    if voxels.size > n:
        voxels = voxels[np.linspace(0, voxels.size - 1, n).round().astype(np.int64)]
    return voxels.astype(np.float64)


def dataset_ct_stats(samples: Sequence[np.ndarray]) -> CTStats:
    """nnU-Net's CT statistics from per-case foreground samples (:func:`foreground_sample`) of one channel.

    Raises:
        ValueError: no case has a foreground voxel (the statistics would be undefined).

    Example:
        >>> s = dataset_ct_stats([np.arange(0.0, 1001.0), np.full(10, 500.0)])
        >>> round(s.lo, 1), round(s.hi, 1), round(s.mean, 1)
        (5.0, 995.0, 500.0)
    """
    voxels = np.concatenate([np.asarray(v, np.float64).reshape(-1) for v in samples]) if samples else np.zeros(0)
    if voxels.size == 0:
        raise ValueError("no training case has a labelled voxel: CT statistics of the foreground are undefined "
                         "(set ct_normalization: volume)")
    lo, hi = np.percentile(voxels, CT_PERCENTILES)
    return CTStats(float(lo), float(hi), float(voxels.mean()), float(voxels.std()))


def _stats_sample(x: np.ndarray) -> np.ndarray:
    """At most ~``STATS_VOXELS`` voxels of ``x`` on a regular sub-grid (the same stride along every axis): a view
    whatever the memory order, and the same voxels for C- and Fortran-ordered copies of one volume."""
    if x.size <= STATS_VOXELS or x.ndim == 0:
        return x.astype(np.float64).reshape(-1)
    stride = math.ceil((x.size / STATS_VOXELS) ** (1.0 / x.ndim))
    return x[(slice(None, None, stride),) * x.ndim].astype(np.float64).reshape(-1)


def ct_stats_to_flat(stats: Sequence[CTStats | None]) -> tuple[float, ...]:
    """Per-channel statistics as ``SPADConfig.ct_stats`` stores them: 4 floats a channel, zeros for non-CT ones."""
    return tuple(float(v) for s in stats for v in ((s.lo, s.hi, s.mean, s.std) if s is not None else (0.0,) * 4))


def ct_stats_from_flat(values: Sequence[float]) -> list[CTStats | None] | None:
    """``SPADConfig.ct_stats`` back to one :class:`CTStats` (None: not a CT channel, std 0) per channel; None for
    an empty tuple."""
    if not values:
        return None
    if len(values) % 4:
        raise ValueError(f"`ct_stats` must hold 4 values per image channel, got {len(values)}")
    return [CTStats(*map(float, values[i:i + 4])) if values[i + 3] > 0 else None for i in range(0, len(values), 4)]


def normalization_params(
    volume: np.ndarray, modality: str | None, window: tuple[float, float] | None = None,
    ct_stats: CTStats | None = None,
) -> NormParams:
    """The normalisation of one channel (see the module docstring), from the voxels alone (no labels).

    Args:
        volume: one channel's raw intensities, any shape.
        modality: the channel's name in dataset.json (``"CT"`` selects the percentile window; anything else or
            None the body z-score).
        window: ``(lo, hi)``: a fixed window for every modality instead.
        ct_stats: the training set's CT statistics: a CT channel uses them instead of its own percentiles.
    """
    if window is not None:
        return NormParams("window", float(window[0]), float(window[1]))
    if ct_stats is not None and is_ct(modality):
        return NormParams("ct_dataset", ct_stats.lo, ct_stats.hi, ct_stats.mean, ct_stats.std)
    sample = _stats_sample(volume)
    if sample.size == 0:
        return NormParams("zscore", 0.0, 0.0)
    body = sample[sample > np.percentile(sample, BODY_PERCENTILE)]
    if body.size == 0:
        body = sample
    if is_ct(modality):
        lo, hi = np.percentile(body, CT_PERCENTILES)
        return NormParams("window", float(lo), float(hi))
    return NormParams("zscore", float(body.mean()), float(body.std()))


def apply_normalization(volume: np.ndarray, params: NormParams) -> np.ndarray:
    """``volume`` mapped to [-1, 1] as float32 (a degenerate window or zero std gives zeros)."""
    x = volume.astype(np.float32, copy=False)
    if params.kind == "ct_dataset":
        lo, hi, mean, std = params.a, params.b, params.mean, params.std
        scale = max(abs(lo - mean), abs(hi - mean))  # the clip window's largest |z| times std
        if not (hi > lo and std > 0 and scale > 0):
            return np.zeros(x.shape, np.float32)
        out = (np.clip(x, lo, hi) - np.float32(mean)) / np.float32(std) * np.float32(std / scale)
        return np.clip(out, -1.0, 1.0).astype(np.float32, copy=False)
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
    window: tuple[float, float] | None = None, ct_stats: Sequence[CTStats | None] | None = None,
) -> tuple[list[np.ndarray], list[NormParams]]:
    """Normalise every channel of ``image`` (float ``[C,I,J,K]``, or a list of ``[I,J,K]`` channels); returns one
    float32 ``[I,J,K]`` array in [-1, 1] per channel and the per-channel :class:`NormParams`. ``modalities``: one
    name per channel (None or empty: not CT); ``ct_stats``: the training set's statistics per channel (None entries
    or None: per-volume statistics)."""
    params = [normalization_params(ch, modality_of(modalities, c), window,
                                   ct_stats[c] if ct_stats and c < len(ct_stats) else None)
              for c, ch in enumerate(image)]
    return [apply_normalization(ch, p) for ch, p in zip(image, params)], params


def modality_of(modalities: Sequence[str] | None, c: int) -> str | None:
    """Channel ``c``'s modality name, or None when ``modalities`` does not name it."""
    return modalities[c] if modalities and c < len(modalities) else None
