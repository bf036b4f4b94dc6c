"""One DDIM update in one elementwise kernel (diffusers' ``DDIMScheduler.step``, ``use_clipped_model_output=False``).

``x0`` from ``model_output`` (epsilon / sample / v_prediction), optionally clamped to ``[-r, r]``;
``std = eta * sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))``;
``prev = sqrt(a_prev) * x0 + sqrt(1 - a_prev - std**2) * eps (+ std * noise)``.
Layout: every operand is viewed as ``[B, M, N]`` (``N`` the last dimension, ``M`` the product of the middle ones;
``(B, 1, H, W)`` in spadfast, any strides), one program per ``BLOCK_H x BLOCK_W`` tile of one row ``b``. An operand
that has no such view (a channels-last ``C > 1`` tensor, say) is copied to contiguous, visibly, in the launcher.
Alphas are kernel scalars (floats), one value per row (``[B]``, ``[B,1,...]`` or 0-d tensors: one scalar load per
program, no per-element index arithmetic) or full operands (other broadcasts, read with stride 0 where broadcast).
In-kernel noise is Philox ``randn(seed, offset + i)`` with ``i`` the row-major index of the element in ``sample``'s
shape, whatever the layout. No host sync with ``validate=False`` and ``noise`` or ``seed`` given, so the step can be
captured in a CUDA graph.

Reference: spadfast.ops.reference.ddim_step
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from spadfast.ops.checks import check_alpha, check_alpha_order, check_ddim_args, check_random_source, draw_seed
from spadfast.ops.constants import PREDICTION_TYPES

from .utils import Launch, grid_3d, launch, tile_config, tile_coords, tile_offset
from .variants import BIG, DTYPES, SAMPLING, SMALL, VERIFY_DTYPES, AotCase, VerifyCase, meta

__all__ = ["ELEMS_PER_THREAD", "TILE", "ddim_step"]

# GPU tile and work per thread: a streaming elementwise update; 4 elements a thread, 8 warps.
TILE = (8, 128)
ELEMS_PER_THREAD = 4

# Alpha operand modes (constexpr ALPHA_T / ALPHA_PREV).
ALPHA_SCALAR, ALPHA_ROW, ALPHA_FULL = 0, 1, 2

_META_REF = torch.empty((), device="meta")  # validates float alphas without allocating on the sample's device


@triton.jit
def _load_alpha(value, ptr, b, r, c, stride_b, stride_m, stride_n, valid, MODE: tl.constexpr):
    if MODE == 0:
        a = value
    elif MODE == 1:
        a = tl.load(ptr + b * stride_b)
    else:
        a = tl.load(ptr + tile_offset(b, r, c, stride_b, stride_m, stride_n), mask=valid, other=0.5)
    return a


@triton.jit(do_not_specialize=["seed", "offset"])
def _ddim_step_kernel(
    sample_ptr,
    model_output_ptr,
    noise_ptr,
    alpha_t_ptr,
    alpha_prev_ptr,
    prev_ptr,
    x0_ptr,
    alpha_t,
    alpha_prev,
    eta,
    clip,
    seed,
    offset,
    M,
    N,
    stride_sb,
    stride_sm,
    stride_sn,
    stride_mb,
    stride_mm,
    stride_mn,
    stride_nb,
    stride_nm,
    stride_nn,
    stride_atb,
    stride_atm,
    stride_atn,
    stride_apb,
    stride_apm,
    stride_apn,
    stride_pb,
    stride_pm,
    stride_pn,
    stride_xb,
    stride_xm,
    stride_xn,
    PREDICTION: tl.constexpr,  # 0 epsilon, 1 sample, 2 v_prediction
    CLIP: tl.constexpr,
    NOISE: tl.constexpr,  # 0 none (eta == 0), 1 explicit tensor, 2 in-kernel Philox
    ALPHA_T: tl.constexpr,  # 0 scalar argument, 1 one value per row, 2 full operand
    ALPHA_PREV: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_W: tl.constexpr,
):
    b, r, c = tile_coords(BLOCK_H, BLOCK_W)
    valid = (r < M) & (c < N)
    x = tl.load(sample_ptr + tile_offset(b, r, c, stride_sb, stride_sm, stride_sn), mask=valid, other=0.0)
    out = tl.load(model_output_ptr + tile_offset(b, r, c, stride_mb, stride_mm, stride_mn), mask=valid, other=0.0)
    x = x.to(tl.float32)
    out = out.to(tl.float32)
    a_t = _load_alpha(alpha_t, alpha_t_ptr, b, r, c, stride_atb, stride_atm, stride_atn, valid, ALPHA_T)
    a_prev = _load_alpha(alpha_prev, alpha_prev_ptr, b, r, c, stride_apb, stride_apm, stride_apn, valid, ALPHA_PREV)

    # IEEE sqrt / division (sqrt_rn, div_rn) so fp32 results match torch's to rounding.
    beta_t = 1.0 - a_t
    sqrt_a_t = tl.sqrt_rn(a_t)
    sqrt_beta_t = tl.sqrt_rn(beta_t)
    if PREDICTION == 0:
        x0 = tl.div_rn(x - sqrt_beta_t * out, sqrt_a_t)
        eps = out
    elif PREDICTION == 1:
        x0 = out
        eps = tl.div_rn(x - sqrt_a_t * x0, sqrt_beta_t)
    else:
        x0 = sqrt_a_t * x - sqrt_beta_t * out
        eps = sqrt_a_t * out + sqrt_beta_t * x
    if CLIP:
        x0 = tl.minimum(tl.maximum(x0, -clip), clip)
    # diffusers' _get_variance divides 0 by 0 at a_t == 1; spadfast (and this kernel) use variance 0 there.
    variance = tl.div_rn(1.0 - a_prev, tl.maximum(beta_t, 1e-30)) * (1.0 - tl.div_rn(a_t, a_prev))
    variance = tl.where(beta_t > 0, variance, 0.0)
    # Computed even when eta == 0, as the reference does (0 * NaN stays NaN for a_t > a_prev).
    std = eta * tl.sqrt_rn(variance)
    prev = tl.sqrt_rn(a_prev) * x0 + tl.sqrt_rn(1.0 - a_prev - std * std) * eps
    if NOISE == 1:
        n = tl.load(noise_ptr + tile_offset(b, r, c, stride_nb, stride_nm, stride_nn), mask=valid, other=0.0)
        prev = prev + std * n.to(tl.float32)
    elif NOISE == 2:
        prev = prev + std * tl.randn(seed, offset + (b * M + r.to(tl.int64)) * N + c.to(tl.int64))

    tl.store(prev_ptr + tile_offset(b, r, c, stride_pb, stride_pm, stride_pn), prev.to(prev_ptr.dtype.element_ty),
             mask=valid)  # fmt: skip
    tl.store(x0_ptr + tile_offset(b, r, c, stride_xb, stride_xm, stride_xn), x0.to(x0_ptr.dtype.element_ty),
             mask=valid)  # fmt: skip


def _bmn(t: torch.Tensor, B: int, M: int, N: int) -> torch.Tensor | None:
    """``t`` viewed as ``[B, M, N]`` without a copy, or None when its strides allow no such view."""
    try:
        return t.view(B, M, N)
    except RuntimeError:
        return None


def _operand(t: torch.Tensor, B: int, M: int, N: int) -> torch.Tensor:
    """``[B, M, N]`` view of an input; the one copy this launcher may make, for layouts with no such view."""
    v = _bmn(t, B, M, N)
    return v if v is not None else t.contiguous().view(B, M, N)


def _alpha_operand(value, name: str, sample: torch.Tensor, validate: bool, B: int, M: int, N: int):
    """``(mode, scalar, tensor)`` of one alpha: a float scalar, a per-row tensor (stride 0 for a 0-d tensor) or a full
    ``[B, M, N]`` operand (stride 0 along broadcast dimensions)."""
    if not isinstance(value, torch.Tensor):
        check_alpha(value, name, _META_REF, validate)
        return ALPHA_SCALAR, float(value), None
    a = check_alpha(value, name, sample, validate)
    if torch.broadcast_shapes(a.shape, sample.shape) != sample.shape:
        raise ValueError(
            f"`{name}` must broadcast to the shape of `sample` {tuple(sample.shape)}, got {tuple(a.shape)}"
        )
    if a.numel() == 1:
        return ALPHA_ROW, 1.0, a.reshape(1).expand(B).view(B, 1, 1)
    if a.dim() == sample.dim() and a.shape[0] == B and math.prod(a.shape[1:]) == 1:
        return ALPHA_ROW, 1.0, a.reshape(B, 1, 1)
    return ALPHA_FULL, 1.0, _operand(a.expand(sample.shape), B, M, N)


def ddim_step(
    sample: torch.Tensor,
    model_output: torch.Tensor,
    alpha_prod_t: float | torch.Tensor,
    alpha_prod_t_prev: float | torch.Tensor,
    eta: float = 0.0,
    noise: torch.Tensor | None = None,
    clip_sample_range: float | None = None,
    prediction_type: str = "epsilon",
    generator: torch.Generator | None = None,
    seed: int | None = None,
    offset: int = 0,
    validate: bool = True,
    *,
    block_size: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM update with one Triton kernel; semantics of :func:`spadfast.ops.reference.ddim_step`.

    Args:
        sample: ``x_t``, floating (fp32/fp16/bf16...), leading batch dimension, any strides (``[B,1,H,W]`` is read in
            place in every layout; other shapes when viewable as ``[B, M, N]``, else copied).
        model_output: the network's prediction, ``sample``'s shape, any floating dtype and strides.
        alpha_prod_t, alpha_prod_t_prev: floats in (0, 1] (kernel scalars), ``[B]`` or 0-d tensors (one load per
            program) or tensors broadcastable to ``sample`` (read in place with stride 0 along broadcast dimensions).
        eta: DDIM stochasticity, in [0, 1].
        noise: standard-normal tensor of ``sample``'s shape used when ``eta > 0``; else in-kernel Philox from
            ``seed`` / ``offset``, the seed being drawn from ``generator`` (or torch's global CPU generator, a host
            sync) when None. The bits differ from the reference's, the distribution does not.
        clip_sample_range: clamp the predicted ``x0`` to ``[-r, r]`` (None: no clipping).
        prediction_type: ``"epsilon"``, ``"sample"`` or ``"v_prediction"``.
        validate: check that tensor alphas lie in (0, 1] (host sync).
        block_size: ``(BLOCK_H, BLOCK_W)`` tile override over ``[M, N]`` (powers of two); default by ``tile_config``.

    Returns:
        ``(prev_sample, pred_original_sample)``, ``sample``'s shape and dtype, laid out like ``sample`` when it has a
        ``[B, M, N]`` view. Computed in fp32.

    Raises:
        TypeError, ValueError: as the reference; ValueError also when ``noise`` or a tensor alpha requires grad, when
            ``noise`` is on another device, or when a tensor alpha broadcasts to a larger shape than ``sample``.
        KernelLaunchError: the kernel failed to compile or launch.
    """
    check_ddim_args(sample, model_output, eta, noise, clip_sample_range, prediction_type)
    check_alpha_order(alpha_prod_t, alpha_prod_t_prev, validate)
    check_random_source(generator, seed, offset)
    shape = sample.shape
    B = shape[0]
    N = shape[-1] if sample.dim() > 1 else 1
    M = math.prod(shape[1:-1]) if sample.dim() > 2 else 1
    mode_t, scalar_t, at = _alpha_operand(alpha_prod_t, "alpha_prod_t", sample, validate, B, M, N)
    mode_p, scalar_p, ap = _alpha_operand(alpha_prod_t_prev, "alpha_prod_t_prev", sample, validate, B, M, N)

    noise_mode = 0 if eta == 0 else (1 if noise is not None else 2)
    if noise_mode == 2:
        seed = draw_seed(generator) if seed is None else seed
    seed = 0 if seed is None else seed % (1 << 63)
    s, mo = _operand(sample, B, M, N), _operand(model_output, B, M, N)
    n = _operand(noise, B, M, N) if noise is not None else s  # placeholders are never read
    prev, x0 = torch.empty_like(sample), torch.empty_like(sample)
    prev_v, x0_v = _bmn(prev, B, M, N), _bmn(x0, B, M, N)
    if prev_v is None or x0_v is None:  # the sample's layout has no [B, M, N] view: row-major outputs
        prev, x0 = (torch.empty(shape, dtype=sample.dtype, device=sample.device) for _ in range(2))
        prev_v, x0_v = prev.view(B, M, N), x0.view(B, M, N)
    at = at if at is not None else s
    ap = ap if ap is not None else s

    BLOCK_H, BLOCK_W, num_warps = tile_config(M, N, sample.device, TILE, ELEMS_PER_THREAD, block_size)
    args = (
        s, mo, n, at, ap, prev_v, x0_v, scalar_t, scalar_p, float(eta),
        float(clip_sample_range) if clip_sample_range is not None else 0.0, seed, offset, M, N,
        *s.stride(), *mo.stride(), *n.stride(), *at.stride(), *ap.stride(), *prev_v.stride(), *x0_v.stride(),
    )  # fmt: skip
    constexprs = dict(
        PREDICTION=PREDICTION_TYPES.index(prediction_type), CLIP=clip_sample_range is not None, NOISE=noise_mode,
        ALPHA_T=mode_t, ALPHA_PREV=mode_p, BLOCK_H=BLOCK_H, BLOCK_W=BLOCK_W,
    )  # fmt: skip
    grid = grid_3d(B, M, N, BLOCK_H, BLOCK_W, "sample")
    return launch(Launch("ddim_step", _ddim_step_kernel, grid, args, constexprs, num_warps, sample.device,
                         (prev, x0)))  # fmt: skip


