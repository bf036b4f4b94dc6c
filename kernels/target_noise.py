"""ScD target noise: ``out = mask + strength * noise`` on ``(mask > 0.5) & ~anchors``, ``mask`` elsewhere.

Layout ``(B, 1, H, W)`` (``[H,W]`` and ``[B,H,W]`` are viewed as such) with arbitrary strides: one program per
``BLOCK_H x BLOCK_W`` tile of one image, so channels-last and strided views are read in place. Background and
anchor pixels are the mask loaded as fp32 and stored back, hence bit-identical. Randomness, when not passed in:
noise is Philox ``randn(seed, offset + (b*H + y)*W + x)``; anchor cell ``(b, y // anchor_size, x // anchor_size)``
is kept iff ``rand(anchor_seed, offset + (b*HC + cy)*WC + cx) < keep_ratio``, with ``anchor_seed`` a fixed mix of
``seed`` so that anchors and noise are independent streams.

Reference: spadfast.ops.reference.target_noise
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from spadfast.ops.checks import draw_seed, prepare_target_noise

from .utils import Launch, grid_3d, launch, pointer_view, tile_config, tile_coords, tile_offset
from .variants import BIG, DTYPES, SMALL, TRAINING, VERIFY_DTYPES, AotCase, VerifyCase, meta, wide_strides

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
    b, y, x = tile_coords(BLOCK_H, BLOCK_W)
    inside = (y < H) & (x < W)

    m_off = tile_offset(b, y, x, stride_mb, stride_mh, stride_mw)
    m = tl.load(mask_ptr + m_off, mask=inside, other=0).to(tl.float32)
    if HAS_ANCHORS:
        anchor = tl.load(anchors_ptr + tile_offset(b, y, x, stride_ab, stride_ah, stride_aw), mask=inside, other=0)
        anchor = anchor != 0
    else:
        # Every pixel of a cell draws the same counter, hence the same uniform: anchors are whole cells.
        cell = (b * HC + (y // ANCHOR_SIZE).to(tl.int64)) * WC + (x // ANCHOR_SIZE).to(tl.int64)
        anchor = tl.rand(anchor_seed, offset + cell) < keep_ratio
    if HAS_NOISE:
        n = tl.load(noise_ptr + tile_offset(b, y, x, stride_nb, stride_nh, stride_nw), mask=inside, other=0)
        n = n.to(tl.float32)
    else:
        # logical index: the same draws for every layout
        n = tl.randn(seed, offset + (b * H + y.to(tl.int64)) * W + x.to(tl.int64))
    noisy = (m > 0.5) & (anchor == 0)
    out = tl.where(noisy, m + strength * n, m)
    o_off = tile_offset(b, y, x, stride_ob, stride_oh, stride_ow)
    tl.store(out_ptr + o_off, out.to(out_ptr.dtype.element_ty), mask=inside)


def anchor_seed(seed: int) -> int:
    """The anchor stream's Philox key: splitmix64's finaliser of ``seed``, bit 62 set so it always passes as int64."""
    z = (seed + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    z ^= z >> 31
    return (z & ((1 << 63) - 1)) | (1 << 62)


# GPU tile and work per thread: Philox normal + uniform keep ~40 registers per element live; 4 elements a thread.
TILE = (16, 64)
ELEMS_PER_THREAD = 4


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
    """ScD with one fused Triton kernel; semantics of :func:`spadfast.ops.reference.target_noise`.

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
        block_size: ``(BLOCK_H, BLOCK_W)`` tile override (powers of two); default by ``tile_config``.

    Returns:
        Floating tensor of the mask's shape (the mask's dtype if floating, else float32), laid out like the mask
        when the mask is dense.

    Raises:
        TypeError, ValueError: as the reference; ValueError also when ``noise`` requires grad.
        KernelLaunchError: the kernel failed to compile or launch.

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
    BLOCK_H, BLOCK_W, num_warps = tile_config(H, W, m.device, TILE, ELEMS_PER_THREAD, block_size)
    # Absent operands are replaced by the mask (never read: HAS_NOISE / HAS_ANCHORS are compile-time switches).
    x = pointer_view(m)
    n = pointer_view(noise_v if noise_v is not None else m)
    a = pointer_view(anchors_v if anchors_v is not None else m)
    args = (
        x, n, a, out, H, W, hc, wc, strength, keep_ratio, seed, anchor_seed(seed), offset,
        x.stride(0), x.stride(2), x.stride(3),
        n.stride(0), n.stride(2), n.stride(3),
        a.stride(0), a.stride(2), a.stride(3),
        out.stride(0), out.stride(2), out.stride(3),
    )  # fmt: skip
    constexprs = dict(ANCHOR_SIZE=anchor_size if anchors_v is None else 1, HAS_NOISE=noise_v is not None,
                      HAS_ANCHORS=anchors_v is not None, BLOCK_H=BLOCK_H, BLOCK_W=BLOCK_W)  # fmt: skip
    grid = grid_3d(B, H, W, BLOCK_H, BLOCK_W, "mask")
    return launch(Launch("target_noise", _target_noise_kernel, grid, args, constexprs, num_warps, m.device,
                         restore(out)))  # fmt: skip


