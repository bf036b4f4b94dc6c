"""The one separable Gaussian blur of spadfast's torch-side augmentation and corruptions."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["gaussian_blur"]


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``[N,C,H,W]`` (reflect padding), taps to 3 sigma."""
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).view(1, 1, 1, -1).repeat(x.shape[1], 1, 1, 1)
    pad_w, pad_h = min(radius, x.shape[-1] - 1), min(radius, x.shape[-2] - 1)
    x = F.conv2d(F.pad(x, (pad_w, pad_w, 0, 0), mode="reflect"), k[..., radius - pad_w:radius + pad_w + 1],
                 groups=x.shape[1])
    kv = k.transpose(-1, -2)[..., radius - pad_h:radius + pad_h + 1, :]
    return F.conv2d(F.pad(x, (0, 0, pad_h, pad_h), mode="reflect"), kv, groups=x.shape[1])
