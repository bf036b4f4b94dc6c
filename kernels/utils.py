"""What every spadfast launcher shares: the tile rule, the grid, pointer views, clamped indexing and the launch.

A launcher validates its inputs, allocates its outputs, decides a :class:`Launch` and hands it to :func:`launch`, which
runs it on the inputs' device. Under :func:`plan` the same launcher returns the :class:`Launch` instead of running it
(call it with ``meta`` tensors to allocate nothing): ``spadfast.aot`` compiles those plans ahead of time, so the
variants it checks are exactly the ones that run.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import triton
import triton.language as tl

from spadfast.ops.checks import is_int

__all__ = [
    "KernelLaunchError",
    "Launch",
    "MAX_GRID",
    "check_block_size",
    "clamped_offset",
    "device_context",
    "grid_3d",
    "launch",
    "plan",
    "pointer_view",
    "tile_config",
    "tile_coords",
    "tile_offset",
]

# CUDA grid limits per axis: x up to 2**31 - 1 blocks, y and z up to 65,535.
MAX_GRID = (2**31 - 1, 65535, 65535)

# Tiles under the CPU interpreter, whose cost is per program, not per register.
INTERPRETER_TILE = (128, 128)


class KernelLaunchError(RuntimeError):
    """A Triton kernel failed to compile or launch; ``op`` and ``variant`` name what was launched."""

    def __init__(self, op: str, variant: str, error: BaseException) -> None:
        super().__init__(f"Triton kernel for `{op}` ({variant}) failed: {type(error).__name__}: {error}")
        self.op, self.variant, self.error = op, variant, error


@dataclass
class Launch:
    """One kernel launch, fully decided: ``kernel[grid](*args, **constexprs, num_warps=num_warps)``.

    ``result`` is what the launcher returns once the kernel has run (its outputs are allocated already).
    """

    op: str
    kernel: Any
    grid: tuple[int, int, int]
    args: tuple
    constexprs: dict[str, Any]
    num_warps: int
    device: torch.device
    result: Any = field(default=None, repr=False)

    @property
    def variant(self) -> str:
        """Constexprs and warps, e.g. ``BLOCK_H=16 BLOCK_W=32 w4``: what selects a compiled binary besides dtypes."""
        parts = [f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in self.constexprs.items()]
        return " ".join(parts + [f"w{self.num_warps}"])


def device_context(device: torch.device) -> contextlib.AbstractContextManager:
    """``torch.cuda.device(device)`` for CUDA devices: Triton launches on the *current* device, not the tensor's."""
    if device.type == "cuda":
        return torch.cuda.device(device)
    return contextlib.nullcontext()


_PLANNING = threading.local()


def plan(launcher: Callable, *args, **kwargs) -> Launch:
    """The :class:`Launch` that ``launcher(*args, **kwargs)`` would run, without running it."""
    _PLANNING.depth = getattr(_PLANNING, "depth", 0) + 1
    try:
        spec = launcher(*args, **kwargs)
    finally:
        _PLANNING.depth -= 1
    if not isinstance(spec, Launch):
        raise TypeError(f"{getattr(launcher, '__name__', launcher)!r} is not a spadfast kernel launcher")
    return spec


def launch(spec: Launch) -> Any:
    """Run ``spec`` under :func:`device_context` of its device; compile or launch errors become
    :class:`KernelLaunchError` (naming the op and variant). Returns ``spec.result`` (under :func:`plan`: ``spec``)."""
    if getattr(_PLANNING, "depth", 0):
        return spec
    with device_context(spec.device):
        try:
            spec.kernel[spec.grid](*spec.args, **spec.constexprs, num_warps=spec.num_warps)
        except Exception as e:
            raise KernelLaunchError(spec.op, spec.variant, e) from e
    return spec.result


