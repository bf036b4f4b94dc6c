"""Pictures of the SPAD perturbation: mask, Canny edges, ScD and BcD side by side over training progress."""

from __future__ import annotations

import numpy as np
import torch

from . import ops
from .perturb import PerturbConfig, perturb_factor, spad_perturb


def _to_u8(x: torch.Tensor) -> np.ndarray:
    return (x.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def perturbation_grid(
    mask: torch.Tensor,
    progresses: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0),
    cfg: PerturbConfig | None = None,
    seed: int = 0,
    scale: int = 4,
) -> np.ndarray:
    """One row per progress value: ``mask | edges | ScD only | BcD only | ScD + BcD`` (what training sees).

    Args:
        mask: ``[H,W]`` binary mask.
        progresses: training progress values p in [0, 1], one row each.
        scale: nearest-neighbour upscaling of every tile.

    Returns:
        uint8 ``[rows*H*scale, 5*W*scale]`` gray image (perturbed values clamped to [0, 1] for display).
    """
    cfg = cfg or PerturbConfig()
    m = mask.float()
    edges = ops.canny(m).float()
    rows = []
    for p in progresses:
        f = perturb_factor(p, cfg)
        scd = ops.target_noise(m, cfg.scd_max * f, cfg.anchor_size, cfg.keep_ratio, seed=seed)
        radius = int(np.ceil(cfg.band_radius_max * f))
        bcd = ops.boundary_blur(m, cfg.blur_sigma_max * f, cfg.bcd_max * f, radius, seed=seed)
        both = spad_perturb(m, p, cfg, seed=seed)
        rows.append(np.concatenate([_to_u8(t) for t in (m, edges, scd, bcd, both)], axis=1))
    grid = np.concatenate(rows, axis=0)
    return np.kron(grid, np.ones((scale, scale), dtype=np.uint8))
