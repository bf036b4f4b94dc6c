"""Argument checks shared by the reference ops, the Triton launchers and the public API.

Messages follow the form "`<arg>` must be ..., got ...". Shape checks are free (no host sync); data-dependent checks
(binary values, NaN) read the tensor and can be turned off with ``validate=False`` in hot loops.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

from .constants import PREDICTION_TYPES

LayoutRestore = Callable[[torch.Tensor], torch.Tensor]

# Largest BcD band radius: the Triton kernel keeps O(radius) rows of stencil state per element in registers and stays
# spill-free up to here on sm_80/sm_90/sm_100 (benchmarks/RESULTS.md, static table). Every backend enforces it.
MAX_BAND_RADIUS = 6


def check_tensor(x: object, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(x).__name__}")
    return x


def as_b1hw(x: torch.Tensor, name: str) -> tuple[torch.Tensor, LayoutRestore]:
    """View ``[H,W]``, ``[B,H,W]`` or ``[B,1,H,W]`` as ``[B,1,H,W]`` (no copy) and return the inverse view."""
    check_tensor(x, name)
    shape = tuple(x.shape)
    if x.dim() == 2:
        view = x.unsqueeze(0).unsqueeze(0)

        def restore(y: torch.Tensor) -> torch.Tensor:
            return y[0, 0]
    elif x.dim() == 3:
        view = x.unsqueeze(1)

        def restore(y: torch.Tensor) -> torch.Tensor:
            return y[:, 0]
    elif x.dim() == 4:
        if x.shape[1] != 1:
            raise ValueError(f"`{name}` must have exactly one channel ([B,1,H,W]), got shape {shape}")
        view = x

        def restore(y: torch.Tensor) -> torch.Tensor:
            return y
    else:
        raise ValueError(f"`{name}` must have shape [H,W], [B,H,W] or [B,1,H,W], got shape {shape}")
    if view.shape[0] == 0:
        raise ValueError(f"`{name}` must hold at least one image, got an empty batch (shape {shape})")
    if view.shape[2] == 0 or view.shape[3] == 0:
        raise ValueError(f"`{name}` must have H >= 1 and W >= 1, got shape {shape}")
    return view, restore


def check_mask(mask: torch.Tensor, name: str = "mask", validate: bool = True) -> None:
    """A mask is bool, or holds only 0 and 1 in an integer or floating dtype."""
    if mask.dtype.is_complex:
        raise TypeError(f"`{name}` must be bool, integer or floating, got {mask.dtype}")
    if mask.requires_grad:
        raise ValueError(f"`{name}` must not require grad: SPAD ops act on labels and are not differentiable")
    if not validate or mask.dtype == torch.bool:
        return
    if mask.is_floating_point() and bool(torch.isnan(mask).any()):
        raise ValueError(f"`{name}` must not contain NaN")
    if not bool(((mask == 0) | (mask == 1)).all()):
        bad = mask[(mask != 0) & (mask != 1)].flatten()[:3].tolist()
        raise ValueError(f"`{name}` must be binary (bool or values in {{0, 1}}), got values such as {bad}")


def check_like(x: torch.Tensor | None, ref: torch.Tensor, name: str, ref_name: str, floating: bool) -> None:
    """``x`` (optional) must have ``ref``'s shape and device; floating dtype or bool as asked."""
    if x is None:
        return
    check_tensor(x, name)
    if tuple(x.shape) != tuple(ref.shape):
        raise ValueError(f"`{name}` must have the shape of `{ref_name}` {tuple(ref.shape)}, got {tuple(x.shape)}")
    if x.device != ref.device:
        raise ValueError(f"`{name}` must be on {ref.device} like `{ref_name}`, got {x.device}")
    if x.requires_grad:
        raise ValueError(f"`{name}` must not require grad: SPAD ops act on labels and are not differentiable")
    if floating and not x.is_floating_point():
        raise TypeError(f"`{name}` must be a floating tensor, got {x.dtype}")
    if not floating and x.dtype != torch.bool:
        raise TypeError(f"`{name}` must be a bool tensor, got {x.dtype}")


