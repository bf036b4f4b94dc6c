"""ScD target noise: ``out = mask + strength * noise`` on ``(mask > 0.5) & ~anchors``, ``mask`` elsewhere.

Layout ``(B, 1, H, W)`` (``[H,W]`` and ``[B,H,W]`` are viewed as such) with arbitrary strides: one program per
``BLOCK_H x BLOCK_W`` tile of one image, so channels-last and strided views are read in place. Background and
anchor pixels are the mask loaded as fp32 and stored back, hence bit-identical. Randomness, when not passed in:
noise is Philox ``randn(seed, offset + (b*H + y)*W + x)``; anchor cell ``(b, y // anchor_size, x // anchor_size)``
is kept iff ``rand(anchor_seed, offset + (b*HC + cy)*WC + cx) < keep_ratio``, with ``anchor_seed`` a fixed mix of
``seed`` so that anchors and noise are independent streams.

Reference: spadfast.reference.target_noise
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from spadfast._validation import draw_seed, prepare_target_noise

__all__ = ["anchor_seed", "target_noise"]

_MASK64 = (1 << 64) - 1


@triton.jit(do_not_specialize=["seed", "anchor_seed", "offset"])
def _target_noise_kernel(
    mask_ptr,
    noise_ptr,
    anchors_ptr,
    out_ptr,
    H,
    W,
    HC,
    WC,
    strength,
    keep_ratio,
    seed,
    anchor_seed,
    offset,
    stride_mb,
    stride_mh,
    stride_mw,
    stride_nb,
    stride_nh,
    stride_nw,
    stride_ab,
    stride_ah,
    stride_aw,
    stride_ob,
    stride_oh,
    stride_ow,
    ANCHOR_SIZE: tl.constexpr,
    HAS_NOISE: tl.constexpr,
    HAS_ANCHORS: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_W: tl.constexpr,
):
    pid_w = tl.program_id(0).to(tl.int64)
    pid_h = tl.program_id(1).to(tl.int64)
    b = tl.program_id(2).to(tl.int64)
    y = (pid_h * BLOCK_H + tl.arange(0, BLOCK_H))[:, None]
    x = (pid_w * BLOCK_W + tl.arange(0, BLOCK_W))[None, :]
    inside = (y < H) & (x < W)

    m = tl.load(mask_ptr + b * stride_mb + y * stride_mh + x * stride_mw, mask=inside, other=0).to(tl.float32)
    if HAS_ANCHORS:
        anchor = tl.load(anchors_ptr + b * stride_ab + y * stride_ah + x * stride_aw, mask=inside, other=0) != 0
    else:
        # Every pixel of a cell draws the same counter, hence the same uniform: anchors are whole cells.
        cell = (b * HC + y // ANCHOR_SIZE) * WC + x // ANCHOR_SIZE
        anchor = tl.rand(anchor_seed, offset + cell) < keep_ratio
    if HAS_NOISE:
        n = tl.load(noise_ptr + b * stride_nb + y * stride_nh + x * stride_nw, mask=inside, other=0).to(tl.float32)
    else:
        n = tl.randn(seed, offset + (b * H + y) * W + x)  # logical index: the same draws for every layout
    noisy = (m > 0.5) & (anchor == 0)
    out = tl.where(noisy, m + strength * n, m)
    tl.store(out_ptr + b * stride_ob + y * stride_oh + x * stride_ow, out.to(out_ptr.dtype.element_ty), mask=inside)


def anchor_seed(seed: int) -> int:
    """The anchor stream's Philox key: splitmix64's finaliser of ``seed``, bit 62 set so it always passes as int64."""
    z = (seed + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    z ^= z >> 31
    return (z & ((1 << 63) - 1)) | (1 << 62)


def _as_kernel_arg(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.uint8) if t.dtype == torch.bool else t


def _block_shape(H: int, W: int) -> tuple[int, int]:
    block_w = min(128, triton.next_power_of_2(W))
    block_h = min(triton.next_power_of_2(H), max(1, 4096 // block_w))
    return block_h, block_w


def target_noise(
    mask: torch.Tensor,
    strength: float,
    anchor_size: int = 4,
    keep_ratio: float = 0.25,
    noise: torch.Tensor | None = None,
    anchors: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    offset: int = 0,
    validate: bool = True,
    *,
    block_size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """ScD with one fused Triton kernel; semantics of :func:`spadfast.reference.target_noise`.

    Args:
        mask: ``[H,W]``, ``[B,H,W]`` or ``[B,1,H,W]`` binary mask (bool, integer or floating), any strides.
        strength: standard deviation of the noise (>= 0).
        anchor_size: side of the square anchor cells (>= 1), tiled from the top-left pixel.
        keep_ratio: probability that a cell is an anchor, in [0, 1].
        noise: optional standard-normal floating tensor of the mask's shape; else in-kernel Philox.
        anchors: optional bool tensor of the mask's shape; else drawn in-kernel per cell.
        generator: when ``seed`` is None, the Philox seed is drawn from it (host sync); with neither, from torch's
            global CPU generator. The bits differ from the reference's, the distribution does not.
        seed: Philox seed (taken modulo ``2**63``); ``offset`` shifts the counters of both streams.
        validate: check binary values / NaN (host sync).
        block_size: ``(BLOCK_H, BLOCK_W)`` powers of two overriding the heuristic (tests).

    Returns:
        Floating tensor of the mask's shape (the mask's dtype if floating, else float32), laid out like the mask
        when the mask is dense.

    Raises:
        TypeError, ValueError: as the reference; ValueError also when ``noise`` requires grad.

    Example:
        >>> m = torch.zeros(1, 1, 8, 8); m[..., 2:6, 2:6] = 1
        >>> out = target_noise(m, 0.5, seed=0)  # doctest: +SKIP
    """
    m, restore, strength, keep_ratio, noise_v, anchors_v, out_dtype = prepare_target_noise(
        mask, strength, anchor_size, keep_ratio, noise, anchors, generator, seed, offset, validate
    )

    B, _, H, W = m.shape
    hc, wc = triton.cdiv(H, anchor_size), triton.cdiv(W, anchor_size)
    if noise_v is None or anchors_v is None:
        seed = draw_seed(generator) if seed is None else seed
    seed = 0 if seed is None else seed % (1 << 63)
    out = torch.empty_like(m, dtype=out_dtype)
    block_h, block_w = block_size if block_size is not None else _block_shape(H, W)
    grid = (triton.cdiv(W, block_w), triton.cdiv(H, block_h), B)
    # Absent operands are replaced by the mask (never read: HAS_NOISE / HAS_ANCHORS are compile-time switches).
    n_arg = noise_v if noise_v is not None else m
    a_arg = anchors_v if anchors_v is not None else m
    _target_noise_kernel[grid](
        _as_kernel_arg(m),
        _as_kernel_arg(n_arg),
        _as_kernel_arg(a_arg),
        out,
        H,
        W,
        hc,
        wc,
        strength,
        keep_ratio,
        seed,
        anchor_seed(seed),
        offset,
        m.stride(0),
        m.stride(2),
        m.stride(3),
        n_arg.stride(0),
        n_arg.stride(2),
        n_arg.stride(3),
        a_arg.stride(0),
        a_arg.stride(2),
        a_arg.stride(3),
        out.stride(0),
        out.stride(2),
        out.stride(3),
        ANCHOR_SIZE=anchor_size if anchors_v is None else 1,
        HAS_NOISE=noise_v is not None,
        HAS_ANCHORS=anchors_v is not None,
        BLOCK_H=block_h,
        BLOCK_W=block_w,
    )
    return restore(out)
