"""The one augmentation: the 8 symmetries of the square (flips, transposes), identical for image and mask."""

from __future__ import annotations

import torch


def dihedral(image: torch.Tensor, mask: torch.Tensor, ops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply symmetry ``ops[b]`` in ``0..7`` to row ``b`` of ``image`` ``[B,C,H,W]`` and ``mask`` ``[B,M,H,W]``.

    Bit 0 flips horizontally, bit 1 vertically, bit 2 transposes (needs ``H == W``; ignored otherwise, so
    non-square images get the 4 flips only). Works on any device without host syncs; returns new tensors.
    """
    B = image.shape[0]
    ops = ops.to(image.device).view(B, 1, 1, 1)
    out = torch.cat([image, mask.to(image.dtype)], dim=1)
    out = torch.where(ops % 2 == 1, out.flip(-1), out)
    out = torch.where((ops // 2) % 2 == 1, out.flip(-2), out)
    if out.shape[-1] == out.shape[-2]:
        out = torch.where(ops // 4 == 1, out.transpose(-1, -2), out)
    c = image.shape[1]
    return out[:, :c], out[:, c:].to(mask.dtype)
