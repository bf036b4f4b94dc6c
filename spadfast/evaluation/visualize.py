"""Pictures: mask contours over images, and the SPAD perturbation (mask, Canny edges, ScD, BcD) over progress."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from .. import ops
from ..config import PerturbConfig
from ..diffusion.perturb import perturb_factor, spad_perturb
from ..io.files import mask_2d


def _image_to_bgr_u8(image: object) -> np.ndarray:
    """Floating ``[-1,1]`` images (RGB order) or uint8 images (BGR order, as OpenCV returns them) as uint8 BGR."""
    if isinstance(image, torch.Tensor):
        image = image.detach().float().cpu().numpy() if image.is_floating_point() else image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray):
        raise TypeError(f"`image` must be a torch.Tensor or numpy.ndarray, got {type(image).__name__}")
    if image.dtype != np.uint8 and image.dtype.kind != "f":
        raise TypeError(f"`image` must be floating (values in [-1, 1]) or uint8, got dtype {image.dtype}")
    if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[2] not in (1, 3):
        image = image.transpose(1, 2, 0)  # [C,H,W] -> [H,W,C]
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"`image` must have shape [H,W], [C,H,W] or [H,W,C] with C in (1, 3), got {image.shape}")
    if image.dtype.kind == "f":
        u8 = np.clip(np.rint((image.astype(np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)
        if u8.ndim == 3:
            u8 = u8[:, :, ::-1]  # RGB -> BGR
    else:
        u8 = image
    if u8.ndim == 2:
        u8 = cv2.cvtColor(u8, cv2.COLOR_GRAY2BGR)
    return np.ascontiguousarray(u8)


def overlay_contour(
    image: torch.Tensor | np.ndarray,
    mask: torch.Tensor | np.ndarray,
    color: tuple[int, int, int] = (0, 255, 0),
) -> np.ndarray:
    """Draw the outline of ``mask`` over ``image``, for viewing or ``cv2.imwrite``.

    Args:
        image: floating in ``[-1, 1]`` (``[H,W]``, ``[C,H,W]`` or ``[H,W,C]``, RGB order when ``C == 3``, as the
            datasets here return it), or uint8 ``[H,W]`` / ``[H,W,3]`` in BGR order (as OpenCV and this function
            return it, so calls chain: draw the ground truth, then the prediction in another colour).
        mask: ``[H,W]`` or ``[1,H,W]`` binary mask (bool or 0/1) of the image's size.
        color: BGR colour of the contour.

    Returns:
        uint8 ``[H,W,3]`` BGR image (a new array).

    Raises:
        TypeError: wrong argument types.
        ValueError: bad shapes, non-binary mask, or mask and image of different sizes.

    Example:
        >>> img = torch.zeros(1, 16, 16) - 1
        >>> m = torch.zeros(16, 16); m[4:12, 4:12] = 1
        >>> out = overlay_contour(img, m, color=(0, 0, 255))
        >>> out.shape, out.dtype, out[4, 4].tolist(), out[8, 8].tolist()
        ((16, 16, 3), dtype('uint8'), [0, 0, 255], [0, 0, 0])
    """
    canvas = _image_to_bgr_u8(image).copy()
    m = mask_2d(mask, "mask")
    if m.shape != canvas.shape[:2]:
        raise ValueError(f"`mask` must have the image's size {canvas.shape[:2]}, got {m.shape}")
    if len(color) != 3:
        raise ValueError(f"`color` must be a (B, G, R) triple, got {color!r}")
    contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    thickness = max(1, round(min(m.shape) / 256))
    cv2.drawContours(canvas, contours, -1, tuple(int(c) for c in color), thickness)
    return canvas


# ---------------------------------------------------------------------------------------------------------------


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
