"""Evaluate one checkpoint the way the diffusion study does: a grid of DDIM step counts x ensemble sizes x step
fusions, common random numbers, and boundary, calibration, uncertainty, tile and ambiguity endpoints beside
Dice/IoU/HD95.

Every image's initial noise is keyed by its file stem (:func:`spadfast.diffusion.sampler.image_noise_key`; windows:
stem and position), so two variants evaluated on the same folder see the same noise (common random numbers: their
paired differences are not diluted by sampling noise), and an ensemble of ``e`` holds the first ``e`` members of a
larger one. By default (``shared=True``; one diffusion run, ``eta == 0``) each step count is sampled once with
the largest ensemble and every step fusion and smaller ensemble is read from that pass
(:meth:`~spadfast.diffusion.sampler.DDIMSampler.sample_fusion_grid`: the cells are those of separate calls, 3 x
(1 + 5 + 16) / 16 = 4.1x fewer network passes for the study's grid); a cell's ``seconds_per_image`` is then None and
``pass_seconds_per_image`` is the time of the shared pass (latency per setting belongs to ``benchmarks/``). With
``shared=False`` each cell is sampled on its own and its ``seconds_per_image`` is measured.

Per image (binary masks, probabilities ``p`` in [0, 1], threshold 0.5):

- ``dice``, ``iou``, ``hd95`` (:mod:`spadfast.evaluation.metrics`; HD95 inf when exactly one mask is empty).
- ``boundary_f1``: F1 of boundary pixels matched within ``tolerance`` px (Euclidean) of the other mask's boundary;
  1 when both masks are empty, 0 when one is.
- ``spurious``: predicted connected components (8-connected) that touch no ground-truth pixel.
- ``brier``, ``ece`` (``ece_bins`` equal-width bins of ``p``), and ``brier_band``, ``ece_band`` within ``band`` px
  of the ground-truth boundary (NaN without a boundary): :mod:`spadfast.evaluation.calibration`.
- ``aurc``: area under the risk-coverage curve of the per-pixel uncertainty (``uncertainty``: ``"bernoulli"``
  p(1-p) of the members' mean, the default, defined alike for a supervised sigmoid; or ``"std"``, the members' std)
  against the per-pixel errors of the thresholded prediction.
- ``whole_image=True``: each image is scored whole at native resolution through Gaussian sliding windows
  (:func:`spadfast.infer.sliding_window.segment_tiled`), plus ``dice_nonempty_tiles`` and ``empty_tile_fp_rate``
  over ``tile`` x ``tile`` px tiles (:mod:`spadfast.evaluation.tiles`).
- ``annotator_dirs`` (several mask folders of the same images): ``ged`` and ``hm_iou`` of the thresholded members
  against the annotators (:mod:`spadfast.evaluation.ambiguity`); with ``whole_image`` each member is stitched over
  the windows as the mean is.
- ``prob_dir`` (``<stem>.npy`` float maps in [0, 1], e.g. the grey-matter probability map an ambiguous set was
  thresholded from): ``brier_prob``, ``ece_prob`` and their ``_band`` versions against that map instead of the mask.
- ``run`` may list several runs: they are scored as one ensemble, members split across the runs
  (:class:`spadfast.infer.ensemble.ModelEnsemble`; five supervised runs with ``ensembles=(5,)`` are the
  deep-ensemble reference).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from scipy import ndimage

from ..evaluation import metrics
from ..evaluation.ambiguity import ged, hm_iou
from ..evaluation.calibration import aurc, boundary, brier, ece, near_boundary, pixel_uncertainty
from ..evaluation.tiles import tile_scores

__all__ = ["STUDY_METRICS", "TILE_METRICS", "AMBIGUITY_METRICS", "PROB_METRICS", "image_scores",
           "evaluate_checkpoint", "summarize_cases"]

STUDY_METRICS = ("dice", "iou", "hd95", "boundary_f1", "spurious", "brier", "ece", "brier_band", "ece_band", "aurc")
TILE_METRICS = ("dice_nonempty_tiles", "empty_tile_fp_rate")
AMBIGUITY_METRICS = ("ged", "hm_iou")
PROB_METRICS = ("brier_prob", "ece_prob", "brier_prob_band", "ece_prob_band")


def boundary_f1(pred: np.ndarray, gt: np.ndarray, tolerance: float = 1.0) -> float:
    bp, bg = boundary(pred), boundary(gt)
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


def image_scores(prob: np.ndarray, gt: np.ndarray, band: int = 3, tolerance: float = 1.0, ece_bins: int = 10,
                 uncertainty: np.ndarray | None = None) -> dict[str, float]:
    """Scores of one image: ``prob`` float [H,W] in [0, 1], ``gt`` bool [H,W]; keys :data:`STUDY_METRICS`.
    ``uncertainty`` float [H,W] ranks the pixels for ``aurc`` (None: ``p (1 - p)``)."""
    pred = prob > 0.5
    near = near_boundary(gt, band)
    u = pixel_uncertainty(prob) if uncertainty is None else uncertainty
    out = {"dice": float(metrics.dice(pred, gt)), "iou": float(metrics.iou(pred, gt)),
           "hd95": float(metrics.hd95(pred, gt))}
    out.update(
        boundary_f1=boundary_f1(pred, gt, tolerance), spurious=float(spurious_components(pred, gt)),
        brier=brier(prob, gt), ece=ece(prob, gt, ece_bins), brier_band=brier(prob, gt, near),
        ece_band=ece(prob, gt, ece_bins, near), aurc=aurc(u, pred != gt),
    )
    return out


def evaluate_checkpoint(
    run: str | Path | Sequence[str | Path], images_dir: str | Path, masks_dir: str | Path,
    steps: Sequence[int] = (1, 2, 5, 10, 25),
    ensembles: Sequence[int] = (1, 5), seed: int = 0, batch_size: int = 64, fusions: Sequence[str] = ("none",),
    whole_image: bool = False, tile: int = 32, band: int = 3, ece_bins: int = 10, uncertainty: str = "bernoulli",
    annotator_dirs: Sequence[str | Path] | None = None, device: str | None = "cpu",
    prob_dir: str | Path | None = None, shared: bool = True,
) -> list[dict[str, Any]]:
    """Score a run's EMA model on a folder for every (steps, ensemble, step fusion) cell (module docstring).

    Returns one record per cell, steps outermost, then fusion, then ensemble: ``{"steps", "ensemble",
    "step_fusion", "seconds_per_image", "cases": [{"name", <metric>: value}], "mean": {...}}`` (the mean skips NaN;
    HD95's mean is over finite values, with ``hd95_over3`` the share of images whose HD95 is above 3 px or
    infinite). ``seconds_per_image``: wall time of the cell's sampling (and window stitching) over the images, on
    ``device``; None for cells read from a shared pass (``shared``, module docstring), whose records carry
    ``pass_seconds_per_image`` instead.
    """
    import torch

    from ..diffusion.sampler import check_step_fusion, image_noise_key
    from ..evaluation.calibration import UNCERTAINTY_KINDS
    from ..infer.segmenter import Segmenter
    from ..infer.sliding_window import segment_tiled_many
    from ..io.files import check_size, index_folder, read_mask, read_model_input
    from ..ops.checks import check_int

    steps = [check_int(s, "steps", 1) for s in steps]
    ensembles = [check_int(e, "ensembles", 1) for e in ensembles]
    fusions = [check_step_fusion(f, "fusions") for f in fusions]
    if not steps or not ensembles or not fusions:
        raise ValueError("`steps`, `ensembles` and `fusions` must each name at least one value")
    if uncertainty not in UNCERTAINTY_KINDS:
        raise ValueError(f"`uncertainty` must be one of {UNCERTAINTY_KINDS}, got {uncertainty!r}")
    annotators = [Path(d) for d in annotator_dirs or ()]
    runs = [run] if isinstance(run, (str, Path)) else list(run)
    if not runs:
        raise ValueError("`run` must name at least one run")
    if len(runs) > 1 and min(ensembles) < len(runs):
        raise ValueError(f"`ensembles` must be >= the {len(runs)} runs of the ensemble (one member per run at "
                         f"least), got {list(ensembles)}")
    segmenter = Segmenter.from_checkpoint(runs[0], device=device) if len(runs) == 1 else Segmenter.load(runs, device)
    cfg = segmenter.config
    images = index_folder(Path(images_dir))
    stems = sorted(images)
    if not stems:
        raise ValueError(f"{images_dir}: no images to evaluate")
    gts = {s: read_mask(Path(masks_dir) / f"{s}.png") for s in stems}
    raters = {s: np.stack([read_mask(d / f"{s}.png") for d in annotators]) for s in stems} if annotators else {}
    soft = {}
    if prob_dir is not None:
        for s in stems:
            path = Path(prob_dir) / f"{s}.npy"
            if not path.is_file():
                raise ValueError(f"`prob_dir` {str(prob_dir)!r} has no {path.name} for image {s!r}")
            soft[s] = np.load(path).astype(np.float64)
            if soft[s].shape != gts[s].shape or not (np.isfinite(soft[s]).all() and 0 <= soft[s].min()
                                                     and soft[s].max() <= 1):
                raise ValueError(f"{path}: a probability map of the mask's shape {gts[s].shape} in [0, 1] is needed, "
                                 f"got shape {soft[s].shape}")
    size = None if whole_image else cfg.image_size
    inputs = {s: read_model_input(images[s], size, cfg.image_channels, cfg.intensity_norm)[0] for s in stems}
    window = check_size(cfg.image_size)

    def score(stem: str, prob: np.ndarray, std: np.ndarray, members: np.ndarray | None) -> dict[str, Any]:
        gt = gts[stem]
        if prob.shape != gt.shape:
            raise ValueError(f"{images[stem]}: the mask is {gt.shape}, the prediction {prob.shape} "
                             "(whole_image=True scores images at their own size)")
        u = pixel_uncertainty(prob, std, uncertainty)
        case = {"name": stem, **image_scores(prob, gt, band, ece_bins=ece_bins, uncertainty=u)}
        if whole_image:
            scores = tile_scores(prob > 0.5, gt, tile)
            case.update({k: scores[k] for k in TILE_METRICS})
        if annotators:
            samples = members > cfg.threshold
            case.update(ged=ged(samples, raters[stem]), hm_iou=hm_iou(samples, raters[stem]))
        if soft:
            q, near = soft[stem], near_boundary(gt, band)
            case.update(brier_prob=brier(prob, q), ece_prob=ece(prob, q, ece_bins),
                        brier_prob_band=brier(prob, q, near), ece_prob_band=ece(prob, q, ece_bins, near))
        return case

    share = (shared and len(runs) == 1 and cfg.objective != "supervised" and float(cfg.eta) == 0.0
             and len(fusions) * len(ensembles) > 1)
    records = []
    for n_steps in steps:
        if share:
            records += _shared_pass(segmenter, inputs, stems, n_steps, fusions, ensembles, seed, batch_size,
                                    whole_image, window, float(cfg.tile_overlap), score)
            continue
        for fusion in fusions:
            # every cell samples at its own fusion, "none" included, whatever the checkpoint's default (a model
            # ensemble takes it on every model through the property, not as a keyword)
            default_fusion, segmenter.step_fusion = segmenter.step_fusion, fusion
            for e in ensembles:
                kwargs: dict[str, Any] = dict(steps=n_steps, ensemble=e, seed=seed)
                cases, elapsed = [], 0.0
                for start in range(0, len(stems), batch_size):
                    chunk = stems[start:start + batch_size]
                    t0 = time.perf_counter()
                    if whole_image:
                        outs = []
                        for s in chunk:
                            maps = segment_tiled_many(segmenter.segment, [torch.from_numpy(inputs[s])], window,
                                                      float(cfg.tile_overlap), [s], return_members=bool(annotators),
                                                      **kwargs)[0]
                            members = maps[2][:, 0].numpy() if annotators else None
                            outs.append((maps[0][0].numpy(), maps[1][0].numpy(), members))
                    else:
                        result = segmenter.segment(torch.from_numpy(np.stack([inputs[s] for s in chunk])),
                                                   return_members=True, noise_keys=[image_noise_key(s) for s in chunk],
                                                   **kwargs)
                        probs, std, members = (result.probs[:, 0].cpu().numpy(), result.std[:, 0].cpu().numpy(),
                                               result.members.cpu().numpy())
                        outs = list(zip(probs, std, members))
                    elapsed += time.perf_counter() - t0
                    cases += [score(stem, *out) for stem, out in zip(chunk, outs)]
                records.append({"steps": n_steps, "ensemble": e, "step_fusion": fusion,
                                "seconds_per_image": elapsed / len(stems), "cases": cases,
                                "mean": summarize_cases(cases)})
            segmenter.step_fusion = default_fusion
    return records


def _shared_pass(segmenter, inputs: dict[str, np.ndarray], stems: list[str], n_steps: int, fusions: list[str],
                 ensembles: list[int], seed: int, batch_size: int, whole_image: bool, window: tuple[int, int],
                 overlap: float, score) -> list[dict[str, Any]]:
    """The records of one step count, every (fusion, ensemble) cell read from one pass of ``max(ensembles)``
    members (:meth:`~spadfast.infer.segmenter.Segmenter.segment_fusion_grid`), in :func:`evaluate_checkpoint`'s
    order (fusion, then ensemble)."""
    import torch

    from ..diffusion.sampler import SampleResult, image_noise_key
    from ..infer.sliding_window import segment_tiled_many

    top = max(ensembles)
    cells = [(f, e) for f in fusions for e in ensembles]
    threshold = float(segmenter.config.threshold)

    def packed(tiles: torch.Tensor, noise_keys: list[int], return_members: bool = False) -> SampleResult:
        # each cell's members, then its mean and std as SampleResult computes them, side by side as one ensemble:
        # the sliding window stitches every map alike, so each cell's probabilities and std are stitched exactly as
        # a call of that cell alone stitches them
        grid = segmenter.segment_fusion_grid(tiles, steps=n_steps, ensemble=top, subsets=list(ensembles), seed=seed,
                                             noise_keys=noise_keys)
        maps = []
        for c in cells:
            one = SampleResult.from_members(grid[c], threshold)
            maps += [grid[c], one.probs.unsqueeze(1), one.std.unsqueeze(1)]
        return SampleResult.from_members(torch.cat(maps, dim=1), threshold, True)

    per_cell: dict[tuple[str, int], list] = {c: [] for c in cells}
    elapsed = 0.0
    for start in range(0, len(stems), batch_size):
        chunk = stems[start:start + batch_size]
        t0 = time.perf_counter()
        outs: list[dict[tuple[str, int], tuple[np.ndarray, np.ndarray, np.ndarray]]] = []
        if whole_image:
            for s in chunk:
                stack = segment_tiled_many(packed, [torch.from_numpy(inputs[s])], window, overlap, [s],
                                           return_members=True)[0][2][:, 0].numpy()  # [sum(e + 2), H, W]
                out, offset = {}, 0
                for f, e in cells:
                    out[f, e] = (stack[offset + e], stack[offset + e + 1], stack[offset:offset + e])
                    offset += e + 2
                outs.append(out)
        else:
            grid = segmenter.segment_fusion_grid(torch.from_numpy(np.stack([inputs[s] for s in chunk])),
                                                 steps=n_steps, ensemble=top, subsets=list(ensembles), seed=seed,
                                                 noise_keys=[image_noise_key(s) for s in chunk])
            results = {c: SampleResult.from_members(grid[c], threshold, True) for c in cells}
            outs = [{c: (r.probs[b, 0].cpu().numpy(), r.std[b, 0].cpu().numpy(), r.members[b].cpu().numpy())
                     for c, r in results.items()} for b in range(len(chunk))]
        elapsed += time.perf_counter() - t0
        for stem, out in zip(chunk, outs):
            for c in cells:
                per_cell[c].append(score(stem, *out[c]))
    seconds = elapsed / len(stems)
    return [{"steps": n_steps, "ensemble": e, "step_fusion": f, "seconds_per_image": None,
             "pass_seconds_per_image": seconds, "cases": per_cell[f, e], "mean": summarize_cases(per_cell[f, e])}
            for f, e in cells]


def summarize_cases(cases: list[dict[str, Any]]) -> dict[str, float]:
    """Mean of each metric over cases (NaN skipped, HD95 over finite values) and ``hd95_over3``."""
    out: dict[str, float] = {}
    for name in (*STUDY_METRICS, *TILE_METRICS, *AMBIGUITY_METRICS, *PROB_METRICS):
        if not cases or name not in cases[0]:
            continue
        values = np.array([c[name] for c in cases], dtype=np.float64)
        keep = np.isfinite(values)
        out[name] = float(values[keep].mean()) if keep.any() else float("nan")
    hd = np.array([c["hd95"] for c in cases], dtype=np.float64)
    out["hd95_over3"] = float((~(hd <= 3)).mean()) if hd.size else float("nan")
    return out
