"""Evaluate predicted masks against ground truth, paired by name: every metric of :data:`spadfast.evaluation.metrics.METRICS`
(Dice, IoU, HD95) per case and their mean.

Three kinds of folder, told apart by their files:

- NIfTI label maps (``.nii.gz`` / ``.nii``, e.g. ``predict`` output vs ``labelsTs/``): paired by case name (the
  file name without its suffix), scored in 3-D per foreground class with HD95 in millimetres from the ground
  truth's header spacing (or ``spacing``). With a ``dataset.json`` beside the ground-truth folder (in its parent),
  its classes are the report's and a label outside them is an error naming the file; without one, every nonzero
  value found is a class, and a value above :data:`spadfast.evaluation.class_scores.LARGE_LABEL` (such as 255, a common
  "ignore" value) is scored as a class with a warning naming the file and the value.
- multi-class PNG label maps (pixel value = class number; either folder holds two or more distinct nonzero
  values): paired by file name, scored in 2-D per class found (values above ``LARGE_LABEL`` are an error).
- binary PNG masks (each folder holds 0 and at most one nonzero value, e.g. 0/255): nonzero is foreground, one
  score per case (no ``per_class``).

Report: ``{"cases": [{"name", "dice", "iou", "hd95", "per_class": {"1": {"dice", "iou", "hd95"}, ...}}, ...],
"mean": {"dice", "iou", "hd95", "per_class": {"1": {"dice", "iou", "hd95", "cases"}, ...}}, "classes": {"1":
name or None, ...}, "hd95_unit": "mm"}`` (names from dataset.json). Label maps score a class only in the cases
where it occurs in the prediction or the ground truth (:mod:`spadfast.evaluation.class_scores`): a case averages its classes,
``mean.per_class`` averages each class over the cases that score it (``"cases"`` of them), and ``mean.dice`` etc.
average ``mean.per_class``. A class present in exactly one map has HD95 ``inf`` (and then the means are ``inf``
too: a missed or hallucinated structure is not averaged away). ``"hd95_unit"`` is absent for PNG masks without
``spacing`` (pixels), ``"mm"`` for volumes and ``"spacing units"`` for PNG masks scored with a ``spacing``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ..io.files import read_mask
from ..io.label_maps import LARGE_LABEL, read_label_png
from ..runtime import distributed as dist_utils
from .class_scores import class_names, present_classes, score_case, summarize_classes, warn_large_labels
from .metrics import METRICS, summarize

MASK_SUFFIXES = (".png",)
MAX_PNG_CLASS = LARGE_LABEL  # a multi-class PNG value above this is taken for a binary 0/255 mask in the wrong place

__all__ = ["MASK_SUFFIXES", "case_names", "list_pairs", "evaluate_folders", "format_table"]


def _pngs(folder: Path, name: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise ValueError(f"`{name}` folder {str(folder)!r} does not exist")
    files = {p.name: p for p in sorted(folder.iterdir()) if p.suffix.lower() in MASK_SUFFIXES
             and not p.name.startswith(".")}
    if not files:
        raise ValueError(f"`{name}` folder {str(folder)!r} holds no PNG masks or .nii.gz label maps")
    return files


def _pair_names(pred: dict[str, Path], gt: dict[str, Path], pred_dir: Path, gt_dir: Path, what: str) -> list[str]:
    missing = sorted(set(gt) - set(pred))
    if missing:
        raise ValueError(f"prediction missing for ground-truth {what} {str(gt[missing[0]])!r} (expected "
                         f"{str(pred_dir / gt[missing[0]].name)!r})")
    extra = sorted(set(pred) - set(gt))
    if extra:
        raise ValueError(f"no ground-truth {what} for prediction {str(pred[extra[0]])!r} (expected "
                         f"{str(gt_dir / pred[extra[0]].name)!r})")
    return sorted(gt)


# ---------------------------------------------------------------------------------------------------------------
# Volumes


def list_pairs(pred_dir: Path, gt_dir: Path) -> tuple[str, dict[str, Path], dict[str, Path], list[str]]:
    """``(kind, pred files, gt files, case names)``: kind ``"volumes"`` or ``"pngs"`` by the ground truth's files,
    files by case name; an unpaired or missing file is a ValueError naming it."""
    from ..io.nifti import volume_files

    if not gt_dir.is_dir():
        raise ValueError(f"`gt` folder {str(gt_dir)!r} does not exist")
    gt = volume_files(gt_dir)
    if gt:
        if not pred_dir.is_dir():
            raise ValueError(f"`pred` folder {str(pred_dir)!r} does not exist")
        pred = volume_files(pred_dir)
        if not pred:
            raise ValueError(f"`pred` folder {str(pred_dir)!r} holds no .nii.gz label maps (the ground truth does)")
        return "volumes", pred, gt, _pair_names(pred, gt, pred_dir, gt_dir, "label map")
    pred, gt = _pngs(pred_dir, "pred"), _pngs(gt_dir, "gt")
    return "pngs", pred, gt, _pair_names(pred, gt, pred_dir, gt_dir, "mask")


def _volume_spacing(spacing: Any) -> tuple[float, float, float] | None:
    if spacing is None:
        return None
    if len(spacing) != 3:
        raise ValueError(f"`spacing` must be None (from the NIfTI header) or (d0, d1, d2) for volumes, got "
                         f"{tuple(spacing)!r}")
    return tuple(float(s) for s in spacing)  # type: ignore[return-value]


def _drop_ignored(p: np.ndarray, g: np.ndarray, ignore: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Label maps with the ground truth's ``ignore`` pixels set to background in both (scored as neither)."""
    if ignore is None:
        return p, g
    ignored = g == ignore
    return np.where(ignored, 0, p).astype(p.dtype), np.where(ignored, 0, g).astype(g.dtype)