def check_finite(x: torch.Tensor | None, name: str) -> None:
    """A floating operand holds no NaN or +-inf; a host sync, so callers run it only with ``validate=True``."""
    if x is None or not x.is_floating_point():
        return
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        bad = x[~finite].flatten()[:3].tolist()
        raise ValueError(f"`{name}` must be finite (no NaN or inf), got values such as {bad}")


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type. It is also a ValueError: a bool or a float where an int belongs is a wrong
    value too, and callers that catch either class get it."""


def is_int(value: object) -> bool:
    """A Python or numpy integer; bools (Python and numpy) are not."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """A Python or numpy integer or float (NaN and inf included); bools are not."""
    return is_int(value) or isinstance(value, (float, np.floating))


def _bounds_text(minimum=None, maximum=None, above=None, below=None) -> str:
    """" >= 1", " < 1", " in (0, 1]", ... for inclusive (minimum, maximum) and exclusive (above, below) bounds."""
    low = (f"[{minimum}", f">= {minimum}") if minimum is not None else None
    low = (f"({above}", f"> {above}") if above is not None else low
    high = (f"{maximum}]", f"<= {maximum}") if maximum is not None else None
    high = (f"{below})", f"< {below}") if below is not None else high
    if low and high:
        return f" in {low[0]}, {high[0]}"
    bound = low or high
    return f" {bound[1]}" if bound else ""


def check_int(value: object, name: str, minimum: int | None = None, maximum: int | None = None, *,
              optional: bool = False, expected: str | None = None) -> int | None:
    """``value`` as a Python int in ``[minimum, maximum]`` (None when ``optional``); numpy integers accepted.

    Raises ArgumentTypeError (a TypeError and a ValueError) for a non-integer or a bool, ValueError out of range;
    the message names ``name`` and states ``expected`` (default: "an int" and the bounds, "or None" if optional).
    """
    if value is None and optional:
        return None
    ok_type = is_int(value)
    if ok_type and (minimum is None or value >= minimum) and (maximum is None or value <= maximum):
        return int(value)  # type: ignore[arg-type]
    expected = expected or "an int" + _bounds_text(minimum, maximum) + (" or None" if optional else "")
    error = ValueError if ok_type else ArgumentTypeError
    raise error(f"`{name}` must be {expected}, got {value!r}")


def check_number(value: object, name: str, minimum: float | None = None, maximum: float | None = None, *,
                 above: float | None = None, below: float | None = None, finite: bool = True,
                 optional: bool = False, expected: str | None = None) -> float | None:
    """``value`` as a Python float within the bounds (inclusive ``minimum``/``maximum``, exclusive
    ``above``/``below``), never NaN, finite unless ``finite=False`` (None when ``optional``).

    Ints and numpy scalars are accepted, bools are not. Raises ArgumentTypeError (a TypeError and a ValueError) for
    a non-number, ValueError for NaN, inf or out of range; the message names ``name`` and states ``expected``.
    """
    if value is None and optional:
        return None
    ok_type = is_number(value)
    if ok_type:
        v = float(value)  # type: ignore[arg-type]
        in_range = ((minimum is None or v >= minimum) and (maximum is None or v <= maximum)
                    and (above is None or v > above) and (below is None or v < below))
        if in_range and not math.isnan(v) and (math.isfinite(v) or not finite):
            return v
    bounded = (minimum is not None or above is not None) and (maximum is not None or below is not None)
    kind = "a finite number" if finite and not bounded else "a number"
    expected = expected or kind + _bounds_text(minimum, maximum, above, below) + (" or None" if optional else "")
    error = ValueError if ok_type else ArgumentTypeError
    raise error(f"`{name}` must be {expected}, got {value!r}")


def check_axis(axis: object) -> int | None:
    """None, or a volume axis 0, 1 or 2 (-3..-1 count from the end) returned in ``0..2``."""
    axis = check_int(axis, "axis", -3, 2, optional=True, expected="None, 0, 1 or 2")
    return None if axis is None else axis % 3


def check_images(images: object, channels: int | None = None, unbatched: bool = False) -> tuple[torch.Tensor, bool]:
    """Images to segment: a floating tensor ``[B,C,H,W]`` (or ``[C,H,W]`` with ``unbatched``), B >= 1, ``C ==
    channels`` when given, every value finite (a host sync). Public entry points run this once per call.

    Returns the ``[B,C,H,W]`` view and whether the input was a single ``[C,H,W]`` image.
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"`images` must be a torch.Tensor, got {type(images).__name__}")
    single = unbatched and images.dim() == 3
    batch = images.unsqueeze(0) if single else images
    if batch.dim() != 4 or batch.shape[0] == 0:
        layouts = "[B,C,H,W] or [C,H,W]" if unbatched else "[B,C,H,W]"
        raise ValueError(f"`images` must have shape {layouts} with B >= 1, got {tuple(images.shape)}")
    if channels is not None and batch.shape[1] != channels:
        raise ValueError(f"`images` must have {channels} channel(s) (config.image_channels, times 2 context_slices "
                         "+ 1 for a 2.5-D model), "
                         f"got shape {tuple(images.shape)}")
    if not batch.is_floating_point():
        raise TypeError(f"`images` must be a floating tensor in [-1, 1], got {batch.dtype}")
    if not bool(torch.isfinite(batch).all()):
        raise ValueError("`images` must be finite (no NaN or inf)")
    return batch, single