def pointer_view(x: torch.Tensor) -> torch.Tensor:
    """Bool tensors are passed to kernels as a uint8 view of the same storage (no copy, same strides)."""
    return x.view(torch.uint8) if x.dtype == torch.bool else x


def check_block_size(block_size: object) -> tuple[int, int] | None:
    """``block_size`` is None or ``(BLOCK_H, BLOCK_W)``, two powers of two."""
    if block_size is None:
        return None
    ok = isinstance(block_size, (tuple, list)) and len(block_size) == 2
    ok = ok and all(is_int(b) and b >= 1 and b & (b - 1) == 0 for b in block_size)
    if not ok:
        raise ValueError(f"`block_size` must be None or (BLOCK_H, BLOCK_W), two powers of two, got {block_size!r}")
    return int(block_size[0]), int(block_size[1])


def tile_config(
    H: int,
    W: int,
    device: torch.device,
    tile: tuple[int, int],
    elems_per_thread: int,
    block_size: tuple[int, int] | None = None,
) -> tuple[int, int, int]:
    """The one tile rule of every spadfast kernel: ``(BLOCK_H, BLOCK_W, num_warps)`` for an ``H x W`` plane.

    ``tile`` (the op's tile on a GPU, sized so its per-element state fits in registers) shrinks to small planes: the
    width first to ``next_power_of_2(W)``, the height then grows to keep the area, up to ``next_power_of_2(H)``.
    ``num_warps`` gives each thread ``elems_per_thread`` elements (1 to 16 warps). On CPU (the interpreter) the tile
    is :data:`INTERPRETER_TILE`. ``block_size`` overrides the tile (tests); warps follow the same rule.
    """
    cap_h, cap_w = INTERPRETER_TILE if device.type == "cpu" else tile
    if block_size is not None:
        bh, bw = check_block_size(block_size)
    else:
        bw = min(triton.next_power_of_2(W), cap_w)
        bh = min(triton.next_power_of_2(H), max(cap_h, (cap_h * cap_w) // bw))
    num_warps = max(1, min(16, (bh * bw) // (32 * elems_per_thread)))
    return bh, bw, num_warps


def grid_3d(B: int, H: int, W: int, block_h: int, block_w: int, name: str) -> tuple[int, int, int]:
    """``(B, cdiv(H, block_h), cdiv(W, block_w))``: batch on axis 0 (up to 2**31 - 1), tiles on axes 1 and 2.

    Raises:
        ValueError: a grid axis exceeds CUDA's limits (naming ``name``, the input whose shape set it).
    """
    grid = (B, triton.cdiv(H, block_h), triton.cdiv(W, block_w))
    for axis, (n, limit, what) in enumerate(zip(grid, MAX_GRID, ("batch", "height", "width"))):
        if n > limit:
            raise ValueError(
                f"`{name}` is too large: its {what} needs {n} programs on grid axis {axis}, CUDA allows {limit}"
            )
    return grid


@triton.jit
def tile_coords(BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """This program's image ``b`` (int64, grid axis 0), rows ``r`` ([BLOCK_H, 1]) and columns ``c`` ([1, BLOCK_W])."""
    b = tl.program_id(0).to(tl.int64)
    r = (tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H))[:, None]
    c = (tl.program_id(2) * BLOCK_W + tl.arange(0, BLOCK_W))[None, :]
    return b, r, c


@triton.jit
def clamped_offset(idx, n, stride):
    """Replicated border: the int64 offset of ``clamp(idx, 0, n - 1)`` along a dimension of ``stride``."""
    return tl.minimum(tl.maximum(idx, 0), n - 1).to(tl.int64) * stride


@triton.jit
def tile_offset(pid_b, r, c, stride_b, stride_h, stride_w):
    """int64 element offset of rows ``r`` ([BH, 1]) and columns ``c`` ([1, BW]) of image ``pid_b`` (int64)."""
    return pid_b * stride_b + r.to(tl.int64) * stride_h + c.to(tl.int64) * stride_w
