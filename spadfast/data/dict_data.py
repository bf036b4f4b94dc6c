"""Datasets that yield dicts, as MONAI's ``Dataset`` / ``CacheDataset`` with dict transforms do.

:class:`DictDataset` turns items ``{"image": [C,H,W], "label": [1,H,W] or [H,W]}`` (torch tensors, MONAI
``MetaTensor`` s or numpy arrays; other keys ignored) into spadfast's ``(image [C,H,W] float32 in [-1, 1],
mask [K,H,W] float32 0/1)``: labels hold class values ``0..K`` and become one mask channel per foreground class.
Images must already lie in [-1, 1] (e.g. MONAI's ``ScaleIntensityd(keys="image", minv=-1.0, maxv=1.0)``); an item
outside it, a label value above K or a missing key is a ValueError naming the item. ``SPADTrainer`` wraps a
dataset whose items are dicts with the default keys automatically.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["DictDataset", "yields_dicts"]


def yields_dicts(data) -> bool:
    """True when ``data[0]`` is a mapping (a MONAI-style dict dataset)."""
    try:
        return len(data) > 0 and isinstance(data[0], Mapping)
    except (TypeError, IndexError, KeyError):
        return False


def _tensor(x, what: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.as_subclass(torch.Tensor) if type(x) is not torch.Tensor else x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    raise TypeError(f"{what} must be a tensor or numpy array, got {type(x).__name__}")


class DictDataset(Dataset):
    """``(image, mask)`` items from a sequence or Dataset of dicts (module docstring)."""

    def __init__(self, data, mask_channels: int = 1, image_key: str = "image", label_key: str = "label") -> None:
        self.data = data
        self.mask_channels = int(mask_channels)
        self.image_key, self.label_key = image_key, label_key

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        item = self.data[index]
        where = f"item {index}"
        for key in (self.image_key, self.label_key):
            if not isinstance(item, Mapping) or key not in item:
                keys = sorted(item) if isinstance(item, Mapping) else type(item).__name__
                raise ValueError(f"{where} has no {key!r} key (it has {keys})")
        image = _tensor(item[self.image_key], f"{where} {self.image_key!r}").float()
        label = _tensor(item[self.label_key], f"{where} {self.label_key!r}")
        if image.dim() != 3:
            raise ValueError(f"{where}: {self.image_key!r} must be channel-first [C,H,W], got {tuple(image.shape)}")
        if not bool(torch.isfinite(image).all()) or float(image.min()) < -1 or float(image.max()) > 1:
            raise ValueError(f"{where}: {self.image_key!r} must lie in [-1, 1] (e.g. ScaleIntensityd(minv=-1.0, "
                             f"maxv=1.0)), got [{float(image.min()):.3g}, {float(image.max()):.3g}]")
        if label.dim() == 3 and label.shape[0] == 1:
            label = label[0]
        if label.dim() != 2 or tuple(label.shape) != tuple(image.shape[1:]):
            raise ValueError(f"{where}: {self.label_key!r} must be [1,H,W] or [H,W] matching the image "
                             f"{tuple(image.shape[1:])}, got {tuple(label.shape)}")
        values = label.round().long()
        if bool((values != label).any()) or int(values.min()) < 0 or int(values.max()) > self.mask_channels:
            raise ValueError(f"{where}: {self.label_key!r} must hold class values 0..{self.mask_channels}, got "
                             f"{label.unique()[:6].tolist()}")
        classes = torch.arange(1, self.mask_channels + 1).view(-1, 1, 1)
        return image, (values.unsqueeze(0) == classes).float()
