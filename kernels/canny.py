"""Canny edge of a binary mask as one fused stencil: Sobel 3x3 (replicated border) + OpenCV non-maximum suppression.

On a 0/255 mask hysteresis is a no-op, so ``edge = (|dx| + |dy| > 0) & nms_keep`` with OpenCV's fixed-point direction
sectors and tie-break, the magnitude being 0 outside the image. Layout ``(B, 1, H, W)``, any dtype and strides. Each
program owns a ``BLOCK_H x BLOCK_W`` tile of one image and recomputes its 2-pixel halo by clamped loads.
``_edge_near`` (edge within a Chebyshev radius) is shared with ``boundary_blur``.

Reference: spadfast.ops.reference.canny
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from spadfast.ops.checks import as_b1hw, check_mask

from .utils import Launch, clamped_offset, grid_3d, launch, pointer_view, tile_config, tile_coords, tile_offset
from .variants import DTYPES, SMALL, TRAINING, AotCase, VerifyCase, meta, wide_strides

__all__ = ["TILE", "ELEMS_PER_THREAD", "canny"]

# OpenCV's fixed-point tangent constants, the values spadfast.ops.reference uses (tan(22.5 deg) * 2**15 and 2**15).
TG22: tl.constexpr = tl.constexpr(13573.0)
SHIFT: tl.constexpr = tl.constexpr(32768.0)


@triton.jit
def _sobel(a, b, c, d, f, g, h, k):
    # 3x3 window  a b c / d . f / g h k ; summation order as in the reference (exact on 0/1 inputs anyway).
    dx = (c - a) + 2.0 * (f - d) + (k - g)
    dy = (g - a) + 2.0 * (h - b) + (k - c)
    return dx, dy


@triton.jit
def _nms(dx, dy, mag, m00, m01, m02, m10, m12, m20, m21, m22):
    # OpenCV's sectors in fixed point (products exact in fp32) and tie-break; m<row><col> are the 3x3 neighbours'
    # magnitudes (0 outside the image), mag the centre's (0 outside the image: no edge there).
    ax = tl.abs(dx)
    y_scaled = tl.abs(dy) * SHIFT
    tg22x = ax * TG22
    tg67x = tg22x + ax * (2.0 * SHIFT)
    horizontal = y_scaled < tg22x
    vertical = (y_scaled >= tg22x) & (y_scaled > tg67x)
    keep_h = (mag > m10) & (mag >= m12)
    keep_v = (mag > m01) & (mag >= m21)
    opposite = (dx < 0.0) != (dy < 0.0)
    keep_d = tl.where(opposite, (mag > m02) & (mag > m20), (mag > m00) & (mag > m22))
    keep = tl.where(horizontal, keep_h, tl.where(vertical, keep_v, keep_d))
    return (mag > 0.0) & keep


@triton.jit
def _load_row(x_ptr, row_off, cols):
    vals = ()
    for j in tl.static_range(len(cols)):
        vals = vals + (tl.load(x_ptr + row_off + cols[j]).to(tl.float32),)
    return vals


@triton.jit
def _gradient_row(xa, xb, xc, row_in, c, W, R: tl.constexpr):
    # Sobel at column offsets -R-1..R+1 from three input rows (offsets -R-2..R+2); magnitude 0 outside the image.
    gdx = ()
    gdy = ()
    gm = ()
    for v in tl.static_range(2 * R + 3):
        dx, dy = _sobel(xa[v], xa[v + 1], xa[v + 2], xb[v], xb[v + 2], xc[v], xc[v + 1], xc[v + 2])
        cv = c + (v - R - 1)
        gdx = gdx + (dx,)
        gdy = gdy + (dy,)
        gm = gm + (tl.where(row_in & (cv >= 0) & (cv < W), tl.abs(dx) + tl.abs(dy), 0.0),)
    return gdx, gdy, gm


@triton.jit
def _edge_near(x_ptr, r, c, H, W, stride_h, stride_w, R: tl.constexpr):
    """True where a Canny edge pixel lies within Chebyshev distance ``R`` of (``r``, ``c``) (``R = 0``: the edge).

    ``r`` is a [BH, 1] and ``c`` a [1, BW] int tensor (any values), ``x_ptr`` the image's first element. Every input
    value of the clamped ``(2R+5)^2`` window is loaded once and every Sobel of the ``(2R+3)^2`` grid computed once,
    streaming down the rows so that only three input rows and three gradient rows are live at a time.
    """
    # Column offsets -R-2..R+2, clamped (replicated border): no load is ever out of bounds.
    cols = ()
    for j in tl.static_range(2 * R + 5):
        cols = cols + (clamped_offset(c + (j - R - 2), W, stride_w),)
    xa = _load_row(x_ptr, clamped_offset(r - R - 2, H, stride_h), cols)
    xb = _load_row(x_ptr, clamped_offset(r - R - 1, H, stride_h), cols)
    xc = _load_row(x_ptr, clamped_offset(r - R, H, stride_h), cols)
    ru = r - R - 1
    _, _, m0 = _gradient_row(xa, xb, xc, (ru >= 0) & (ru < H), c, W, R)
    xa = xb
    xb = xc
    xc = _load_row(x_ptr, clamped_offset(r - R + 1, H, stride_h), cols)
    ru = r - R
    dx1, dy1, m1 = _gradient_row(xa, xb, xc, (ru >= 0) & (ru < H), c, W, R)
    near = tl.zeros(r.shape, tl.int1) & tl.zeros(c.shape, tl.int1)
    # A runtime loop (not unrolled) over centre row offsets -R..R keeps the live set to a few rows.
    for dr in range(-R, R + 1):
        xa = xb
        xb = xc
        xc = _load_row(x_ptr, clamped_offset(r + dr + 2, H, stride_h), cols)
        ru = r + dr + 1
        dx2, dy2, m2 = _gradient_row(xa, xb, xc, (ru >= 0) & (ru < H), c, W, R)
        for b in tl.static_range(2 * R + 1):
            near = near | _nms(dx1[b + 1], dy1[b + 1], m1[b + 1], m0[b], m0[b + 1], m0[b + 2], m1[b], m1[b + 2],
                               m2[b], m2[b + 1], m2[b + 2])
        m0 = m1
        m1 = m2
        dx1 = dx2
        dy1 = dy2
    return near


@triton.jit
def _canny_kernel(
    x_ptr,
    out_ptr,
    H,
    W,
    stride_xb,
    stride_xh,
    stride_xw,
    stride_ob,
    stride_oh,
    stride_ow,
    BLOCK_H: tl.constexpr,
    BLOCK_W: tl.constexpr,
):
    pid_b, r, c = tile_coords(BLOCK_H, BLOCK_W)
    edge = _edge_near(x_ptr + pid_b * stride_xb, r, c, H, W, stride_xh, stride_xw, 0)
    out_off = tile_offset(pid_b, r, c, stride_ob, stride_oh, stride_ow)
    tl.store(out_ptr + out_off, edge.to(tl.uint8), mask=(r < H) & (c < W))


# GPU tile and work per thread: the stencil keeps ~30 fp32 values live per element, 4 elements a thread fit.
TILE = (16, 32)
ELEMS_PER_THREAD = 4


def canny(mask: torch.Tensor, validate: bool = True, *, block_size: tuple[int, int] | None = None) -> torch.Tensor:
    """Boundary of a binary mask, byte-exact with ``cv2.Canny(mask_uint8 * 255, 100, 200) > 0``.

    Args:
        mask: ``[H,W]``, ``[B,H,W]`` or ``[B,1,H,W]`` binary mask (bool, or 0/1 in any integer or float dtype), any
            strides (channels-last and views are read in place).
        validate: check that the mask is binary (a host sync); turn off in hot loops.
        block_size: ``(BLOCK_H, BLOCK_W)`` tile override (powers of two); default by :func:`tile_config`.

    Returns:
        bool tensor of the mask's shape, True on edge pixels.

    Raises:
        TypeError, ValueError: the mask is not a tensor, has the wrong shape, is empty, not binary or requires grad.
        KernelLaunchError: the kernel failed to compile or launch.
    """
    m, restore = as_b1hw(mask, "mask")
    check_mask(m, "mask", validate)
    B, _, H, W = m.shape
    BLOCK_H, BLOCK_W, num_warps = tile_config(H, W, m.device, TILE, ELEMS_PER_THREAD, block_size)
    out = torch.empty_like(m, dtype=torch.bool)
    x, o = pointer_view(m), out.view(torch.uint8)
    args = (x, o, H, W, x.stride(0), x.stride(2), x.stride(3), o.stride(0), o.stride(2), o.stride(3))
    return launch(Launch("canny", _canny_kernel, grid_3d(B, H, W, BLOCK_H, BLOCK_W, "mask"), args,
                         dict(BLOCK_H=BLOCK_H, BLOCK_W=BLOCK_W), num_warps, m.device, restore(out)))  # fmt: skip


# ----------------------------------------------------------------------------------- verification and AOT


def verify_cases(shape: tuple[int, ...], device: str, generator: torch.Generator) -> list[VerifyCase]:
    """``spadfast verify``'s checks of this kernel against :func:`spadfast.ops.reference.canny` on fresh blob masks."""
    from spadfast.ops import reference
    from spadfast.ops.blobs import blob_masks

    mask = blob_masks(shape, cell=8, generator=generator).to(device)
    run = lambda b: (canny if b == "triton" else reference.canny)(mask)  # noqa: E731
    return [VerifyCase("canny", shape, torch.bool, run, exact=True)]


def aot_variants() -> list[AotCase]:
    """The launch variants the ahead-of-time check compiles (:mod:`spadfast.kernels.aot`), on meta tensors."""
    out = []
    for name, dtype in DTYPES.items():
        out.append(AotCase("canny", f"{name} 8x256x256", lambda d=dtype: ((meta(TRAINING, d),), {"validate": False}),
                        default=name == "fp32"))  # fmt: skip
    out.append(AotCase("canny", "fp32 1x31x47", lambda: ((meta(SMALL),), {"validate": False})))
    out.append(AotCase("canny", "u8 int64-strides", lambda: ((wide_strides((2, 1, 256, 256), torch.uint8),),
                                                           {"validate": False})))  # fmt: skip
    return out
