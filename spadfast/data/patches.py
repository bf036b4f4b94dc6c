"""Training patches at native resolution (``resize: false``): a random ``image_size`` window of each image per epoch.

:class:`PatchDraws` wraps a dataset whose items keep their own size (``SegmentationFolder(mixed_sizes=True)``):
``draw(index, epoch)`` cuts a ``patch x patch`` window out of item ``index``, a pure function of ``(seed, epoch,
index)``, so the draws change every epoch, are the same in loader workers and after a resume, and DDP ranks (which
serve disjoint indices of each epoch) draw disjoint patches. With probability ``foreground_share`` the window is
centred on a foreground pixel of a randomly chosen class present in the item (nnU-Net's oversampling, per item
instead of per batch position); otherwise its corner is uniform. Images smaller than the patch are padded (image:
edge values; mask: background) to the patch size.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..ops.checks import check_int, check_number

__all__ = ["PatchDraws", "patch_corner"]

_SALT = 0x9A7C  # keeps these draws apart from other users of (seed, epoch, index)


def patch_corner(mask: torch.Tensor, patch: tuple[int, int], rng: np.random.Generator,
                 foreground_share: float) -> tuple[int, int]:
    """``(y, x)`` of a ``patch`` window inside a ``[K, H, W]`` mask at least the patch's size: centred (then clamped)
    on a random foreground pixel of a random present class with probability ``foreground_share``, else uniform."""
    K, H, W = mask.shape
    ph, pw = patch
    if rng.random() < foreground_share:
        present = [k for k in range(K) if bool((mask[k] > 0).any())]  # -1 (ignored) is not foreground
        if present:
            k = present[int(rng.integers(len(present)))]
            ys, xs = torch.nonzero(mask[k] > 0, as_tuple=True)
            j = int(rng.integers(len(ys)))
            y = min(max(int(ys[j]) - ph // 2, 0), H - ph)
            x = min(max(int(xs[j]) - pw // 2, 0), W - pw)
            return y, x
    return int(rng.integers(H - ph + 1)), int(rng.integers(W - pw + 1))


class PatchDraws(Dataset):
    """Patches of ``patch`` px from a dataset of native-size ``(image [C,H,W], mask [K,H,W])`` items.

    ``draw(index, epoch)`` returns ``(image [C,ph,pw], mask [K,ph,pw])``; ``__getitem__(index)`` is ``draw(index,
    0)`` (what a plain loader sees). The trainer's batch stream passes its epoch (:class:`spadfast.data.batches.EpochDraws`).
    """

    def __init__(self, dataset: Dataset, patch: int | tuple[int, int], seed: int = 0,
                 foreground_share: float = 1 / 3) -> None:
        self.dataset = dataset
        self.patch = (patch, patch) if isinstance(patch, int) else tuple(patch)
        for side in self.patch:
            check_int(side, "image_size", 1)
        self.seed = check_int(seed, "seed", 0)
        self.foreground_share = check_number(foreground_share, "foreground_oversample", 0, 1)

    def __len__(self) -> int:
        return len(self.dataset)

    def draw(self, index: int, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        # a dataset that draws its own items per epoch (volume slices) draws this epoch's item first
        image, mask = self.dataset.draw(index, epoch) if hasattr(self.dataset, "draw") else self.dataset[index]
        ph, pw = self.patch
        pad_h, pad_w = max(0, ph - image.shape[1]), max(0, pw - image.shape[2])
        if pad_h or pad_w:
            image = F.pad(image[None], (0, pad_w, 0, pad_h), mode="replicate")[0]
            mask = F.pad(mask, (0, pad_w, 0, pad_h))
        rng = np.random.default_rng([_SALT, self.seed, check_int(epoch, "epoch", 0), index])
        y, x = patch_corner(mask, self.patch, rng, self.foreground_share)
        return image[:, y:y + ph, x:x + pw].contiguous(), mask[:, y:y + ph, x:x + pw].contiguous()

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.draw(index, 0)