# ----------------------------------------------------------------------------------- verification and AOT


def verify_cases(shape: tuple[int, ...], device: str, generator: torch.Generator) -> list[VerifyCase]:
    """``spadfast verify``'s checks against :func:`spadfast.ops.reference.ddim_step`: every floating dtype x prediction
    type, eta 0.5 with explicit noise, per-row alphas, clipping at 1."""
    from spadfast.ops import reference

    out = []
    for dtype in VERIFY_DTYPES:
        x, model_out, noise = (torch.randn(shape, generator=generator).to(device, dtype) for _ in range(3))
        a_t = (torch.rand(shape[0], generator=generator) * 0.9 + 0.05).to(device)
        a_prev = a_t + (1 - a_t) * 0.5
        for pt in PREDICTION_TYPES:

            def run(b, x=x, o=model_out, n=noise, at=a_t, ap=a_prev, pt=pt):
                return (ddim_step if b == "triton" else reference.ddim_step)(x, o, at, ap, 0.5, n, 1.0, pt)

            out.append(VerifyCase(f"ddim_step[{pt}]", shape, dtype, run, exact=False))
    return out


def aot_variants() -> list[AotCase]:
    """The launch variants the ahead-of-time check compiles (:mod:`spadfast.kernels.aot`), on meta tensors."""
    from spadfast.ops.constants import PREDICTION_TYPES

    def call(shape=SAMPLING, dtype=torch.float32, prediction="epsilon", clip=1.0, eta=0.0, noise=False,
             alpha="step", offset=0):  # fmt: skip
        def make():
            x, out = meta(shape, dtype), meta(shape, dtype)
            if alpha == "float":
                a_t, a_prev = 0.5, 0.7
            elif alpha == "step":  # the sampler's: one 0-d device tensor per step
                a_t, a_prev = meta(()), meta(())
            elif alpha == "row":
                a_t, a_prev = meta((shape[0],)), meta((shape[0],))
            else:  # full
                a_t, a_prev = meta(shape), meta(shape)
            kw = dict(noise=meta(shape, dtype) if noise else None, clip_sample_range=clip, prediction_type=prediction,
                      seed=None if noise else 1, offset=offset, validate=False)  # fmt: skip
            return (x, out, a_t, a_prev, eta), kw

        return make

    cases = []
    # The sampler: every prediction type, with and without clipping, eta = 0 and eta > 0 (Philox).
    for pt in PREDICTION_TYPES:
        for clip in (None, 1.0):
            for eta in (0.0, 1.0):
                label = f"fp32 {pt} clip={clip} eta={eta:g}{' philox' if eta else ''}"
                cases.append(AotCase("ddim_step", label, call(prediction=pt, clip=clip, eta=eta),
                                  default=pt == "epsilon" and clip == 1.0 and eta == 0))  # fmt: skip
    cases += [AotCase("ddim_step", f"{n} epsilon", call(dtype=d)) for n, d in list(DTYPES.items())[:3]]
    cases += [
        AotCase("ddim_step", "fp32 explicit-noise", call(eta=0.5, noise=True)),
        AotCase("ddim_step", "fp32 philox offset-i64", call(eta=0.5, offset=BIG)),
        AotCase("ddim_step", "fp32 alphas float", call(alpha="float")),
        AotCase("ddim_step", "fp32 alphas [B]", call(alpha="row")),
        AotCase("ddim_step", "fp32 alphas full", call(alpha="full")),
        AotCase("ddim_step", "fp32 1x1x31x47", call(shape=SMALL)),
    ]
    return cases
