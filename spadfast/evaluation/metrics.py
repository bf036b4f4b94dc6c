"""Segmentation metrics on binary masks: Dice, IoU and the 95th-percentile Hausdorff distance (HD95), in 2-D and 3-D.

Every metric takes ``pred`` and ``target`` of one shape as torch tensors (any device; read on the CPU) or numpy
arrays, holding bool or 0/1 values in any integer or floating dtype, and a ``spacing`` whose length says whether
the masks are 2-D or 3-D:

- 2-D (``spacing`` None or a pair ``(dy, dx)``, the default): ``[H,W]`` -> Python ``float``; ``[B,H,W]`` or
  ``[B,1,H,W]`` -> numpy ``float64`` ``[B]``.
- 3-D (``spacing`` a triple ``(d0, d1, d2)``, the voxel size along the array's axes, e.g. millimetres from a NIfTI
  header): ``[D,H,W]`` -> ``float``; ``[B,D,H,W]`` or ``[B,1,D,H,W]`` -> ``float64`` ``[B]``.

Metrics run on the host in float64: they are for evaluation, not for a training loss. :data:`METRICS` is the one
registry of per-mask metrics (``name -> Metric``: the function, its label, direction and unit) that
:func:`summarize`, :func:`per_class_metrics`, ``spadfast evaluate``, the report, the plots and the ablation table
read; :func:`register_metric` adds one everywhere.

Conventions (DESIGN.md, "Public API"):

- Dice and IoU of two empty masks are 1.0.
- HD95 follows MONAI's ``compute_hausdorff_distance(percentile=95)``: the surface of a mask is
  ``mask XOR binary_erosion(mask)`` with a 4-connected cross in 2-D (6-connected in 3-D) and a zero border (pixels
  on the image border are surface); the directed distances are Euclidean, with the pixel/voxel ``spacing``, from
  each surface pixel of one mask to the nearest surface pixel of the other; HD95 is the larger of the two directed
  95th percentiles (linear interpolation, as ``numpy.percentile``). Empty vs empty is 0.0; empty vs non-empty is
  ``inf``. Units are those of ``spacing`` (millimetres for NIfTI spacings).
- Multi-class label maps: :func:`per_class_metrics` scores each foreground class ``c`` as the binary pair
  ``(pred == c, target == c)``; :func:`labels_from_probs` is the one rule that turns class probabilities into
  labels (background wins unless some class probability exceeds the threshold).

Distances are exact: scipy's Euclidean distance transform (``scipy.ndimage.distance_transform_edt``, a runtime
dependency) with the pixel spacing as its sampling.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt

from ..ops.checks import as_numpy as _to_numpy
from ..ops.checks import binary_array as _as_batch
from ..ops.checks import is_int
from .metric_spec import Metric

__all__ = ["dice", "iou", "hd95", "surface", "summarize", "per_class_metrics", "METRICS",
           "register_metric"]

MaskLike = torch.Tensor | np.ndarray

def _pair(pred: object, target: object, nd: int = 2) -> tuple[np.ndarray, np.ndarray, bool]:
    p = _as_batch(pred, "pred", nd)
    t = _as_batch(target, "target", nd)
    pshape, tshape = tuple(pred.shape), tuple(target.shape)  # type: ignore[attr-defined]
    if pshape != tshape:
        raise ValueError(f"`target` must have the shape of `pred` {pshape}, got {tshape}")
    return p, t, len(pshape) == nd


def _out(values: np.ndarray, single: bool) -> float | np.ndarray:
    return float(values[0]) if single else values


def _check_spacing(spacing: object) -> tuple[float, ...]:
    """A pair ``(dy, dx)`` (2-D) or a triple ``(d0, d1, d2)`` (3-D) of finite numbers > 0, as floats."""
    message = f"`spacing` must be a pair (dy, dx) or a triple (d0, d1, d2) of numbers, got {spacing!r}"
    if isinstance(spacing, (str, bytes)) or not isinstance(spacing, (Sequence, np.ndarray)):
        raise TypeError(message)
    if len(spacing) not in (2, 3):
        raise TypeError(message)
    out = []
    for s in spacing:
        if isinstance(s, (bool, np.bool_)) or not isinstance(s, (int, float, np.integer, np.floating)):
            raise TypeError(message)
        if not math.isfinite(float(s)) or float(s) <= 0:
            raise ValueError(f"`spacing` must hold finite numbers > 0, got {spacing!r}")
        out.append(float(s))
    return tuple(out)


def _spacing_or_unit(spacing: object) -> tuple[float, ...]:
    """``None`` is the 2-D unit spacing; anything else is checked by :func:`_check_spacing`."""
    return (1.0, 1.0) if spacing is None else _check_spacing(spacing)


def dice(pred: MaskLike, target: MaskLike, spacing: Sequence[float] | None = None) -> float | np.ndarray:
    """Dice coefficient ``2|P & T| / (|P| + |T|)`` per image or volume; 1.0 when both masks are empty.

    Args:
        pred: binary mask (torch tensor or numpy array; bool or 0/1): ``[H,W]``, ``[B,H,W]`` or ``[B,1,H,W]``; with a
            3-D ``spacing``, ``[D,H,W]``, ``[B,D,H,W]`` or ``[B,1,D,H,W]``.
        target: binary mask of the same shape.
        spacing: ``None`` or ``(dy, dx)`` for 2-D masks, ``(d0, d1, d2)`` for 3-D ones. Only its length matters
            here (every voxel has the same size, so Dice does not depend on it); it is accepted so that every
            metric of :data:`METRICS` has one signature.

    Returns:
        ``float`` for a single mask, else a numpy ``float64`` array ``[B]``.

    Raises:
        TypeError: an argument is not a tensor/array, has a complex or object dtype, or ``spacing`` is not 2 or 3
            numbers.
        ValueError: bad shape, shapes differ, NaN or values other than 0 and 1.

    Example:
        >>> import torch
        >>> p = torch.zeros(4, 4); p[:2] = 1
        >>> t = torch.zeros(4, 4); t[:1] = 1
        >>> round(dice(p, t), 4)
        0.6667
        >>> dice(torch.ones(2, 3, 4), torch.ones(2, 3, 4), spacing=(2.5, 0.8, 0.8))  # one 3-D volume
        1.0
    """
    nd = len(_spacing_or_unit(spacing))
    p, t, single = _pair(pred, target, nd)
    axes = tuple(range(1, nd + 1))
    inter = (p & t).sum(axis=axes, dtype=np.float64)
    total = p.sum(axis=axes, dtype=np.float64) + t.sum(axis=axes, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.where(total == 0, 1.0, 2.0 * inter / total)
    return _out(values, single)


def iou(pred: MaskLike, target: MaskLike, spacing: Sequence[float] | None = None) -> float | np.ndarray:
    """Intersection over union ``|P & T| / |P | T|`` per image or volume; 1.0 when both masks are empty.

    Args:
        pred: binary mask ``[H,W]``, ``[B,H,W]`` or ``[B,1,H,W]`` (torch tensor or numpy array; bool or 0/1); with
            a 3-D ``spacing``, ``[D,H,W]``, ``[B,D,H,W]`` or ``[B,1,D,H,W]``.
        target: binary mask of the same shape.
        spacing: ``None`` or a pair (2-D), a triple (3-D); only its length matters (see :func:`dice`).

    Returns:
        ``float`` for a single mask, else a numpy ``float64`` array ``[B]``.

    Raises:
        TypeError: an argument is not a tensor/array, has a complex or object dtype, or a bad ``spacing``.
        ValueError: bad shape, shapes differ, NaN or values other than 0 and 1.

    Example:
        >>> import numpy as np
        >>> p = np.zeros((2, 4, 4), bool); p[:, :2] = True
        >>> t = np.zeros((2, 4, 4), bool); t[0, :1] = True
        >>> iou(p, t)
        array([0.5, 0. ])
        >>> iou(p, t, spacing=(1.0, 1.0, 1.0))  # the same arrays read as one 2x4x4 volume
        0.25
    """
    nd = len(_spacing_or_unit(spacing))
    p, t, single = _pair(pred, target, nd)
    axes = tuple(range(1, nd + 1))
    inter = (p & t).sum(axis=axes, dtype=np.float64)
    union = (p | t).sum(axis=axes, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.where(union == 0, 1.0, inter / union)
    return _out(values, single)


def surface(mask: MaskLike, ndim: int = 2) -> np.ndarray:
    """Surface pixels ``mask XOR erosion(mask)`` (4-connected cross in 2-D, 6-connected in 3-D; zero border), as
    MONAI computes them.

    Args:
        mask: binary mask ``[H,W]``, ``[B,H,W]`` or ``[B,1,H,W]`` (``ndim=2``); ``[D,H,W]``, ``[B,D,H,W]`` or
            ``[B,1,D,H,W]`` (``ndim=3``).
        ndim: 2 or 3, the number of spatial axes.

    Returns:
        bool numpy array: the single mask's shape for a single mask, else ``[B,H,W]`` / ``[B,D,H,W]``.

    Example:
        >>> import numpy as np
        >>> m = np.zeros((5, 5), bool); m[1:4, 1:4] = True
        >>> int(surface(m).sum())  # the ring of the 3x3 square
        8
        >>> int(surface(np.ones((3, 3, 3), bool), ndim=3).sum())  # all but the centre voxel
        26
    """
    if not is_int(ndim) or ndim not in (2, 3):
        raise ValueError(f"`ndim` must be 2 or 3, got {ndim!r}")
    m = _as_batch(mask, "mask", ndim)
    s = _surface(m)
    return s[0] if mask.ndim == ndim else s  # type: ignore[union-attr]


def _surface(m: np.ndarray) -> np.ndarray:
    """``m`` bool ``[B, *spatial]``: a voxel is interior when it and its 2 neighbours along every spatial axis are set
    (outside the array counts as unset)."""
    inner = m.copy()
    for ax in range(1, m.ndim):
        lo = [slice(None)] * m.ndim
        hi = [slice(None)] * m.ndim
        lo[ax], hi[ax] = slice(1, None), slice(None, -1)
        inner[tuple(lo)] &= m[tuple(hi)]
        inner[tuple(hi)] &= m[tuple(lo)]
        first, last = [slice(None)] * m.ndim, [slice(None)] * m.ndim
        first[ax], last[ax] = 0, -1
        inner[tuple(first)] = False
        inner[tuple(last)] = False
    return m & ~inner


def _directed(src: np.ndarray, dst: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Distances from each set voxel of ``src`` to the nearest set voxel of ``dst`` (non-empty), row-major."""
    return distance_transform_edt(~dst, sampling=spacing)[src]


