"""BcD in one pass: ``gaussian_blur(mask, sigma) + strength * noise`` inside ``band = dilate(canny(mask), radius)``
(square element), ``base`` (default: the mask) elsewhere.

Layout ``(B, 1, H, W)``, any dtype and strides, no copies. Each program owns a ``BLOCK_H x BLOCK_W`` tile of one image
and recomputes everything from clamped loads: the band by streaming the Canny stencil over the ``(2*radius+5)^2``
window (``spadfast.kernels.canny._edge_near``), the separable Gaussian (taps ``spadfast.ops.reference.gaussian_weights``,
rows then columns, replicated border) and the noise, an explicit tensor or in-kernel Philox
``randn(seed, offset + b*H*W + r*W + c)``. fp32 inside, cast on store.

Reference: spadfast.ops.reference.boundary_blur
"""

from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl

from spadfast.ops.checks import MAX_BAND_RADIUS, draw_seed, prepare_boundary_blur
from spadfast.ops.reference import gaussian_weights

from .canny import _edge_near
from .utils import Launch, clamped_offset, grid_3d, launch, pointer_view, tile_config, tile_coords, tile_offset
from .variants import BIG, DTYPES, SMALL, TRAINING, VERIFY_DTYPES, AotCase, VerifyCase, meta, wide_strides

__all__ = ["MAX_RADIUS", "boundary_blur", "tile_for_radius"]


@triton.jit(do_not_specialize=["seed", "offset"])
def _boundary_blur_kernel(
    mask_ptr,
    noise_ptr,
    base_ptr,
    taps_ptr,
    out_ptr,
    H,
    W,
    strength,
    seed,
    offset,
    stride_mb,
    stride_mh,
    stride_mw,
    stride_nb,
    stride_nh,
    stride_nw,
    stride_bb,
    stride_bh,
    stride_bw,
    stride_ob,
    stride_oh,
    stride_ow,
    R_BAND: tl.constexpr,
    R_BLUR: tl.constexpr,
    HAS_NOISE: tl.constexpr,
    HAS_BASE: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_W: tl.constexpr,
):
    pid_b, r, c = tile_coords(BLOCK_H, BLOCK_W)
    valid = (r < H) & (c < W)
    r64 = r.to(tl.int64)
    c64 = c.to(tl.int64)
    m_ptr = mask_ptr + pid_b * stride_mb

    # Band: an edge pixel within Chebyshev distance R_BAND; edges are never outside the image (the reference's
    # max-pool padding).
    band = _edge_near(m_ptr, r, c, H, W, stride_mh, stride_mw, R_BAND) & valid

    # Separable Gaussian, rows then columns, replicated border; loads only in the band, where the value is used.
    blur = tl.zeros((BLOCK_H, BLOCK_W), dtype=tl.float32)
    for i in range(2 * R_BLUR + 1):  # runtime loop over rows: bounded live set
        row_off = clamped_offset(r + (i - R_BLUR), H, stride_mh)
        row = tl.zeros((BLOCK_H, BLOCK_W), dtype=tl.float32)
        for j in tl.static_range(2 * R_BLUR + 1):
            col_off = clamped_offset(c + (j - R_BLUR), W, stride_mw)
            x = tl.load(m_ptr + row_off + col_off, mask=band, other=0).to(tl.float32)
            row += tl.load(taps_ptr + j) * x
        blur += tl.load(taps_ptr + i) * row

    if HAS_NOISE:
        n_off = tile_offset(pid_b, r, c, stride_nb, stride_nh, stride_nw)
        noise = tl.load(noise_ptr + n_off, mask=band, other=0).to(tl.float32)
    else:
        noise = tl.randn(seed, offset + (pid_b * H + r64) * W + c64)
    inside = blur + strength * noise

    if HAS_BASE:
        outside = tl.load(base_ptr + tile_offset(pid_b, r, c, stride_bb, stride_bh, stride_bw), mask=valid, other=0)
    else:
        outside = tl.load(m_ptr + r64 * stride_mh + c64 * stride_mw, mask=valid, other=0)
    out = tl.where(band, inside, outside.to(tl.float32))
    o_off = tile_offset(pid_b, r, c, stride_ob, stride_oh, stride_ow)
    tl.store(out_ptr + o_off, out.to(out_ptr.dtype.element_ty), mask=valid)


