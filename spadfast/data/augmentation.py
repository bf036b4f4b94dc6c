"""Training-batch augmentation as nnU-Net trains (config block ``augment``), on the batch's device, drawn from the
trainer's generator (so it is seeded and resumes bit-exactly).

Per sample, each transform fires with its own probability:

- ``flips``: one of the 8 symmetries of the square (:func:`spadfast.data.augmentation.dihedral`), always drawn first (with
  every other probability 0 the random stream is the one flips alone always used);
- spatial, one resampling of image (bilinear) and mask (nearest) together: rotation by up to ``rotate_deg``,
  isotropic scaling in ``scale_range``, elastic deformation (a smooth displacement field of peak ``elastic_px`` px,
  Gaussian width ``elastic_sigma`` px); outside the image both replicate their edge; samples that draw none of
  them are left untouched;
- intensity, image only: gamma in ``gamma_range`` on the [0, 1]-mapped image, additive Gaussian noise of std
  ``noise_std``, Gaussian blur of sigma in ``blur_sigma``.

All probabilities default to 0 except flips (spadfast's behaviour before this block existed); nnU-Net's 2-D values
are rotation 0.2, scaling 0.2, gamma 0.3, noise 0.1, blur 0.2 (``AugmentConfig.nnunet()``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..ops.fields import check_fields
from ..ops.reference import gaussian_blur as _blur_rows

__all__ = ["AugmentConfig", "augment_batch", "dihedral"]


@dataclass
class AugmentConfig:
    """Probabilities and ranges of the training augmentation (module docstring)."""

    flips: bool = True
    rotate_prob: float = 0.0
    rotate_deg: float = 180.0
    scale_prob: float = 0.0
    scale_range: tuple[float, ...] = (0.7, 1.4)
    elastic_prob: float = 0.0
    elastic_px: float = 4.0
    elastic_sigma: float = 8.0
    gamma_prob: float = 0.0
    gamma_range: tuple[float, ...] = (0.7, 1.5)
    noise_prob: float = 0.0
    noise_std: float = 0.1
    blur_prob: float = 0.0
    blur_sigma: tuple[float, ...] = (0.5, 1.0)

    def __post_init__(self) -> None:
        check_fields(self)
        for name in ("scale_range", "gamma_range", "blur_sigma"):  # JSON/YAML give lists
            setattr(self, name, tuple(float(v) for v in getattr(self, name)))
        for name in ("rotate_prob", "scale_prob", "elastic_prob", "gamma_prob", "noise_prob", "blur_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"`augment.{name}` must lie in [0, 1], got {getattr(self, name)}")
        for name in ("scale_range", "gamma_range", "blur_sigma"):
            lo_hi = getattr(self, name)
            if len(lo_hi) != 2 or not 0 < lo_hi[0] <= lo_hi[1]:
                raise ValueError(f"`augment.{name}` must be (lo, hi) with 0 < lo <= hi, got {lo_hi!r}")
        for name in ("rotate_deg", "elastic_px", "elastic_sigma", "noise_std"):
            if getattr(self, name) < 0:
                raise ValueError(f"`augment.{name}` must be >= 0, got {getattr(self, name)}")

    @classmethod
    def nnunet(cls) -> AugmentConfig:
        """nnU-Net's 2-D probabilities (rotation, scaling, gamma, noise, blur; no elastic deformation)."""
        return cls(rotate_prob=0.2, scale_prob=0.2, gamma_prob=0.3, noise_prob=0.1, blur_prob=0.2)

    @property
    def spatial(self) -> bool:
        return self.rotate_prob > 0 or self.scale_prob > 0 or self.elastic_prob > 0

    @property
    def intensity(self) -> bool:
        return self.gamma_prob > 0 or self.noise_prob > 0 or self.blur_prob > 0


def _uniform(lo: float, hi: float, n: int, g: torch.Generator, device) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, device=device)