def _hd95_one(sp: np.ndarray, st: np.ndarray, spacing: tuple[float, ...]) -> float:
    has_p, has_t = sp.any(), st.any()
    if not has_p and not has_t:
        return 0.0
    if not has_p or not has_t:
        return math.inf
    # Nearest-surface distances only involve surface voxels, so the bounding box of both surfaces is enough.
    coords = np.nonzero(sp | st)
    box = tuple(slice(c.min(), c.max() + 1) for c in coords)
    sp, st = sp[box], st[box]
    d_pt = _directed(sp, st, spacing)
    d_tp = _directed(st, sp, spacing)
    return float(max(np.percentile(d_pt, 95), np.percentile(d_tp, 95)))


def hd95(pred: MaskLike, target: MaskLike, spacing: Sequence[float] = (1.0, 1.0)) -> float | np.ndarray:
    """95th-percentile symmetric Hausdorff distance between mask surfaces, per image or volume (MONAI's convention).

    Args:
        pred: binary mask (torch tensor or numpy array; bool or 0/1): ``[H,W]``, ``[B,H,W]`` or ``[B,1,H,W]`` with a
            2-D ``spacing``; ``[D,H,W]``, ``[B,D,H,W]`` or ``[B,1,D,H,W]`` with a 3-D one.
        target: binary mask of the same shape.
        spacing: pixel size ``(dy, dx)`` along rows and columns (2-D), or voxel size ``(d0, d1, d2)`` along the
            array's three axes (3-D; surfaces then use the 6-connected cross); distances are in these units
            (millimetres for a NIfTI header's spacing). ``None`` is ``(1.0, 1.0)``.

    Returns:
        ``float`` for a single mask, else a numpy ``float64`` array ``[B]``. 0.0 when both masks are empty,
        ``inf`` when exactly one is.

    Raises:
        TypeError: an argument is not a tensor/array, has a complex or object dtype, or ``spacing`` is not a pair
            or triple of numbers.
        ValueError: bad shape, shapes differ, NaN or values other than 0 and 1, spacing not finite and > 0.

    Example:
        >>> import torch
        >>> p = torch.zeros(8, 8); p[2:5, 2:5] = 1
        >>> t = torch.zeros(8, 8); t[3:6, 2:5] = 1
        >>> hd95(p, t)
        1.0
        >>> hd95(p, t, spacing=(0.5, 1.0))
        0.5
        >>> v, w = torch.zeros(4, 8, 8), torch.zeros(4, 8, 8)
        >>> v[1:3, 2:5, 2:5] = 1; w[1:3, 3:6, 2:5] = 1
        >>> hd95(v, w, spacing=(3.0, 0.5, 0.5))  # 3-D: millimetres
        0.5
    """
    spacing_t = _spacing_or_unit(spacing)
    p, t, single = _pair(pred, target, len(spacing_t))
    sp, st = _surface(p), _surface(t)
    values = np.array([_hd95_one(sp[b], st[b], spacing_t) for b in range(p.shape[0])], dtype=np.float64)
    return _out(values, single)