def _collect(work, shard: tuple[int, int]) -> list:
    """``[work()]`` for one process; with ``shard = (rank, world)``, world > 1, every rank's result (a collective:
    :func:`spadfast.runtime.distributed.gather_or_raise`). A single-process call never touches a process group, so
    ``evaluate_folders`` may run on one rank of a larger job."""
    return [work()] if shard[1] == 1 else dist_utils.gather_or_raise(work)


def _merged(parts: list[list[dict[str, Any]]], names: list[str]) -> list[dict[str, Any]]:
    """Every rank's scored cases (``parts``, as :func:`spadfast.runtime.distributed.gather_or_raise` returns them) in
    ``names``' order."""
    by_name = {case["name"]: case for part in parts for case in part}
    return [by_name[n] for n in names]


def _evaluate_volumes(pred: dict[str, Path], gt: dict[str, Path], names: list[str], gt_dir: Path,
                      spacing: Any, shard: tuple[int, int], ignore: int | None) -> dict[str, Any]:
    from ..io.nifti import read_dataset_json, read_label, read_nifti, same_affine, spacing_of

    spacing = _volume_spacing(spacing)
    info = read_dataset_json(gt_dir.parent)
    n_classes = len(info.class_names) or None

    if ignore is not None:  # before any case is scored: 0/V label maps with --ignore V would score nothing
        first = None
        for name in names:
            values = set(np.unique(read_label(gt[name], None, None)).tolist())
            if values - {0, ignore}:
                break  # a class value beside the ignored one: --ignore marks unannotated voxels, as meant
            first = first or (str(gt[name]) if ignore in values else None)
        else:
            if first is not None:
                raise ValueError(f"--ignore {ignore}: every nonzero ground-truth voxel holds {ignore} (e.g. {first}), "
                                 "so all foreground would be ignored and nothing scored; for 0/{0} binary label maps "
                                 "drop --ignore (use it where {0} marks unannotated voxels beside the class "
                                 "values)".format(ignore))

    def score_share() -> list[dict[str, Any]]:
        warned: set[int] = set()
        cases = []
        for name in dist_utils.shard_of(names, shard):
            g_img, p_img = read_nifti(gt[name]), read_nifti(pred[name])
            if tuple(p_img.shape[:3]) != tuple(g_img.shape[:3]) or len(p_img.shape) != len(g_img.shape):
                raise ValueError(f"{str(pred[name])!r} has shape {tuple(p_img.shape)} but {str(gt[name])!r} has "
                                 f"{tuple(g_img.shape)}")
            if not same_affine(p_img, g_img):
                raise ValueError(f"{str(pred[name])!r} and {str(gt[name])!r} have different affines (spacing "
                                 f"{spacing_of(p_img)} vs {spacing_of(g_img)}): the prediction is not on the "
                                 "ground truth's voxel grid")
            g = read_label(gt[name], None, n_classes if ignore is None else None)
            p = read_label(pred[name], None, n_classes)
            p, g = _drop_ignored(p, g, ignore)
            if n_classes is not None and int(g.max(initial=0)) >= n_classes:
                raise ValueError(f"{gt[name]} holds label {int(g.max())} but dataset.json declares {n_classes} "
                                 f"classes (and --ignore {ignore})")
            if n_classes is None:
                warn_large_labels(gt[name], g, warned)
                warn_large_labels(pred[name], p, warned)
            cases.append(score_case(name, p, g, spacing if spacing is not None else spacing_of(g_img)))
        return cases

    cases = _merged(_collect(score_share, shard), names)
    classes = range(1, n_classes) if n_classes else sorted({int(c) for case in cases for c in case["per_class"]})
    return {"cases": cases, "mean": summarize_classes(cases), "classes": class_names(classes, info.class_names),
            "hd95_unit": "mm"}


