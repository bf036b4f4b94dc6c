"""Evaluate predicted masks against ground truth, paired by name: every metric of :data:`spadfast.metrics.METRICS`
(Dice, IoU, HD95) per case and their mean.

Three kinds of folder, told apart by their files:

- NIfTI label maps (``.nii.gz`` / ``.nii``, e.g. ``predict`` output vs ``labelsTs/``): paired by case name (the
  file name without its suffix), scored in 3-D per foreground class with HD95 in millimetres from the ground
  truth's header spacing (or ``spacing``). Classes: those of ``dataset.json`` beside the ground-truth folder (in
  its parent), else 1..the largest label found in either folder.
- multi-class PNG label maps (pixel value = class number 0..C-1; either folder holds two or more distinct nonzero
  values): paired by file name, scored in 2-D per class 1..the largest value found.
- binary PNG masks (each folder holds 0 and at most one nonzero value, e.g. 0/255): nonzero is foreground, exactly
  as before (no ``per_class``).

Report: ``{"cases": [{"name", "dice", "iou", "hd95", "per_class": {"1": {"dice", "iou", "hd95"}, ...}}, ...],
"mean": {"dice", "iou", "hd95", "per_class": {...}}}``; a case's ``dice``/``iou``/``hd95`` is the average over the
foreground classes, ``mean`` averages the cases (so ``mean.dice`` is also the average of ``mean.per_class``). A
class absent from both maps of a case scores Dice = IoU = 1 and HD95 = 0; present in exactly one, HD95 = ``inf``
(and then the means are ``inf`` too: a missed or hallucinated structure is not averaged away).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .files import read_mask
from .metrics import METRICS, per_class_metrics, summarize

MASK_SUFFIXES = (".png",)
MAX_PNG_CLASS = 100  # a multi-class PNG value above this is taken for a binary 0/255 mask in the wrong place

__all__ = ["MASK_SUFFIXES", "evaluate_folders", "format_table"]


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


def _absent_scores(nd: int) -> dict[str, float]:
    """What every metric gives for a class absent from both maps (Dice 1, IoU 1, HD95 0 by the conventions)."""
    empty = np.zeros((1,) * nd, bool)
    return {name: float(fn(empty, empty, spacing=(1.0,) * nd)) for name, fn in METRICS.items()}


def _case(name: str, per_class: dict[str, dict[str, float]]) -> dict[str, Any]:
    case: dict[str, Any] = {"name": name}
    for key in METRICS:
        case[key] = float(np.mean([scores[key] for scores in per_class.values()]))
    case["per_class"] = per_class
    return case


def _fill_classes(cases: list[dict[str, Any]], classes: list[int], nd: int) -> list[dict[str, Any]]:
    """Give every case every class (absent-from-both scores where a case never saw it), then recompute its means."""
    absent = _absent_scores(nd)
    out = []
    for case in cases:
        per_class = {str(c): case["per_class"].get(str(c), dict(absent)) for c in classes}
        out.append(_case(case["name"], per_class))
    return out


# ---------------------------------------------------------------------------------------------------------------
# Volumes


def _evaluate_volumes(pred_dir: Path, gt_dir: Path, spacing: Any) -> dict[str, Any]:
    from .nifti import read_dataset_json, read_label, read_nifti, spacing_of, volume_files

    if spacing is not None:
        if len(spacing) != 3:
            raise ValueError(f"`spacing` must be None (from the NIfTI header) or (d0, d1, d2) for volumes, got "
                             f"{tuple(spacing)!r}")
        spacing = tuple(float(s) for s in spacing)
    if not pred_dir.is_dir():
        raise ValueError(f"`pred` folder {str(pred_dir)!r} does not exist")
    pred, gt = volume_files(pred_dir), volume_files(gt_dir)
    if not pred:
        raise ValueError(f"`pred` folder {str(pred_dir)!r} holds no .nii.gz label maps (the ground truth does)")
    names = _pair_names(pred, gt, pred_dir, gt_dir, "label map")
    info = read_dataset_json(gt_dir.parent)
    n_classes = len(info.class_names) or None
    cases = []
    top = 1
    for name in names:
        g_img, p_img = read_nifti(gt[name]), read_nifti(pred[name])
        if tuple(p_img.shape[:3]) != tuple(g_img.shape[:3]) or len(p_img.shape) != len(g_img.shape):
            raise ValueError(f"{str(pred[name])!r} has shape {tuple(p_img.shape)} but {str(gt[name])!r} has "
                             f"{tuple(g_img.shape)}")
        if not np.allclose(p_img.affine, g_img.affine, rtol=0, atol=1e-3):
            raise ValueError(f"{str(pred[name])!r} and {str(gt[name])!r} have different affines (spacing "
                             f"{spacing_of(p_img)} vs {spacing_of(g_img)}): the prediction is not on the ground "
                             "truth's voxel grid")
        g = read_label(gt[name], None, n_classes)
        p = read_label(pred[name], None, n_classes)
        found = int(max(g.max(initial=0), p.max(initial=0)))
        top = max(top, found)
        classes = list(range(1, (n_classes or found + 1)))
        if not classes:
            classes = [1]
        sp = spacing if spacing is not None else spacing_of(g_img)
        cases.append(_case(name, per_class_metrics(p, g, classes, sp)))
    all_classes = list(range(1, n_classes)) if n_classes else list(range(1, top + 1))
    cases = _fill_classes(cases, all_classes, 3)
    return {"cases": cases, "mean": summarize(cases)}


# ---------------------------------------------------------------------------------------------------------------
# PNG


def _read_png_labels(path: Path) -> np.ndarray:
    """A PNG label map as stored: integer ``[H,W]`` (equal colour channels allowed, alpha ignored)."""
    data = np.fromfile(path, dtype=np.uint8) if path.is_file() else np.zeros(0, np.uint8)
    array = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if array is None:
        raise ValueError(f"cannot decode {path}: not a PNG OpenCV can read, or a corrupt file")
    if array.ndim == 3:
        colour = array[:, :, :3] if array.shape[2] >= 3 else array[:, :, :1]
        if not (colour == colour[:, :, :1]).all():
            raise ValueError(f"{path} is a colour mask whose channels disagree; label maps must be gray")
        array = colour[:, :, 0]
    if array.dtype.kind not in "iu":
        raise ValueError(f"{path} holds {array.dtype} pixels; label maps hold integers")
    return array


def _evaluate_pngs(pred_dir: Path, gt_dir: Path, spacing: Any) -> dict[str, Any]:
    sp = (1.0, 1.0) if spacing is None else tuple(float(s) for s in spacing)
    if len(sp) != 2:
        raise ValueError(f"`spacing` must be None or (dy, dx) for PNG masks, got {tuple(spacing)!r}")
    pred, gt = _pngs(pred_dir, "pred"), _pngs(gt_dir, "gt")
    names = _pair_names(pred, gt, pred_dir, gt_dir, "mask")
    p_maps = {n: _read_png_labels(pred[n]) for n in names}
    g_maps = {n: _read_png_labels(gt[n]) for n in names}
    for n in names:
        p, g = p_maps[n], g_maps[n]
        if p.shape != g.shape:
            raise ValueError(f"{str(pred[n])!r} is {p.shape[1]}x{p.shape[0]} but {str(gt[n])!r} is "
                             f"{g.shape[1]}x{g.shape[0]}")

    def nonzero_values(maps: dict[str, np.ndarray]) -> set[int]:
        values: set[int] = set()
        for m in maps.values():
            values.update(int(v) for v in np.unique(m) if v != 0)
        return values

    p_vals, g_vals = nonzero_values(p_maps), nonzero_values(g_maps)
    if len(p_vals) <= 1 and len(g_vals) <= 1:  # binary: nonzero is foreground, today's report exactly
        cases = []
        for n in names:
            p, g = read_mask(pred[n]), read_mask(gt[n])
            cases.append({"name": n, **{key: float(fn(p, g, spacing=sp)) for key, fn in METRICS.items()}})
        return {"cases": cases, "mean": summarize(cases)}
    top = max(p_vals | g_vals)
    if top > MAX_PNG_CLASS:
        maps, folder = (p_maps, pred) if top in p_vals else (g_maps, gt)
        culprit = next(folder[n] for n in names if (maps[n] == top).any())
        raise ValueError(f"{culprit} holds the value {top} but the masks hold several labels "
                         f"({sorted(p_vals | g_vals)[:6]}...): multi-class PNG label maps store class numbers "
                         f"1..{MAX_PNG_CLASS}; a 0/255 binary mask cannot be scored against a multi-class map")
    classes = list(range(1, top + 1))
    cases = [_case(n, per_class_metrics(p_maps[n], g_maps[n], classes, sp)) for n in names]
    return {"cases": cases, "mean": summarize(cases)}


# ---------------------------------------------------------------------------------------------------------------


def evaluate_folders(
    pred_dir: str | Path, gt_dir: str | Path, spacing: tuple[float, ...] | None = None
) -> dict[str, Any]:
    """Pair predictions with ground truth by name and score each pair (see the module docstring for the three
    kinds of folder and the report's layout).

    Args:
        pred_dir: predicted masks / label maps.
        gt_dir: ground truth; its files decide the kind (``.nii.gz`` / ``.nii`` present: volumes, else PNG).
        spacing: PNG: ``(dy, dx)`` pixel size (default 1, 1); volumes: ``(d0, d1, d2)`` voxel size overriding the
            header's (default None: each ground-truth file's ``get_zooms()``, millimetres). HD95 is in its units.

    Returns:
        ``{"cases": [...], "mean": {...}}``; binary PNG folders give exactly ``{"name", "dice", "iou", "hd95"}``
        per case and ``{"dice", "iou", "hd95"}`` as the mean; volumes and multi-class PNGs add ``"per_class"``.

    Raises:
        ValueError: a folder is missing or empty, a file has no counterpart, shapes (or, for volumes, affines)
            differ, labels are not integers (or outside dataset.json's classes), a bad ``spacing``, or a file is
            unreadable; each names the file(s).
    """
    from .nifti import volume_files

    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    if not gt_dir.is_dir():
        raise ValueError(f"`gt` folder {str(gt_dir)!r} does not exist")
    if spacing is not None and (isinstance(spacing, (str, bytes)) or not hasattr(spacing, "__len__")):
        raise ValueError(f"`spacing` must be None or a sequence of numbers, got {spacing!r}")
    if volume_files(gt_dir):
        return _evaluate_volumes(pred_dir, gt_dir, spacing)
    return _evaluate_pngs(pred_dir, gt_dir, spacing)


def _fmt(v: float) -> str:
    return "inf" if math.isinf(v) else "nan" if math.isnan(v) else f"{v:.4f}"


def format_table(report: dict[str, Any]) -> str:
    """A plain-text table: one row per case and the mean (columns: every metric, then Dice and HD95 per class when
    the report has classes), followed by a per-class table of the means."""
    keys = [k for k in METRICS if k in report["mean"]]
    per_class = report["mean"].get("per_class")
    classes = list(per_class) if per_class else []
    extra = [(c, k) for c in classes for k in ("dice", "hd95") if k in keys] if len(classes) > 1 else []
    width = max([4] + [len(c["name"]) for c in report["cases"]])
    head = [f"{k:>8}" for k in keys] + [f"{f'{k}[{c}]':>9}" for c, k in extra]
    lines = [f"{'case':<{width}}  " + "  ".join(head)]

    def row(name: str, rec: dict[str, Any]) -> str:
        cells = [f"{_fmt(rec[k]):>8}" for k in keys]
        cells += [f"{_fmt(rec['per_class'][c][k]):>9}" for c, k in extra]
        return f"{name:<{width}}  " + "  ".join(cells)

    for c in report["cases"]:
        lines.append(row(c["name"], c))
    lines.append(row("mean", report["mean"]))
    if per_class:
        cw = max([5] + [len(c) for c in classes])
        lines.append("")
        lines.append(f"{'class':<{cw}}  " + "  ".join(f"{k:>8}" for k in keys) + "   (mean over cases)")
        for c in classes:
            lines.append(f"{c:<{cw}}  " + "  ".join(f"{_fmt(per_class[c][k]):>8}" for k in keys))
    return "\n".join(lines)