#: The per-mask metrics, ``name -> Metric(fn, label, higher_is_better, distance)`` (callable like ``fn``); evaluation,
#: :func:`summarize`, :func:`per_class_metrics`, the report, the plots and the ablation table read this registry, so a
#: metric registered here (:func:`register_metric`) appears in every one of them.
METRICS: dict[str, Metric] = {
    "dice": Metric(dice, "Dice", higher_is_better=True, value_range=(0.0, 1.0)),
    "iou": Metric(iou, "IoU", higher_is_better=True, value_range=(0.0, 1.0)),
    "hd95": Metric(hd95, "HD95", higher_is_better=False, distance=True),
}


def register_metric(name: str, fn: Callable[..., float | np.ndarray], label: str, higher_is_better: bool,
                    distance: bool = False, value_range: tuple[float, float] | None = None) -> Metric:
    """Add ``fn(pred, target, spacing=None)`` to :data:`METRICS` under ``name`` (a new name; ValueError otherwise)."""
    if not isinstance(name, str) or not name.isidentifier() or name in METRICS or name == "per_class":
        raise ValueError(f"`name` must be a new identifier, not one of {sorted(METRICS)}, got {name!r}")
    METRICS[name] = Metric(fn, label, higher_is_better, distance, value_range)
    return METRICS[name]