# ----------------------------------------------------------------------------------- verification and AOT


def verify_cases(shape: tuple[int, ...], device: str, generator: torch.Generator) -> list[VerifyCase]:
    """``spadfast verify``'s checks against :func:`spadfast.ops.reference.target_noise`, one per floating dtype, with
    explicit noise and anchors."""
    from spadfast.ops import reference
    from spadfast.ops.blobs import blob_masks

    mask = blob_masks(shape, cell=8, generator=generator).to(device)
    anchors = reference.anchor_mask(shape, 4, 0.25, generator=generator).to(device)
    out = []
    for dtype in VERIFY_DTYPES:
        m, noise = mask.to(dtype), torch.randn(shape, generator=generator).to(device, dtype)

        def run(b, m=m, noise=noise):
            fn = target_noise if b == "triton" else reference.target_noise
            return fn(m, 0.5, 4, 0.25, noise=noise, anchors=anchors)

        out.append(VerifyCase("target_noise", shape, dtype, run, exact=False))
    return out


def aot_variants() -> list[AotCase]:
    """The launch variants the ahead-of-time check compiles (:mod:`spadfast.kernels.aot`), on meta tensors."""
    from types import SimpleNamespace

    from spadfast.ops.constants import PERTURB_KERNEL_DEFAULTS

    cfg = SimpleNamespace(**PERTURB_KERNEL_DEFAULTS)

    def call(shape=TRAINING, dtype=torch.float32, anchor_size=cfg.anchor_size, noise=False, anchors=False, seed=1,
             offset=0, wide=False):  # fmt: skip
        def make():
            mask = wide_strides(shape, dtype) if wide else meta(shape, dtype)
            fdtype = dtype if dtype.is_floating_point else torch.float32
            kw = dict(noise=meta(shape, fdtype) if noise else None, anchors=meta(shape, torch.bool) if anchors else None,
                      seed=seed, offset=offset, validate=False)  # fmt: skip
            return (mask, 0.5, anchor_size, cfg.keep_ratio), kw

        return make

    cases = [AotCase("target_noise", f"{n} philox", call(dtype=d), default=n == "fp32") for n, d in DTYPES.items()]
    cases += [
        AotCase("target_noise", "fp32 philox offset-i64", call(offset=BIG), default=True),
        AotCase("target_noise", "fp32 explicit-noise", call(noise=True)),
        AotCase("target_noise", "fp32 explicit-anchors", call(anchors=True)),
        AotCase("target_noise", "bf16 explicit-noise explicit-anchors", call(dtype=torch.bfloat16, noise=True,
                                                                          anchors=True)),  # fmt: skip
        AotCase("target_noise", "fp32 philox 1x31x47", call(shape=SMALL)),
        AotCase("target_noise", "fp32 philox int64-strides", call(wide=True)),
    ]
    cases += [AotCase("target_noise", f"fp32 anchor_size={a}", call(anchor_size=a)) for a in (1, 3, 8, 16)]
    return cases