@functools.lru_cache(maxsize=64)
def _device_taps(sigma: float, truncate: float, device: torch.device) -> torch.Tensor:
    """``gaussian_weights`` on ``device``, cached; on CUDA copied from pinned memory without a host sync."""
    taps = gaussian_weights(sigma, truncate)
    if device.type == "cuda":
        return taps.pin_memory().to(device, non_blocking=True)
    return taps.to(device)


MAX_RADIUS = MAX_BAND_RADIUS  # checked by prepare_boundary_blur, for every backend
ELEMS_PER_THREAD = 1


def tile_for_radius(radius: int) -> tuple[int, int]:
    """GPU tile for a band radius, one element per thread (each recomputes its own window, so the tile sets only
    the warps per program). Up to radius 2 the state fits 128 registers: 16 warps, 25 % occupancy. From radius 3 it
    needs 134-165 registers (sm_90 / sm_80): 16 warps would cap it at 128 and spill (72 B on sm_80), so 4 warps,
    three programs per SM, 18.75 % occupancy (8 warps would give 12.5 %). Measured in benchmarks/RESULTS.md."""
    return (16, 32) if radius <= 2 else (4, 32)


def boundary_blur(
    mask: torch.Tensor,
    sigma: float,
    strength: float,
    radius: int = 1,
    noise: torch.Tensor | None = None,
    base: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    offset: int = 0,
    truncate: float = 3.0,
    validate: bool = True,
    *,
    block_size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """BcD: blur the mask around its boundary and add Gaussian noise there (Triton).

    Same arguments and results as :func:`spadfast.ops.reference.boundary_blur`, except for the noise bits when it is
    drawn: in-kernel Philox ``randn(seed, offset + b*H*W + r*W + c)``, so a call consumes ``B*H*W`` offsets (advance
    ``offset`` by that much for an independent draw under the same seed). With no ``seed``, one is drawn from
    ``generator`` (a host sync when the generator is on CUDA) or from torch's global CPU generator.

    Args:
        mask: ``[H,W]``, ``[B,H,W]`` or ``[B,1,H,W]`` binary mask, any dtype and strides.
        sigma: Gaussian width in pixels (>= 0); the blur radius ``ceil(truncate * sigma)`` is a compile-time constant.
        strength: standard deviation of the added noise (>= 0).
        radius: band half-width in pixels, 0 to ``MAX_RADIUS``, a compile-time constant.
        noise: optional floating tensor of the mask's shape.
        base: optional floating tensor of the mask's shape returned outside the band.
        generator, seed, offset: the Philox stream when ``noise`` is None.
        truncate: Gaussian support in units of ``sigma``.
        validate: check binary values / NaN (host sync).
        block_size: ``(BLOCK_H, BLOCK_W)`` tile override (powers of two); default by ``tile_config``.

    Returns:
        Tensor of the mask's shape in ``base.dtype``, else the mask's dtype if floating, else float32.

    Raises:
        TypeError, ValueError: bad shapes, dtypes, devices or values, ``radius > MAX_RADIUS``, or an input that
            requires grad.
        KernelLaunchError: the kernel failed to compile or launch.
    """
    m, restore, sigma, strength, noise_v, base_v, out_dtype = prepare_boundary_blur(
        mask, sigma, strength, radius, noise, base, generator, seed, offset, validate
    )
    B, _, H, W = m.shape
    taps = _device_taps(sigma, float(truncate), m.device)
    if noise_v is None and seed is None:
        seed = draw_seed(generator)
    BLOCK_H, BLOCK_W, num_warps = tile_config(H, W, m.device, tile_for_radius(radius), ELEMS_PER_THREAD, block_size)
    x = pointer_view(m)
    out = torch.empty_like(m, dtype=out_dtype)
    n = noise_v if noise_v is not None else out  # placeholders are never read
    b = base_v if base_v is not None else out
    args = (
        x, n, b, taps, out, H, W, strength, seed if seed is not None else 0, offset,
        x.stride(0), x.stride(2), x.stride(3),
        n.stride(0), n.stride(2), n.stride(3),
        b.stride(0), b.stride(2), b.stride(3),
        out.stride(0), out.stride(2), out.stride(3),
    )  # fmt: skip
    constexprs = dict(R_BAND=radius, R_BLUR=(taps.numel() - 1) // 2, HAS_NOISE=noise_v is not None,
                      HAS_BASE=base_v is not None, BLOCK_H=BLOCK_H, BLOCK_W=BLOCK_W)  # fmt: skip
    grid = grid_3d(B, H, W, BLOCK_H, BLOCK_W, "mask")
    return launch(Launch("boundary_blur", _boundary_blur_kernel, grid, args, constexprs, num_warps, m.device,
                         restore(out)))  # fmt: skip


# ----------------------------------------------------------------------------------- verification and AOT


def verify_cases(shape: tuple[int, ...], device: str, generator: torch.Generator) -> list[VerifyCase]:
    """``spadfast verify``'s checks against :func:`spadfast.ops.reference.boundary_blur`, one per floating dtype, with
    explicit noise."""
    from spadfast.ops import reference
    from spadfast.ops.blobs import blob_masks

    mask = blob_masks(shape, cell=8, generator=generator).to(device)
    out = []
    for dtype in VERIFY_DTYPES:
        m, noise = mask.to(dtype), torch.randn(shape, generator=generator).to(device, dtype)

        def run(b, m=m, noise=noise):
            return (boundary_blur if b == "triton" else reference.boundary_blur)(m, 1.5, 0.3, 2, noise=noise)

        out.append(VerifyCase("boundary_blur", shape, dtype, run, exact=False))
    return out


def _perturb_pairs(cfg) -> list[tuple[float, int, float]]:
    """``(f, radius, sigma)`` at the midpoints of every interval of the PaS factor f on which spad_perturb's
    ``(ceil(band_radius_max * f), ceil(truncate * blur_sigma_max * f))`` is constant: every (band, blur) variant
    training at these settings launches."""
    cuts = {1.0}
    for k in range(1, cfg.band_radius_max + 1):
        cuts.add(k / cfg.band_radius_max)
    blur_steps = math.ceil(3.0 * cfg.blur_sigma_max)
    for k in range(1, blur_steps + 1):
        cuts.add(k / (3.0 * cfg.blur_sigma_max))
    edges = sorted(c for c in cuts if 0 < c <= 1)
    out, lo = [], 0.0
    for hi in edges:
        f = (lo + hi) / 2
        out.append((f, math.ceil(cfg.band_radius_max * f), cfg.blur_sigma_max * f))
        lo = hi
    return out


def aot_variants() -> list[AotCase]:
    """The launch variants the ahead-of-time check compiles (:mod:`spadfast.kernels.aot`), on meta tensors."""
    from types import SimpleNamespace

    from spadfast.kernels.boundary_blur import MAX_RADIUS
    from spadfast.ops.constants import PERTURB_KERNEL_DEFAULTS

    def call(shape=TRAINING, dtype=torch.float32, sigma=1.0, radius=1, noise=False, base=False, seed=1, offset=0,
             wide=False):  # fmt: skip
        def make():
            mask = wide_strides(shape, dtype) if wide else meta(shape, dtype)
            fdtype = dtype if dtype.is_floating_point else torch.float32
            kw = dict(noise=meta(shape, fdtype) if noise else None, base=meta(shape, fdtype) if base else None,
                      seed=None if noise else seed, offset=offset, validate=False)  # fmt: skip
            return (mask, sigma, 0.3, radius), kw

        return make

    cases = [AotCase("boundary_blur", f"{n} philox", call(dtype=d)) for n, d in DTYPES.items()]
    cases += [
        AotCase("boundary_blur", "fp32 explicit-noise", call(noise=True)),
        AotCase("boundary_blur", "fp16 explicit-noise base", call(dtype=torch.float16, noise=True, base=True)),
        AotCase("boundary_blur", "fp32 philox 1x31x47", call(shape=SMALL)),
        AotCase("boundary_blur", "fp32 philox offset-i64", call(offset=BIG)),
        AotCase("boundary_blur", "fp32 philox seed-i64", call(seed=BIG)),
        AotCase("boundary_blur", "fp32 philox int64-strides", call(wide=True)),
        AotCase("boundary_blur", "fp32 sigma=0", call(sigma=0.0)),
    ]
    cases += [AotCase("boundary_blur", f"fp32 radius={r}", call(radius=r)) for r in range(MAX_RADIUS + 1)]
    # What training launches with the default PerturbConfig (base = the ScD output, Philox, validate off); the
    # Philox offset passes int32 until B*H*W*step counts exceed 2**31 and int64 afterwards.
    for f, radius, sigma in _perturb_pairs(SimpleNamespace(**PERTURB_KERNEL_DEFAULTS)):
        for offset, tag in ((0, ""), (BIG, " offset-i64")):
            cases.append(AotCase("boundary_blur", f"perturb f={f:.3f} radius={radius} sigma={sigma:.2f}{tag}",
                              call(sigma=sigma, radius=radius, base=True, offset=offset), default=True))  # fmt: skip
    return cases
