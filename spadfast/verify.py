"""``spadfast verify``: every Triton kernel against its reference on this device, as a table; exit 1 on failure.

``--compile-only`` compiles every kernel launch variant ahead of time for named GPU targets instead (no GPU needed):
see :mod:`spadfast.kernels.aot`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch

from . import ops
from .ops.op_table import OPS, TOLERANCES

if TYPE_CHECKING:  # the kernel package needs Triton; spadfast imports without it
    from spadfast.kernels.variants import VerifyCase


def build_cases(device: str, quick: bool) -> list[VerifyCase]:
    """Every op-table row's own ``verify_cases`` (in its kernel file) at each shape, from one seeded generator."""
    gen = torch.Generator().manual_seed(1234)
    shapes = [(1, 1, 31, 47), (2, 1, 33, 65)] if quick else [(1, 1, 31, 47), (3, 1, 127, 255), (8, 1, 256, 256)]
    return [case for shape in shapes for spec in OPS.values() for case in spec.verify_cases(shape, device, gen)]


def _max_error(a, b) -> float:
    a = a if isinstance(a, tuple) else (a,)
    b = b if isinstance(b, tuple) else (b,)
    return max(float((x.double() - y.double()).abs().max()) if x.numel() else 0.0 for x, y in zip(a, b))


def _passes(a, b, case: VerifyCase) -> bool:
    a = a if isinstance(a, tuple) else (a,)
    b = b if isinstance(b, tuple) else (b,)
    if case.exact:
        return all(torch.equal(x, y) for x, y in zip(a, b))
    rtol, atol = TOLERANCES[case.dtype]
    return all(torch.allclose(x.float(), y.float(), rtol=rtol, atol=atol) for x, y in zip(a, b))


def run_compile_check(archs: list[str] | None = None, quick: bool = False) -> int:
    """Compile every launch variant for ``archs`` (default sm_80 and sm_90) and print one row per variant and target
    (op, variant, arch, registers, spills, shared memory, estimated occupancy); 1 when any fails to compile or a
    variant reachable from the defaults spills, else 0."""
    if not ops.triton_available():
        raise ValueError("verify --compile-only needs the `triton` package, which does not import here")
    from spadfast.kernels import aot

    archs = list(archs or aot.DEFAULT_ARCHS)
    for arch in archs:
        if arch not in aot.ARCHS:
            raise ValueError(f"`arch` must be one of {sorted(aot.ARCHS)}, got {arch!r}")
    print(f"spadfast verify --compile-only: triton {__import__('triton').__version__}, targets {', '.join(archs)}")
    results = aot.run(archs, quick=quick)
    print(aot.format_table(results))
    bad = aot.failed(results)
    print(f"{len(results)} rows: " + (f"{len(bad)} failed" if bad else "all compiled, no spills in default variants"))
    return 1 if bad else 0


def run_verify(
    device: str | None = None, quick: bool = False, compile_only: bool = False, archs: list[str] | None = None
) -> int:
    """Print the comparison table; return 0 when every case passes, 1 otherwise.

    ``compile_only``: :func:`run_compile_check` for ``archs`` instead (no device used).
    """
    if compile_only:
        return run_compile_check(archs, quick)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError("verify on CPU needs TRITON_INTERPRET=1 (set before starting Python) or --device cuda")
    if not ops.triton_available():
        raise ValueError("verify needs the `triton` package, which does not import here")
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "CPU (Triton interpreter)"
    print(f"spadfast verify on {name}, torch {torch.__version__}, triton {__import__('triton').__version__}")
    header = f"{'op':<24} {'shape':<18} {'dtype':<10} {'max error':>10}  {'check':<10} result"
    print(header)
    print("-" * len(header))
    failures = 0
    for case in build_cases(device, quick):
        try:
            got, want = case.run("triton"), case.run("reference")
            err, ok = _max_error(got, want), _passes(got, want, case)
            detail = f"{err:10.3g}"
        except Exception as e:  # a crashing kernel is a failed row, not a crashed report
            ok, detail = False, f"{type(e).__name__}: {e}"[:60]
        failures += not ok
        check = "exact" if case.exact else "tolerance"
        dtype = str(case.dtype).replace("torch.", "")
        print(f"{case.op:<24} {str(case.shape):<18} {dtype:<10} {detail:>10}  {check:<10} {'PASS' if ok else 'FAIL'}")
    print(f"{'all passed' if failures == 0 else f'{failures} failed'}")
    return 1 if failures else 0