# ---------------------------------------------------------------------------------------------------------------
# PNG


def _evaluate_pngs(pred: dict[str, Path], gt: dict[str, Path], names: list[str], spacing: Any,
                   shard: tuple[int, int], ignore: int | None) -> dict[str, Any]:
    sp = (1.0, 1.0) if spacing is None else tuple(float(s) for s in spacing)
    if len(sp) != 2:
        raise ValueError(f"`spacing` must be None or (dy, dx) for PNG masks, got {tuple(spacing)!r}")
    share = dist_utils.shard_of(names, shard)
    p_maps: dict[str, Any] = {}
    g_maps: dict[str, Any] = {}

    def read_share() -> tuple[set[int], set[int], dict[int, str], set[int], str | None]:
        stored_g_vals: set[int] = set()  # ground-truth values before the ignored ones are dropped
        first_ignored = None  # the first ground-truth file holding the ignore value
        for n in share:
            p, g = read_label_png(pred[n]), read_label_png(gt[n])
            if p.shape != g.shape:
                raise ValueError(f"{str(pred[n])!r} is {p.shape[1]}x{p.shape[0]} but {str(gt[n])!r} is "
                                 f"{g.shape[1]}x{g.shape[0]}")
            if ignore is not None:
                stored_g_vals.update(int(v) for v in np.unique(g))
                if first_ignored is None and (g == ignore).any():
                    first_ignored = str(gt[n])
            p_maps[n], g_maps[n] = _drop_ignored(p, g, ignore)
        p_vals, g_vals = set(present_classes(*p_maps.values())), set(present_classes(*g_maps.values()))
        first_file = {}  # value above MAX_PNG_CLASS -> the first file holding it, for the error below
        for v in sorted(v for v in p_vals | g_vals if v > MAX_PNG_CLASS):
            maps, folder = (p_maps, pred) if v in p_vals else (g_maps, gt)
            first_file[v] = str(next(folder[n] for n in share if (maps[n] == v).any()))
        return p_vals, g_vals, first_file, stored_g_vals, first_ignored

    # binary vs multi-class is decided on the whole set, so every rank learns every rank's values
    found = _collect(read_share, shard)
    stored = set().union(*(f[3] for f in found))
    if ignore is not None and ignore in stored and stored <= {0, ignore}:
        culprit = next(f[4] for f in found if f[4] is not None)
        raise ValueError(f"--ignore {ignore}: every nonzero ground-truth pixel holds {ignore} (e.g. {culprit}), so "
                         f"all foreground would be ignored and nothing scored; for 0/{ignore} binary masks drop "
                         f"--ignore (use it where {ignore} marks unannotated pixels beside the class values)")
    p_vals, g_vals = set().union(*(f[0] for f in found)), set().union(*(f[1] for f in found))
    units = {} if spacing is None else {"hd95_unit": "spacing units"}
    if len(p_vals) <= 1 and len(g_vals) <= 1:  # binary: nonzero is foreground, no per-class scores
        def score_binary() -> list[dict[str, Any]]:
            cases = []
            for n in share:
                p, g = read_mask(pred[n]), read_mask(gt[n])
                if ignore is not None:
                    p, g = p_maps[n] != 0, g_maps[n] != 0  # label maps with ignored pixels dropped
                cases.append({"name": n, **{key: float(fn(p, g, spacing=sp)) for key, fn in METRICS.items()}})
            return cases

        cases = _merged(_collect(score_binary, shard), names)
        return {"cases": cases, "mean": summarize(cases), **units}
    top = max(p_vals | g_vals)
    if top > MAX_PNG_CLASS:
        culprit = next(f[2][top] for f in found if top in f[2])
        raise ValueError(f"{culprit} holds the value {top} but the masks hold several labels "
                         f"({sorted(p_vals | g_vals)[:6]}...): multi-class PNG label maps store class numbers "
                         f"1..{MAX_PNG_CLASS}; a 0/255 binary mask cannot be scored against a multi-class map")
    cases = _merged(_collect(lambda: [score_case(n, p_maps[n], g_maps[n], sp) for n in share], shard),
                    names)
    return {"cases": cases, "mean": summarize_classes(cases), "classes": class_names(sorted(p_vals | g_vals)),
            **units}