def _labels(x: object, name: str) -> np.ndarray:
    a = _to_numpy(x, name)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"`{name}` must be an integer label map, got dtype {a.dtype}")
    if a.dtype.kind == "f":
        if not np.isfinite(a).all() or (a != np.round(a)).any():
            raise ValueError(f"`{name}` must hold integer labels, got non-integer or non-finite values")
        a = a.astype(np.int64)
    return a


def per_class_metrics(
    pred_labels: MaskLike,
    gt_labels: MaskLike,
    classes: Iterable[int],
    spacing: Sequence[float] | None = None,
) -> dict[str, dict[str, float]]:
    """Every metric of :data:`METRICS` for each foreground class of two label maps.

    Class ``c`` is scored as the binary pair ``(pred_labels == c, gt_labels == c)`` with the conventions above: a
    class absent from both maps has Dice = IoU = 1.0 and HD95 = 0.0; present in exactly one, HD95 = ``inf``.

    Args:
        pred_labels: integer label map ``[H,W]`` (2-D) or ``[D,H,W]`` (3-D); torch tensor or numpy array
            (floating dtypes allowed when every value is an integer).
        gt_labels: label map of the same shape.
        classes: the foreground label values to score, e.g. ``range(1, num_classes)``.
        spacing: pixel/voxel size per axis (length 2 or 3, equal to the maps' number of axes); ``None`` is 1 per
            axis. HD95 is in its units (millimetres for a NIfTI header's spacing).

    Returns:
        ``{"1": {"dice": float, "iou": float, "hd95": float}, ...}``, keyed by ``str(c)`` in the order of
        ``classes``.

    Raises:
        TypeError / ValueError: bad dtypes, non-integer labels, shapes that differ or are not 2-D/3-D, a spacing
            whose length is not the maps' number of axes, no classes.

    Example:
        >>> import numpy as np
        >>> gt = np.zeros((6, 6), int); gt[1:3, 1:3] = 1; gt[4:, 4:] = 2
        >>> pred = gt.copy(); pred[4:, 4:] = 0
        >>> per_class_metrics(pred, gt, classes=[1, 2])
        {'1': {'dice': 1.0, 'iou': 1.0, 'hd95': 0.0}, '2': {'dice': 0.0, 'iou': 0.0, 'hd95': inf}}
    """
    p = _labels(pred_labels, "pred_labels")
    t = _labels(gt_labels, "gt_labels")
    if p.shape != t.shape:
        raise ValueError(f"`gt_labels` must have the shape of `pred_labels` {p.shape}, got {t.shape}")
    if p.ndim not in (2, 3):
        raise ValueError(f"`pred_labels` must be a 2-D [H,W] or 3-D [D,H,W] label map, got shape {p.shape}")
    spacing_t = (1.0,) * p.ndim if spacing is None else _check_spacing(spacing)
    if len(spacing_t) != p.ndim:
        raise ValueError(f"`spacing` must have one entry per axis of the {p.ndim}-D label maps, got {spacing!r}")
    class_list = [int(c) for c in classes]
    if not class_list:
        raise ValueError("`classes` must name at least one foreground class")
    out: dict[str, dict[str, float]] = {}
    for c in class_list:
        pc, tc = p == c, t == c
        out[str(c)] = {name: float(fn(pc, tc, spacing=spacing_t)) for name, fn in METRICS.items()}
    return out


