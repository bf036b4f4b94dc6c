"""Segmentation metrics on binary masks: Dice, IoU and the 95th-percentile Hausdorff distance (HD95).

Every metric takes ``pred`` and ``target`` of one shape, ``[H,W]``, ``[B,H,W]`` or ``[B,1,H,W]``, as torch tensors
(any device; read on the CPU) or numpy arrays, holding bool or 0/1 values in any integer or floating dtype. It
returns a Python ``float`` for ``[H,W]`` and a numpy ``float64`` array of shape ``[B]`` otherwise. Metrics run on
the host in float64: they are for evaluation, not for a training loss.

Conventions (DESIGN.md, "Public API"):

- Dice and IoU of two empty masks are 1.0.
- HD95 follows MONAI's ``compute_hausdorff_distance(percentile=95)``: the surface of a mask is
  ``mask XOR binary_erosion(mask)`` with a 4-connected cross and a zero border (pixels on the image border are
  surface); the directed distances are Euclidean, with pixel spacing ``(dy, dx)``, from each surface pixel of one
  mask to the nearest surface pixel of the other; HD95 is the larger of the two directed 95th percentiles (linear
  interpolation, as ``numpy.percentile``). Empty vs empty is 0.0; empty vs non-empty is ``inf``.

Distances are exact: scipy's Euclidean distance transform when scipy is installed, otherwise an exact separable
transform in numpy (column distances, then a minimum over columns at the query pixels only).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch

try:
    from scipy.ndimage import distance_transform_edt as _scipy_edt
except ImportError:  # scipy is a test extra, not a runtime requirement
    _scipy_edt = None

__all__ = ["dice", "iou", "hd95", "surface", "summarize"]

MaskLike = torch.Tensor | np.ndarray

# Query pixels x columns held at once by the numpy fallback (float64: 8 bytes each).
_FALLBACK_CHUNK = 1 << 22


def _to_numpy(x: object, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        if x.is_complex():
            raise TypeError(f"`{name}` must be bool, integer or floating, got {x.dtype}")
        return x.detach().cpu().numpy() if x.dtype != torch.bfloat16 else x.detach().float().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    raise TypeError(f"`{name}` must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def _as_bhw(x: object, name: str) -> np.ndarray:
    """Check one mask argument and return it as a bool array ``[B,H,W]``."""
    a = _to_numpy(x, name)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"`{name}` must be bool, integer or floating, got dtype {a.dtype}")
    shape = tuple(a.shape)
    if a.ndim == 2:
        a = a[None]
    elif a.ndim == 4:
        if a.shape[1] != 1:
            raise ValueError(f"`{name}` must have exactly one channel ([B,1,H,W]), got shape {shape}")
        a = a[:, 0]
    elif a.ndim != 3:
        raise ValueError(f"`{name}` must have shape [H,W], [B,H,W] or [B,1,H,W], got shape {shape}")
    if a.shape[0] == 0:
        raise ValueError(f"`{name}` must hold at least one image, got an empty batch (shape {shape})")
    if a.shape[1] == 0 or a.shape[2] == 0:
        raise ValueError(f"`{name}` must have H >= 1 and W >= 1, got shape {shape}")
    if a.dtype == np.bool_:
        return a
    if a.dtype.kind == "f" and np.isnan(a).any():
        raise ValueError(f"`{name}` must not contain NaN")
    bad = (a != 0) & (a != 1)
    if bad.any():
        sample = a[bad][:3].tolist()
        raise ValueError(f"`{name}` must be binary (bool or values in {{0, 1}}), got values such as {sample}")
    return a != 0


def _pair(pred: object, target: object) -> tuple[np.ndarray, np.ndarray, bool]:
    p = _as_bhw(pred, "pred")
    t = _as_bhw(target, "target")
    pshape, tshape = tuple(pred.shape), tuple(target.shape)  # type: ignore[attr-defined]
    if pshape != tshape:
        raise ValueError(f"`target` must have the shape of `pred` {pshape}, got {tshape}")
    return p, t, len(pshape) == 2


def _out(values: np.ndarray, single: bool) -> float | np.ndarray:
    return float(values[0]) if single else values


def _check_spacing(spacing: object) -> tuple[float, float]:
    if isinstance(spacing, (str, bytes)) or not isinstance(spacing, Sequence) or len(spacing) != 2:
        raise TypeError(f"`spacing` must be a pair (dy, dx) of numbers, got {spacing!r}")
    out = []
    for s in spacing:
        if isinstance(s, bool) or not isinstance(s, (int, float, np.integer, np.floating)):
            raise TypeError(f"`spacing` must be a pair (dy, dx) of numbers, got {spacing!r}")
        if not math.isfinite(float(s)) or float(s) <= 0:
            raise ValueError(f"`spacing` must hold finite numbers > 0, got {spacing!r}")
        out.append(float(s))
    return out[0], out[1]


def dice(pred: MaskLike, target: MaskLike) -> float | np.ndarray:
    """Dice coefficient ``2|P & T| / (|P| + |T|)`` per image; 1.0 when both masks are empty.

    Args:
        pred: binary mask ``[H,W]``, ``[B,H,W]`` or ``[B,1,H,W]`` (torch tensor or numpy array; bool or 0/1).
        target: binary mask of the same shape.

    Returns:
        ``float`` for ``[H,W]`` inputs, else a numpy ``float64`` array ``[B]``.

    Raises:
        TypeError: an argument is not a tensor/array, or has a complex or object dtype.
        ValueError: bad shape, shapes differ, NaN or values other than 0 and 1.

    Example:
        >>> import torch
        >>> p = torch.zeros(4, 4); p[:2] = 1
        >>> t = torch.zeros(4, 4); t[:1] = 1
        >>> round(dice(p, t), 4)
        0.6667
    """
    p, t, single = _pair(pred, target)
    inter = (p & t).sum(axis=(1, 2), dtype=np.float64)
    total = p.sum(axis=(1, 2), dtype=np.float64) + t.sum(axis=(1, 2), dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.where(total == 0, 1.0, 2.0 * inter / total)
    return _out(values, single)


def iou(pred: MaskLike, target: MaskLike) -> float | np.ndarray:
    """Intersection over union ``|P & T| / |P | T|`` per image; 1.0 when both masks are empty.

    Args:
        pred: binary mask ``[H,W]``, ``[B,H,W]`` or ``[B,1,H,W]`` (torch tensor or numpy array; bool or 0/1).
        target: binary mask of the same shape.

    Returns:
        ``float`` for ``[H,W]`` inputs, else a numpy ``float64`` array ``[B]``.

    Raises:
        TypeError: an argument is not a tensor/array, or has a complex or object dtype.
        ValueError: bad shape, shapes differ, NaN or values other than 0 and 1.

    Example:
        >>> import numpy as np
        >>> p = np.zeros((2, 4, 4), bool); p[:, :2] = True
        >>> t = np.zeros((2, 4, 4), bool); t[0, :1] = True
        >>> iou(p, t)
        array([0.5, 0. ])
    """
    p, t, single = _pair(pred, target)
    inter = (p & t).sum(axis=(1, 2), dtype=np.float64)
    union = (p | t).sum(axis=(1, 2), dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.where(union == 0, 1.0, inter / union)
    return _out(values, single)


def surface(mask: MaskLike) -> np.ndarray:
    """Surface pixels ``mask XOR erosion(mask)`` (4-connected cross, zero border) as MONAI computes them.

    Args:
        mask: binary mask ``[H,W]``, ``[B,H,W]`` or ``[B,1,H,W]``.

    Returns:
        bool numpy array ``[H,W]`` for ``[H,W]`` input, else ``[B,H,W]``.

    Example:
        >>> import numpy as np
        >>> m = np.zeros((5, 5), bool); m[1:4, 1:4] = True
        >>> int(surface(m).sum())  # the ring of the 3x3 square
        8
    """
    m = _as_bhw(mask, "mask")
    s = _surface(m)
    return s[0] if mask.ndim == 2 else s  # type: ignore[union-attr]


def _surface(m: np.ndarray) -> np.ndarray:
    """``m`` bool ``[B,H,W]``: a pixel is interior when it and its 4 neighbours are set (outside counts as unset)."""
    inner = m.copy()
    inner[:, 1:, :] &= m[:, :-1, :]
    inner[:, :-1, :] &= m[:, 1:, :]
    inner[:, :, 1:] &= m[:, :, :-1]
    inner[:, :, :-1] &= m[:, :, 1:]
    inner[:, 0, :] = False
    inner[:, -1, :] = False
    inner[:, :, 0] = False
    inner[:, :, -1] = False
    return m & ~inner


def _directed_numpy(src: np.ndarray, dst: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
    """Exact distances from each set pixel of ``src`` to the nearest set pixel of ``dst`` (both ``[H,W]``, dst
    non-empty), in row-major order of ``src``. Column pass: vertical gap to the nearest ``dst`` pixel in each column;
    then, per query pixel, the minimum over columns of ``(dy * gap)^2 + (dx * column offset)^2``."""
    h, w = dst.shape
    rows = np.arange(h, dtype=np.float64)[:, None]
    above = np.maximum.accumulate(np.where(dst, rows, -np.inf), axis=0)
    below = np.minimum.accumulate(np.where(dst, rows, np.inf)[::-1], axis=0)[::-1]
    gap = np.minimum(rows - above, below - rows)  # inf in columns without any dst pixel
    gap2 = (spacing[0] * gap) ** 2
    qy, qx = np.nonzero(src)
    cols = np.arange(w, dtype=np.float64)
    out = np.empty(qy.size, dtype=np.float64)
    step = max(1, _FALLBACK_CHUNK // w)
    for i in range(0, qy.size, step):
        y, x = qy[i : i + step], qx[i : i + step]
        d2 = gap2[y] + (spacing[1] * (x[:, None] - cols[None, :])) ** 2
        out[i : i + step] = np.sqrt(d2.min(axis=1))
    return out


def _directed(src: np.ndarray, dst: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
    if _scipy_edt is None:
        return _directed_numpy(src, dst, spacing)
    return _scipy_edt(~dst, sampling=spacing)[src]


def _hd95_one(sp: np.ndarray, st: np.ndarray, spacing: tuple[float, float]) -> float:
    has_p, has_t = sp.any(), st.any()
    if not has_p and not has_t:
        return 0.0
    if not has_p or not has_t:
        return math.inf
    # Nearest-surface distances only involve surface pixels, so the bounding box of both surfaces is enough.
    ys, xs = np.nonzero(sp | st)
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    sp, st = sp[box], st[box]
    d_pt = _directed(sp, st, spacing)
    d_tp = _directed(st, sp, spacing)
    return float(max(np.percentile(d_pt, 95), np.percentile(d_tp, 95)))


def hd95(pred: MaskLike, target: MaskLike, spacing: Sequence[float] = (1.0, 1.0)) -> float | np.ndarray:
    """95th-percentile symmetric Hausdorff distance between mask surfaces, per image (MONAI's convention).

    Args:
        pred: binary mask ``[H,W]``, ``[B,H,W]`` or ``[B,1,H,W]`` (torch tensor or numpy array; bool or 0/1).
        target: binary mask of the same shape.
        spacing: pixel size ``(dy, dx)`` along rows and columns; distances are in these units.

    Returns:
        ``float`` for ``[H,W]`` inputs, else a numpy ``float64`` array ``[B]``. 0.0 when both masks are empty,
        ``inf`` when exactly one is.

    Raises:
        TypeError: an argument is not a tensor/array, has a complex or object dtype, or ``spacing`` is not a pair
            of numbers.
        ValueError: bad shape, shapes differ, NaN or values other than 0 and 1, spacing not finite and > 0.

    Example:
        >>> import torch
        >>> p = torch.zeros(8, 8); p[2:5, 2:5] = 1
        >>> t = torch.zeros(8, 8); t[3:6, 2:5] = 1
        >>> hd95(p, t)
        1.0
        >>> hd95(p, t, spacing=(0.5, 1.0))
        0.5
    """
    p, t, single = _pair(pred, target)
    dy_dx = _check_spacing(spacing)
    sp, st = _surface(p), _surface(t)
    values = np.array([_hd95_one(sp[b], st[b], dy_dx) for b in range(p.shape[0])], dtype=np.float64)
    return _out(values, single)


def summarize(cases: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Mean Dice, IoU and HD95 over per-case records such as ``{"name": ..., "dice": ..., "iou": ..., "hd95": ...}``.

    Plain arithmetic means over every case: a case where exactly one mask is empty has HD95 ``inf``, and then the
    mean HD95 is ``inf`` too (a missed or hallucinated lesion is not averaged away). Every mean is ``nan`` for no
    cases.

    Args:
        cases: records holding at least the keys ``"dice"``, ``"iou"`` and ``"hd95"``.

    Returns:
        ``{"dice": float, "iou": float, "hd95": float}``, the ``"mean"`` entry of ``spadfast evaluate``'s JSON.

    Raises:
        ValueError: a record lacks one of the keys.

    Example:
        >>> summarize([{"dice": 1.0, "iou": 1.0, "hd95": 0.0}, {"dice": 0.5, "iou": 0.25, "hd95": float("inf")}])
        {'dice': 0.75, 'iou': 0.625, 'hd95': inf}
    """
    cols: dict[str, list[float]] = {"dice": [], "iou": [], "hd95": []}
    for i, case in enumerate(cases):
        for key, col in cols.items():
            if key not in case:
                raise ValueError(f"`cases[{i}]` must have the key {key!r}, got keys {sorted(case)}")
            col.append(float(case[key]))
    out = {}
    for key, col in cols.items():
        vals = np.asarray(col, dtype=np.float64)
        out[key] = float(vals.mean()) if vals.size else math.nan
    return out