# ---------------------------------------------------------------------------------------------------------------


def evaluate_folders(
    pred_dir: str | Path, gt_dir: str | Path, spacing: tuple[float, ...] | None = None,
    shard: tuple[int, int] = (0, 1), ignore: int | None = None,
) -> dict[str, Any]:
    """Pair predictions with ground truth by name and score each pair (see the module docstring for the three
    kinds of folder and the report's layout).

    Args:
        pred_dir: predicted masks / label maps.
        gt_dir: ground truth; its files decide the kind (``.nii.gz`` / ``.nii`` present: volumes, else PNG).
        spacing: PNG: ``(dy, dx)`` pixel size (default 1, 1); volumes: ``(d0, d1, d2)`` voxel size overriding the
            header's (default None: each ground-truth file's ``get_zooms()``, millimetres). HD95 is in its units.
        shard: ``(rank, world)``: this process scores every ``world``-th case from ``rank`` and, in a process
            group of ``world`` ranks (torchrun), gathers the others' scores, so every rank returns the whole report
            (equal to a single process's). Default ``(0, 1)``: one process scores everything.
        ignore: a ground-truth value marking unannotated pixels (e.g. 255): those pixels count as background in
            both maps (neither foreground nor error in any metric). A prediction never holds it. PNG ground truth
            holding no value but 0 and ``ignore`` (0/255 binary masks with ``ignore=255``) is a ValueError naming a
            file: every foreground pixel would be ignored.

    Returns:
        ``{"cases": [...], "mean": {...}}``; binary PNG folders give exactly ``{"name", "dice", "iou", "hd95"}``
        per case and ``{"dice", "iou", "hd95"}`` as the mean; volumes and multi-class PNGs add ``"per_class"``
        (only the classes a case scores) and ``"classes"``; ``"hd95_unit"`` when HD95 is not in pixels.

    Warns:
        UserWarning: volumes without dataset.json holding a label value above ``LARGE_LABEL`` (names the file).

    Raises:
        ValueError: a folder is missing or empty, a file has no counterpart, shapes (or, for volumes, affines)
            differ, labels are not integers (or outside dataset.json's classes), a bad ``spacing``, or a file is
            unreadable; each names the file(s).
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    if spacing is not None and (isinstance(spacing, (str, bytes)) or not hasattr(spacing, "__len__")):
        raise ValueError(f"`spacing` must be None or a sequence of numbers, got {spacing!r}")
    dist_utils.shard_of([], shard)  # checks `shard`
    if ignore is not None and not (isinstance(ignore, int) and 0 < ignore <= 65535):
        raise ValueError(f"`ignore` must be None or a label value in 1..65535, got {ignore!r}")
    if shard[1] > 1 and (shard[1] != dist_utils.world_size() or shard[0] != dist_utils.rank()):
        raise ValueError(f"`shard` {shard!r} is not this process's place (rank {dist_utils.rank()} of "
                         f"{dist_utils.world_size()}; torchrun starts the process group)")
    kind, pred, gt, names = list_pairs(pred_dir, gt_dir)
    if kind == "volumes":
        return _evaluate_volumes(pred, gt, names, gt_dir, spacing, shard, ignore)
    return _evaluate_pngs(pred, gt, names, spacing, shard, ignore)


def case_names(pred_dir: str | Path, gt_dir: str | Path) -> list[str]:
    """The names of the cases :func:`evaluate_folders` scores (PNG file names, or NIfTI case names), found by
    listing the folders only: a missing folder or an unpaired file is the ValueError it would raise."""
    return list_pairs(Path(pred_dir), Path(gt_dir))[3]




def _fmt(v: float) -> str:
    return "inf" if math.isinf(v) else "nan" if math.isnan(v) else f"{v:.4f}"


def format_table(report: dict[str, Any]) -> str:
    """A plain-text table: one row per case and the mean (columns: every metric, then Dice and HD95 per class when
    the report has several classes; ``-`` where a case does not score the class), followed by a per-class table of
    the means with the number of cases that score each class."""
    keys = [k for k in METRICS if k in report["mean"]]
    per_class = report["mean"].get("per_class")
    names = report.get("classes") or {c: None for c in per_class or {}}
    classes = list(names)
    extra = [(c, k) for c in classes for k in ("dice", "hd95") if k in keys] if len(classes) > 1 else []
    width = max([4] + [len(c["name"]) for c in report["cases"]])
    head = [f"{k:>8}" for k in keys] + [f"{f'{k}[{c}]':>9}" for c, k in extra]
    lines = [f"{'case':<{width}}  " + "  ".join(head)]

    def cell(rec: dict[str, Any], c: str, k: str) -> str:
        scores = rec["per_class"].get(c)
        return f"{_fmt(scores[k]) if scores else '-':>9}"

    def row(name: str, rec: dict[str, Any]) -> str:
        cells = [f"{_fmt(rec[k]):>8}" for k in keys] + [cell(rec, c, k) for c, k in extra]
        return f"{name:<{width}}  " + "  ".join(cells)

    for c in report["cases"]:
        lines.append(row(c["name"], c))
    lines.append(row("mean", report["mean"]))
    if per_class is not None:
        labels = {c: f"{c} {names[c] or ''}".strip() for c in classes}
        cw = max([5] + [len(v) for v in labels.values()])
        lines.append("")
        lines.append(f"{'class':<{cw}}  " + "  ".join(f"{k:>8}" for k in keys) + "  cases   (mean over the cases "
                     "where the class is in the prediction or the ground truth)")
        for c in classes:
            if c in per_class:
                lines.append(f"{labels[c]:<{cw}}  " + "  ".join(f"{_fmt(per_class[c][k]):>8}" for k in keys)
                             + f"  {per_class[c].get('cases', len(report['cases'])):>5}")
            else:
                lines.append(f"{labels[c]:<{cw}}  not in any prediction or ground truth")
    return "\n".join(lines)
