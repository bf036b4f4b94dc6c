"""Per-class scores of label maps and their means, as ``spadfast evaluate`` reports them.

A case scores a foreground class only where the class occurs in its prediction or its ground truth. A class absent
from both maps says nothing about the prediction, so it is left out of that case and of every mean (scoring it
Dice 1 would let absent classes outvote the ones that were there). So:

- ``case["per_class"]`` lists the classes present in either map of the case; ``case["dice"]`` etc. average them. A
  case with no foreground in either map is a correct empty prediction: Dice = IoU = 1, HD95 = 0, no ``per_class``
  entries (the binary convention for two empty masks).
- ``mean["per_class"][c]`` averages class ``c`` over the cases that score it (``"cases"``: how many);
  ``mean["dice"]`` etc. average ``mean["per_class"]`` over the classes (as nnU-Net's foreground mean), or equal the
  mean of the cases when no case has any foreground.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io.label_maps import LARGE_LABEL
from .metrics import METRICS, dice, per_class_metrics, summarize

__all__ = ["class_names", "present_classes", "present_class_dice", "score_case", "summarize_classes",
           "warn_large_labels"]


def present_classes(*label_maps: np.ndarray) -> list[int]:
    """Sorted nonzero values occurring in any of the integer label maps (any shape)."""
    values: set[int] = set()
    for labels in label_maps:
        values.update(int(v) for v in np.unique(labels) if v != 0)
    return sorted(values)


def _empty_case_scores(nd: int) -> dict[str, float]:
    """Every metric of two empty masks (Dice 1, IoU 1, HD95 0 by the conventions of :mod:`spadfast.evaluation.metrics`)."""
    empty = np.zeros((1,) * nd, bool)
    return {name: float(fn(empty, empty, spacing=(1.0,) * nd)) for name, fn in METRICS.items()}


def present_class_dice(pred: torch.Tensor, truth: torch.Tensor) -> list[float]:
    """Dice of each (image, class) plane of ``[N,H,W]`` (bool) whose class is in the prediction or the ground truth;
    planes empty in both are left out (they say nothing about the model). Validation averages these."""
    present = pred.flatten(1).any(1) | truth.flatten(1).any(1)
    if not bool(present.any()):
        return []
    return [float(v) for v in np.atleast_1d(dice(pred[present], truth[present]))]


def score_case(name: str, pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> dict[str, Any]:
    """One case's record ``{"name", "dice", "iou", "hd95", "per_class": {"c": {...}}}``.

    Args:
        name: the case's name in the report.
        pred: integer label map ``[H,W]`` or ``[D,H,W]``.
        gt: integer label map of the same shape.
        spacing: pixel/voxel size per axis; HD95 is in its units.
    """
    classes = present_classes(pred, gt)
    per_class = per_class_metrics(pred, gt, classes, spacing) if classes else {}
    case: dict[str, Any] = {"name": name}
    if per_class:
        case.update(summarize(per_class.values()))
    else:
        case.update(_empty_case_scores(gt.ndim))
    case["per_class"] = per_class
    return case


def summarize_classes(cases: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The ``"mean"`` of a label-map report: per-class means over the cases that score each class, and their
    average over the classes (see the module docstring).

    Args:
        cases: records of :func:`score_case`.

    Returns:
        ``{"dice", "iou", "hd95", "per_class": {"c": {"dice", "iou", "hd95", "cases": int}}}``, classes in
        numeric order.
    """
    classes = sorted({int(c) for case in cases for c in case["per_class"]})
    per_class: dict[str, dict[str, Any]] = {}
    for c in classes:
        scored = [case["per_class"][str(c)] for case in cases if str(c) in case["per_class"]]
        per_class[str(c)] = {**summarize(scored), "cases": len(scored)}
    out: dict[str, Any] = summarize(per_class.values()) if per_class else summarize(cases)
    out["per_class"] = per_class
    return out


def warn_large_labels(path: Path, labels: np.ndarray, seen: set[int]) -> None:
    """Warn, once per value (``seen`` holds those warned about), about label values above :data:`LARGE_LABEL` in
    ``path``: without a dataset.json they are scored as classes of their own."""
    for value in present_classes(labels):
        if value > LARGE_LABEL and value not in seen:
            seen.add(value)
            warnings.warn(
                f"{path} holds the label value {value} and no dataset.json names the classes: it is scored as a class "
                f"of its own; if it marks voxels to ignore (255 often does), relabel them, or put a "
                "dataset.json listing the classes in the ground-truth folder's parent (out-of-range labels are then "
                "an error)", UserWarning, stacklevel=3,
            )


def class_names(classes: Iterable[int], names: Sequence[str] = ()) -> dict[str, str | None]:
    """``{"c": name}`` for the foreground classes: dataset.json's names (index = label value), None where none."""
    return {str(c): names[c] if c < len(names) else None for c in classes}
