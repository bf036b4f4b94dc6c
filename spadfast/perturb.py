"""The SPAD perturbation of ground-truth masks at training progress p: ScD + BcD scheduled by PaS.

``spad_perturb(mask, p)`` returns the perturbed mask ``x0~`` in mask units ({0,1} plus perturbation):

1. PaS gives one decay factor ``f(p)`` in [0, 1] (:func:`spadfast.schedule.progress_strength` with max 1), reaching
   exactly 0 at ``p >= end``; at ``f == 0`` the clean mask is returned untouched.
2. ScD (:func:`spadfast.ops.target_noise`): noise of std ``scd_max * f`` inside the target except on anchor cells of
   side ``anchor_size`` kept with probability ``keep_ratio``.
3. BcD (:func:`spadfast.ops.boundary_blur`): in a band of half-width ``ceil(band_radius_max * f)`` around the Canny
   edge, the mask blurred with ``sigma = blur_sigma_max * f`` plus noise of std ``bcd_max * f``, overriding ScD there.
   Width and blur shrink with f: coarse early, fine late.
4. Optionally clamp to [0, 1] (``clamp``), so ``2 * x0~ - 1`` stays in the diffusion's data range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import ops
from .schedule import PROGRESS_KINDS, progress_strength


@dataclass
class PerturbConfig:
    """Knobs of the SPAD perturbation (see the module docstring; documented in the README)."""

    enabled: bool = True
    pas_kind: str = "cosine"  # linear | cosine | step
    pas_end: float = 0.8  # progress at which the perturbation reaches 0 (the rest of training sees clean masks)
    pas_stages: int = 4  # plateaus of the "step" kind
    scd_max: float = 0.5  # ScD noise std at p = 0 (mask units)
    anchor_size: int = 4  # anchor cell side, pixels
    keep_ratio: float = 0.25  # fraction of anchor cells left unaltered
    bcd_max: float = 0.3  # BcD noise std at p = 0
    blur_sigma_max: float = 2.0  # BcD Gaussian width at p = 0, pixels
    band_radius_max: int = 3  # BcD band half-width at p = 0, pixels
    clamp: bool = True

    def __post_init__(self) -> None:
        from .config import _check_types

        _check_types(self)
        if self.pas_kind not in PROGRESS_KINDS:
            raise ValueError(f"`pas_kind` must be one of {PROGRESS_KINDS}, got {self.pas_kind!r}")
        if not 0 < self.pas_end <= 1:
            raise ValueError(f"`pas_end` must lie in (0, 1], got {self.pas_end}")
        for name in ("scd_max", "bcd_max", "blur_sigma_max"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.keep_ratio <= 1:
            raise ValueError(f"`keep_ratio` must lie in [0, 1], got {self.keep_ratio}")
        if self.anchor_size < 1 or self.band_radius_max < 0 or self.pas_stages < 1:
            raise ValueError("`anchor_size` and `pas_stages` must be >= 1 and `band_radius_max` >= 0")


def perturb_factor(progress: float, cfg: PerturbConfig) -> float:
    """PaS decay factor f(p) in [0, 1]; 0 when the perturbation is disabled."""
    if not cfg.enabled:
        return 0.0
    return progress_strength(progress, cfg.pas_kind, 1.0, cfg.pas_end, cfg.pas_stages)


def spad_perturb(
    mask: torch.Tensor,
    progress: float,
    cfg: PerturbConfig | None = None,
    seed: int | None = None,
    offset: int = 0,
    generator: torch.Generator | None = None,
    validate: bool = True,
    backend: str = "auto",
) -> torch.Tensor:
    """Perturb a batch of binary masks at training progress ``progress``.

    Args:
        mask: ``[B,1,H,W]`` (or ``[H,W]``, ``[B,H,W]``) binary mask.
        progress: training progress ``step / train_steps`` (>= 0).
        cfg: perturbation knobs (default :class:`PerturbConfig`).
        seed, offset: randomness (in-kernel Philox on the Triton path); ScD uses ``offset``, BcD ``offset + numel``,
            so a caller advancing ``offset`` by ``2 * numel`` per call never reuses a draw.
        generator: alternative source of randomness (reference path).

    Returns:
        float tensor of the mask's shape (float32 unless the mask is floating), the perturbed mask ``x0~``.
    """
    cfg = cfg or PerturbConfig()
    f = perturb_factor(progress, cfg)
    out_dtype = mask.dtype if mask.is_floating_point() else torch.float32
    if f == 0.0:
        return mask.to(out_dtype, copy=True)
    scd = ops.target_noise(
        mask, cfg.scd_max * f, cfg.anchor_size, cfg.keep_ratio,
        generator=generator, seed=seed, offset=offset, validate=validate, backend=backend,
    )
    radius = int(math.ceil(cfg.band_radius_max * f))
    out = ops.boundary_blur(
        mask, cfg.blur_sigma_max * f, cfg.bcd_max * f, radius, base=scd,
        generator=generator, seed=seed, offset=offset + mask.numel(), validate=False, backend=backend,
    )
    return out.clamp_(0.0, 1.0) if cfg.clamp else out
