"""One DDIM update in one elementwise kernel (diffusers' ``DDIMScheduler.step``, ``use_clipped_model_output=False``).

``x0`` from ``model_output`` (epsilon / sample / v_prediction), optionally clamped to ``[-r, r]``;
``std = eta * sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))``;
``prev = sqrt(a_prev) * x0 + sqrt(1 - a_prev - std**2) * eps (+ std * noise)``.
Layout: any shape with a leading batch dimension (``(B, C, H, W)`` typically, ``(B, 1, H, W)`` in spadfast), any
strides. The launcher drops unit dimensions, orders the rest by ``sample``'s strides and merges the dimensions that
are contiguous in every operand, so a dense tensor is one flat range and channels-last is read in storage order;
at most 4 dimensions remain (else every operand is copied to contiguous, visibly). Tensor alphas are operands
expanded to ``sample``'s shape (stride 0 along broadcast dimensions, so a ``[B]`` tensor is read once per row);
float alphas are scalar arguments. In-kernel noise is Philox ``randn(seed, offset + i)`` with ``i`` the row-major
index of the element in ``sample``'s shape, whatever the layout. No host sync with ``validate=False`` and
``noise`` or ``seed`` given, so the step can be captured in a CUDA graph.

Reference: spadfast.reference.ddim_step
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from spadfast._validation import check_random_source, draw_seed
from spadfast.reference import PREDICTION_TYPES, _alpha, check_ddim_args

__all__ = ["ddim_step"]

_MAX_DIMS = 4
_META_REF = torch.empty((), device="meta")  # validates float alphas without allocating on the sample's device


@triton.jit
def _offset(i, S1, S2, S3, st0, st1, st2, st3, NDIM: tl.constexpr):
    # Element offset of flat traversal index ``i`` in an operand with strides (st0..st3) over sizes (S0..S3).
    if NDIM == 1:
        off = i * st3
    else:
        c3 = i % S3
        t = i // S3
        c2 = t % S2
        t = t // S2
        c1 = t % S1
        c0 = t // S1
        off = c0 * st0 + c1 * st1 + c2 * st2 + c3 * st3
    return off


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
    N,
    S1,
    S2,
    S3,
    # Strides: l = row-major strides of the logical shape (Philox counters), then one set per operand.
    stride_l0,
    stride_l1,
    stride_l2,
    stride_l3,
    stride_s0,
    stride_s1,
    stride_s2,
    stride_s3,
    stride_m0,
    stride_m1,
    stride_m2,
    stride_m3,
    stride_n0,
    stride_n1,
    stride_n2,
    stride_n3,
    stride_at0,
    stride_at1,
    stride_at2,
    stride_at3,
    stride_ap0,
    stride_ap1,
    stride_ap2,
    stride_ap3,
    stride_p0,
    stride_p1,
    stride_p2,
    stride_p3,
    stride_x0,
    stride_x1,
    stride_x2,
    stride_x3,
    PREDICTION: tl.constexpr,  # 0 epsilon, 1 sample, 2 v_prediction
    CLIP: tl.constexpr,
    NOISE: tl.constexpr,  # 0 none (eta == 0), 1 explicit tensor, 2 in-kernel Philox
    ALPHA_T_TENSOR: tl.constexpr,
    ALPHA_PREV_TENSOR: tl.constexpr,
    NDIM: tl.constexpr,
    BLOCK: tl.constexpr,
):
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    valid = i < N
    off_s = _offset(i, S1, S2, S3, stride_s0, stride_s1, stride_s2, stride_s3, NDIM)
    off_m = _offset(i, S1, S2, S3, stride_m0, stride_m1, stride_m2, stride_m3, NDIM)
    x = tl.load(sample_ptr + off_s, mask=valid, other=0.0).to(tl.float32)
    out = tl.load(model_output_ptr + off_m, mask=valid, other=0.0).to(tl.float32)
    if ALPHA_T_TENSOR:
        off_at = _offset(i, S1, S2, S3, stride_at0, stride_at1, stride_at2, stride_at3, NDIM)
        a_t = tl.load(alpha_t_ptr + off_at, mask=valid, other=0.5)
    else:
        a_t = alpha_t
    if ALPHA_PREV_TENSOR:
        off_ap = _offset(i, S1, S2, S3, stride_ap0, stride_ap1, stride_ap2, stride_ap3, NDIM)
        a_prev = tl.load(alpha_prev_ptr + off_ap, mask=valid, other=0.5)
    else:
        a_prev = alpha_prev

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
        off_n = _offset(i, S1, S2, S3, stride_n0, stride_n1, stride_n2, stride_n3, NDIM)
        prev = prev + std * tl.load(noise_ptr + off_n, mask=valid, other=0.0).to(tl.float32)
    elif NOISE == 2:
        logical = _offset(i, S1, S2, S3, stride_l0, stride_l1, stride_l2, stride_l3, NDIM)
        prev = prev + std * tl.randn(seed, offset + logical)

    off_p = _offset(i, S1, S2, S3, stride_p0, stride_p1, stride_p2, stride_p3, NDIM)
    off_x = _offset(i, S1, S2, S3, stride_x0, stride_x1, stride_x2, stride_x3, NDIM)
    tl.store(prev_ptr + off_p, prev.to(prev_ptr.dtype.element_ty), mask=valid)
    tl.store(x0_ptr + off_x, x0.to(x0_ptr.dtype.element_ty), mask=valid)


def _row_major_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, acc = [], 1
    for size in reversed(shape):
        strides.append(acc)
        acc *= size
    return tuple(reversed(strides))


def _collapse(shape: tuple[int, ...], strides: list[tuple[int, ...]]) -> tuple[list[int], list[list[int]]]:
    """Drop unit dims, order the rest by ``strides[1]`` (sample's) descending, merge dims contiguous in all operands.

    Returns the merged sizes (outermost first) and, per operand, the merged strides.
    """
    dims = sorted((d for d in range(len(shape)) if shape[d] != 1), key=lambda d: -strides[1][d])
    sizes: list[int] = []
    merged: list[list[int]] = [[] for _ in strides]
    for d in dims:
        if sizes and all(m[-1] == s[d] * shape[d] for m, s in zip(merged, strides)):
            sizes[-1] *= shape[d]
            for m, s in zip(merged, strides):
                m[-1] = s[d]
        else:
            sizes.append(shape[d])
            for m, s in zip(merged, strides):
                m.append(s[d])
    if not sizes:
        sizes, merged = [1], [[0] for _ in strides]
    return sizes, merged


def _expanded(a: torch.Tensor, name: str, shape: torch.Size) -> torch.Tensor:
    if torch.broadcast_shapes(a.shape, shape) != shape:
        raise ValueError(f"`{name}` must broadcast to the shape of `sample` {tuple(shape)}, got {tuple(a.shape)}")
    return a.expand(shape)


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
    block_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM update with one Triton kernel; semantics of :func:`spadfast.reference.ddim_step`.

    Args:
        sample: ``x_t``, floating (fp32/fp16/bf16...), leading batch dimension, any strides.
        model_output: the network's prediction, ``sample``'s shape, any floating dtype and strides.
        alpha_prod_t, alpha_prod_t_prev: floats in (0, 1] (kernel scalars), ``[B]`` tensors (one per row) or tensors
            broadcastable to ``sample`` (read in place with stride 0 along broadcast dimensions).
        eta: DDIM stochasticity (>= 0).
        noise: standard-normal tensor of ``sample``'s shape used when ``eta > 0``; else in-kernel Philox from
            ``seed`` / ``offset``, the seed being drawn from ``generator`` (or torch's global CPU generator, a host
            sync) when None. The bits differ from the reference's, the distribution does not.
        clip_sample_range: clamp the predicted ``x0`` to ``[-r, r]`` (None: no clipping).
        prediction_type: ``"epsilon"``, ``"sample"`` or ``"v_prediction"``.
        validate: check that tensor alphas lie in (0, 1] (host sync).
        block_size: elements per program, a power of two overriding the heuristic (tests).

    Returns:
        ``(prev_sample, pred_original_sample)``, ``sample``'s shape and dtype, laid out like ``sample`` when it is
        dense. Computed in fp32.

    Raises:
        TypeError, ValueError: as the reference; ValueError also when ``noise`` or a tensor alpha requires grad, when
        ``noise`` is on another device, or when a tensor alpha broadcasts to a larger shape than ``sample``.
    """
    check_ddim_args(sample, model_output, eta, noise, clip_sample_range, prediction_type)
    check_random_source(noise, generator, seed, offset)
    shape = sample.shape
    alphas = []
    for value, name in ((alpha_prod_t, "alpha_prod_t"), (alpha_prod_t_prev, "alpha_prod_t_prev")):
        if isinstance(value, torch.Tensor):
            alphas.append(_expanded(_alpha(value, name, sample, validate), name, shape))
        else:
            _alpha(value, name, _META_REF, validate)
            alphas.append(float(value))
    a_t, a_prev = alphas

    noise_mode = 0 if eta == 0 else (1 if noise is not None else 2)
    if noise_mode == 2:
        seed = draw_seed(generator) if seed is None else seed
    seed = 0 if seed is None else seed % (1 << 63)
    x0 = torch.empty_like(sample)
    prev = torch.empty_like(sample)

    operands = [sample, model_output, noise, a_t, a_prev, prev, x0]
    strides = [_row_major_strides(shape)] + [
        t.stride() if isinstance(t, torch.Tensor) else (0,) * len(shape) for t in operands
    ]
    sizes, merged = _collapse(tuple(shape), strides)
    if len(sizes) > _MAX_DIMS:  # only for rank > 4 with mixed layouts: copy every operand to row-major
        sample, model_output = sample.contiguous(), model_output.contiguous()
        noise = noise.contiguous() if noise is not None else None
        a_t, a_prev = (a.contiguous() if isinstance(a, torch.Tensor) else a for a in (a_t, a_prev))
        prev, x0 = torch.empty_like(sample), torch.empty_like(sample)
        operands = [sample, model_output, noise, a_t, a_prev, prev, x0]
        strides = [_row_major_strides(shape)] + [
            t.stride() if isinstance(t, torch.Tensor) else (0,) * len(shape) for t in operands
        ]
        sizes, merged = _collapse(tuple(shape), strides)
    ndim = len(sizes)
    pad = _MAX_DIMS - ndim
    sizes = [1] * pad + sizes
    merged = [[0] * pad + m for m in merged]
    flat_strides = [s for m in merged for s in m]

    N = sample.numel()
    block = block_size if block_size is not None else max(16, min(1024, triton.next_power_of_2(N)))
    grid = (triton.cdiv(N, block),)
    # Absent operands point at ``sample`` (never read: NOISE / ALPHA_*_TENSOR are compile-time switches).
    ptrs = [t if isinstance(t, torch.Tensor) else sample for t in (noise, a_t, a_prev)]
    _ddim_step_kernel[grid](
        sample,
        model_output,
        *ptrs,
        prev,
        x0,
        a_t if not isinstance(a_t, torch.Tensor) else 1.0,
        a_prev if not isinstance(a_prev, torch.Tensor) else 1.0,
        float(eta),
        float(clip_sample_range) if clip_sample_range is not None else 0.0,
        seed,
        offset,
        N,
        sizes[1],
        sizes[2],
        sizes[3],
        *flat_strides,
        PREDICTION=PREDICTION_TYPES.index(prediction_type),
        CLIP=clip_sample_range is not None,
        NOISE=noise_mode,
        ALPHA_T_TENSOR=isinstance(a_t, torch.Tensor),
        ALPHA_PREV_TENSOR=isinstance(a_prev, torch.Tensor),
        NDIM=ndim,
        BLOCK=block,
    )
    return prev, x0