def check_random_source(generator, seed, offset) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"`generator` must be a torch.Generator, got {type(generator).__name__}")
    if seed is not None:
        check_int(seed, "seed", 0)
    check_int(offset, "offset", 0)


def draw_seed(generator: torch.Generator | None) -> int:
    """A Philox seed in ``[0, 2**31 - 1)`` from ``generator`` (or torch's global CPU generator); a host read."""
    device = generator.device if generator is not None else "cpu"
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=device))


def _operand_like(
    x: torch.Tensor | None, name: str, mask: torch.Tensor, floating: bool, validate: bool
) -> torch.Tensor | None:
    """An optional per-pixel operand as a ``[B,1,H,W]`` view, checked against the mask's view (values: finite, with
    ``validate``)."""
    if x is None:
        return None
    view = as_b1hw(x, name)[0]
    check_like(view, mask, name, "mask", floating)
    if validate:
        check_finite(view, name)
    return view


class BoundaryBlurArgs(NamedTuple):
    mask: torch.Tensor  # [B,1,H,W] view of the input
    restore: LayoutRestore
    sigma: float
    strength: float
    noise: torch.Tensor | None  # [B,1,H,W] views
    base: torch.Tensor | None
    out_dtype: torch.dtype


def prepare_boundary_blur(mask, sigma, strength, radius, noise, base, generator, seed, offset, validate,
                          truncate: float = 3.0):
    """Validate ``boundary_blur``'s arguments (shared by the reference and the Triton launcher)."""
    m, restore = as_b1hw(mask, "mask")
    check_mask(m, "mask", validate)
    sigma = check_number(sigma, "sigma", minimum=0)
    strength = check_number(strength, "strength", minimum=0)
    check_number(truncate, "truncate", minimum=0)
    check_int(radius, "radius", 0)
    if radius > MAX_BAND_RADIUS:
        raise ValueError(f"`radius` must be <= {MAX_BAND_RADIUS} (the Triton kernel's register budget), got {radius}")
    check_random_source(generator, seed, offset)
    noise_v = _operand_like(noise, "noise", m, floating=True, validate=validate)
    base_v = _operand_like(base, "base", m, floating=True, validate=validate)
    out_dtype = base_v.dtype if base_v is not None else float_out_dtype(m)
    return BoundaryBlurArgs(m, restore, sigma, strength, noise_v, base_v, out_dtype)


class TargetNoiseArgs(NamedTuple):
    mask: torch.Tensor
    restore: LayoutRestore
    strength: float
    keep_ratio: float
    noise: torch.Tensor | None
    anchors: torch.Tensor | None
    out_dtype: torch.dtype


