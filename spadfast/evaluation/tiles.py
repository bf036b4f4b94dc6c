"""Tile endpoints of a whole-image prediction: Dice over the tiles that hold foreground, and the false-positive
rate on the tiles that hold none (an empty tile scores Dice 0 or 1 only, so it is reported apart)."""

from __future__ import annotations

import numpy as np

__all__ = ["tile_scores"]


def tile_scores(pred: np.ndarray, target: np.ndarray, tile: int = 32) -> dict[str, float]:
    """Split bool ``[H,W]`` masks into a grid of ``tile`` x ``tile`` px tiles (the last row and column may be smaller)
    and return ``dice_nonempty_tiles`` (mean Dice over tiles whose ground truth holds foreground; NaN when none),
    ``empty_tile_fp_rate`` (share of tiles without ground-truth foreground holding any predicted foreground; NaN
    when none), ``nonempty_tiles`` and ``empty_tiles`` (counts).

    Example:
        >>> gt = np.zeros((4, 4), bool); gt[0, 0] = True
        >>> pred = np.zeros((4, 4), bool); pred[0, 0] = pred[3, 3] = True
        >>> tile_scores(pred, gt, tile=2)["empty_tile_fp_rate"]  # 1 of 3 empty tiles
        0.3333333333333333
    """
    if not isinstance(tile, (int, np.integer)) or isinstance(tile, bool) or tile < 1:
        raise ValueError(f"`tile` must be an int >= 1, got {tile!r}")
    p, g = np.asarray(pred, dtype=bool), np.asarray(target, dtype=bool)
    if p.shape != g.shape or p.ndim != 2:
        raise ValueError(f"`pred` {p.shape} and `target` {g.shape} must be [H,W] masks of one shape")
    dice, fp = [], []
    for y in range(0, g.shape[0], tile):
        for x in range(0, g.shape[1], tile):
            pt, gt = p[y:y + tile, x:x + tile], g[y:y + tile, x:x + tile]
            if gt.any():
                dice.append(2 * np.count_nonzero(pt & gt) / (np.count_nonzero(pt) + np.count_nonzero(gt)))
            else:
                fp.append(bool(pt.any()))
    return {"dice_nonempty_tiles": float(np.mean(dice)) if dice else float("nan"),
            "empty_tile_fp_rate": float(np.mean(fp)) if fp else float("nan"),
            "nonempty_tiles": float(len(dice)), "empty_tiles": float(len(fp))}