def summarize(cases: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Means of every :data:`METRICS` entry (Dice, IoU, HD95) over per-case records, and per class when present.

    Plain arithmetic means over every case: a case where exactly one mask is empty has HD95 ``inf``, and then the
    mean HD95 is ``inf`` too (a missed or hallucinated lesion is not averaged away). Every mean is ``nan`` for no
    cases. When every record has ``"per_class": {"1": {...}, ...}`` (multi-class and volume evaluation), the result
    has ``"per_class"`` too: each class's metrics averaged over the cases (every case must list the same classes).

    Args:
        cases: records holding at least the keys of :data:`METRICS` (``"dice"``, ``"iou"``, ``"hd95"``).

    Returns:
        ``{"dice": float, "iou": float, "hd95": float}`` (plus ``"per_class"``), the ``"mean"`` entry of
        ``spadfast evaluate``'s JSON.

    Raises:
        ValueError: a record lacks one of the keys, or records list different classes.

    Example:
        >>> summarize([{"dice": 1.0, "iou": 1.0, "hd95": 0.0}, {"dice": 0.5, "iou": 0.25, "hd95": float("inf")}])
        {'dice': 0.75, 'iou': 0.625, 'hd95': inf}
    """
    cases = list(cases)
    cols: dict[str, list[float]] = {key: [] for key in METRICS}
    for i, case in enumerate(cases):
        for key, col in cols.items():
            if key not in case:
                raise ValueError(f"`cases[{i}]` must have the key {key!r}, got keys {sorted(case)}")
            col.append(float(case[key]))
    out: dict[str, Any] = {key: _mean(col) for key, col in cols.items()}
    if cases and all("per_class" in case for case in cases):
        classes = list(cases[0]["per_class"])
        per_class: dict[str, dict[str, float]] = {}
        for c in classes:
            values: dict[str, list[float]] = {key: [] for key in METRICS}
            for i, case in enumerate(cases):
                if list(case["per_class"]) != classes:
                    raise ValueError(f"`cases[{i}]` lists classes {list(case['per_class'])}, `cases[0]` {classes}")
                for key, col in values.items():
                    if key not in case["per_class"][c]:
                        raise ValueError(f"`cases[{i}]['per_class'][{c!r}]` must have the key {key!r}")
                    col.append(float(case["per_class"][c][key]))
            per_class[c] = {key: _mean(col) for key, col in values.items()}
        out["per_class"] = per_class
    return out


def _mean(values: list[float]) -> float:
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()) if a.size else math.nan