def prepare_target_noise(mask, strength, anchor_size, keep_ratio, noise, anchors, generator, seed, offset, validate):
    """Validate ``target_noise``'s arguments (shared by the reference and the Triton launcher)."""
    m, restore = as_b1hw(mask, "mask")
    check_mask(m, "mask", validate)
    strength = check_number(strength, "strength", minimum=0)
    check_int(anchor_size, "anchor_size", 1)
    keep_ratio = check_number(keep_ratio, "keep_ratio", minimum=0)
    if keep_ratio > 1:
        raise ValueError(f"`keep_ratio` must be in [0, 1], got {keep_ratio}")
    check_random_source(generator, seed, offset)
    noise_v = _operand_like(noise, "noise", m, floating=True, validate=validate)
    anchors_v = _operand_like(anchors, "anchors", m, floating=False, validate=validate)
    return TargetNoiseArgs(m, restore, strength, keep_ratio, noise_v, anchors_v, float_out_dtype(m))


def float_out_dtype(x: torch.Tensor) -> torch.dtype:
    """Floating inputs keep their dtype; bool and integer masks produce float32."""
    return x.dtype if x.is_floating_point() else torch.float32


def check_alpha(value, name: str, ref: torch.Tensor, validate: bool) -> torch.Tensor:
    """A float or a tensor broadcastable per sample -> float32 tensor broadcastable against ``ref``."""
    if isinstance(value, torch.Tensor):
        if value.requires_grad:
            raise ValueError(f"`{name}` must not require grad: ddim_step is a sampling op and not differentiable")
        a = value.to(device=ref.device, dtype=torch.float32)
        if a.dim() == 1 and a.numel() == ref.shape[0] and ref.dim() > 1:
            a = a.view(-1, *([1] * (ref.dim() - 1)))
        try:
            torch.broadcast_shapes(a.shape, ref.shape)
        except RuntimeError:
            raise ValueError(
                f"`{name}` must be a float, a [B] tensor or broadcastable to `sample` {tuple(ref.shape)}, "
                f"got shape {tuple(value.shape)}"
            ) from None
        if validate and not bool(((a > 0) & (a <= 1)).all()):
            raise ValueError(f"`{name}` must lie in (0, 1], got values in [{a.min().item()}, {a.max().item()}]")
        return a
    alpha = check_number(value, name, above=0, maximum=1, expected="a float in (0, 1] or a tensor")
    return torch.tensor(alpha, dtype=torch.float32, device=ref.device)


def check_ddim_args(sample, model_output, eta, noise, clip_sample_range, prediction_type) -> None:
    """Shape, dtype, device and value checks of ``ddim_step`` shared by every backend (no host sync)."""
    check_tensor(sample, "sample")
    check_tensor(model_output, "model_output")
    if not sample.is_floating_point():
        raise TypeError(f"`sample` must be a floating tensor, got {sample.dtype}")
    if not model_output.is_floating_point():
        raise TypeError(f"`model_output` must be a floating tensor, got {model_output.dtype}")
    if sample.dim() == 0 or sample.numel() == 0:
        raise ValueError(f"`sample` must be a non-empty tensor with a batch dimension, got shape {tuple(sample.shape)}")
    if model_output.shape != sample.shape:
        raise ValueError(
            f"`model_output` must have the shape of `sample` {tuple(sample.shape)}, got {tuple(model_output.shape)}"
        )
    if model_output.device != sample.device:
        raise ValueError(f"`model_output` must be on {sample.device} like `sample`, got {model_output.device}")
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"`prediction_type` must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
    check_number(eta, "eta", 0, 1)
    check_number(clip_sample_range, "clip_sample_range", above=0, finite=False, optional=True)
    if noise is not None:
        check_tensor(noise, "noise")
        if noise.shape != sample.shape:
            raise ValueError(f"`noise` must have the shape of `sample` {tuple(sample.shape)}, got {tuple(noise.shape)}")
        if not noise.is_floating_point():
            raise TypeError(f"`noise` must be a floating tensor, got {noise.dtype}")
        if noise.device != sample.device:
            raise ValueError(f"`noise` must be on {sample.device} like `sample`, got {noise.device}")
    for name, t in (("sample", sample), ("model_output", model_output), ("noise", noise)):
        if t is None:
            continue
        if t.requires_grad:
            raise ValueError(f"`{name}` must not require grad: ddim_step is a sampling op and not differentiable")


