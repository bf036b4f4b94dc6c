"""Segment NIfTI volumes slice by slice and write label maps in the patient's space (the input's grid and header).

A volume is normalised and sliced exactly as :class:`spadfast.data.volumes.VolumeSlices` does for training
(:func:`spadfast.io.volume_norm.normalize_volume`, :func:`spadfast.data.volumes.slice_volume`), each slice is segmented at the
model's size, the class probabilities are resized back to the slice's native in-plane size (bilinear), and labels
follow :func:`spadfast.evaluation.metrics.labels_from_probs` (background unless some class probability exceeds the threshold;
then the most probable class). The label map is written with the input's shape, affine and header (qform/sform and
their codes); optional probability and uncertainty volumes (float32 ``[I,J,K,K_classes]``, classes last) go to
``probabilities/`` and ``uncertainty/`` beside it, so that an output folder of label maps can be evaluated as is.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch

from ..config import MODEL_TYPES_3D
from ..data.volumes import coarsest_axis, in_plane_shape, resize_plane, slice_volume, spacing_size
from ..diffusion.sampler import image_noise_key, labels_from_probs
from ..io.input_folders import check_one_input_kind
from ..io.nifti import case_stem, group_cases, load_case, read_dataset_json, volume_stem
from ..io.nifti import write_nifti
from ..io.nifti import check_reference_writable
from ..io.orientation import Reorientation
from ..io.volume_norm import CTStats, ct_stats_from_flat, is_ct, normalize_volume
from ..ops.checks import check_axis, check_int
from ..runtime.distributed import shard_of
from .sliding_window import segment_tiled_many
from .sliding_window3d import segment_volume_3d
from .tta import with_tta

__all__ = ["VolumeSettings", "VolumePreprocessing", "model_preprocessing", "segment_volume", "predict_volume",
           "predict_volume_folder", "check_volume_model"]


def _resolve_size(image_size: object, segmenter) -> tuple[int, int]:
    from ..io.files import check_size

    size = check_size(image_size if image_size is not None else segmenter.config.image_size)
    assert size is not None
    return size


def check_volume_model(config, where: object, allow_image_model: bool = False) -> None:
    """ValueError naming ``where`` when ``config`` is a binary model trained on 2-D images: its config records no
    volume modalities, so its inputs were normalised per image file (``intensity_norm``), never per volume as
    volumes are here. ``allow_image_model`` runs it anyway."""
    trained_on_images = int(getattr(config, "num_classes", 2)) <= 2 and not tuple(getattr(config, "modalities", ()))
    if trained_on_images and not allow_image_model:
        raise ValueError(f"{where}: this binary model was trained on 2-D images (its config records no volume "
                         "modalities) and never saw the per-volume intensity normalisation that NIfTI input gets; "
                         "predict 2-D images with it, or pass allow_image_model=True to run it on volumes anyway")


@dataclass(frozen=True)
class VolumePreprocessing:
    """How a model's volumes were normalised and sliced in training, read from its config by
    :func:`model_preprocessing` (the one place; as nnU-Net's predictor reads its plans).

    Attributes:
        modalities: one name per channel (``"CT"`` selects the CT normalisation); None: not recorded (not CT).
        window: the fixed ``(lo, hi)`` intensity window of every channel, or None (the per-modality rule).
        reorient: ``"RAS"`` (slice in RAS axis order, :mod:`spadfast.io.orientation`) or None (as stored).
        target_spacing: in-plane ``(dy, dx)`` mm each slice is resampled to (``resize: false`` models), or ``()``.
        axis: the array axis slices are taken along, or None (each volume's coarsest spacing).
        ct_stats: the training set's CT statistics per channel (``ct_normalization: dataset``), or None (CT channels
            use each volume's own percentiles).
    """

    modalities: tuple[str, ...] | None = None
    window: tuple[float, float] | None = None
    reorient: str | None = None
    target_spacing: tuple[float, ...] = ()
    axis: int | None = None
    ct_stats: tuple[CTStats | None, ...] | None = None


def model_preprocessing(config, modalities: Sequence[str] | None = None) -> VolumePreprocessing:
    """The volume preprocessing ``config`` (a :class:`spadfast.SPADConfig`) was trained with. ``modalities``: the
    fallback when the config records none (a model trained on 2-D images or on dict items), e.g. a dataset.json's."""
    recorded = tuple(str(m) for m in getattr(config, "modalities", ()) or ())
    window = tuple(float(v) for v in getattr(config, "intensity_window", ()) or ())
    names = recorded or (tuple(modalities) if modalities else None)
    ct_stats = None
    if getattr(config, "ct_normalization", "volume") == "dataset" and not window:
        ct_stats = ct_stats_from_flat(getattr(config, "ct_stats", ()))
        if ct_stats is None and any(is_ct(m) for m in recorded):  # a model trained on CT volumes (not a fallback)
            raise ValueError("the model normalises CT with its training set's statistics (ct_normalization: "
                             "dataset) but its config holds none (ct_stats is empty): a checkpoint written while "
                             "training set them; set ct_normalization: volume in its config to use per-volume "
                             "statistics instead")
    return VolumePreprocessing(
        modalities=names,
        window=(window[0], window[1]) if window else None,
        reorient=getattr(config, "reorient", None),
        target_spacing=tuple(float(v) for v in getattr(config, "target_spacing", ()) or ()),
        axis=getattr(config, "slice_axis", None),
        ct_stats=tuple(ct_stats) if ct_stats is not None else None,
    )


# Preprocessing knobs VolumeSettings had before the model's config became their one source (issue 29.1).
_PREPROCESSING_OPTIONS = {"modalities": "modalities", "window": "intensity_window", "reorient": "reorient",
                          "target_spacing": "target_spacing"}


@dataclass(frozen=True)
class VolumeSettings:
    """Run-time settings of :func:`predict_volume` and :func:`predict_volume_folder`. The preprocessing (modalities,
    intensity window, reorientation, target spacing, slice axis) is never set here: it is what the model was
    trained with (:func:`model_preprocessing`).

    Attributes:
        axis: array axis to slice along; None: the model's ``slice_axis`` (itself None: each volume's coarsest
            spacing).
        image_size: the model's slice size (default ``config.image_size``).
        steps, ensemble, seed: sampling settings passed to ``segment``. Each slice's initial noise is keyed by
            ``"<case>/<axis>/<slice>"``, so its labels do not depend on ``batch_size``.
        batch_size: slices per ``segment`` call.
        write_probabilities: also write ``probabilities/<case>.nii.gz`` beside the label map: float32
            ``[I,J,K,K_classes]`` mean class probabilities.
        write_uncertainty: also write ``uncertainty/<case>.nii.gz``: float32 ``[I,J,K,K_classes]`` ensemble std.
        threshold: class probability that beats the background (default ``config.threshold``, else 0.5).
        allow_image_model: run a binary model trained on 2-D images (refused by default:
            :func:`check_volume_model`).
        uint8_maps: hold and write the probability and uncertainty volumes as uint8 scaled by 1/255 (NIfTI's
            ``scl_slope``; readers get floats back): a quarter of float32's memory and disk, steps of 1/255.
        progress: a progress bar of slices per case (stderr).
        tta: test-time augmentation of every slice (:mod:`spadfast.infer.tta`: flips, and transposes of square inputs,
            spread over the ensemble members and undone before averaging), as ``predict --tta`` does for images.
    """

    axis: int | None = None
    image_size: int | tuple[int, int] | None = None
    steps: int | None = None
    ensemble: int | None = None
    seed: int = 0
    batch_size: int = 8
    write_probabilities: bool = False
    write_uncertainty: bool = False
    threshold: float | None = None
    allow_image_model: bool = False
    uint8_maps: bool = False
    progress: bool = False
    tta: bool = False


def _settings(settings: VolumeSettings | None, options: dict) -> VolumeSettings:
    """``settings`` with ``options`` (its field names as keywords) applied; an unknown keyword is a TypeError."""
    if settings is not None and not isinstance(settings, VolumeSettings):
        raise TypeError(f"`settings` must be a VolumeSettings, got {type(settings).__name__}")
    for option in sorted(set(options) & set(_PREPROCESSING_OPTIONS)):
        raise TypeError(f"`{option}` is not a prediction setting: volumes are preprocessed as the model was trained "
                        f"(its config's `{_PREPROCESSING_OPTIONS[option]}`)")
    unknown = sorted(set(options) - {f.name for f in fields(VolumeSettings)})
    if unknown:
        raise TypeError(f"unknown keyword argument {unknown[0]!r}; VolumeSettings has "
                        f"{[f.name for f in fields(VolumeSettings)]}")
    return replace(settings or VolumeSettings(), **options)


def segment_volume(
    segmenter,
    image_paths: Sequence[str | os.PathLike] | str | os.PathLike,
    settings: VolumeSettings | None = None,
    **options,
) -> dict:
    """Segment one case and return its volumes in the input's voxel order (nothing is written):
    ``{"labels": uint8/uint16 [I,J,K], "probs": float32 [I,J,K,K_classes] or None, "std": ... or None,
    "reference": the nibabel image of channel 0}``; probabilities and std only when ``write_probabilities`` /
    ``write_uncertainty`` are set. Arguments as in :func:`predict_volume`; preprocessed as the model was trained
    (:func:`model_preprocessing`)."""
    return _segment_case(segmenter, image_paths, _settings(settings, options), model_preprocessing(segmenter.config))


def _segment_case(segmenter, image_paths, opts: VolumeSettings, prep: VolumePreprocessing,
                  check_reference=None) -> dict:
    """:func:`segment_volume` with the preprocessing given; ``check_reference(reference, path)`` runs once the case
    is read and before any voxel is normalised or segmented (the writers' checks)."""
    if isinstance(image_paths, (str, os.PathLike)):
        image_paths = [image_paths]
    paths = [Path(p) for p in image_paths]
    if not paths:
        raise ValueError("`image_paths` must name at least one volume")
    batch_size = check_int(opts.batch_size, "batch_size", 1)
    cfg = segmenter.config
    check_volume_model(cfg, paths[0], opts.allow_image_model)
    from .ensemble import check_members

    check_members(segmenter, opts.ensemble, opts.tta)
    three_d = getattr(cfg, "model_type", None) in MODEL_TYPES_3D
    if three_d and opts.tta:
        raise ValueError(f"`tta` is not available for a 3-D model (model_type {cfg.model_type}) yet: predict "
                         "without it")
    size = _resolve_size(opts.image_size, segmenter)
    threshold = float(getattr(cfg, "threshold", 0.5)) if opts.threshold is None else opts.threshold
    modalities = prep.modalities
    n_modalities = len(modalities) if modalities else int(cfg.image_channels)
    case = load_case(paths, n_modalities)
    image = case.channels
    assert image is not None
    if len(image) != cfg.image_channels:
        raise ValueError(f"{paths[0]}: the case has {len(image)} channels but the model expects "
                         f"config.image_channels = {cfg.image_channels}")
    if check_reference is not None:
        check_reference(case.reference, paths[0])
    turn = Reorientation(case.reference.affine, prep.reorient)  # type: ignore[attr-defined]
    shape = turn.shape(case.shape)  # the arrays sliced below are in the standard order
    axis = opts.axis if opts.axis is not None else prep.axis
    axis = coarsest_axis(turn.spacing(case.spacing)) if axis is None else check_axis(axis)
    normed, _ = normalize_volume(image, modalities, prep.window, prep.ct_stats)
    normed = [turn.to_standard(ch) for ch in normed]
    case.channels = image = None  # free the raw intensities
    name = paths[0].name if paths[0].is_dir() else case_stem(volume_stem(paths[0]) or paths[0].name)[0]
    if three_d:
        return _segment_case_3d(segmenter, normed, opts, threshold, turn, case.reference, name)
    n_slices = shape[axis]
    context = int(getattr(cfg, "context_slices", 0) or 0)  # 2.5-D: neighbouring slices as channels
    h, w = in_plane_shape(shape, axis)

    labels: np.ndarray | None = None
    probs_vol: np.ndarray | None = None
    std_vol: np.ndarray | None = None
    maps_dtype = np.uint8 if opts.uint8_maps else np.float32
    bar = None
    if opts.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_slices, desc=f"spadfast predict {name}", unit="slice", dynamic_ncols=True)
    segment = with_tta(segmenter) if opts.tta else segmenter.segment
    for start in range(0, n_slices, batch_size):
        if bar is not None:
            bar.update(min(batch_size, n_slices - start))
        idx = list(range(start, min(start + batch_size, n_slices)))
        if getattr(cfg, "resize", True):
            batch = torch.from_numpy(np.stack([slice_volume(normed, axis, k, size, context) for k in idx]))
            keys = [image_noise_key(f"{name}/{axis}/{k}") for k in idx]
            result = segment(batch, steps=opts.steps, ensemble=opts.ensemble, seed=opts.seed, noise_keys=keys)
            probs = result.probs.detach().float().cpu().numpy()
            std = result.std.detach().float().cpu().numpy() if opts.write_uncertainty else None
        else:  # native in-plane size: sliding windows of image_size over each slice
            # the windows of the batch's slices share sampler calls (keys per window: results as slice by slice)
            resampled = spacing_size(shape, turn.spacing(case.spacing), axis, prep.target_spacing)
            window = _resolve_size(None, segmenter)
            assert window is not None
            tiled = segment_tiled_many(
                segment, [torch.from_numpy(slice_volume(normed, axis, k, resampled, context)) for k in idx], window,
                float(getattr(cfg, "tile_overlap", 0.5)), [f"{name}/{axis}/{k}" for k in idx], chunk=None,
                steps=opts.steps, ensemble=opts.ensemble, seed=opts.seed)
            probs = np.stack([p.numpy() for p, _ in tiled])
            std = np.stack([u.numpy() for _, u in tiled]) if opts.write_uncertainty else None
        k_classes = probs.shape[1]
        if labels is None:
            labels = np.zeros(shape, np.uint8 if k_classes < 255 else np.uint16)
            if opts.write_probabilities:
                probs_vol = np.zeros((*shape, k_classes), maps_dtype)
            if opts.write_uncertainty:
                std_vol = np.zeros((*shape, k_classes), maps_dtype)
        native = np.stack([np.stack([resize_plane(p, (h, w)) for p in slice_probs]) for slice_probs in probs])
        slice_labels = labels_from_probs(native, threshold)  # [B,h,w]
        for b, k in enumerate(idx):
            _put(labels, axis, k, slice_labels[b].astype(labels.dtype))
            if probs_vol is not None:
                _put(probs_vol, axis, k, _as_map(np.moveaxis(native[b], 0, -1), maps_dtype))
            if std_vol is not None:
                assert std is not None
                u = np.stack([resize_plane(p, (h, w)) for p in std[b]])
                _put(std_vol, axis, k, _as_map(np.moveaxis(u, 0, -1), maps_dtype))
    if bar is not None:
        bar.close()
    assert labels is not None
    labels = turn.to_stored(labels)
    probs_vol = turn.to_stored(probs_vol) if probs_vol is not None else None
    std_vol = turn.to_stored(std_vol) if std_vol is not None else None
    return {"labels": labels, "probs": probs_vol, "std": std_vol, "reference": case.reference,
            "maps_scale": bool(opts.uint8_maps)}


def _segment_case_3d(segmenter, normed: list[np.ndarray], opts: VolumeSettings, threshold: float,
                     turn: Reorientation, reference, name: str) -> dict:
    """:func:`_segment_case` of a 3-D model: the normalised channels (``[I,J,K]`` float32 each, standard order) as
    one ``[C,I,J,K]`` volume through :func:`segment_volume_3d` (``batch_size`` windows per ``segment`` call)."""
    cfg = segmenter.config
    volume = torch.from_numpy(np.stack(normed).astype(np.float32, copy=False))
    probs, std = segment_volume_3d(segmenter.segment, volume, cfg.patch_size_3d, float(cfg.tile_overlap), name,
                                   chunk=check_int(opts.batch_size, "batch_size", 1), steps=opts.steps,
                                   ensemble=opts.ensemble, seed=opts.seed)
    k_classes = probs.shape[0]
    labels = labels_from_probs(probs[None].numpy(), threshold)[0].astype(np.uint8 if k_classes < 255 else np.uint16)
    maps_dtype = np.uint8 if opts.uint8_maps else np.float32
    probs_vol = _as_map(np.moveaxis(probs.numpy(), 0, -1), maps_dtype) if opts.write_probabilities else None
    std_vol = _as_map(np.moveaxis(std.numpy(), 0, -1), maps_dtype) if opts.write_uncertainty else None
    return {"labels": turn.to_stored(labels),
            "probs": turn.to_stored(probs_vol) if probs_vol is not None else None,
            "std": turn.to_stored(std_vol) if std_vol is not None else None,
            "reference": reference, "maps_scale": bool(opts.uint8_maps)}


def predict_volume(
    segmenter,
    image_paths: Sequence[str | os.PathLike] | str | os.PathLike,
    out_path: str | os.PathLike,
    settings: VolumeSettings | None = None,
    **options,
) -> Path:
    """Segment one case and write its label map ``out_path`` (``.nii.gz``) on the input's voxel grid.

    Args:
        segmenter: a :class:`spadfast.infer.segmenter.Segmenter` or :class:`spadfast.SPADTrainer` (anything with
            ``config.image_channels``, ``config.image_size`` and ``segment(images [B,C,S,S], steps=, ensemble=,
            seed=, noise_keys=) -> SampleResult`` whose ``probs`` and ``std`` are float ``[B,K,S,S]``, K foreground
            classes).
        image_paths: the case's modalities ``[<case>_0000.nii.gz, ...]`` (or one 3-D / channels-last 4-D file).
        out_path: where to write the label map (``.nii.gz`` or ``.nii``).
        settings: :class:`VolumeSettings` (default: its defaults); ``options``, any of its fields as keywords
            (``steps=5, write_uncertainty=True``), override them.

    Returns:
        ``Path(out_path)``. The label map is uint8 (uint16 beyond 254 classes) with exactly the input's spatial
        shape, affine and header geometry.

    Raises:
        ValueError: unreadable inputs (see :func:`spadfast.io.nifti.load_case`), channels unlike
            ``config.image_channels``, a bad ``axis``/``batch_size``/``out_path``, a model trained on 2-D images.
    """
    return _predict_case(segmenter, image_paths, out_path, _settings(settings, options),
                         model_preprocessing(segmenter.config))


def _predict_case(segmenter, image_paths, out_path, opts: VolumeSettings, prep: VolumePreprocessing) -> Path:
    """:func:`predict_volume` with the preprocessing given; the input's header is checked writable for every
    output before the case is segmented."""
    out_path = Path(out_path)
    if volume_stem(out_path) is None:
        raise ValueError(f"`out_path` must end in .nii.gz or .nii, got {out_path}")
    slope = 1 / 255 if opts.uint8_maps else 1.0

    def check_outputs(reference, where: Path) -> None:
        classes = max(1, int(getattr(segmenter.config, "num_classes", 2)) - 1)
        spatial = tuple(int(n) for n in reference.shape[:3])
        maps = (spatial + (classes,), np.dtype(np.uint8 if opts.uint8_maps else np.float32), slope)
        outputs = [(spatial, np.dtype(np.uint8 if classes < 255 else np.uint16), 1.0)]
        outputs += [maps] * (bool(opts.write_probabilities) + bool(opts.write_uncertainty))
        check_reference_writable(reference, where, outputs)

    result = _segment_case(segmenter, image_paths, opts, prep, check_reference=check_outputs)
    labels, probs_vol, std_vol, reference = result["labels"], result["probs"], result["std"], result["reference"]
    write_nifti(out_path, labels, reference=reference)
    file_name = out_path.name
    if probs_vol is not None:
        write_nifti(out_path.parent / "probabilities" / file_name, probs_vol, reference=reference, slope=slope)
    if std_vol is not None:
        write_nifti(out_path.parent / "uncertainty" / file_name, std_vol, reference=reference, slope=slope)
    return out_path


def _as_map(values: np.ndarray, dtype) -> np.ndarray:
    """Probabilities or std in [0, 1] as ``dtype``: float32 as is, uint8 as ``round(255 v)``."""
    if dtype == np.uint8:
        return np.clip(np.rint(values * 255), 0, 255).astype(np.uint8)
    return values


def _put(volume: np.ndarray, axis: int, index: int, plane: np.ndarray) -> None:
    """``volume[..., index, ...] = plane`` along ``axis`` (the plane keeps the other axes in order)."""
    sl: list[object] = [slice(None)] * volume.ndim
    sl[axis] = index
    volume[tuple(sl)] = plane


def predict_volume_folder(
    segmenter,
    images_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    settings: VolumeSettings | None = None,
    shard: tuple[int, int] = (0, 1),
    **options,
) -> list[str]:
    """Segment every case of ``images_dir`` (e.g. ``imagesTs/``; ``<case>_0000.nii.gz``, ``<case>_0001.nii.gz``, ...
    grouped by case) and write ``out_dir/<case>.nii.gz``; returns the case names.

    ``settings`` / ``options`` as in :func:`predict_volume`; ``shard = (rank, world)``: only this process's share
    of the cases (:func:`spadfast.runtime.distributed.shard_of`); preprocessed as the model was trained
    (:func:`model_preprocessing`; for a model that records no modalities, those of the ``dataset.json`` beside
    ``images_dir``, in its parent folder, if any). A folder that also holds 2-D images, and a model trained on 2-D
    images (unless ``allow_image_model``), are ValueErrors raised before any case is read.
    """
    opts = _settings(settings, options)
    images_dir, out_dir = Path(images_dir), Path(out_dir)
    groups = group_cases(images_dir)
    check_one_input_kind(images_dir)
    check_volume_model(segmenter.config, images_dir, opts.allow_image_model)
    from .ensemble import check_members

    check_members(segmenter, opts.ensemble, opts.tta)  # before the first case, not after it
    prep = model_preprocessing(segmenter.config, read_dataset_json(images_dir.parent).modalities)
    cases = shard_of(list(groups), shard)
    for case in cases:
        _predict_case(segmenter, groups[case], out_dir / f"{case}.nii.gz", opts, prep)
    return cases
