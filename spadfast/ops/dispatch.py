"""Public SPAD ops with backend dispatch.

Each op has the signature of its reference in :mod:`spadfast.ops.reference` plus ``backend``:
``"auto"`` (Triton for CUDA tensors when Triton imports, the reference otherwise), ``"reference"`` or ``"triton"``
(on CPU tensors only under ``TRITON_INTERPRET=1``). The Triton launchers live in :mod:`spadfast.kernels`; the op
table :data:`spadfast.ops.op_table.OPS` maps each op to both.

Safe degradation: with ``backend="auto"``, a Triton kernel that fails to compile or launch warns once (naming the
op, the variant and the error) and the op runs its reference for the rest of the process; ``backend="triton"``
raises :class:`spadfast.kernels.utils.KernelLaunchError`.
"""

from __future__ import annotations

import functools
import importlib
import os
import warnings

import torch

from . import reference
from .constants import BACKENDS
from .op_table import OPS

__all__ = ["canny", "boundary_blur", "target_noise", "ddim_step", "triton_available", "resolve_backend"]


@functools.cache
def triton_available() -> bool:
    """True when Triton imports (a GPU is not required: the interpreter runs on CPU)."""
    try:
        importlib.import_module("triton")
    except Exception:
        return False
    return True


def resolve_backend(backend: str, tensor: torch.Tensor) -> str:
    """Resolve ``backend`` for an input on ``tensor.device`` to ``"reference"`` or ``"triton"``."""
    if backend not in BACKENDS:
        raise ValueError(f"`backend` must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "triton" if tensor.is_cuda and triton_available() else "reference"
    if backend == "triton":
        if not triton_available():
            raise ValueError("`backend` 'triton' needs the `triton` package, which does not import here")
        if tensor.device.type == "mps":
            raise ValueError("`backend` 'triton' has no Apple GPU (MPS) target: use backend='reference' (the 'auto' "
                             "default does) on device 'mps'")
        if not tensor.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
            raise ValueError(
                "`backend` 'triton' on a CPU tensor needs TRITON_INTERPRET=1 set before triton is imported; "
                "use backend='reference' or a CUDA tensor"
            )
    return backend


def _doc_from(ref):
    """Copy the reference's docstring (not its signature: ``ops`` adds ``backend``)."""

    def decorate(fn):
        fn.__doc__ = ref.__doc__
        return fn

    return decorate


# Ops whose Triton kernel failed under backend="auto": op -> the error message (they run the reference from then on).
_FALLBACKS: dict[str, str] = {}


def _dispatch(name: str, backend: str, tensor: object, *args):
    spec = OPS[name]
    if not isinstance(tensor, torch.Tensor):
        return spec.reference(*args)  # the reference raises the TypeError naming the argument
    if resolve_backend(backend, tensor) == "reference" or (backend == "auto" and name in _FALLBACKS):
        return spec.reference(*args)
    if backend != "auto":
        return spec.launcher(*args)
    from spadfast.kernels.utils import KernelLaunchError

    try:
        return spec.launcher(*args)
    except KernelLaunchError as e:
        _FALLBACKS[name] = str(e)
        warnings.warn(
            f"{e}. backend='auto' runs spadfast.ops.reference.{name} for the rest of this process",
            RuntimeWarning,
            stacklevel=3,
        )
        return spec.reference(*args)


def canny(mask: torch.Tensor, validate: bool = True, *, backend: str = "auto") -> torch.Tensor:
    """Boundary of a binary mask, byte-exact with ``cv2.Canny(m*255, 100, 200) > 0``.

    See :func:`spadfast.ops.reference.canny`.
    """
    return _dispatch("canny", backend, mask, mask, validate)


@_doc_from(reference.boundary_blur)
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
    backend: str = "auto",
) -> torch.Tensor:
    return _dispatch(
        "boundary_blur", backend, mask,
        mask, sigma, strength, radius, noise, base, generator, seed, offset, truncate, validate,
    )  # fmt: skip


@_doc_from(reference.target_noise)
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
    backend: str = "auto",
) -> torch.Tensor:
    return _dispatch(
        "target_noise", backend, mask,
        mask, strength, anchor_size, keep_ratio, noise, anchors, generator, seed, offset, validate,
    )  # fmt: skip


@_doc_from(reference.ddim_step)
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
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    return _dispatch(
        "ddim_step", backend, sample,
        sample, model_output, alpha_prod_t, alpha_prod_t_prev, eta, noise, clip_sample_range, prediction_type,
        generator, seed, offset, validate,
    )
