"""Volumes served as 2-D slices: slicing and the ``VolumeSlices`` training dataset.

The data set layout (Decathlon / nnU-Net) and the NIfTI readers live in :mod:`spadfast.io.nifti`.

Arrays are in the file's voxel order ``(i, j, k)`` as nibabel returns them (no reorientation); a voxel's size in
millimetres is ``header.get_zooms()[:3]`` (``spacing``). A 2-D slice along ``axis`` keeps the other two axes in
order (axis 2: ``[I, J]``).

Intensity normalisation lives in :mod:`spadfast.io.volume_norm`, shared with prediction.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ..io.files import check_size
from ..io.nifti import group_cases, load_case, n_channels_of, read_dataset_json, read_label, read_nifti, volume_files
from ..io.orientation import Reorientation
from ..io.volume_norm import (
    CTStats,
    NormParams,
    apply_normalization,
    dataset_ct_stats,
    foreground_sample,
    is_ct,
    modality_of,
    normalization_params,
)
from ..ops.checks import check_axis, check_int, check_number
from .slice_draws import draw_slice

__all__ = ["VolumeSlices", "coarsest_axis", "slice_volume", "context_indices"]



# ---------------------------------------------------------------------------------------------------------------
# Slicing (shared by training and prediction)


def coarsest_axis(spacing: Sequence[float]) -> int:
    """The axis with the largest voxel size (ties: the last such axis, so isotropic volumes slice along axis 2)."""
    best = max(spacing)
    return max(i for i, s in enumerate(spacing) if s >= best - 1e-6 * best)


def in_plane_shape(shape: Sequence[int], axis: int) -> tuple[int, int]:
    """``(H, W)`` of a slice along ``axis`` of a volume ``shape`` ``(I, J, K)``: the other two axes, in order."""
    rest = [int(s) for i, s in enumerate(shape[:3]) if i != axis]
    return rest[0], rest[1]


def resize_plane(plane: np.ndarray, size: tuple[int, int] | None, nearest: bool = False) -> np.ndarray:
    """Resize a 2-D array to ``size`` = ``(H, W)``: bilinear (pixel centres aligned, OpenCV's INTER_LINEAR), or
    nearest (INTER_NEAREST_EXACT, same alignment) for labels. ``None`` keeps it as it is (native resolution)."""
    if size is None or plane.shape == tuple(size):
        return plane
    flag = cv2.INTER_NEAREST_EXACT if nearest else cv2.INTER_LINEAR
    return cv2.resize(plane, (size[1], size[0]), interpolation=flag)


def spacing_size(shape: Sequence[int], spacing: Sequence[float], axis: int,
                 target: Sequence[float] | None) -> tuple[int, int] | None:
    """In-plane ``(H, W)`` of a slice along ``axis`` resampled from the volume's ``spacing`` to ``target`` ``(dy, dx)``
    mm (at least 1 px each); None without a target (native size)."""
    if not target:
        return None
    h, w = in_plane_shape(shape, axis)
    sy, sx = (float(s) for i, s in enumerate(spacing[:3]) if i != axis)
    return max(1, round(h * sy / float(target[0]))), max(1, round(w * sx / float(target[1])))


def context_indices(index: int, context: int, length: int) -> list[int]:
    """The slices a 2.5-D input of slice ``index`` stacks: ``index - context .. index + context``, clamped to
    ``[0, length)`` (edge slices replicated)."""
    return [min(max(index + d, 0), length - 1) for d in range(-context, context + 1)]


def slice_volume(
    image: np.ndarray | Sequence[np.ndarray], axis: int, index: int, size: tuple[int, int] | None,
    context: int = 0,
) -> np.ndarray:
    """Slice ``index`` along ``axis`` of a normalised volume (float32 ``[C,I,J,K]``, or a list of ``[I,J,K]``
    channels), resized to ``size``: float32 ``[C,H,W]`` in [-1, 1]. The one path from a volume to model input,
    shared by :class:`VolumeSlices` and :func:`spadfast.infer.volumes.predict_volume`.

    ``context`` k > 0 (2.5-D, ``SPADConfig.context_slices``): the slices ``index - k .. index + k`` (edge slices
    replicated, :func:`context_indices`), offset-major: ``[C x (2k + 1), H, W]`` holds the C channels of slice
    ``index - k`` first and those of ``index`` in the middle."""
    length = image[0].shape[axis]
    planes = [ch[(slice(None),) * axis + (k,)] for k in context_indices(index, context, length)
              for ch in image]  # basic indexing: views (np.take is slow)
    return np.stack([np.clip(resize_plane(np.ascontiguousarray(p), size), -1.0, 1.0) for p in planes]).astype(
        np.float32, copy=False
    )


def slice_label(label: np.ndarray, axis: int, index: int, size: tuple[int, int] | None) -> np.ndarray:
    """Slice ``index`` along ``axis`` of a label map ``[I,J,K]``, resized (nearest) to ``size``: ``[H,W]``."""
    plane = np.ascontiguousarray(label[(slice(None),) * axis + (index,)])
    if plane.dtype != np.uint8:
        plane = plane.astype(np.uint16 if plane.max(initial=0) < 65536 else np.float32)
    return resize_plane(plane, size, nearest=True)


def one_hot(label: np.ndarray, num_foreground: int) -> np.ndarray:
    """``[H,W]`` labels -> float32 ``[K,H,W]`` with ``out[k] = (label == k + 1)`` for the K foreground classes."""
    return np.stack([(label == k + 1) for k in range(num_foreground)]).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------
# The dataset


@dataclass
class _Case:
    name: str
    image_paths: list[Path]
    label_path: Path
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    norm: list[NormParams]
    foreground: np.ndarray  # bool per slice along the chosen axis
    turn: Reorientation  # stored axes -> the axes slices are taken in


class VolumeSlices(Dataset):
    """2-D slices of a Decathlon / nnU-Net data set (see the module docstring) as ``(image, mask)`` training items.

    Everything is checked in ``__init__`` (each volume is decoded once, one at a time), before any training: a
    missing label or image, a truncated or corrupt file, a case whose modalities differ in shape or affine, a label
    map whose shape or affine differs from its image, non-integer labels, labels outside dataset.json's classes, a
    4-D image without a channel convention, and cases with different numbers of modalities are ``ValueError``s
    naming the file. Afterwards volumes stream from disk: the decoded, normalised volumes of the last
    ``cache_volumes`` cases used stay in memory (least recently used evicted), so a data set larger than memory
    trains; per-case normalisation parameters and foreground slice lists are kept from ``__init__``. A slice of
    an uncompressed ``.nii`` case that is not cached is read straight from the memory-mapped files (one slice, no
    full decode): for data sets much larger than the cache, gunzip the volumes so that random slice access stays
    cheap (a cache miss on a ``.nii.gz`` decodes the whole volume, ~1-3 s for a 512x512x100 CT).

    Items: ``len(ds)`` is the total number of slices along ``axis``. With ``foreground_fraction`` f (default), item
    ``index`` is drawn from ``(seed, epoch, index)``: with probability f a uniformly chosen slice that holds
    foreground, otherwise a uniformly chosen slice without (:func:`spadfast.data.slice_draws.draw_slice`);
    :meth:`set_epoch` or :meth:`draw` give fresh draws (the trainer's batch stream calls ``draw`` with its own
    epoch). ``foreground_fraction=None`` serves every slice once, in order (case by case).
    :meth:`load_slice` serves a slice by its number in that order.

    Args:
        root: the data set folder (``imagesTr``/``labelsTr``, optional ``dataset.json``).
        image_size: S (S x S) or ``(H, W)``: every slice is resized to it (image bilinear, labels nearest);
            None keeps each slice's native in-plane size (``resize: false``; the trainer cuts patches from them).
        axis: 0, 1 or 2, the array axis to slice along; None: the coarsest voxel spacing (median over cases).
        foreground_fraction: probability in [0, 1] of drawing a foreground slice, or None (every slice in order).
        window: ``(lo, hi)``: a fixed intensity window for every channel instead of the per-modality rule.
        ct_stats: CT channels' data-set statistics (:mod:`spadfast.io.volume_norm`): one
            :class:`~spadfast.io.volume_norm.CTStats` or None per image channel; ``"compute"``: from this set's
            foreground voxels (the training set, at training start); None: each volume's own percentiles.
        cache_volumes: decoded volumes kept in memory (0: decode on every access).
        context_slices: k > 0 stacks the k neighbouring slices on each side as extra channels (2.5-D; images
            ``[C_mod x (2k + 1),S,S]``, :func:`slice_volume`); 0: each slice alone.
        seed: slice-sampling seed.
        split: ``"train"`` (``imagesTr``/``labelsTr``) or ``"test"`` (``imagesTs``/``labelsTs``).
        init_workers: threads that decode and check the volumes in ``__init__`` (default ``min(4, CPUs)``; each
            holds one decoded volume at a time). The result does not depend on it.
        cases: only these case names (e.g. a train/validation split of ``imagesTr``); None: every case. Files of
            other cases are not read.
        target_spacing: ``(dy, dx)`` mm, with ``image_size=None``: every slice is resampled to that in-plane
            spacing (image bilinear, labels nearest; :func:`spacing_size`); None: native pixels.
        reorient: ``"RAS"``: each case's image and labels are permuted/flipped to RAS axis order when read
            (:mod:`spadfast.io.orientation`; ``axis``, shapes and spacings then refer to those axes, and the
            memory-mapped one-slice reads are off); None: as stored.

    Returns (per item):
        ``(image, mask)``: image float32 ``[C_mod,S,S]`` in [-1, 1]; mask float32 ``[K,S,S]`` one-hot over the K
        = C - 1 foreground classes (``[1,S,S]`` in {0, 1} for a binary data set, the PNG folders' format).

    Attributes:
        num_classes: C, background included. class_names: C names (``[0]`` is the background; ``"class <i>"``
        without dataset.json). mask_channels: K = C - 1. modalities: one name per image channel (``"unknown"``
        without dataset.json). image_channels: C_mod. case_names: sorted case names. axis: the slicing axis.
        image_size: ``(H, W)``. spacings: per-case voxel size (mm). ct_stats: the CT statistics in use per image
        channel (None for non-CT channels or per-volume statistics).

    Example:
        >>> import tempfile
        >>> from spadfast.data.synthetic_volumes import write_demo_volumes
        >>> root = write_demo_volumes(tempfile.mkdtemp(), n_cases=2, shape=(20, 18, 6), num_classes=3)
        >>> ds = VolumeSlices(root, image_size=16)
        >>> ds.case_names, ds.num_classes, ds.modalities, ds.axis, len(ds)
        (['case_000', 'case_001'], 3, ['MR'], 2, 12)
        >>> image, mask = ds[0]
        >>> tuple(image.shape), tuple(mask.shape), float(mask.sum(0).max()) <= 1.0
        ((1, 16, 16), (2, 16, 16), True)
    """

    def __init__(
        self,
        root: str | os.PathLike,
        image_size: int | tuple[int, int],
        axis: int | None = None,
        foreground_fraction: float | None = 0.5,
        window: tuple[float, float] | None = None,
        cache_volumes: int = 4,
        seed: int = 0,
        split: str = "train",
        init_workers: int | None = None,
        cases: Sequence[str] | None = None,
        reorient: str | None = None,
        target_spacing: Sequence[float] | None = None,
        ct_stats: Sequence[CTStats | None] | str | None = None,
        context_slices: int = 0,
    ) -> None:
        self.root = Path(root)
        compute_ct = isinstance(ct_stats, str)
        if compute_ct and ct_stats != "compute":
            raise ValueError(f"`ct_stats` must be None, 'compute' or one CTStats (or None) per channel, got {ct_stats!r}")
        self.target_spacing = tuple(float(s) for s in target_spacing) if target_spacing else None
        if self.target_spacing is not None and (len(self.target_spacing) != 2 or min(self.target_spacing) <= 0):
            raise ValueError(f"`target_spacing` must be (dy, dx) in mm, both > 0, got {target_spacing!r}")
        self.reorient = reorient
        Reorientation(np.eye(4), reorient)  # checks the code before any file is read
        self.image_size: tuple[int, int] | None = check_size(image_size)  # None: native in-plane size
        want_axis = check_axis(axis)
        self.foreground_fraction = check_number(foreground_fraction, "foreground_fraction", 0, 1, optional=True)
        self.window = _check_window(window)
        self.cache_volumes = check_int(cache_volumes, "cache_volumes", 0)
        self.context_slices = check_int(context_slices, "context_slices", 0)
        self.seed = check_int(seed, "seed", 0)
        if split not in ("train", "test"):
            raise ValueError(f"`split` must be 'train' or 'test', got {split!r}")
        self.split = split
        self.epoch = 0
        tag = "Tr" if split == "train" else "Ts"
        images_dir, labels_dir = self.root / f"images{tag}", self.root / f"labels{tag}"
        if not self.root.is_dir():
            raise ValueError(f"`root` {str(self.root)!r} is not a folder")
        if not labels_dir.is_dir():
            raise ValueError(f"{labels_dir} is missing: a data set holds images{tag}/ and labels{tag}/")
        info = read_dataset_json(self.root)
        labels = volume_files(labels_dir)
        groups = group_cases(images_dir, label_stems=list(labels))
        for case, paths in groups.items():
            if case not in labels:
                raise ValueError(f"{paths[0]} has no label map: expected {labels_dir / (case + '.nii.gz')}")
        for stem, path in labels.items():
            if stem not in groups:
                raise ValueError(f"{path} has no image: expected {images_dir / (stem + '_0000.nii.gz')}")
        if cases is not None:
            if isinstance(cases, str):
                raise TypeError("`cases` must be a list of case names, not a string")
            unknown = sorted(set(cases) - set(groups))
            if unknown:
                raise ValueError(f"`cases` names {unknown[:3]} that {images_dir} does not hold (it holds "
                                 f"{list(groups)[:3]}...)")
            if not cases:
                raise ValueError("`cases` must name at least one case")
            groups = {c: groups[c] for c in sorted(set(cases))}

        # Pass 1: headers only (cheap): channels, geometry, the slicing axis.
        n_mod = len(info.modalities) or None
        heads = {case: load_case(paths, n_mod, decode=False) for case, paths in groups.items()}
        turns = {case: Reorientation(h.reference.affine, reorient) for case, h in heads.items()}  # type: ignore
        channels = {case: n_channels_of(h) for case, h in heads.items()}
        first = next(iter(groups))
        for case, c in channels.items():
            if n_mod is not None and c != n_mod:
                raise ValueError(f"{groups[case][0]}: case {case!r} has {c} modalities but {info.path} lists "
                                 f"{n_mod} ({list(info.modalities)})")
            if c != channels[first]:
                raise ValueError(f"case {case!r} ({groups[case][0]}) has {c} modalities but case {first!r} "
                                 f"({groups[first][0]}) has {channels[first]}: every case needs the same modalities")
        self.image_channels: int = channels[first]
        self.modalities: list[str] = list(info.modalities) or ["unknown"] * self.image_channels
        ct_channels = [c for c in range(self.image_channels) if is_ct(self.modalities[c])] if self.window is None else []
        if compute_ct or ct_stats is None:
            self.ct_stats: list[CTStats | None] = [None] * self.image_channels
        else:
            given = list(ct_stats)  # type: ignore[arg-type]
            if len(given) != self.image_channels:
                raise ValueError(f"`ct_stats` holds {len(given)} entries for {self.image_channels} image channels")
            self.ct_stats = given
        compute_ct = compute_ct and bool(ct_channels)
        median_spacing = np.median(np.array([turns[c].spacing(h.spacing) for c, h in heads.items()]), axis=0)
        self.axis: int = coarsest_axis(median_spacing.tolist()) if want_axis is None else want_axis

        # Pass 2: decode every volume once: corrupt files, labels, normalisation, foreground slices. Cases are
        # decoded by a few threads (zlib and numpy release the GIL); errors surface in case order.
        n_classes = len(info.class_names) or None
        self._cases: list[_Case] = []
        self._cache: OrderedDict[int, tuple[list[np.ndarray], np.ndarray]] = OrderedDict()
        keep_from = len(groups) - self.cache_volumes  # the last cases stay cached: only those are normalised here

        def scan(i: int, case: str, paths: list[Path]):
            head = heads[case]
            turn = turns[case]
            label = turn.to_standard(read_label(labels[case], head, n_classes))  # geometry before the image
            raw = load_case(paths, n_mod).channels
            assert raw is not None
            raw = [turn.to_standard(ch) for ch in raw]
            norm = [normalization_params(ch, modality_of(info.modalities, c), self.window, self.ct_stats[c])
                    for c, ch in enumerate(raw)]
            samples = [foreground_sample(raw[c], label) for c in ct_channels] if compute_ct else None
            foreground = (label > 0).any(axis=tuple(a for a in range(3) if a != self.axis))
            entry = _Case(case, paths, labels[case], turn.shape(head.shape), turn.spacing(head.spacing), norm,
                          foreground, turn)
            if compute_ct:  # normalised once the data set's statistics are known (below)
                cached = list(raw) if i >= keep_from else None
            else:
                cached = [apply_normalization(ch, p) for ch, p in zip(raw, norm)] if i >= keep_from else None
            values: set[int] = set()
            if n_classes is None:  # the label values, for _check_class_numbers (bincount: one linear pass)
                top = int(label.max(initial=0))
                values = set((np.unique(label) if top > 65535 else np.flatnonzero(np.bincount(label.ravel()))).tolist())
            return entry, int(label.max(initial=0)), cached, label if cached is not None else None, values, samples

        workers = min(len(groups), check_int(init_workers, "init_workers", 1) if init_workers is not None
                      else min(4, os.cpu_count() or 1))
        max_label, max_label_file, label_values = 0, labels[first], set()
        jobs = [(i, case, paths) for i, (case, paths) in enumerate(groups.items())]
        if workers <= 1:
            results = (scan(*job) for job in jobs)
            pool = None
        else:
            pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="spadfast-volumes")
            results = pool.map(lambda job: scan(*job), jobs)
        raw_cached: list[tuple[int, list[np.ndarray], np.ndarray]] = []
        ct_samples: list[list[np.ndarray]] = [[] for _ in ct_channels]
        try:
            for i, (entry, top, cached, label, values, samples) in enumerate(results):
                self._cases.append(entry)
                if top > max_label:
                    max_label, max_label_file = top, entry.label_path
                label_values |= values
                if samples is not None:
                    for k, sample in enumerate(samples):
                        ct_samples[k].append(sample)
                if cached is not None:
                    if compute_ct:
                        raw_cached.append((i, cached, label))
                    else:
                        self._remember(i, cached, label)
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        if compute_ct:
            for k, c in enumerate(ct_channels):
                self.ct_stats[c] = dataset_ct_stats(ct_samples[k])
            for entry in self._cases:
                entry.norm = [normalization_params(np.zeros(0), modality_of(info.modalities, c), None,
                                                   self.ct_stats[c]) if self.ct_stats[c] is not None else p
                              for c, p in enumerate(entry.norm)]
            for i, raw, label in raw_cached:
                self._remember(i, [apply_normalization(ch, p) for ch, p in zip(raw, self._cases[i].norm)], label)
        if n_classes is None:
            _check_class_numbers(max_label, max_label_file, label_values)
            n_classes = max(2, max_label + 1)
            self.class_names: list[str] = ["background"] + [f"class {c}" for c in range(1, n_classes)]
        else:
            self.class_names = list(info.class_names)
        self.num_classes: int = n_classes
        self.mask_channels: int = n_classes - 1
        self.case_names: list[str] = [c.name for c in self._cases]
        self.spacings: list[tuple[float, float, float]] = [c.spacing for c in self._cases]
        self._slices: list[tuple[int, int]] = [
            (i, k) for i, c in enumerate(self._cases) for k in range(c.shape[self.axis])
        ]
        fg = np.array([self._cases[i].foreground[k] for i, k in self._slices], dtype=bool)
        self.foreground_slices: np.ndarray = np.flatnonzero(fg)  # slice numbers (file order) holding a label
        self.background_slices: np.ndarray = np.flatnonzero(~fg)

    # -- volumes ----------------------------------------------------------------------------------------------

    def _remember(self, i: int, image: list[np.ndarray], label: np.ndarray) -> None:
        if self.cache_volumes == 0:
            return
        self._cache[i] = (image, label)
        self._cache.move_to_end(i)
        while len(self._cache) > self.cache_volumes:
            self._cache.popitem(last=False)

    def volume(self, case: int) -> tuple[list[np.ndarray], np.ndarray]:
        """Case ``case``'s normalised image (one float32 ``[I,J,K]`` array per channel) and label map ``[I,J,K]``
        (from the cache, or decoded from disk and cached)."""
        if case in self._cache:
            self._cache.move_to_end(case)
            return self._cache[case]
        c = self._cases[case]
        loaded = load_case(c.image_paths, self.image_channels if len(c.image_paths) == 1 else None)
        image = [c.turn.to_standard(apply_normalization(ch, p))
                 for ch, p in zip(loaded.channels, c.norm)]  # type: ignore[arg-type]
        label = c.turn.to_standard(read_label(c.label_path, None, self.num_classes))
        self._remember(case, image, label)
        return image, label

    def _uncompressed(self, case: int) -> bool:
        c = self._cases[case]
        return c.turn.identity and all(p.name.lower().endswith(".nii") for p in [*c.image_paths, c.label_path])

    def _read_one_slice(self, case: int, k: int, stop: int | None = None) -> tuple[list[np.ndarray], np.ndarray]:
        """Slices ``k .. stop - 1`` (default: slice ``k`` alone) of an uncompressed case straight from its
        memory-mapped files (no full decode): normalised image float32 ``[C,...]`` and labels, each with the slicing
        axis kept (length ``stop - k``)."""
        c = self._cases[case]
        sl = (slice(None),) * self.axis + (slice(k, k + 1 if stop is None else stop),)
        chans = []
        for path in c.image_paths:
            img = read_nifti(path)
            if len(img.shape) == 4 and img.shape[3] > 1:  # channels last
                data = np.moveaxis(np.asarray(img.dataobj[sl + (slice(None),) * (3 - self.axis)]), -1, 0)
                chans.extend(data)
            else:
                extra = (0,) if len(img.shape) == 4 else ()
                chans.append(np.asarray(img.dataobj[sl + (slice(None),) * (2 - self.axis) + extra]))
        image = [apply_normalization(ch, p) for ch, p in zip(chans, c.norm)]
        lab_img = read_nifti(c.label_path)
        extra = (0,) if len(lab_img.shape) == 4 else ()
        label = np.asarray(lab_img.dataobj[sl + (slice(None),) * (2 - self.axis) + extra])
        return image, label.astype(np.uint8 if self.num_classes <= 256 else np.int64)

    # -- items ------------------------------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Choose the slice draws of this epoch (they depend on ``(seed, epoch, index)``)."""
        self.epoch = check_int(epoch, "epoch", 0)

    def __len__(self) -> int:
        return len(self._slices)

    def slice_of(self, index: int, epoch: int | None = None) -> tuple[int, int]:
        """``(case number, slice number along axis)`` that item ``index`` serves in ``epoch`` (default: this one)."""
        return self._slices[self._slice_number(index, epoch)]

    def _slice_number(self, index: int, epoch: int | None = None) -> int:
        if self.foreground_fraction is None:
            return index
        epoch = self.epoch if epoch is None else check_int(epoch, "epoch", 0)
        return draw_slice(self.seed, epoch, index, self.foreground_fraction, self.foreground_slices,
                          self.background_slices)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.draw(index)

    def draw(self, index: int, epoch: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Item ``index`` as epoch ``epoch`` (default: this one) draws it: ``ds[i]`` is ``ds.draw(i)``."""
        index = check_int(index, "index", -len(self))
        if index < 0:
            index += len(self)
        if index >= len(self):
            raise IndexError(f"index {index} is out of range for VolumeSlices of length {len(self)}")
        return self.load_slice(self._slice_number(index, epoch))

    def load_slice(self, number: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(image, mask)`` of slice ``number`` in file order (case by case, then along ``axis``)."""
        case, k = self._slices[number]
        c = self._cases[case]
        if case not in self._cache and self._uncompressed(case):
            lo = max(k - self.context_slices, 0)  # the slab the 2.5-D context needs (the slice alone without)
            hi = min(k + self.context_slices + 1, c.shape[self.axis])
            image, label = self._read_one_slice(case, lo, hi)
            k -= lo
        else:
            image, label = self.volume(case)
        size = self.image_size or spacing_size(c.shape, c.spacing, self.axis, self.target_spacing)
        x = slice_volume(image, self.axis, k, size, self.context_slices)
        y = one_hot(slice_label(label, self.axis, k, size), self.mask_channels)
        return torch.from_numpy(x), torch.from_numpy(y)


def _check_class_numbers(top: int, path: Path, values: set[int]) -> None:
    """Without dataset.json the classes are 0..max label: refuse a large label value that most of 1..max never
    reach (255 as "unannotated", a 0/255 binary mask), which would silently make a ``max + 1``-class model. Dense
    label sets (many real classes, e.g. 117 organs) pass. ``path``: a label map holding ``top``; ``values``: every
    label value of the set."""
    from ..io.label_maps import LARGE_LABEL

    if top < LARGE_LABEL or len(values - {0}) >= top / 2:
        return
    shown = sorted(values)
    raise ValueError(
        f"{path} holds label {top}, and without a dataset.json that makes a {top + 1}-class model, though the set "
        f"holds only the values {shown[:8]}{'...' if len(shown) > 8 else ''}: store class numbers 0..C-1 (binary "
        "masks as 0/1, not 0/255; unannotated voxels as background), or add a dataset.json whose `labels` names the "
        "classes"
    )


def _check_window(window: object) -> tuple[float, float] | None:
    if window is None:
        return None
    ok = isinstance(window, (Sequence, np.ndarray)) and not isinstance(window, (str, bytes)) and len(window) == 2
    if ok:
        try:
            lo, hi = float(window[0]), float(window[1])  # type: ignore[index]
        except (TypeError, ValueError):
            ok = False
    if not ok or not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        raise ValueError(f"`window` must be None or a pair (lo, hi) of finite numbers with lo < hi, got {window!r}")
    return lo, hi
