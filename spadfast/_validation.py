"""Argument checks shared by the reference ops, the Triton launchers and the public API.

Messages follow the form "`<arg>` must be ..., got ...". Shape checks are free (no host sync); data-dependent checks
(binary values, NaN) read the tensor and can be turned off with ``validate=False`` in hot loops.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

from ._constants import PREDICTION_TYPES

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


def check_nonneg(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"`{name}` must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"`{name}` must be a finite number >= 0, got {value}")
    return float(value)


def check_finite(x: torch.Tensor | None, name: str) -> None:
    """A floating operand holds no NaN or +-inf; a host sync, so callers run it only with ``validate=True``."""
    if x is None or not x.is_floating_point():
        return
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        bad = x[~finite].flatten()[:3].tolist()
        raise ValueError(f"`{name}` must be finite (no NaN or inf), got values such as {bad}")


def check_int(value: int, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}")
    return value


def check_random_source(noise, generator, seed, offset) -> None:
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
    sigma = check_nonneg(sigma, "sigma")
    strength = check_nonneg(strength, "strength")
    check_nonneg(truncate, "truncate")
    check_int(radius, "radius", 0)
    if radius > MAX_BAND_RADIUS:
        raise ValueError(f"`radius` must be <= {MAX_BAND_RADIUS} (the Triton kernel's register budget), got {radius}")
    check_random_source(noise, generator, seed, offset)
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
    strength = check_nonneg(strength, "strength")
    check_int(anchor_size, "anchor_size", 1)
    keep_ratio = check_nonneg(keep_ratio, "keep_ratio")
    if keep_ratio > 1:
        raise ValueError(f"`keep_ratio` must be in [0, 1], got {keep_ratio}")
    check_random_source(noise, generator, seed, offset)
    noise_v = _operand_like(noise, "noise", m, floating=True, validate=validate)
    anchors_v = _operand_like(anchors, "anchors", m, floating=False, validate=validate)
    return TargetNoiseArgs(m, restore, strength, keep_ratio, noise_v, anchors_v, float_out_dtype(m))


def float_out_dtype(x: torch.Tensor) -> torch.dtype:
    """Floating inputs keep their dtype; bool and integer masks produce float32."""
    return x.dtype if x.is_floating_point() else torch.float32


def check_alpha(value, name: str, ref: torch.Tensor, validate: bool) -> torch.Tensor:
    """A float or a tensor broadcastable per sample -> float32 tensor broadcastable against ``ref``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, torch.Tensor)):
        raise TypeError(f"`{name}` must be a float or a tensor, got {type(value).__name__}")
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
    if not (0.0 < float(value) <= 1.0):
        raise ValueError(f"`{name}` must lie in (0, 1], got {value}")
    return torch.tensor(float(value), dtype=torch.float32, device=ref.device)


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
    if isinstance(eta, bool) or not isinstance(eta, (int, float)):
        raise TypeError(f"`eta` must be a number in [0, 1], got {type(eta).__name__}")
    if not 0.0 <= eta <= 1.0:  # NaN fails both comparisons
        raise ValueError(f"`eta` must lie in [0, 1], got {eta!r}")
    if clip_sample_range is not None:
        if isinstance(clip_sample_range, bool) or not isinstance(clip_sample_range, (int, float)):
            raise TypeError(f"`clip_sample_range` must be a number or None, got {type(clip_sample_range).__name__}")
        if not clip_sample_range > 0:
            raise ValueError(f"`clip_sample_range` must be > 0, got {clip_sample_range}")
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
        return "number" if isinstance(v, (int, float)) and not isinstance(v, bool) else None

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


def check_fields(obj, nullable: frozenset[str] | set[str] = frozenset()) -> None:
    """Dataclass fields keep the type of their default (ints accepted for floats, YAML's "1e-3" strings read as
    floats, tuples of ints/floats/strings by annotation); ``nullable`` fields may be None. Errors name the field."""
    for f in dataclasses.fields(obj):
        if f.default is dataclasses.MISSING:
            continue
        value, default = getattr(obj, f.name), f.default
        if value is None and f.name in nullable:
            continue
        if default is None and str(f.type).startswith("int"):
            ok = value is None or (isinstance(value, int) and not isinstance(value, bool))
            kind = "an int or null"
        elif default is None:
            ok = value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)
                                   and math.isfinite(value))
            kind = "a finite number or null"
        elif isinstance(default, bool):
            ok, kind = isinstance(value, bool), "a bool"
        elif isinstance(default, int):
            ok, kind = isinstance(value, int) and not isinstance(value, bool), "an int"
        elif isinstance(default, float):
            if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
                try:
                    value = float(value)
                except ValueError:
                    pass
            ok, kind = isinstance(value, (int, float)) and not isinstance(value, bool), "a finite number"
            ok = ok and math.isfinite(value)
            if ok:
                setattr(obj, f.name, float(value))
        elif isinstance(default, str):
            ok, kind = isinstance(value, str), "a string"
        elif isinstance(default, tuple) and "str" in str(f.type):
            ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
            kind = "a list of strings"
        elif isinstance(default, tuple) and "float" in str(f.type):
            ok = isinstance(value, (list, tuple)) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
            kind = "a list of finite numbers"
        elif isinstance(default, tuple):
            ok = isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            kind = "a list of ints"
        else:
            continue
        if not ok:
            raise TypeError(f"`{f.name}` must be {kind}, got {value!r}")


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
