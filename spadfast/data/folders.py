"""``SegmentationFolder``: image/mask pairs from ``root/images`` and ``root/masks``, paired by file stem."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..io.files import (
    check_channels,
    check_size,
    load_stored,
    pair_folder,
    read_mask,
    resize_image,
    resize_labels,
    resize_mask,
    stored_to_model,
    warn_low_range,
)
from ..io.label_maps import read_label_png
from ..ops.checks import check_int
from ..ops.constants import INTENSITY_NORMS, MIN_SIDE


class SegmentationFolder(Dataset):
    """Image/mask pairs from ``root/images`` and ``root/masks``, paired by file stem.

    Every pair is read once in ``__init__``: a missing partner, an unreadable or corrupt file, an image and mask
    of different sizes, mixed native sizes with ``image_size=None`` or an empty folder raise ``ValueError`` naming
    the file before any training starts. With ``cache=True`` (default) the decoded, resized pixels stay in memory
    in their stored dtype (uint8/uint16), otherwise files are read again on each access.

    Images: PNG, JPEG, TIFF or BMP, gray or RGB(A), 8- or 16-bit, divided by the dtype's max and mapped to
    ``[-1, 1]``; resized with INTER_AREA (shrinking) or INTER_LINEAR. Masks: see :func:`read_mask` (nonzero is
    foreground; JPEG masks thresholded at half range); resized with INTER_NEAREST_EXACT.

    Items are returned as stored: the trainer augments batches (:func:`spadfast.data.augmentation.dihedral` in
    ``SPADTrainer.train_step``), so the folder draws nothing.

    Args:
        root: folder holding ``images/`` and ``masks/``.
        image_size: ``None`` (keep the native size; all images must share it), an int S (S x S) or ``(H, W)``.
        channels: ``None`` (from the first image: 1 for gray, 3 for colour), 1 (colour converted to gray) or 3
            (gray replicated).
        cache: keep decoded pixels in memory.
        intensity_norm: ``"dtype"`` (divide by the dtype's max), ``"minmax"`` or ``"percentile"`` (per image; see
            :func:`spadfast.io.files.intensity_range`); "dtype" warns when most images use under 1/8 of their range.
        mixed_sizes: with ``image_size=None``, every item keeps its own native size (training patches are cut from
            them: :class:`spadfast.data.patches.PatchDraws`); images under ``MIN_SIDE`` px are refused.
        num_classes: 2 (binary masks, nonzero is foreground) or more (label maps holding 0..num_classes-1).
        ignore_label: a mask value marking unannotated pixels (e.g. 255): masks are then read as label maps (binary
            ones hold 0/1), and those pixels are -1 in every mask channel (no loss, no validation score there).

    Returns (per item):
        ``(image, mask)``: image float32 ``[C,H,W]`` in ``[-1, 1]``, mask float32 ``[K,H,W]`` in ``{0, 1}`` (K =
        num_classes - 1; -1 at ignored pixels).

    Attributes:
        names: sorted list of stems. paths: list of ``(image_path, mask_path)``. image_size: ``(H, W)`` of items.
        channels: C.

    Example:
        >>> import tempfile
        >>> from spadfast.data.synthetic import write_synthetic_folder
        >>> root = write_synthetic_folder(tempfile.mkdtemp(), n=3, image_size=32, seed=0)
        >>> ds = SegmentationFolder(root, image_size=16)
        >>> ds.names, tuple(ds[0][0].shape), tuple(ds[0][1].shape)
        (['0000', '0001', '0002'], (1, 16, 16), (1, 16, 16))
    """

    def __init__(
        self,
        root: str | os.PathLike,
        image_size: int | tuple[int, int] | None = None,
        channels: int | None = None,
        cache: bool = True,
        intensity_norm: str = "dtype",
        mixed_sizes: bool = False,
        num_classes: int = 2,
        ignore_label: int | None = None,
    ):
        self.root = Path(root)
        self.num_classes = check_int(num_classes, "num_classes", 2)
        self.ignore_label = None if ignore_label is None else check_int(ignore_label, "ignore_label", self.num_classes)
        if self.ignore_label is not None and self.ignore_label > 65535:
            raise ValueError(f"`ignore_label` must be a 16-bit pixel value, got {ignore_label}")
        size = check_size(image_size)
        want_channels = check_channels(channels, allow_none=True)
        self.cache = bool(cache)
        if intensity_norm not in INTENSITY_NORMS:
            raise ValueError(f"`intensity_norm` must be one of {INTENSITY_NORMS}, got {intensity_norm!r}")
        self.intensity_norm = intensity_norm

        images, masks = pair_folder(self.root)
        self.names: list[str] = sorted(images)
        self.paths: list[tuple[Path, Path]] = [(images[s], masks[s]) for s in self.names]

        self.channels: int = 0
        self._native = size is None
        self.mixed_sizes = bool(mixed_sizes) and size is None  # native mode: every item keeps its own size
        self.image_size: tuple[int, int] = size or (0, 0)
        self._items: list[tuple[np.ndarray, np.ndarray, float, float]] = []
        used, empty, full = [], 0, []
        for image_path, mask_path in self.paths:
            image, mask, lo, hi, fraction = self._load(image_path, mask_path, check=True,
                                                       want_channels=want_channels)
            used.append(fraction)
            foreground = mask != 0 if self.ignore_label is None else (mask != 0) & (mask != self.ignore_label)
            empty += not foreground.any()
            if foreground.all():
                full.append(mask_path.name)
            if self.cache:
                self._items.append((image, mask, lo, hi))
        if self.intensity_norm == "dtype":
            warn_low_range(used, str(self.root / "images"))
        if empty == len(self.paths):
            warnings.warn(f"no mask in {self.root / 'masks'} holds foreground: a model trained on it predicts "
                          "nothing (wrong folder, or labels in another channel?)", UserWarning, stacklevel=2)
        if full:
            warnings.warn(f"{len(full)} mask(s) in {self.root / 'masks'} are entirely foreground (e.g. {full[0]}): "
                          "inverted or unthresholded masks?", UserWarning, stacklevel=2)

    def _load(
        self, image_path: Path, mask_path: Path, check: bool = False, want_channels: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, float, float, float]:
        """Resized image (stored dtype, ``[H,W]`` or ``[H,W,3]``), bool mask, intensity range and used range."""
        image, lo, hi, used = load_stored(image_path, None, self.intensity_norm)
        mask = read_mask(mask_path) if self._binary_masks else self._labels(mask_path)
        if image.shape[:2] != mask.shape:
            raise ValueError(
                f"{image_path} is {image.shape[1]}x{image.shape[0]} (WxH) but its mask {mask_path} is "
                f"{mask.shape[1]}x{mask.shape[0]}"
            )
        if check:
            if not self.channels:
                self.channels = want_channels or (1 if image.ndim == 2 else 3)
            if self.mixed_sizes and min(mask.shape) < MIN_SIDE:
                raise ValueError(f"{image_path} is {mask.shape[1]}x{mask.shape[0]} (WxH): images must be at least "
                                 f"{MIN_SIDE} px on each side")
            if self.mixed_sizes:
                return image, mask, lo, hi, used
            if self._native and self.image_size == (0, 0):
                self.image_size = mask.shape
            elif self._native and self.image_size != mask.shape:
                raise ValueError(
                    f"{image_path} is {mask.shape[1]}x{mask.shape[0]} (WxH) but {self.paths[0][0]} is "
                    f"{self.image_size[1]}x{self.image_size[0]}: pass image_size to resize to one size"
                )
        if self.mixed_sizes:
            return image, mask, lo, hi, used
        resize = resize_mask if self._binary_masks else resize_labels
        return resize_image(image, self.image_size), resize(mask, self.image_size), lo, hi, used

    @property
    def _binary_masks(self) -> bool:
        """Masks read as bool (nonzero is foreground) rather than as label maps."""
        return self.num_classes == 2 and self.ignore_label is None

    def _labels(self, mask_path: Path) -> np.ndarray:
        """A label map: class values 0..num_classes-1 or ``ignore_label`` (uint8, uint16 for an ignore value above
        255); anything else a ValueError naming file and value."""
        labels = read_label_png(mask_path)
        values = labels if self.ignore_label is None else labels[labels != self.ignore_label]
        top = int(values.max(initial=0))
        if top >= self.num_classes or int(values.min(initial=0)) < 0:
            hint = ""
            if top == 255 and self.ignore_label is None:
                hint = " (255 is often an 'ignore' value: declare it with ignore_label: 255, or relabel those pixels)"
            allowed = f"values 0..{self.num_classes - 1}" + (f" or {self.ignore_label}" if self.ignore_label else "")
            raise ValueError(f"{mask_path} holds class value {top} but num_classes is {self.num_classes} "
                             f"({allowed}){hint}")
        return labels.astype(np.uint16 if (self.ignore_label or 0) > 255 else np.uint8)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = check_int(index, "index", -len(self))
        if index < 0:
            index += len(self)
        if index >= len(self):
            raise IndexError(f"index {index} is out of range for SegmentationFolder of length {len(self)}")
        image, mask, lo, hi = self._items[index] if self.cache else self._load(*self.paths[index])[:4]
        image_t = torch.from_numpy(stored_to_model(image, lo, hi, self.channels))
        if not self._binary_masks:  # one channel per foreground class, -1 in every channel where ignored
            classes = np.arange(1, self.num_classes, dtype=mask.dtype).reshape(-1, 1, 1)
            channels = (mask[None] == classes).astype(np.float32)
            if self.ignore_label is not None:
                channels[:, mask == self.ignore_label] = -1.0
            return image_t, torch.from_numpy(channels)
        mask_t = torch.from_numpy(np.ascontiguousarray(mask[None], dtype=np.float32))
        return image_t, mask_t
