"""What every op file in ``kernels/`` shares to describe its own checks: the case types of ``spadfast verify``
(:class:`VerifyCase`: a kernel call against its reference on a device) and of the ahead-of-time compile check
(:class:`AotCase`: a launcher call on ``meta`` tensors, :mod:`spadfast.kernels.aot`), and the meta-tensor helpers.

Each ``kernels/<op>.py`` exports ``verify_cases(shape, device, generator)`` and ``aot_variants()`` next to its
launcher; :mod:`spadfast.verify` and :mod:`spadfast.kernels.aot` iterate :data:`spadfast.ops.op_table.OPS` and call them,
so an op's facts live in its own file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["AotCase", "VerifyCase", "META", "DTYPES", "BIG", "SAMPLING", "TRAINING", "SMALL", "VERIFY_DTYPES", "meta",
           "wide_strides"]

META = torch.device("meta")
VERIFY_DTYPES = (torch.float32, torch.float16, torch.bfloat16)  # floating inputs every floating op is verified in


@dataclass
class VerifyCase:
    """``run(backend)`` computes the op with ``backend`` "triton" or "reference" on fixed inputs; ``exact``: binary
    output compared bit for bit, else within :data:`spadfast.ops.op_table.TOLERANCES` of ``dtype``."""

    op: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    run: Callable[[str], torch.Tensor | tuple[torch.Tensor, ...]]
    exact: bool


@dataclass(frozen=True)
class AotCase:
    """One launcher call: ``launcher(*args(), **kwargs)`` on meta tensors; ``default``: reachable from defaults."""

    op: str
    label: str
    call: Callable[[], tuple[tuple, dict]]
    default: bool = False


DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "u8": torch.uint8, "bool": torch.bool}
BIG = 2**31 + 7  # an int64 scalar
SAMPLING = (5, 1, 256, 256)  # DDIM sampling: B*K = 5 ensemble members of one 256x256 image (the defaults)
TRAINING = (8, 1, 256, 256)  # a training batch of masks
SMALL = (1, 1, 31, 47)  # odd and small: the tile shrinks


def meta(shape, dtype=torch.float32) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device=META)


def wide_strides(shape, dtype=torch.float32) -> torch.Tensor:
    """A meta view whose batch stride exceeds 2**31 (int64 stride arguments)."""
    B, C, H, W = shape
    return torch.empty_strided(shape, (2**31 + H * W, H * W, W, 1), dtype=dtype, device=META)
