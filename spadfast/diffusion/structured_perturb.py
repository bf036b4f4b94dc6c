"""Structured mask corruptions that survive the forward noise (options of :class:`~spadfast.config.PerturbConfig`).

White noise of std 0.5 on a 0/1 mask hides under the diffusion's forward noise for most timesteps; real sampler
errors are structured: missing chunks, shifted boundaries, spurious blobs. Each corruption here changes whole pixels
(the output stays binary) and scales with the PaS strength ``f`` in [0, 1]:

- :func:`erase_cells`: ScD with ``scd_kind = "erase"``: each non-anchor ``anchor_size`` cell that touches the target
  is erased (set to background) with probability ``share * f``; anchor cells (``keep_ratio``) are kept.
- :func:`morph_objects`: each connected object (8-connected) is dilated or eroded (sign and radius 0..``round(px *
  f)`` drawn per object) with a disk.
- :func:`warp_contours`: a smooth displacement field (Gaussian-filtered white noise, width ``WARP_SIGMA`` px, peak
  ``px * f``) moves the mask, nearest-neighbour.
- :func:`add_blobs`: ``Poisson(count * f)`` disks of radius ``radius`` centred on background pixels.
- :func:`object_radii`: BcD scaled to each object (``bcd_object_frac``): the band half-width every object's boundary
  gets, from its equivalent radius (the perturbation then runs BcD once per distinct half-width).

All take bool or 0/1 float masks ``[N,1,H,W]`` and a ``torch.Generator`` (CPU) and return float32 0/1 masks of the
same shape on the mask's device; the object labelling runs on the host.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..ops.reference import gaussian_blur

__all__ = ["WARP_SIGMA", "erase_cells", "morph_objects", "warp_contours", "add_blobs", "generator_for",
           "object_radii"]

WARP_SIGMA = 4.0  # pixels: the scale over which a contour warp is smooth


def generator_for(seed: int, offset: int) -> torch.Generator:
    """A CPU generator keyed by ``(seed, offset)`` (the perturbation's random stream position)."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(offset) * 7_919 + 17) % 2**63)


def _disk(radius: int, device: torch.device) -> torch.Tensor:
    r = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    return ((r.view(-1, 1) ** 2 + r.view(1, -1) ** 2) <= radius * radius + 1e-6).float()


def _dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary dilation of ``[N,1,H,W]`` 0/1 masks by a disk of ``radius`` (zero padding)."""
    if radius <= 0:
        return mask
    k = _disk(radius, mask.device).view(1, 1, 2 * radius + 1, 2 * radius + 1)
    return (F.conv2d(mask, k, padding=radius) > 0.5).float()


def _erode(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary erosion; pixels beyond the border count as foreground (an object touching the border keeps it)."""
    if radius <= 0:
        return mask
    return 1.0 - _dilate(1.0 - mask, radius)


def erase_cells(mask: torch.Tensor, share: float, anchor_size: int, keep_ratio: float,
                generator: torch.Generator) -> torch.Tensor:
    """Erase each non-anchor cell touching the target with probability ``share`` (in [0, 1])."""
    m = mask.float()
    N, _, H, W = m.shape
    gh, gw = math.ceil(H / anchor_size), math.ceil(W / anchor_size)
    u = torch.rand((N, 1, gh, gw), generator=generator)
    anchor = torch.rand((N, 1, gh, gw), generator=generator) < keep_ratio
    erase = (u < share) & ~anchor
    erase = erase.repeat_interleave(anchor_size, 2).repeat_interleave(anchor_size, 3)[:, :, :H, :W]
    return m * (~erase.to(m.device)).float()


def _objects(mask: torch.Tensor) -> list[np.ndarray]:
    from scipy import ndimage

    structure = np.ones((3, 3), bool)
    return [ndimage.label(row[0], structure=structure)[0] for row in mask.detach().cpu().numpy() > 0.5]


def morph_objects(mask: torch.Tensor, px: int, generator: torch.Generator) -> torch.Tensor:
    """Dilate or erode each object by a radius drawn from 0..``px`` (sign and radius per object)."""
    m = mask.float()
    if px <= 0:
        return m.clone()
    out = torch.zeros_like(m)
    for n, labels in enumerate(_objects(m)):
        count = int(labels.max())
        if count == 0:
            continue
        radii = torch.randint(0, px + 1, (count,), generator=generator).tolist()
        grow = (torch.rand((count,), generator=generator) < 0.5).tolist()
        lab = torch.from_numpy(labels).to(m.device)
        for obj in range(count):
            one = (lab == obj + 1).float().view(1, 1, *labels.shape)
            moved = _dilate(one, radii[obj]) if grow[obj] else _erode(one, radii[obj])
            out[n : n + 1] = torch.maximum(out[n : n + 1], moved)
    return out


def warp_contours(mask: torch.Tensor, px: float, generator: torch.Generator) -> torch.Tensor:
    """Move the mask by a smooth random displacement of peak ``px`` pixels (nearest neighbour)."""
    m = mask.float()
    if px <= 0:
        return m.clone()
    N, _, H, W = m.shape
    field = torch.randn((N * 2, 1, H, W), generator=generator).to(m.device)
    if min(H, W) > 3 * WARP_SIGMA:
        field = gaussian_blur(field, WARP_SIGMA)
    peak = field.flatten(1).abs().amax(dim=1).clamp_min(1e-8).view(-1, 1, 1, 1)
    field = (field / peak * px).view(N, 2, H, W)
    ys, xs = torch.meshgrid(torch.arange(H, device=m.device, dtype=torch.float32),
                            torch.arange(W, device=m.device, dtype=torch.float32), indexing="ij")
    gx = (xs + field[:, 1]) / max(W - 1, 1) * 2 - 1
    gy = (ys + field[:, 0]) / max(H - 1, 1) * 2 - 1
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(m, grid, mode="nearest", padding_mode="border", align_corners=True)


def add_blobs(mask: torch.Tensor, count: float, radius: int, generator: torch.Generator) -> torch.Tensor:
    """Add ``Poisson(count)`` disks of ``radius`` centred on background pixels of each mask."""
    m = mask.float().clone()
    if count <= 0:
        return m
    N, _, H, W = m.shape
    numbers = torch.poisson(torch.full((N,), float(count)), generator=generator).long().tolist()
    centres = torch.zeros((N, 1, H, W))
    for n, k in enumerate(numbers):
        background = (m[n, 0] <= 0.5).flatten().cpu()
        if k == 0 or not bool(background.any()):
            continue
        pick = torch.multinomial(background.float(), k, replacement=True, generator=generator)
        centres[n, 0].view(-1)[pick] = 1.0
    return torch.maximum(m, _dilate(centres.to(m.device), radius))


def object_radii(mask: torch.Tensor, full_radius: int, band_radius_max: float, frac: float
                 ) -> list[tuple[int, torch.Tensor]]:
    """Per-object BcD band half-widths: object k (8-connected, equivalent radius ``r_k = sqrt(area / pi)``) gets
    ``ceil(full_radius * s_k)`` with ``s_k = min(1, frac * r_k / band_radius_max)``, so an object whose scaled radius
    reaches the configured band keeps the full band and a smaller one a proportionally narrower one.

    Returns ``[(radius, region)]`` for each distinct radius, largest first; ``region`` (float 0/1 ``[N,1,H,W]``) is
    that radius's objects dilated by ``radius + 1`` px: where their band lies (inner and outer side).
    """
    m = mask.float()
    groups: dict[int, np.ndarray] = {}
    for n, labels in enumerate(_objects(m)):
        count = int(labels.max())
        if count == 0:
            continue
        areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
        scale = np.minimum(1.0, frac * np.sqrt(areas / math.pi) / max(band_radius_max, 1e-9))
        radii = np.ceil(full_radius * scale - 1e-9).astype(int)
        for r in np.unique(radii):
            objects = np.isin(labels, np.flatnonzero(radii == r) + 1)
            groups.setdefault(int(r), np.zeros((m.shape[0], *labels.shape), bool))[n] = objects
    out = []
    for r in sorted(groups, reverse=True):
        objects = torch.from_numpy(groups[r]).to(m.device).float().unsqueeze(1)
        out.append((r, F.max_pool2d(objects, 2 * r + 3, stride=1, padding=r + 1)))  # square: as BcD's band
    return out
