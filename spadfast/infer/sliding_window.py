"""Segment an image of any size at native resolution: overlapping windows of the model's size, Gaussian-weighted.

As nnU-Net's sliding-window inference: windows of ``(h, w)`` (the model's ``image_size``) step by
``round(window * (1 - overlap))`` and the last window of each axis ends at the border, so every pixel is covered;
each window's probabilities (and ensemble std) are weighted by a Gaussian importance map (sigma = 1/8 of the window,
peak 1, floored at its smallest positive value so borders still count) and the weighted sums are divided by the
summed weights. An image smaller than the window is padded (edge values replicated) and the padding is cropped
from the output.

Windows x ensemble members go through ``segment`` in chunks (the sampler encodes each window once for a
cached-encoder model and runs its members as one batch). The initial noise of a window is keyed by the image's name
and the window's position (:func:`window_key`), so a mask does not depend on the chunk size, the order of windows or
the other images of a folder. An image that is exactly one window keeps its own key (:func:`image_noise_key` of its
name), so it is segmented exactly as with ``resize: true``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ..diffusion.sampler import image_noise_key

__all__ = ["SIGMA_SCALE", "window_starts", "window_positions", "gaussian_importance", "window_key", "segment_tiled", "segment_tiled_many",
           "segment_image", "validate_whole_images"]

SIGMA_SCALE = 1.0 / 8  # Gaussian sigma as a fraction of the window side (nnU-Net's choice)


def window_starts(length: int, window: int, overlap: float) -> list[int]:
    """Start offsets of windows of ``window`` px along an axis of ``length`` px (``length >= window``) with the given
    ``overlap`` in [0, 1): evenly spread from 0 to ``length - window``, at most ``window * (1 - overlap)`` apart.

    Example:
        >>> window_starts(100, 32, 0.5)
        [0, 14, 27, 41, 54, 68]
    """
    if length <= window:
        return [0]
    step = max(1, int(round(window * (1 - overlap))))
    n = math.ceil((length - window) / step) + 1
    return [int(round(i * (length - window) / (n - 1))) for i in range(n)]


def window_positions(size: tuple[int, int], window: tuple[int, int], overlap: float) -> list[tuple[int, int]]:
    """``(y, x)`` of every window over an image of ``size`` (at least ``window``), row-major."""
    return [(y, x) for y in window_starts(size[0], window[0], overlap) for x in window_starts(size[1], window[1], overlap)]


def gaussian_importance(window: tuple[int, int], sigma_scale: float = SIGMA_SCALE) -> torch.Tensor:
    """Float32 ``[h, w]``: a Gaussian centred on the window, sigma ``sigma_scale * side`` per axis, peak 1, no zeros."""
    axes = []
    for n in window:
        t = torch.arange(n, dtype=torch.float64) - (n - 1) / 2
        axes.append(torch.exp(-0.5 * (t / max(sigma_scale * n, 1e-6)) ** 2))
    g = axes[0][:, None] * axes[1][None, :]
    g = g / g.max()
    return g.clamp_min(float(g[g > 0].min())).float()


def window_key(name: str, y: int, x: int) -> int:
    """Noise key of the window at ``(y, x)`` of the image ``name``."""
    return image_noise_key(f"{name}@{y},{x}")


def segment_tiled(
    segment: Callable[..., object], image: torch.Tensor, window: tuple[int, int], overlap: float, name: str,
    chunk: int = 16, **sample_kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities and ensemble std, float32 ``[M, H, W]``, of one image ``[C, H, W]`` in [-1, 1] of any size.

    ``segment(windows [n,C,h,w], noise_keys=[...], **sample_kwargs)`` returns a result with ``probs`` and ``std``
    ``[n,M,h,w]`` (:meth:`spadfast.SPADTrainer.segment`, :meth:`spadfast.infer.segmenter.Segmenter.segment`); ``chunk``
    windows per call.
    """
    return segment_tiled_many(segment, [image], window, overlap, [name], chunk=chunk, **sample_kwargs)[0]


