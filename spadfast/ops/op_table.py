"""The op registry: one row per spadfast op, read by :mod:`spadfast.ops`, :mod:`spadfast.verify`, the AOT check, the
benchmarks and the tests (so a new op is one row here plus its files: the checklist in docs/ARCHITECTURE.md, counted by a test).

Each row names the reference (:mod:`spadfast.ops.reference`), the Triton module under ``spadfast.kernels`` with its
launcher (whose :func:`spadfast.kernels.utils.plan` gives the launch a call would make, for the ahead-of-time check),
and the public function in :mod:`spadfast.ops`. Kernel modules are imported lazily: spadfast imports without Triton.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["OPS", "OpSpec", "TOLERANCES"]

# (rtol, atol) of a floating kernel output against its reference: both compute in fp32 and round once to the
# output dtype, so the bound is the dtype's rounding. Binary outputs (canny) are compared exactly.
TOLERANCES = {
    torch.float32: (1e-5, 1e-5),
    torch.float16: (1e-3, 1e-3),
    torch.bfloat16: (1.6e-2, 1.6e-2),
}


@dataclass(frozen=True)
class OpSpec:
    name: str
    kernel_module: str  # module under spadfast.kernels
    exact: bool  # binary output: kernel and reference agree bit for bit

    @property
    def reference(self) -> Callable:
        from . import reference

        return getattr(reference, self.name)

    def _kernel(self):
        return importlib.import_module(f"spadfast.kernels.{self.kernel_module}")

    @property
    def launcher(self) -> Callable:
        """The Triton launcher (needs Triton): the reference's signature plus ``block_size=``."""
        return getattr(self._kernel(), self.name)

    @property
    def verify_cases(self) -> Callable:
        """``verify_cases(shape, device, generator) -> list[VerifyCase]`` of the op's kernel file (needs Triton)."""
        return self._kernel().verify_cases

    @property
    def aot_variants(self) -> Callable:
        """``aot_variants() -> list[AotCase]`` of the op's kernel file: the launches the AOT check compiles."""
        return self._kernel().aot_variants

    @property
    def planner(self) -> Callable:
        """The launcher's arguments in, the :class:`spadfast.kernels.utils.Launch` it would run out (nothing runs)."""
        import functools

        from spadfast.kernels.utils import plan

        return functools.partial(plan, self.launcher)


OPS: dict[str, OpSpec] = {
    "canny": OpSpec("canny", "canny", exact=True),
    "boundary_blur": OpSpec("boundary_blur", "boundary_blur", exact=False),
    "target_noise": OpSpec("target_noise", "target_noise", exact=False),
    "ddim_step": OpSpec("ddim_step", "ddim", exact=False),
}