def _blur_channels(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """:func:`spadfast.ops.reference.gaussian_blur` (replicated borders) of every channel of ``[N,C,H,W]``."""
    N, C, H, W = x.shape
    return _blur_rows(x.reshape(N * C, 1, H, W), sigma).reshape(N, C, H, W).to(x.dtype)


def _spatial(image: torch.Tensor, mask: torch.Tensor, cfg: AugmentConfig, g: torch.Generator):
    B, _, H, W = image.shape
    dev = image.device
    fire = [torch.rand(B, generator=g, device=dev) < p for p in (cfg.rotate_prob, cfg.scale_prob, cfg.elastic_prob)]
    angle = torch.where(fire[0], _uniform(-cfg.rotate_deg, cfg.rotate_deg, B, g, dev), 0.0) * math.pi / 180
    scale = torch.where(fire[1], _uniform(*cfg.scale_range, B, g, dev), 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin * H / W, torch.zeros_like(cos)], -1),
                         torch.stack([sin * W / H, cos, torch.zeros_like(cos)], -1)], 1)
    grid = F.affine_grid(theta, [B, 1, H, W], align_corners=False)
    if cfg.elastic_prob > 0:
        field = torch.randn((B, 2, H, W), generator=g, device=dev)
        field = _blur_channels(field, cfg.elastic_sigma) if cfg.elastic_sigma > 0 else field
        peak = field.flatten(1).abs().amax(1).clamp_min(1e-8).view(B, 1, 1, 1)
        field = field / peak * cfg.elastic_px * fire[2].view(B, 1, 1, 1)
        grid = grid + torch.stack([field[:, 0] * 2 / W, field[:, 1] * 2 / H], -1)
    moved = fire[0] | fire[1] | fire[2]
    img = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
    msk = F.grid_sample(mask.to(image.dtype), grid, mode="nearest", padding_mode="border", align_corners=False)
    keep = ~moved.view(B, 1, 1, 1)
    return torch.where(keep, image, img), torch.where(keep, mask, msk.to(mask.dtype))


def _intensity(image: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    B = image.shape[0]
    dev = image.device
    fire = [torch.rand(B, generator=g, device=dev) < p for p in (cfg.gamma_prob, cfg.noise_prob, cfg.blur_prob)]
    gamma = torch.where(fire[0], _uniform(*cfg.gamma_range, B, g, dev), 1.0).view(B, 1, 1, 1)
    out = torch.where(fire[0].view(B, 1, 1, 1), ((image + 1) / 2).clamp(0, 1) ** gamma * 2 - 1, image)
    noise = torch.randn(image.shape, generator=g, device=dev) * cfg.noise_std
    out = torch.where(fire[1].view(B, 1, 1, 1), out + noise, out)
    sigmas = _uniform(*cfg.blur_sigma, B, g, dev).tolist() if cfg.blur_prob > 0 else [0.0] * B
    rows = [(_blur_channels(out[b:b + 1], sigmas[b]) if bool(fire[2][b]) else out[b:b + 1]) for b in range(B)]
    return torch.cat(rows).clamp(-1, 1)


def augment_batch(image: torch.Tensor, mask: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator):
    """Augment ``image`` ``[B,C,H,W]`` in [-1, 1] and ``mask`` ``[B,K,H,W]`` (0/1) together; returns new tensors."""
    if cfg.flips:
        symmetry = torch.randint(0, 8, (image.shape[0],), generator=generator, device=image.device)
        image, mask = dihedral(image, mask, symmetry)
    if cfg.spatial:
        image, mask = _spatial(image, mask, cfg, generator)
    if cfg.intensity:
        image = _intensity(image, cfg, generator)
    return image, mask


def dihedral(image: torch.Tensor, mask: torch.Tensor, ops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply symmetry ``ops[b]`` in ``0..7`` to row ``b`` of ``image`` ``[B,C,H,W]`` and ``mask`` ``[B,M,H,W]``.

    Bit 0 flips horizontally, bit 1 vertically, bit 2 transposes (needs ``H == W``; ignored otherwise, so
    non-square images get the 4 flips only). Works on any device without host syncs; returns new tensors.
    """
    B = image.shape[0]
    ops = ops.to(image.device).view(B, 1, 1, 1)
    out = torch.cat([image, mask.to(image.dtype)], dim=1)
    out = torch.where(ops % 2 == 1, out.flip(-1), out)
    out = torch.where((ops // 2) % 2 == 1, out.flip(-2), out)
    if out.shape[-1] == out.shape[-2]:
        out = torch.where(ops // 4 == 1, out.transpose(-1, -2), out)
    c = image.shape[1]
    return out[:, :c], out[:, c:].to(mask.dtype)
