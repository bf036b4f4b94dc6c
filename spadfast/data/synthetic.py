"""Synthetic lesion "scans" with masks, generated from (seed, index), and writing them as a data folder."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ..io.files import _write_image, check_channels, write_mask_png
from ..ops.checks import check_int

_SALT = 0x5BAD  # keeps these random streams apart from other users of (seed, index)

_GRIDS: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    if size not in _GRIDS:
        _GRIDS[size] = tuple(np.mgrid[:size, :size].astype(np.float32) + 0.5)  # type: ignore[assignment]
    return _GRIDS[size]


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Zero-mean, unit-std low-frequency noise: a ``cells x cells`` normal grid upsampled bicubically."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    field = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    return (field - field.mean()) / (field.std() + 1e-6)


def _synthetic_sample(seed: int, index: int, size: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """One scan: image float32 ``[C,S,S]`` in [-1, 1] and mask float32 ``[1,S,S]``, from ``(seed, index)`` only."""
    rng = np.random.default_rng([_SALT, seed, index])

    def u01(lo: float, hi: float) -> np.float32:  # float32 scalars keep the arrays float32
        return np.float32(rng.uniform(lo, hi))

    yy, xx = _grid(size)

    # Background tissue: a base level, smooth texture and a gentle illumination gradient.
    base = u01(-0.6, -0.3)
    texture = u01(0.12, 0.26) * _smooth_noise(rng, size, int(rng.integers(3, 8)))
    angle = rng.uniform(0, 2 * np.pi)
    gx, gy = np.float32(np.cos(angle) / size), np.float32(np.sin(angle) / size)
    image = base + texture + u01(0.0, 0.2) * (gx * xx + gy * yy - np.float32(0.5))
    if rng.random() < 0.5:  # a bright vessel-like curve: not a lesion, so a global threshold is not enough
        rot = rng.uniform(0, np.pi)
        c, s_ = np.float32(np.cos(rot)), np.float32(np.sin(rot))
        along = c * xx + s_ * yy
        across = c * yy - s_ * xx - np.float32(rng.uniform(-0.3, 0.3) * size)
        wave = u01(0.03, 0.12) * size * np.sin(along * np.float32(rng.uniform(2, 6) / size) + u01(0, 2 * np.pi))
        width = u01(0.6, 1.2) * max(1.0, size / 64)
        image = image + u01(0.35, 0.6) * np.exp(-(((across - wave) / width) ** 2))

    # Lesions: 1 or 2 wobbly ellipses. t = normalised radius (1 on a lesion's unit outline, smaller inside); the
    # union {t < s} covers exactly the drawn fraction of the image, whatever the clipping by the border.
    n_lesions = 1 if rng.random() < 0.7 else 2
    t = np.full((size, size), np.inf, dtype=np.float32)
    for k in range(n_lesions):
        if rng.random() < 0.25:  # centre near an edge, so the lesion touches the border
            along, near = rng.uniform(0.1, 0.9), rng.uniform(0.0, 0.08)
            edge = rng.integers(4)
            cy, cx = [(near, along), (1 - near, along), (along, near), (along, 1 - near)][edge]
        else:
            cy, cx = rng.uniform(0.2, 0.8, size=2)
        rot = rng.uniform(0, np.pi)
        c, s_ = np.float32(np.cos(rot) / size), np.float32(np.sin(rot) / size)
        aspect = u01(0.55, 1.0)
        scale = np.float32(1.0 if k == 0 else rng.uniform(0.45, 0.9))
        dx, dy = xx - np.float32(cx * size), yy - np.float32(cy * size)
        u = c * dx + s_ * dy
        v = (c * dy - s_ * dx) / aspect
        rho = np.sqrt(u * u + v * v) + np.float32(1e-6)
        # cos(h*theta + phase) = Re(z^h * e^(i*phase)) with z = e^(i*theta): no arctan2 or cos per pixel.
        z = np.empty(rho.shape, np.complex64)
        z.real, z.imag = u / rho, v / rho
        zh = z
        wobble = np.ones_like(rho)
        for h in range(2, 6):
            zh = zh * z
            phase = np.complex64(np.exp(1j * rng.uniform(0, 2 * np.pi)))
            wobble += np.float32(rng.uniform(0.0, 0.16) / h**0.5) * (zh * phase).real
        t = np.minimum(t, rho / (scale * wobble))
    fraction = rng.uniform(0.05, 0.30)
    kth = min(int(np.ceil(fraction * t.size)), t.size - 1)
    s = np.partition(t.ravel(), kth)[kth]
    mask = t < s

    # Lesion appearance: brighter, soft-edged, internally textured; then speckle, stronger inside the lesion.
    edge_width = u01(0.02, 0.07) * s
    soft = np.float32(1.0) / (np.float32(1.0) + np.exp(np.clip((t - s) / edge_width, -30, 30)))
    inner = _smooth_noise(rng, size, int(rng.integers(4, 10)))
    contrast = u01(0.55, 0.95) * (np.float32(1.0) + np.float32(0.15) * inner)
    image = image + contrast * soft
    speckle = u01(0.07, 0.13) * (np.float32(1.0) + np.float32(0.5) * soft)
    image = image + speckle * rng.standard_normal((size, size), dtype=np.float32)

    if channels == 1:
        out = image[None]
    else:  # a tint per channel, as in colour endoscopy or dermoscopy
        gains = rng.uniform(0.85, 1.1, size=(channels, 1, 1)).astype(np.float32)
        offsets = rng.uniform(-0.08, 0.08, size=(channels, 1, 1)).astype(np.float32)
        out = image[None] * gains + offsets
    return np.clip(out, -1.0, 1.0).astype(np.float32), mask[None].astype(np.float32)


class SyntheticLesions(Dataset):
    """Deterministic synthetic "scans" with one or two bright lesions; the mask is the lesion.

    Sample ``i`` depends only on ``(seed, i)`` (not on ``n`` or on access order) and is generated on access (about
    a millisecond at 64 x 64). The background is a smooth texture with an illumination gradient and, in half the
    samples, a thin bright vessel-like curve that is not lesion (so a global threshold does not solve it); lesions
    are wobbly ellipses covering 5%-30% of the image in all, sometimes clipped by the border, brighter by 0.55-0.95
    with soft edges and internal texture; speckle noise (std 0.07-0.2) covers everything. A small UNet trained for
    a couple of minutes on CPU at 32-48 px reaches a Dice of about 0.85-0.9.

    Args:
        n: number of samples.
        image_size: side S of the square images.
        seed: dataset seed; different seeds give independent datasets.
        channels: 1 (grayscale) or 3 (RGB, the same scan tinted per channel).

    Returns (per item):
        ``(image, mask)``: image float32 ``[C,S,S]`` in ``[-1, 1]``, mask float32 ``[1,S,S]`` in ``{0, 1}``.

    Example:
        >>> ds = SyntheticLesions(4, image_size=32, seed=1)
        >>> image, mask = ds[0]
        >>> tuple(image.shape), tuple(mask.shape), image.dtype
        ((1, 32, 32), (1, 32, 32), torch.float32)
    """

    def __init__(self, n: int, image_size: int = 64, seed: int = 0, channels: int = 1):
        self.n = check_int(n, "n", 0)
        self.image_size = check_int(image_size, "image_size", 8)
        self.seed = check_int(seed, "seed", 0)
        self.channels = check_channels(channels, allow_none=False)

    def __len__(self) -> int:
        return self.n

    def _index(self, index: int) -> int:
        index = check_int(index, "index", -self.n)
        if index < 0:
            index += self.n
        if index >= self.n:
            raise IndexError(f"index {index} is out of range for SyntheticLesions of length {self.n}")
        return index

    def numpy(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample ``index`` as numpy arrays (same values and shapes as ``self[index]``)."""
        return _synthetic_sample(self.seed, self._index(index), self.image_size, self.channels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.numpy(index)
        return torch.from_numpy(image), torch.from_numpy(mask)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All samples stacked: images float32 ``[n,C,S,S]`` and masks float32 ``[n,1,S,S]``."""
        s, c = self.image_size, self.channels
        images = np.empty((self.n, c, s, s), np.float32)
        masks = np.empty((self.n, 1, s, s), np.float32)
        for i in range(self.n):
            images[i], masks[i] = self.numpy(i)
        return torch.from_numpy(images), torch.from_numpy(masks)


# ---------------------------------------------------------------------------------------------------------------
# Reading and writing files


def write_synthetic_folder(
    root: str | os.PathLike, n: int, image_size: int = 64, seed: int = 0, channels: int = 1
) -> Path:
    """Write ``SyntheticLesions(n, image_size, seed, channels)`` as a data folder of 8-bit PNGs.

    ``root/images/NNNN.png`` (gray, or colour when ``channels == 3``) and ``root/masks/NNNN.png`` (0/255). Files
    with the same names are overwritten; other files already there are left in place.

    Args:
        root: output folder (created).
        n: number of samples.
        image_size: side of the square images.
        seed: dataset seed.
        channels: 1 or 3.

    Returns:
        ``Path(root)``.

    Example:
        >>> import tempfile
        >>> root = write_synthetic_folder(tempfile.mkdtemp(), n=2, image_size=16)
        >>> sorted(p.name for p in (root / "masks").iterdir())
        ['0000.png', '0001.png']
    """
    root = Path(root)
    data = SyntheticLesions(n, image_size=image_size, seed=seed, channels=channels)
    width = max(4, len(str(max(n - 1, 0))))
    for i in range(len(data)):
        image, mask = data.numpy(i)
        u8 = np.clip(np.rint((image + 1.0) * 127.5), 0, 255).astype(np.uint8)
        u8 = u8[0] if channels == 1 else np.ascontiguousarray(u8.transpose(1, 2, 0)[:, :, ::-1])  # RGB -> BGR
        _write_image(root / "images" / f"{i:0{width}d}.png", u8)
        write_mask_png(root / "masks" / f"{i:0{width}d}.png", mask[0] != 0)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    return root
