"""3-D training patches of NIfTI volumes (``model_type: unet3d``): one ``patch_size_3d`` block of each case per epoch.

:class:`VolumePatches3D` reads the volumes through :class:`spadfast.data.volumes.VolumeSlices` (the same checks,
normalisation, orientation, CT statistics and volume cache) and cuts ``(d, h, w)`` blocks along the volume's array
axes. ``draw(index, epoch)`` is a pure function of ``(seed, epoch, index)``: with probability ``foreground_share`` the
block is centred (then clamped inside the volume) on a foreground voxel of a randomly chosen class present in the
case (nnU-Net's oversampling), otherwise its corner is uniform. A patch larger than a volume along any axis is a
ValueError naming the case, raised in ``__init__``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..ops.checks import check_int, check_number
from .volumes import VolumeSlices, one_hot

__all__ = ["VolumePatches3D", "flips_3d"]

_SALT = 0x3D3D  # keeps these draws apart from other users of (seed, epoch, index)
_MAX_LOCATIONS = 10_000  # foreground voxels kept per case and class for the oversampling (evenly thinned)


class VolumePatches3D(Dataset):
    """``(image [C,d,h,w], mask [K,d,h,w])`` blocks of the cases of a volume data set.

    Args:
        volumes: a :class:`VolumeSlices` of the data set (its slicing axis and slice draws are not used).
        patch: ``(d, h, w)`` voxels along the volume's array axes (after ``reorient``).
        seed: the draws' seed.
        foreground_share: probability in [0, 1] that a block is centred on a foreground voxel.

    Item ``index`` is case ``index``; ``ds[i]`` is ``ds.draw(i, 0)``. Images are float32 in [-1, 1] (the volume's
    normalisation), masks float32 one-hot over the K foreground classes. ``spacing`` is the median voxel spacing of
    the cases (mm, ``(d, h, w)``); ``num_classes``, ``class_names``, ``image_channels``, ``modalities``, ``axis``
    and ``root`` are those of ``volumes``.

    Example:
        >>> import tempfile
        >>> from spadfast.data.synthetic_volumes import write_demo_volumes
        >>> root = write_demo_volumes(tempfile.mkdtemp(), n_cases=2, shape=(20, 18, 6))
        >>> ds = VolumePatches3D(VolumeSlices(root, image_size=None), (8, 8, 4))
        >>> [tuple(t.shape) for t in ds.draw(1, epoch=3)]
        [(1, 8, 8, 4), (2, 8, 8, 4)]
    """

    def __init__(self, volumes: VolumeSlices, patch: Sequence[int], seed: int = 0,
                 foreground_share: float = 1 / 3) -> None:
        if not isinstance(volumes, VolumeSlices):
            raise TypeError(f"`volumes` must be a VolumeSlices, got {type(volumes).__name__}")
        patch = tuple(patch)
        if len(patch) != 3:
            raise ValueError(f"`patch_size_3d` must be (d, h, w), got {patch!r}")
        for side in patch:
            check_int(side, "patch_size_3d", 1)
        for name, shape in zip(volumes.case_names, (c.shape for c in volumes._cases)):
            too_big = [a for a in range(3) if patch[a] > shape[a]]
            if too_big:
                a = too_big[0]
                raise ValueError(f"`patch_size_3d` {patch} is larger than case {name!r} ({volumes.root}) along axis "
                                 f"{a}: {patch[a]} > {shape[a]} voxels (volume shape {tuple(shape)}); lower it")
        self.volumes, self.patch = volumes, patch
        self.seed = check_int(seed, "seed", 0)
        self.foreground_share = check_number(foreground_share, "foreground_oversample", 0, 1)
        self.num_classes, self.mask_channels = volumes.num_classes, volumes.mask_channels
        # what callers read off a VolumeSlices (spadfast train takes num_classes, channels and modalities from it)
        self.image_channels, self.modalities, self.class_names = (volumes.image_channels, volumes.modalities,
                                                                  volumes.class_names)
        self.axis, self.root = volumes.axis, volumes.root
        self.spacing = tuple(float(s) for s in np.median(np.array(volumes.spacings), axis=0))
        self._locations: dict[int, list[np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.volumes.case_names)

    def case(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Case ``index`` whole: image float32 ``[C,D,H,W]`` and one-hot mask float32 ``[K,D,H,W]``."""
        image, label = self.volumes.volume(index)
        return (torch.from_numpy(np.stack(image).astype(np.float32, copy=False)),
                torch.from_numpy(one_hot(label, self.mask_channels)))

    def _class_locations(self, index: int, label: np.ndarray) -> list[np.ndarray]:
        if index not in self._locations:
            found = []
            for k in range(1, self.num_classes):
                where = np.argwhere(label == k)
                step = max(1, len(where) // _MAX_LOCATIONS)
                found.append(where[::step])
            self._locations[index] = found
        return self._locations[index]

    def corner(self, index: int, epoch: int) -> tuple[int, int, int]:
        """The block's first voxel ``(z, y, x)`` in case ``index`` at ``epoch`` (see the module docstring)."""
        image, label = self.volumes.volume(index)
        shape = label.shape
        rng = np.random.default_rng([_SALT, self.seed, check_int(epoch, "epoch", 0), index])
        if rng.random() < self.foreground_share:
            present = [k for k, where in enumerate(self._class_locations(index, label)) if len(where)]
            if present:
                where = self._locations[index][present[int(rng.integers(len(present)))]]
                centre = where[int(rng.integers(len(where)))]
                return tuple(min(max(int(c) - p // 2, 0), s - p) for c, p, s in zip(centre, self.patch, shape))
        return tuple(int(rng.integers(s - p + 1)) for p, s in zip(self.patch, shape))

    def draw(self, index: int, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Case ``index``'s block at ``epoch``: ``(image [C,d,h,w], mask [K,d,h,w])``, float32."""
        index = check_int(index, "index", 0, len(self) - 1)
        z, y, x = self.corner(index, epoch)
        d, h, w = self.patch
        image, label = self.volumes.volume(index)
        block = np.stack([ch[z:z + d, y:y + h, x:x + w] for ch in image]).astype(np.float32)
        return torch.from_numpy(block), torch.from_numpy(one_hot(label[z:z + d, y:y + h, x:x + w], self.mask_channels))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.draw(index, 0)


def flips_3d(image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flips of each row of ``image`` ``[B,C,D,H,W]`` and ``mask`` ``[B,K,D,H,W]`` along D, H and W (one of 8
    per row, one ``randint`` from ``generator``); no host sync, new tensors."""
    B = image.shape[0]
    ops = torch.randint(0, 8, (B,), generator=generator, device=image.device).view(B, 1, 1, 1, 1)
    out = torch.cat([image, mask.to(image.dtype)], dim=1)
    for bit, dim in enumerate((-1, -2, -3)):
        out = torch.where((ops >> bit) % 2 == 1, out.flip(dim), out)
    c = image.shape[1]
    return out[:, :c], out[:, c:].to(mask.dtype)