def segment_tiled_many(
    segment: Callable[..., object], images: Sequence[torch.Tensor], window: tuple[int, int], overlap: float,
    names: Sequence[str], chunk: int | None = 16, return_members: bool = False, **sample_kwargs,
) -> list[tuple[torch.Tensor, ...]]:
    """:func:`segment_tiled` of several images ``[C, H_i, W_i]`` whose windows share sampler calls: ``chunk``
    windows per call, taken across the images in order (a volume's slices fill the sampler's rows instead of one
    slice's few windows each; None: every window in one call, the sampler chunking by its own memory limit). Every
    window keeps its own noise key, so each image's result does not depend on which images share its calls. Returns
    one ``(probs, std)`` pair, float32 ``[M, H_i, W_i]``, per image; ``return_members``: ``(probs, std, members)``
    with every member's probabilities stitched alike, float32 ``[K, M, H_i, W_i]`` (samples of whole images, e.g. for
    GED against several annotators)."""
    if not 0 <= overlap < 1:
        raise ValueError(f"`tile_overlap` must lie in [0, 1), got {overlap}")
    if len(images) != len(names):
        raise ValueError(f"`names` must name every image: {len(names)} names for {len(images)} images")
    h, w = window
    weight = gaussian_importance(window)
    plans = []  # per image: padded image, padded size, window positions, whether it is one window
    jobs = []  # (image index, y, x, noise key) in call order
    for i, (image, name) in enumerate(zip(images, names)):
        _, H, W = image.shape
        pad_h, pad_w = max(0, h - H), max(0, w - W)
        padded = F.pad(image[None], (0, pad_w, 0, pad_h), mode="replicate")[0] if pad_h or pad_w else image
        size = (H + pad_h, W + pad_w)
        positions = window_positions(size, window, overlap)
        whole = positions == [(0, 0)] and not (pad_h or pad_w)  # the image is one window: keyed as the image itself
        plans.append((padded, size, (H, W)))
        jobs += [(i, y, x, image_noise_key(name) if whole else window_key(name, y, x)) for y, x in positions]
    sums: list[list[torch.Tensor] | None] = [None] * len(images)
    chunk = max(1, len(jobs)) if chunk is None else chunk
    for start in range(0, len(jobs), chunk):
        part = jobs[start:start + chunk]
        tiles = torch.stack([plans[i][0][:, y:y + h, x:x + w] for i, y, x, _ in part])
        extra = {"return_members": True} if return_members else {}
        result = segment(tiles, noise_keys=[key for *_, key in part], **sample_kwargs, **extra)
        probs, std = result.probs.detach().float().cpu(), result.std.detach().float().cpu()
        members = None
        if return_members:
            members = result.members.detach().float().cpu()
            members = members.unsqueeze(2) if members.ndim == 4 else members  # binary [n,K,h,w] -> [n,K,1,h,w]
        for j, ((i, y, x, _), p, s) in enumerate(zip(part, probs, std)):
            if sums[i] is None:
                size = plans[i][1]
                sums[i] = [torch.zeros(p.shape[0], *size), torch.zeros(p.shape[0], *size), torch.zeros(size)]
                if members is not None:
                    sums[i].append(torch.zeros(members.shape[1], p.shape[0], *size))  # type: ignore[union-attr]
            probs_sum, std_sum, weight_sum = sums[i][:3]  # type: ignore[index]
            probs_sum[:, y:y + h, x:x + w] += p * weight
            std_sum[:, y:y + h, x:x + w] += s * weight
            weight_sum[y:y + h, x:x + w] += weight
            if members is not None:
                sums[i][3][:, :, y:y + h, x:x + w] += members[j] * weight  # type: ignore[index]
    out = []
    for (_, _, (H, W)), acc in zip(plans, sums):
        assert acc is not None
        probs_sum, std_sum, weight_sum = acc[:3]
        maps = [(probs_sum / weight_sum)[:, :H, :W], (std_sum / weight_sum)[:, :H, :W]]
        if return_members:
            maps.append((acc[3] / weight_sum)[..., :H, :W])
        out.append(tuple(maps))
    return out


def segment_image(segmenter, image: torch.Tensor, name: str, steps: int | None = None, ensemble: int | None = None,
                  seed: int | None = 0, chunk: int = 16, segment=None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`segment_tiled` with a trainer's or :class:`~spadfast.infer.segmenter.Segmenter`'s own window
    (``config.image_size``) and overlap (``config.tile_overlap``): probabilities and std ``[M, H, W]``.
    ``segment``: another function with ``segmenter.segment``'s signature (test-time augmentation)."""
    from ..io.files import check_size

    cfg = segmenter.config
    window = check_size(cfg.image_size)
    assert window is not None
    return segment_tiled(segment or segmenter.segment, image, window, float(getattr(cfg, "tile_overlap", 0.5)), name,
                         chunk=chunk, steps=steps, ensemble=ensemble, seed=seed)


def validate_whole_images(trainer, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Mean Dice of single-member sliding-window predictions of whole images ``(image [C,H,W], mask [K,H,W])``,
    over (image, class) pairs where the class is in the prediction or the ground truth (1.0 when none is).

    A pixel's class is the one ``predict`` writes (:func:`spadfast.evaluation.metrics.labels_from_probs`, as the resized path
    scores it), so a pixel counts for one class at most."""
    from ..diffusion.sampler import labels_from_probs
    from ..evaluation.class_scores import present_class_dice

    scores: list[float] = []
    for i, (image, mask) in enumerate(pairs):
        probs, _ = segment_image(trainer, image, f"val{i}", ensemble=1, seed=trainer.config.seed)
        labels = labels_from_probs(probs, trainer.config.threshold)  # [H,W] in 0..K
        classes = torch.arange(1, probs.shape[0] + 1, device=labels.device).view(-1, 1, 1)
        annotated = (mask >= 0).to(probs.device)  # ignored pixels (-1) are scored as neither
        scores += present_class_dice((labels == classes) & annotated, mask.to(probs.device) > 0.5)
    return sum(scores) / len(scores) if scores else 1.0