def check_alpha_order(alpha_prod_t, alpha_prod_t_prev, validate: bool = True) -> None:
    """A DDIM step moves towards the data: ``alpha_prod_t_prev >= alpha_prod_t`` (reversed alphas would add noise).

    Floats are always checked; tensors only with ``validate`` (a host sync)."""
    def kind(v):
        if isinstance(v, torch.Tensor):
            return "tensor"
        return "number" if is_number(v) else None

    kinds = (kind(alpha_prod_t), kind(alpha_prod_t_prev))
    if None in kinds:
        return  # a wrong type: check_alpha names it
    if kinds == ("number", "number"):
        bad = float(alpha_prod_t_prev) < float(alpha_prod_t)
    elif validate:
        a_t = torch.as_tensor(alpha_prod_t, dtype=torch.float32)
        a_prev = torch.as_tensor(alpha_prod_t_prev, dtype=torch.float32, device=a_t.device)
        bad = bool((a_prev.to(a_t.device) < a_t).any())
    else:
        return
    if bad:
        raise ValueError("`alpha_prod_t_prev` must be >= `alpha_prod_t` (a DDIM step goes from t to an earlier, less "
                         "noisy step): the alphas look swapped")


def as_numpy(x: object, name: str) -> np.ndarray:
    """A torch tensor (any device; bf16 widened to float32) or numpy array as numpy; TypeError naming ``name``."""
    if isinstance(x, torch.Tensor):
        if x.is_complex():
            raise TypeError(f"`{name}` must be bool, integer or floating, got {x.dtype}")
        return x.detach().cpu().numpy() if x.dtype != torch.bfloat16 else x.detach().float().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    raise TypeError(f"`{name}` must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def binary_array(x: object, name: str, nd: int = 2) -> np.ndarray:
    """The one binary-mask check for torch and numpy inputs: bool or 0/1 values of any real dtype, no NaN.

    Returns a bool array ``[B,H,W]`` (``nd == 2``; from ``[H,W]``, ``[B,H,W]`` or ``[B,1,H,W]``) or ``[B,D,H,W]``
    (``nd == 3``); errors name ``name``.
    """
    a = as_numpy(x, name)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"`{name}` must be bool, integer or floating, got dtype {a.dtype}")
    shape = tuple(a.shape)
    if a.ndim == nd:
        a = a[None]
    elif a.ndim == nd + 2:
        if a.shape[1] != 1:
            layout = "[B,1,H,W]" if nd == 2 else "[B,1,D,H,W]"
            raise ValueError(f"`{name}` must have exactly one channel ({layout}), got shape {shape}")
        a = a[:, 0]
    elif a.ndim != nd + 1:
        layouts = "[H,W], [B,H,W] or [B,1,H,W]" if nd == 2 else "[D,H,W], [B,D,H,W] or [B,1,D,H,W] (3-D spacing)"
        raise ValueError(f"`{name}` must have shape {layouts}, got shape {shape}")
    if a.shape[0] == 0:
        raise ValueError(f"`{name}` must hold at least one image, got an empty batch (shape {shape})")
    if any(n == 0 for n in a.shape[1:]):
        sides = "H >= 1 and W >= 1" if nd == 2 else "D, H, W >= 1"
        raise ValueError(f"`{name}` must have {sides}, got shape {shape}")
    if a.dtype == np.bool_:
        return a
    if a.dtype.kind == "f" and np.isnan(a).any():
        raise ValueError(f"`{name}` must not contain NaN")
    bad = (a != 0) & (a != 1)
    if bad.any():
        sample = a[bad][:3].tolist()
        raise ValueError(f"`{name}` must be binary (bool or values in {{0, 1}}), got values such as {sample}")
    return a != 0
