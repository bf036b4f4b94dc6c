"""Pure-PyTorch reference of every spadfast op: the ground truth the Triton kernels are tested against.

Batched, device- and dtype-generic, no Python loops over pixels or images and no data-dependent control flow, so each
function also serves as the ``torch.compile`` baseline. Layout: ``[H,W]``, ``[B,H,W]`` or ``[B,1,H,W]`` in, the same
leading shape out. Computation is float32; floating outputs are cast back to the input's floating dtype.

These ops act on labels and samples and are not differentiable: an input that requires grad is an error.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .checks import (
    as_b1hw,
    check_alpha,
    check_alpha_order,
    check_ddim_args,
    check_int,
    check_mask,
    check_number,
    check_random_source,
    prepare_boundary_blur,
    prepare_target_noise,
)

# OpenCV's fixed-point tangent constants (canny.cpp): tan(22.5 deg) * 2**15 and the 2**15 shift.
CANNY_TG22 = 13573.0
CANNY_SHIFT_SCALE = 32768.0

__all__ = [
    "canny",
    "canny_magnitude",
    "boundary_band",
    "gaussian_weights",
    "gaussian_blur",
    "boundary_blur",
    "anchor_mask",
    "target_noise",
    "ddim_step",
    "random_normal",
]


# --------------------------------------------------------------------------------------------------------- Canny
def _sobel(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """3x3 Sobel of a float32 ``[B,1,H,W]`` image with replicated borders (OpenCV Canny's border mode)."""
    p = F.pad(m, (1, 1, 1, 1), mode="replicate")
    dxr = p[..., :, 2:] - p[..., :, :-2]  # [B,1,H+2,W]
    dx = dxr[..., :-2, :] + 2.0 * dxr[..., 1:-1, :] + dxr[..., 2:, :]
    dyr = p[..., 2:, :] - p[..., :-2, :]  # [B,1,H,W+2]
    dy = dyr[..., :, :-2] + 2.0 * dyr[..., :, 1:-1] + dyr[..., :, 2:]
    return dx, dy


def canny_magnitude(mask: torch.Tensor, validate: bool = True) -> torch.Tensor:
    """L1 Sobel magnitude ``|dx| + |dy|`` of a binary mask scaled to 0/255, as OpenCV's Canny computes it.

    Args:
        mask: ``[H,W]``, ``[B,H,W]`` or ``[B,1,H,W]`` binary mask (bool, or 0/1 in any integer or float dtype).

    Returns:
        float32 tensor of the mask's shape; values are multiples of 255.
    """
    m, restore = as_b1hw(mask, "mask")
    check_mask(m, "mask", validate)
    dx, dy = _sobel(m.float())
    return restore((dx.abs() + dy.abs()) * 255.0)


def canny(mask: torch.Tensor, validate: bool = True) -> torch.Tensor:
    """Boundary of a binary mask, byte-exact with ``cv2.Canny(mask_uint8 * 255, 100, 200) > 0``.

    On a 0/255 image every non-zero Sobel L1 magnitude is at least 255 > 200 = high threshold, so hysteresis has no
    weak pixels and Canny reduces to one stencil: Sobel 3x3 (replicated border), then non-maximum suppression with
    OpenCV's direction sectors (fixed-point tan 22.5 / 67.5 deg) and tie-break (strict towards the previous pixel,
    non-strict towards the next one along horizontal and vertical gradients, strict both ways on diagonals), the
    magnitude outside the image being 0.

    Args:
        mask: ``[H,W]``, ``[B,H,W]`` or ``[B,1,H,W]`` binary mask (bool, or 0/1 in any integer or float dtype).
        validate: check that the mask is binary (a host sync); turn off in hot loops.

    Returns:
        bool tensor of the mask's shape, True on edge pixels.

    Raises:
        TypeError, ValueError: the mask is not a tensor, has the wrong shape, is empty or not binary.

    Example:
        >>> m = torch.zeros(8, 8, dtype=torch.bool); m[2:6, 2:6] = True
        >>> int(canny(m).sum())
        12
    """
    m, restore = as_b1hw(mask, "mask")
    check_mask(m, "mask", validate)
    return restore(_canny_b1hw(m.float()))


def _canny_b1hw(m: torch.Tensor) -> torch.Tensor:
    H, W = m.shape[-2:]
    dx, dy = _sobel(m)
    ax, ay = dx.abs(), dy.abs()
    mag = ax + ay
    mp = F.pad(mag, (1, 1, 1, 1))

    def at(oy: int, ox: int) -> torch.Tensor:
        return mp[..., 1 + oy : 1 + oy + H, 1 + ox : 1 + ox + W]

    y_scaled = ay * CANNY_SHIFT_SCALE
    tg22x = ax * CANNY_TG22
    tg67x = tg22x + ax * (2.0 * CANNY_SHIFT_SCALE)
    horizontal = y_scaled < tg22x
    vertical = ~horizontal & (y_scaled > tg67x)
    keep_h = (mag > at(0, -1)) & (mag >= at(0, 1))
    keep_v = (mag > at(-1, 0)) & (mag >= at(1, 0))
    opposite_signs = (dx < 0) != (dy < 0)
    keep_d = torch.where(
        opposite_signs,
        (mag > at(-1, 1)) & (mag > at(1, -1)),
        (mag > at(-1, -1)) & (mag > at(1, 1)),
    )
    keep = torch.where(horizontal, keep_h, torch.where(vertical, keep_v, keep_d))
    return (mag > 0) & keep


# ------------------------------------------------------------------------------------------- blur and boundary
def boundary_band(mask: torch.Tensor, radius: int = 1, validate: bool = True) -> torch.Tensor:
    """Canny edge of ``mask`` dilated by a ``(2*radius+1)`` square: the BcD band. bool, the mask's shape."""
    m, restore = as_b1hw(mask, "mask")
    check_mask(m, "mask", validate)
    check_int(radius, "radius", 0)
    return restore(_band_b1hw(_canny_b1hw(m.float()), radius))


def _band_b1hw(edge: torch.Tensor, radius: int) -> torch.Tensor:
    if radius == 0:
        return edge
    return F.max_pool2d(edge.float(), 2 * radius + 1, stride=1, padding=radius) > 0


def gaussian_weights(sigma: float, truncate: float = 3.0, device: torch.device | str | None = None) -> torch.Tensor:
    """Normalised 1-D Gaussian taps, radius ``ceil(truncate * sigma)``; ``sigma == 0`` gives the identity ``[1]``.

    Returns:
        float32 tensor ``[2*radius+1]`` (computed in float64 and rounded once, so every backend uses the same taps).
    """
    sigma = check_number(sigma, "sigma", minimum=0)
    truncate = check_number(truncate, "truncate", minimum=0)
    if sigma == 0.0:
        return torch.ones(1, dtype=torch.float32, device=device)
    radius = max(1, int(math.ceil(truncate * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (x / sigma) ** 2)
    return (w / w.sum()).to(dtype=torch.float32, device=device)


def gaussian_blur(image: torch.Tensor, sigma: float, truncate: float = 3.0) -> torch.Tensor:
    """Separable Gaussian blur of a float ``[B,1,H,W]`` tensor with replicated borders (rows first, then columns)."""
    w = gaussian_weights(sigma, truncate, image.device)
    r = (w.numel() - 1) // 2
    if r == 0:
        return image.float()
    x = F.pad(image.float(), (r, r, 0, 0), mode="replicate")
    x = F.conv2d(x, w.view(1, 1, 1, -1))
    x = F.pad(x, (0, 0, r, r), mode="replicate")
    return F.conv2d(x, w.view(1, 1, -1, 1))


def random_normal(like: torch.Tensor, generator: torch.Generator | None, seed: int | None, offset: int) -> torch.Tensor:
    """Standard normal float32 noise shaped like ``like`` from ``generator``, or from ``seed``/``offset``.

    The reference draws with torch's generator; the Triton path draws in-kernel Philox from the same ``seed``/
    ``offset``. Both are standard normal and deterministic, but their bits differ.
    """
    if generator is None:
        generator = _seeded_generator(like.device, seed, offset)
    return torch.randn(like.shape, generator=generator, device=like.device, dtype=torch.float32)


def _mix64(x: int) -> int:
    """splitmix64 finaliser: a bijective 64-bit hash."""
    x &= 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def _seeded_generator(device: torch.device, seed: int | None, offset: int, stream: int = 0) -> torch.Generator | None:
    """A generator seeded by a hash of (seed, stream, offset): distinct triples never share a seed in practice."""
    if seed is None:
        return None
    g = torch.Generator(device=device)
    g.manual_seed(_mix64(_mix64(_mix64(seed) ^ stream) ^ offset) % (2**63))
    return g


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
) -> torch.Tensor:
    """BcD: blur the mask around its boundary and add Gaussian noise there.

    ``band = dilate(canny(mask), radius)`` (square element); inside the band the output is
    ``gaussian_blur(mask, sigma) + strength * noise``; outside it is ``base`` (default: the mask itself).

    Args:
        mask: ``[H,W]``, ``[B,H,W]`` or ``[B,1,H,W]`` binary mask.
        sigma: Gaussian width in pixels (>= 0; 0 = no blur). Taps: ``gaussian_weights(sigma, truncate)``.
        strength: standard deviation of the added noise (>= 0), in mask units.
        radius: band half-width in pixels (>= 0; 0 = the edge pixels only).
        noise: optional standard-normal tensor of the mask's shape (exact tests); else drawn from ``generator`` or
            ``seed``/``offset`` (or torch's global generator).
        base: optional floating tensor of the mask's shape returned outside the band (e.g. the ScD output).
        truncate: Gaussian support in units of ``sigma`` (finite, >= 0).
        validate: check that the mask is binary and ``noise`` / ``base`` are finite (host sync); a non-finite
            ``sigma``, ``strength`` or ``truncate`` is refused either way.

    Returns:
        Floating tensor of the mask's shape (the mask's dtype if floating, else float32).
    """
    m, restore, sigma, strength, noise_v, base_v, out_dtype = prepare_boundary_blur(
        mask, sigma, strength, radius, noise, base, generator, seed, offset, validate, truncate
    )
    mf = m.float()
    band = _band_b1hw(_canny_b1hw(mf), radius)
    if noise_v is None:
        noise_v = random_normal(mf, generator, seed, offset)
    inside = (gaussian_blur(mf, sigma, truncate) + strength * noise_v.float()).to(out_dtype)
    outside = mf.to(out_dtype) if base_v is None else base_v
    return restore(torch.where(band, inside, outside))


# ------------------------------------------------------------------------------------------------- target noise
def anchor_mask(
    shape: tuple[int, int, int, int],
    anchor_size: int,
    keep_ratio: float,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random anchor patches: the image is tiled by ``anchor_size`` squares, each kept with probability ``keep_ratio``.

    Returns:
        bool tensor ``shape`` (``[B,1,H,W]``), True on anchor pixels.
    """
    B, _, H, W = shape
    hc, wc = -(-H // anchor_size), -(-W // anchor_size)
    cells = torch.rand((B, 1, hc, wc), generator=generator, device=device) < keep_ratio
    full = cells.repeat_interleave(anchor_size, dim=2).repeat_interleave(anchor_size, dim=3)
    return full[..., :H, :W]


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
) -> torch.Tensor:
    """ScD: Gaussian noise inside the target, except on unaltered anchor patches.

    ``out = mask + strength * noise`` on ``target & ~anchors``; ``mask`` elsewhere (background and anchors are
    returned bit-identical).

    Args:
        mask: ``[H,W]``, ``[B,H,W]`` or ``[B,1,H,W]`` binary mask; the target is ``mask == 1``.
        strength: standard deviation of the noise (>= 0), in mask units.
        anchor_size: side of the square anchor cells (>= 1).
        keep_ratio: probability that a cell is an anchor, in [0, 1].
        noise: optional standard-normal floating tensor of the mask's shape (exact tests).
        anchors: optional bool tensor of the mask's shape, True where pixels are anchors (exact tests); else drawn
            with ``anchor_mask`` from ``generator`` or ``seed``/``offset``.
        validate: check that the mask is binary and ``noise`` is finite (host sync); a non-finite ``strength`` or
            ``keep_ratio`` is refused either way.

    Returns:
        Floating tensor of the mask's shape (the mask's dtype if floating, else float32).
    """
    m, restore, strength, keep_ratio, noise_v, anchors_v, out_dtype = prepare_target_noise(
        mask, strength, anchor_size, keep_ratio, noise, anchors, generator, seed, offset, validate
    )
    mf = m.float()
    if anchors_v is None:
        gen = generator if generator is not None else _seeded_generator(m.device, seed, offset, stream=1)
        anchors_v = anchor_mask(tuple(m.shape), anchor_size, keep_ratio, m.device, gen)
    if noise_v is None:
        noise_v = random_normal(mf, generator, seed, offset)
    noisy = (mf > 0.5) & ~anchors_v
    return restore(torch.where(noisy, mf + strength * noise_v.float(), mf).to(out_dtype))


# --------------------------------------------------------------------------------------------------------- DDIM
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
) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM update, equal to diffusers' ``DDIMScheduler.step`` (``use_clipped_model_output=False``).

    Stages, with equation numbers of Song et al., "Denoising Diffusion Implicit Models" (ICLR 2021,
    arXiv:2010.02502), writing ``a`` for the cumulative product of alphas:

    1. ``a_t``, ``a_prev`` and ``beta_t = 1 - a_t`` (the caller looks up the previous timestep).
    2. Predicted ``x_0`` and ``eps``: Eq. (12)'s "predicted x_0", ``(x_t - sqrt(1 - a_t) * eps) / sqrt(a_t)``, or
       its inversions for ``sample`` and ``v_prediction`` (Salimans & Ho 2022, v = sqrt(a) eps - sqrt(1 - a) x_0).
    3. Optional clipping of ``x_0`` to ``[-r, r]``.
    4. ``sigma_t(eta) = eta * sqrt((1 - a_prev) / (1 - a_t)) * sqrt(1 - a_t / a_prev)``, Eq. (16).
    5. The "direction pointing to x_t", ``sqrt(1 - a_prev - sigma_t**2) * eps``, Eq. (12).
    6. ``x_{t-1} = sqrt(a_prev) * x_0 + direction``, Eq. (12) without its random term.
    7. ``+ sigma_t * noise``, Eq. (12)'s random term, when ``eta > 0``.

    Args:
        sample: ``x_t``, any floating tensor with a leading batch dimension (``[B,C,H,W]`` typically).
        model_output: the network's prediction, same shape as ``sample``.
        alpha_prod_t, alpha_prod_t_prev: cumulative alphas in (0, 1] as floats, ``[B]`` tensors (one per row, rows
            may sit at different timesteps) or tensors broadcastable to ``sample``.
        eta: DDIM stochasticity in [0, 1] (0 = deterministic DDIM, 1 = DDPM-like variance).
        noise: standard-normal tensor of ``sample``'s shape used when ``eta > 0`` (diffusers' ``variance_noise``);
            else drawn from ``generator`` or ``seed``/``offset``.
        clip_sample_range: clamp the predicted ``x0`` to ``[-r, r]`` (None: no clipping).
        prediction_type: ``"epsilon"``, ``"sample"`` or ``"v_prediction"``.
        validate: check that tensor alphas lie in (0, 1] (host sync).

    Returns:
        ``(prev_sample, pred_original_sample)``, both of ``sample``'s shape and dtype.

    Raises:
        TypeError, ValueError: bad shapes, dtypes or devices, alphas outside (0, 1], ``eta`` outside [0, 1] or NaN,
            an input that requires grad.

    Example:
        >>> x, eps = torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)
        >>> prev, x0 = ddim_step(x, eps, 0.25, 1.0)
        >>> float(x0[0, 0, 0, 0]), float(prev[0, 0, 0, 0])
        (2.0, 2.0)
    """
    check_ddim_args(sample, model_output, eta, noise, clip_sample_range, prediction_type)
    check_alpha_order(alpha_prod_t, alpha_prod_t_prev, validate)
    check_random_source(generator, seed, offset)
    # 1. alphas (float32, broadcastable per sample)
    a_t = check_alpha(alpha_prod_t, "alpha_prod_t", sample, validate)
    a_prev = check_alpha(alpha_prod_t_prev, "alpha_prod_t_prev", sample, validate)
    beta_t = 1 - a_t
    x = sample.float()
    out = model_output.float()
    # 2. predicted x_0 and eps, Eq. (12)
    if prediction_type == "epsilon":
        x0 = (x - beta_t**0.5 * out) / a_t**0.5
        eps = out
    elif prediction_type == "sample":
        x0 = out
        eps = (x - a_t**0.5 * x0) / beta_t**0.5
    else:
        x0 = a_t**0.5 * x - beta_t**0.5 * out
        eps = a_t**0.5 * out + beta_t**0.5 * x
    # 3. clipping
    if clip_sample_range is not None:
        x0 = x0.clamp(-clip_sample_range, clip_sample_range)
    # 4. sigma_t(eta), Eq. (16); at alpha_prod_t == 1 diffusers divides 0 by 0, where spadfast uses variance 0.
    variance = torch.where(beta_t > 0, (1 - a_prev) / beta_t.clamp_min(1e-30) * (1 - a_t / a_prev), 0.0)
    std = eta * variance**0.5
    # 5. direction pointing to x_t, Eq. (12)
    direction = (1 - a_prev - std**2) ** 0.5 * eps
    # 6. x_{t-1} without the random term, Eq. (12)
    prev = a_prev**0.5 * x0 + direction
    # 7. the random term sigma_t * noise
    if eta > 0:
        if noise is None:
            noise = random_normal(x, generator, seed, offset)
        prev = prev + std * noise.float()
    return prev.to(sample.dtype), x0.to(sample.dtype)
