"""The SPAD perturbation of ground-truth masks at training progress p: ScD + BcD scheduled by PaS.

``spad_perturb(mask, p)`` returns the perturbed mask ``x0~`` in mask units ({0,1} plus perturbation):

0. Optional structured corruptions first (:mod:`spadfast.diffusion.structured_perturb`: per-object dilation/erosion
   ``morph_px``, smooth contour warps ``warp_px``, spurious blobs ``blob_count``), scaled by f; ScD and BcD then act
   on the corrupted mask.
1. PaS gives one decay factor ``f(p)`` in [0, 1] (:func:`spadfast.diffusion.schedule.progress_strength` with max 1), reaching
   exactly 0 at ``p >= end``; at ``f == 0`` the clean mask is returned untouched.
2. ScD (:func:`spadfast.ops.target_noise`): noise of std ``scd_max * f`` inside the target except on anchor cells of
   side ``anchor_size`` kept with probability ``keep_ratio``; with ``scd_kind = "erase"`` instead each non-anchor
   cell is erased with probability ``scd_max * f`` (:func:`spadfast.diffusion.structured_perturb.erase_cells`).
3. BcD (:func:`spadfast.ops.boundary_blur`): in a band of half-width ``ceil(band_radius_max * f)`` around the Canny
   edge, the mask blurred with ``sigma = blur_sigma_max * f`` plus noise of std ``bcd_max * f``, overriding ScD there.
   Width and blur shrink with f: coarse early, fine late. With ``bcd_object_frac`` > 0 each object's band and blur
   shrink further with its size (:func:`spadfast.diffusion.structured_perturb.object_radii`): a nucleus of radius 3 px no
   longer disappears into a 3 px band.
4. Optionally clamp to [0, 1] (``clamp``), so ``2 * x0~ - 1`` stays in the diffusion's data range.

A component that is off (``scd`` / ``bcd`` False, or all its settings 0: :attr:`PerturbConfig.scd_active`,
:attr:`PerturbConfig.bcd_active`) is skipped, so ``bcd=False`` gives exactly ScD alone and ``scd=False`` exactly BcD
alone. Each keeps its random stream (ScD at ``offset``, BcD at ``offset + numel``) whether the other runs or not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .. import ops
from ..ops.checks import MAX_BAND_RADIUS
from ..ops.constants import PERTURB_KERNEL_DEFAULTS
from ..ops.fields import check_fields
from . import structured_perturb as structured
from .schedule import PROGRESS_KINDS, progress_strength

SCD_KINDS = ("noise", "erase")  # supervised: the non-diffusion reference (spadfast.diffusion.training_inputs)


@dataclass
class PerturbConfig:
    """Knobs of the SPAD perturbation (see the module docstring; documented in the README)."""

    enabled: bool = True
    pas_kind: str = "cosine"  # linear | cosine | step
    pas_end: float = 0.8  # progress at which the perturbation reaches 0 (the rest of training sees clean masks)
    pas_stages: int = 4  # plateaus of the "step" kind
    pas_floor: float = 0.0  # PaS strength never drops below this (0: fades to clean masks; > 0: never fades out)
    scd_max: float = 0.5  # ScD noise std at p = 0 (mask units)
    anchor_size: int = PERTURB_KERNEL_DEFAULTS["anchor_size"]  # anchor cell side, pixels
    keep_ratio: float = PERTURB_KERNEL_DEFAULTS["keep_ratio"]  # fraction of anchor cells left unaltered
    bcd_max: float = 0.3  # BcD noise std at p = 0
    blur_sigma_max: float = PERTURB_KERNEL_DEFAULTS["blur_sigma_max"]  # BcD Gaussian width at p = 0, pixels
    band_radius_max: int = PERTURB_KERNEL_DEFAULTS["band_radius_max"]  # BcD band half-width at p = 0, pixels
    # > 0: each object's BcD band and blur scaled by min(1, frac * its equivalent radius / band_radius_max) (0: off)
    bcd_object_frac: float = 0.0
    clamp: bool = True
    scd_kind: str = "noise"  # noise: N(0, scd_max f) inside the target; erase: a share scd_max f of cells erased
    morph_px: int = 0  # structured: each object dilated or eroded by up to round(morph_px f) px (0: off)
    warp_px: float = 0.0  # structured: smooth contour warp of peak warp_px f px (0: off)
    blob_count: float = 0.0  # structured: Poisson(blob_count f) spurious disks outside the target (0: off)
    blob_radius: int = 3  # radius of those disks, px
    scd: bool = True  # ScD on; off, the target keeps its clean values (outside BcD's band)
    bcd: bool = True  # BcD on; off, the boundary keeps ScD's values (no band override)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.pas_kind not in PROGRESS_KINDS:
            raise ValueError(f"`pas_kind` must be one of {PROGRESS_KINDS}, got {self.pas_kind!r}")
        if not 0 < self.pas_end <= 1:
            raise ValueError(f"`pas_end` must lie in (0, 1], got {self.pas_end}")
        for name in ("scd_max", "bcd_max", "blur_sigma_max", "bcd_object_frac"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.pas_floor <= 1:
            raise ValueError(f"`pas_floor` must lie in [0, 1], got {self.pas_floor}")
        if not 0 <= self.keep_ratio <= 1:
            raise ValueError(f"`keep_ratio` must lie in [0, 1], got {self.keep_ratio}")
        if self.anchor_size < 1 or self.band_radius_max < 0 or self.pas_stages < 1:
            raise ValueError("`anchor_size` and `pas_stages` must be >= 1 and `band_radius_max` >= 0")
        if self.scd_kind not in SCD_KINDS:
            raise ValueError(f"`scd_kind` must be one of {SCD_KINDS}, got {self.scd_kind!r}")
        if self.scd_kind == "erase" and self.scd_max > 1:
            raise ValueError(f"`scd_max` is a share of cells with scd_kind 'erase' and must be <= 1, got {self.scd_max}")
        if self.morph_px < 0 or self.warp_px < 0 or self.blob_count < 0 or self.blob_radius < 0:
            raise ValueError("`morph_px`, `warp_px`, `blob_count` and `blob_radius` must be >= 0")
        if self.band_radius_max > MAX_BAND_RADIUS:
            raise ValueError(f"`band_radius_max` must be <= {MAX_BAND_RADIUS} (boundary_blur's band limit), got "
                             f"{self.band_radius_max}")

    @property
    def scd_active(self) -> bool:
        """ScD changes masks: the perturbation and ScD are on and ``scd_max > 0``."""
        return self.enabled and self.scd and self.scd_max > 0

    @property
    def structured_active(self) -> bool:
        """A structured corruption (:mod:`spadfast.diffusion.structured_perturb`) is on."""
        return self.enabled and (self.morph_px > 0 or self.warp_px > 0 or self.blob_count > 0)

    @property
    def bcd_active(self) -> bool:
        """BcD changes masks: the perturbation and BcD are on and not all of its settings are 0 (with all 0, BcD
        would only reset ScD's noise on the edge pixels)."""
        return self.enabled and self.bcd and (self.bcd_max > 0 or self.blur_sigma_max > 0 or self.band_radius_max > 0)

__all__ = ["PerturbConfig", "SCD_KINDS", "perturb_factor", "spad_perturb"]


def perturb_factor(progress: float, cfg: PerturbConfig) -> float:
    """PaS decay factor f(p) in [``pas_floor``, 1]; 0 when the perturbation is disabled."""
    if not cfg.enabled:
        return 0.0
    return max(cfg.pas_floor, progress_strength(progress, cfg.pas_kind, 1.0, cfg.pas_end, cfg.pas_stages))


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
    if f == 0.0 or not (cfg.scd_active or cfg.bcd_active or cfg.structured_active):
        return mask.to(out_dtype, copy=True)
    host = generator if generator is not None and generator.device.type == "cpu" else None
    if cfg.structured_active or (cfg.scd_active and cfg.scd_kind == "erase"):
        host = host or structured.generator_for(seed or 0, offset)
    if cfg.structured_active:
        rows = mask.reshape(-1, 1, *mask.shape[-2:])
        rows = structured.morph_objects(rows, int(round(cfg.morph_px * f)), host)
        rows = structured.warp_contours(rows, cfg.warp_px * f, host)
        rows = structured.add_blobs(rows, cfg.blob_count * f, cfg.blob_radius, host)
        mask = rows.view(mask.shape).to(out_dtype)
    out = None
    if cfg.scd_active and cfg.scd_kind == "erase":
        rows = mask.reshape(-1, 1, *mask.shape[-2:])
        out = structured.erase_cells(rows, cfg.scd_max * f, cfg.anchor_size, cfg.keep_ratio, host)
        out = out.view(mask.shape).to(out_dtype)
    elif cfg.scd_active:
        out = ops.target_noise(
            mask, cfg.scd_max * f, cfg.anchor_size, cfg.keep_ratio,
            generator=generator, seed=seed, offset=offset, validate=validate, backend=backend,
        )
    elif cfg.structured_active:
        out = mask.clone()
    if cfg.bcd_active:
        radius = int(math.ceil(cfg.band_radius_max * f))
        if cfg.bcd_object_frac > 0 and radius > 0:  # each object's band and blur scaled to its size
            rows = mask.reshape(-1, 1, *mask.shape[-2:])
            for r, region in structured.object_radii(rows, radius, cfg.band_radius_max, cfg.bcd_object_frac):
                state = generator.get_state() if generator is not None else None
                done = ops.boundary_blur(
                    mask, cfg.blur_sigma_max * f * r / radius, cfg.bcd_max * f, r, base=out, generator=generator,
                    seed=seed, offset=offset + mask.numel(), validate=validate and out is None, backend=backend)
                if state is not None:
                    generator.set_state(state)  # every group draws the one noise field of the plain BcD
                base = out if out is not None else mask.to(out_dtype)
                out = torch.where(region.view(mask.shape) > 0, done, base)
            if generator is not None:
                ops.boundary_blur(mask, 0.0, 0.0, 0, generator=generator, seed=seed, offset=offset + mask.numel(),
                                  validate=False, backend=backend)  # advance the stream as the plain BcD does
        else:
            out = ops.boundary_blur(
                mask, cfg.blur_sigma_max * f, cfg.bcd_max * f, radius, base=out, generator=generator, seed=seed,
                offset=offset + mask.numel(), validate=validate and out is None, backend=backend,
            )
    return out.clamp_(0.0, 1.0) if cfg.clamp else out
