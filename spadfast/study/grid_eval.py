"""Evaluate one checkpoint the way the SPAD study does: several DDIM step counts and ensemble sizes, common random
numbers, and boundary and calibration metrics beside Dice/IoU/HD95.

Every image's initial noise is keyed by its file stem (:func:`spadfast.diffusion.sampler.image_noise_key`), so two variants
evaluated on the same folder see the same noise (common random numbers: their paired differences are not diluted by
sampling noise). An ensemble of ``e`` is the mean of the first ``e`` members of one ``max(ensembles)``-member draw.

Per image (binary masks, probabilities ``p`` in [0, 1], threshold 0.5):

- ``dice``, ``iou``, ``hd95`` (:mod:`spadfast.evaluation.metrics`; HD95 inf when exactly one mask is empty).
- ``boundary_f1``: F1 of boundary pixels matched within ``tolerance`` px (Euclidean) of the other mask's boundary;
  1 when both masks are empty, 0 when one is.
- ``spurious``: predicted connected components (8-connected) that touch no ground-truth pixel.
- ``brier``: mean ``(p - y)^2``; ``ece``: expected calibration error over 10 equal-width bins of ``p``.
- ``brier_band``, ``ece_band``: the same within ``band`` px of the ground-truth boundary (NaN without a boundary).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from scipy import ndimage

from ..evaluation import metrics

__all__ = ["STUDY_METRICS", "image_scores", "evaluate_checkpoint"]

STUDY_METRICS = ("dice", "iou", "hd95", "boundary_f1", "spurious", "brier", "ece", "brier_band", "ece_band")


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Bool [H,W]: foreground pixels with a 4-neighbour in the background (image borders are not boundary)."""
    padded = np.pad(mask, 1, mode="edge")
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def boundary_f1(pred: np.ndarray, gt: np.ndarray, tolerance: float = 1.0) -> float:
    bp, bg = _boundary(pred), _boundary(gt)
    if not bp.any() and not bg.any():
        return 1.0
    if not bp.any() or not bg.any():
        return 0.0
    dist_to_gt = ndimage.distance_transform_edt(~bg)
    dist_to_pred = ndimage.distance_transform_edt(~bp)
    precision = float((dist_to_gt[bp] <= tolerance).mean())
    recall = float((dist_to_pred[bg] <= tolerance).mean())
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def spurious_components(pred: np.ndarray, gt: np.ndarray) -> int:
    n, labels = cv2.connectedComponents(pred.astype(np.uint8), connectivity=8)
    touched = np.unique(labels[gt & pred])
    return int(n - 1 - np.count_nonzero(touched))


def _ece(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    if p.size == 0:
        return float("nan")
    idx = np.minimum((p * bins).astype(np.int64), bins - 1)
    count = np.bincount(idx, minlength=bins)
    conf = np.bincount(idx, weights=p, minlength=bins)
    acc = np.bincount(idx, weights=y, minlength=bins)
    return float(np.abs(conf - acc).sum() / p.size)


def image_scores(prob: np.ndarray, gt: np.ndarray, band: int = 3, tolerance: float = 1.0) -> dict[str, float]:
    """Scores of one image: ``prob`` float [H,W] in [0, 1], ``gt`` bool [H,W]; keys :data:`STUDY_METRICS`."""
    pred = prob > 0.5
    y = gt.astype(np.float64)
    p = prob.astype(np.float64)
    near = np.zeros_like(gt)
    edge = _boundary(gt)
    if edge.any():
        near = ndimage.distance_transform_edt(~edge) <= band
    out = {"dice": float(metrics.dice(pred, gt)), "iou": float(metrics.iou(pred, gt)),
           "hd95": float(metrics.hd95(pred, gt))}
    out.update(
        boundary_f1=boundary_f1(pred, gt, tolerance), spurious=float(spurious_components(pred, gt)),
        brier=float(((p - y) ** 2).mean()), ece=_ece(p.ravel(), y.ravel()),
        brier_band=float(((p[near] - y[near]) ** 2).mean()) if near.any() else float("nan"),
        ece_band=_ece(p[near], y[near]) if near.any() else float("nan"),
    )
    return out


def evaluate_checkpoint(
    run: str | Path, images_dir: str | Path, masks_dir: str | Path, steps: Sequence[int] = (1, 2, 5, 10, 25),
    ensembles: Sequence[int] = (1, 5), seed: int = 0, batch_size: int = 64,
) -> list[dict[str, Any]]:
    """Score a run's EMA model on a folder for every (steps, ensemble) pair.

    Returns one record per pair: ``{"steps", "ensemble", "cases": [{"name", <metric>: value}], "mean": {...}}``
    (the mean skips NaN; HD95's mean is over finite values, with ``hd95_over3`` the share of images whose HD95 is
    above 3 px or infinite).
    """
    import torch

    from ..diffusion.sampler import image_noise_key
    from ..infer.segmenter import Segmenter
    from ..io.files import index_folder, read_mask, read_model_input

    segmenter = Segmenter.from_checkpoint(run, device="cpu")
    cfg = segmenter.config
    images = index_folder(Path(images_dir))
    stems = sorted(images)
    gts = {s: read_mask(Path(masks_dir) / f"{s}.png") for s in stems}
    members_max = max(ensembles)
    records = []
    for n_steps in steps:
        per_ensemble: dict[int, list[dict[str, Any]]] = {e: [] for e in ensembles}
        for start in range(0, len(stems), batch_size):
            chunk = stems[start:start + batch_size]
            arrays = [read_model_input(images[s], cfg.image_size, cfg.image_channels, cfg.intensity_norm)[0]
                      for s in chunk]
            result = segmenter.segment(torch.from_numpy(np.stack(arrays)), steps=n_steps, ensemble=members_max,
                                       seed=seed, return_members=True,
                                       noise_keys=[image_noise_key(s) for s in chunk])
            members = result.members.numpy()  # [B, K, H, W]
            for i, stem in enumerate(chunk):
                for e in ensembles:
                    prob = members[i, :e].mean(axis=0)
                    if prob.shape != gts[stem].shape:
                        raise ValueError(f"{images[stem]}: the study evaluates at the model's size; image is "
                                         f"{gts[stem].shape}, model {prob.shape}")
                    per_ensemble[e].append({"name": stem, **image_scores(prob, gts[stem])})
        for e in ensembles:
            records.append({"steps": n_steps, "ensemble": e, "cases": per_ensemble[e],
                            "mean": summarize_cases(per_ensemble[e])})
    return records


def summarize_cases(cases: list[dict[str, Any]]) -> dict[str, float]:
    """Mean of each metric over cases (NaN skipped, HD95 over finite values) and ``hd95_over3``."""
    out: dict[str, float] = {}
    for name in STUDY_METRICS:
        values = np.array([c[name] for c in cases], dtype=np.float64)
        keep = np.isfinite(values)
        out[name] = float(values[keep].mean()) if keep.any() else float("nan")
    hd = np.array([c["hd95"] for c in cases], dtype=np.float64)
    out["hd95_over3"] = float((~(hd <= 3)).mean()) if hd.size else float("nan")
    return out
