"""Segment a whole volume with a 3-D model (``model_type: unet3d``): overlapping Gaussian-weighted 3-D windows.

The 3-D form of :mod:`spadfast.infer.sliding_window` (nnU-Net's sliding window): windows of the model's
``patch_size_3d`` step by ``round(window * (1 - tile_overlap))`` along each axis, the last one ending at the border;
each window's probabilities and ensemble std are weighted by a 3-D Gaussian importance map (sigma 1/8 of the window
per axis, peak 1, no zeros) and the weighted sums divided by the summed weights. A volume smaller than the window
along an axis is padded (edge values) and the padding cropped from the output.

Windows go through ``segment`` ``chunk`` at a time, and the sampler runs windows x members as one batch (in its own
``sample_chunk`` rows). The initial noise of a window is keyed by the case's name and the window's corner
(:func:`window_key_3d`), so a result does not depend on ``chunk`` or on the order of windows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ..diffusion.sampler import image_noise_key
from .sliding_window import SIGMA_SCALE, window_starts

__all__ = ["window_positions_3d", "gaussian_importance_3d", "window_key_3d", "segment_volume_3d"]


def window_positions_3d(size: Sequence[int], window: Sequence[int], overlap: float) -> list[tuple[int, int, int]]:
    """``(z, y, x)`` corners of every window over a volume of ``size`` (at least ``window`` on each axis).

    Example:
        >>> window_positions_3d((8, 12, 8), (8, 8, 8), 0.5)
        [(0, 0, 0), (0, 4, 0)]
    """
    starts = [window_starts(int(n), int(w), overlap) for n, w in zip(size, window)]
    return [(z, y, x) for z in starts[0] for y in starts[1] for x in starts[2]]


def gaussian_importance_3d(window: Sequence[int], sigma_scale: float = SIGMA_SCALE) -> torch.Tensor:
    """Float32 ``[d, h, w]``: a Gaussian centred on the window, sigma ``sigma_scale * side`` per axis, peak 1, no
    zeros."""
    axes = []
    for n in window:
        t = torch.arange(int(n), dtype=torch.float64) - (int(n) - 1) / 2
        axes.append(torch.exp(-0.5 * (t / max(sigma_scale * int(n), 1e-6)) ** 2))
    g = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    g = g / g.max()
    return g.clamp_min(float(g[g > 0].min())).float()


def window_key_3d(name: str, z: int, y: int, x: int) -> int:
    """Noise key of the window at ``(z, y, x)`` of the volume ``name``."""
    return image_noise_key(f"{name}@{z},{y},{x}")


def segment_volume_3d(
    segment: Callable[..., object], volume: torch.Tensor, window: Sequence[int], overlap: float, name: str,
    chunk: int = 4, **sample_kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities and ensemble std, float32 ``[M, D, H, W]`` on the CPU, of one volume ``[C, D, H, W]`` in [-1, 1].

    ``segment(windows [n,C,d,h,w], noise_keys=[...], **sample_kwargs)`` returns a result whose ``probs`` and
    ``std`` are ``[n,M,d,h,w]`` (:meth:`spadfast.infer.segmenter.Segmenter.segment`,
    :meth:`spadfast.SPADTrainer.segment` of a 3-D model); ``chunk`` windows per call. ``tile_overlap`` in [0, 1)
    and a 4-D ``volume`` are checked before any window is segmented.
    """
    if not 0 <= overlap < 1:
        raise ValueError(f"`tile_overlap` must lie in [0, 1), got {overlap}")
    if not isinstance(volume, torch.Tensor) or volume.dim() != 4:
        raise ValueError(f"`volume` must be a [C,D,H,W] tensor, got {getattr(volume, 'shape', type(volume))}")
    window = tuple(int(w) for w in window)
    if len(window) != 3 or min(window) < 1:
        raise ValueError(f"`patch_size_3d` must be (d, h, w), 3 ints >= 1, got {window!r}")
    if chunk < 1:
        raise ValueError(f"`chunk` must be >= 1, got {chunk}")
    size = tuple(int(s) for s in volume.shape[1:])
    pad = [max(0, w - s) for w, s in zip(window, size)]
    padded = F.pad(volume[None], (0, pad[2], 0, pad[1], 0, pad[0]), mode="replicate")[0] if any(pad) else volume
    full = tuple(s + p for s, p in zip(size, pad))
    weight = gaussian_importance_3d(window)
    d, h, w = window
    positions = window_positions_3d(full, window, overlap)
    probs_sum = std_sum = None
    weight_sum = torch.zeros(full)
    for start in range(0, len(positions), chunk):
        part = positions[start:start + chunk]
        tiles = torch.stack([padded[:, z:z + d, y:y + h, x:x + w] for z, y, x in part])
        result = segment(tiles, noise_keys=[window_key_3d(name, *p) for p in part], **sample_kwargs)
        probs, std = result.probs.detach().float().cpu(), result.std.detach().float().cpu()
        if probs_sum is None:
            probs_sum = torch.zeros((probs.shape[1], *full))
            std_sum = torch.zeros_like(probs_sum)
        for (z, y, x), p, u in zip(part, probs, std):
            probs_sum[:, z:z + d, y:y + h, x:x + w] += p * weight
            std_sum[:, z:z + d, y:y + h, x:x + w] += u * weight
            weight_sum[z:z + d, y:y + h, x:x + w] += weight
    assert probs_sum is not None and std_sum is not None
    crop = (slice(None), slice(0, size[0]), slice(0, size[1]), slice(0, size[2]))
    return (probs_sum / weight_sum)[crop].contiguous(), (std_sum / weight_sum)[crop].contiguous()
