"""Evaluate predicted PNG masks against ground truth, paired by file name: Dice, IoU, HD95 per case and mean."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .data import read_mask
from .metrics import dice, hd95, iou, summarize

MASK_SUFFIXES = (".png",)


def _pngs(folder: Path, name: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise ValueError(f"`{name}` folder {str(folder)!r} does not exist")
    files = {p.name: p for p in sorted(folder.iterdir()) if p.suffix.lower() in MASK_SUFFIXES}
    if not files:
        raise ValueError(f"`{name}` folder {str(folder)!r} holds no PNG masks")
    return files


def evaluate_folders(
    pred_dir: str | Path, gt_dir: str | Path, spacing: tuple[float, float] = (1.0, 1.0)
) -> dict[str, Any]:
    """Pair PNG masks by file name (nonzero = foreground) and score each pair.

    Returns:
        ``{"cases": [{"name", "dice", "iou", "hd95"}, ...], "mean": {"dice", "iou", "hd95"}}``; HD95 is in the units of
        ``spacing`` and ``inf`` where exactly one mask is empty (then the mean HD95 is ``inf`` too).

    Raises:
        ValueError: a folder is missing or empty, a file has no counterpart, sizes differ or a file is unreadable.
    """
    pred, gt = _pngs(Path(pred_dir), "pred"), _pngs(Path(gt_dir), "gt")
    missing = sorted(set(gt) - set(pred))
    if missing:
        raise ValueError(f"prediction missing for ground-truth mask {str(Path(gt_dir) / missing[0])!r}")
    extra = sorted(set(pred) - set(gt))
    if extra:
        raise ValueError(f"no ground-truth mask for prediction {str(Path(pred_dir) / extra[0])!r}")
    cases = []
    for name in sorted(gt):
        p, g = read_mask(pred[name]), read_mask(gt[name])
        if p.shape != g.shape:
            raise ValueError(f"{str(pred[name])!r} is {p.shape[1]}x{p.shape[0]} but {str(gt[name])!r} is "
                             f"{g.shape[1]}x{g.shape[0]}")
        cases.append({
            "name": name,
            "dice": float(dice(p, g)),
            "iou": float(iou(p, g)),
            "hd95": float(hd95(p, g, spacing=spacing)),
        })
    return {"cases": cases, "mean": summarize(cases)}


def format_table(report: dict[str, Any]) -> str:
    """A plain-text table of the cases and the mean."""
    width = max([4] + [len(c["name"]) for c in report["cases"]])

    def fmt(v: float) -> str:
        return "inf" if math.isinf(v) else f"{v:.4f}"

    lines = [f"{'case':<{width}}  {'dice':>8}  {'iou':>8}  {'hd95':>8}"]
    for c in report["cases"]:
        lines.append(f"{c['name']:<{width}}  {fmt(c['dice']):>8}  {fmt(c['iou']):>8}  {fmt(c['hd95']):>8}")
    m = report["mean"]
    lines.append(f"{'mean':<{width}}  {fmt(m['dice']):>8}  {fmt(m['iou']):>8}  {fmt(m['hd95']):>8}")
    return "\n".join(lines)
