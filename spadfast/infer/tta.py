"""Test-time augmentation spread over the ensemble: member k of an image sees view ``k mod V`` of it.

Views are the flips of the image (identity, horizontal, vertical, both) and, for square images, the same four after
a transpose (V = 8). Each view is sampled with its share of the members, its output mapped back by the inverse
transform, and all K members are averaged as one ensemble (the std is over all of them), so with K >= V TTA runs
the same number of denoiser rows as plain sampling; only the image encoder runs once per view. View v's initial
noise is keyed by ``(key, v)``, so a mask does not depend on the batch.
"""

from __future__ import annotations

import torch

from ..diffusion.sampler import SampleResult

__all__ = ["views", "segment_tta", "with_tta"]


def views(square: bool) -> list[tuple[bool, bool, bool]]:
    """``(transpose, flip_h, flip_w)`` of each view: 4 flips, and 4 more transposed for square images."""
    flips = [(False, False, False), (False, False, True), (False, True, False), (False, True, True)]
    return flips + [(True, fh, fw) for _, fh, fw in flips] if square else flips


def _apply(x: torch.Tensor, view: tuple[bool, bool, bool]) -> torch.Tensor:
    transpose, fh, fw = view
    x = x.transpose(-1, -2) if transpose else x
    x = x.flip(-2) if fh else x
    return x.flip(-1) if fw else x


def _invert(x: torch.Tensor, view: tuple[bool, bool, bool]) -> torch.Tensor:
    transpose, fh, fw = view
    x = x.flip(-1) if fw else x
    x = x.flip(-2) if fh else x
    return x.transpose(-1, -2) if transpose else x


def segment_tta(segment, images: torch.Tensor, steps: int | None, ensemble: int, seed: int | None,
                noise_keys: list[int], threshold: float = 0.5) -> SampleResult:
    """``segment(images, steps=, ensemble=, seed=, return_members=True, noise_keys=)`` over the views of ``images``
    ``[B,C,H,W]``; returns a :class:`SampleResult` of all ``ensemble`` members (members included)."""
    H, W = images.shape[-2:]
    all_views = views(H == W)[:ensemble]
    counts = [len(range(v, ensemble, len(all_views))) for v in range(len(all_views))]
    members = []
    for v, (view, k) in enumerate(zip(all_views, counts)):
        keys = [(key * 1_000_003 + v) % 2**31 for key in noise_keys]
        result = segment(_apply(images, view), steps=steps, ensemble=k, seed=seed, return_members=True,
                         noise_keys=keys)
        m = result.members  # [B,k,H,W] (binary) or [B,k,M,H,W]
        members.append(_invert(m, view))
    stacked = torch.cat(members, dim=1)
    if stacked.dim() == 4:
        stacked = stacked.unsqueeze(2)  # [B,K,1,H,W]
    return SampleResult.from_members(stacked, threshold, return_members=True)


def with_tta(segmenter):
    """``segmenter.segment`` with test-time augmentation: the same signature, members spread over the views (for a
    :class:`spadfast.infer.ensemble.ModelEnsemble`: each model's members over the views)."""
    if callable(getattr(segmenter, "segment_tta", None)):
        return segmenter.segment_tta
    cfg = segmenter.config

    def segment(images, steps=None, ensemble=None, seed=0, return_members=False, noise_keys=None):
        keys = list(noise_keys) if noise_keys is not None else [0] * images.shape[0]
        return segment_tta(segmenter.segment, images, steps, ensemble or cfg.ensemble, seed, keys, cfg.threshold)

    return segment
