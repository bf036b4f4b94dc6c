"""``spadfast verify``: every Triton kernel against its reference on this device, as a table; exit 1 on failure.

``--compile-only`` compiles every kernel launch variant ahead of time for named GPU targets instead (no GPU needed):
see :mod:`spadfast.kernels.aot`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import ops, reference
from .op_table import OPS, TOLERANCES
from .synthetic import blob_masks


@dataclass
class Case:
    op: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    run: Callable[[str], torch.Tensor | tuple[torch.Tensor, ...]]
    exact: bool


def build_cases(device: str, quick: bool) -> list[Case]:
    gen = torch.Generator().manual_seed(1234)
    shapes = [(1, 1, 31, 47), (2, 1, 33, 65)] if quick else [(1, 1, 31, 47), (3, 1, 127, 255), (8, 1, 256, 256)]
    cases: list[Case] = []
    for shape in shapes:
        mask = blob_masks(shape, cell=8, generator=gen).to(device)
        cases.append(Case("canny", shape, torch.bool, lambda b, m=mask: ops.canny(m, backend=b),
                          exact=OPS["canny"].exact))  # fmt: skip
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            md = mask.to(dtype)
            noise = torch.randn(shape, generator=gen).to(device, dtype)
            anchors = reference.anchor_mask(shape, 4, 0.25, generator=gen).to(device)
            cases.append(Case("boundary_blur", shape, dtype, lambda b, m=md, n=noise: ops.boundary_blur(
                m, 1.5, 0.3, 2, noise=n, backend=b), exact=False))
            cases.append(Case("target_noise", shape, dtype, lambda b, m=md, n=noise, a=anchors: ops.target_noise(
                m, 0.5, 4, 0.25, noise=n, anchors=a, backend=b), exact=False))
            x = torch.randn(shape, generator=gen).to(device, dtype)
            out = torch.randn(shape, generator=gen).to(device, dtype)
            a_t = (torch.rand(shape[0], generator=gen) * 0.9 + 0.05).to(device)
            a_prev = (a_t + (1 - a_t) * 0.5).to(device)
            for pt in ("epsilon", "sample", "v_prediction"):
                cases.append(Case(f"ddim_step[{pt}]", shape, dtype, lambda b, x=x, o=out, at=a_t, ap=a_prev, n=noise,
                                  pt=pt: ops.ddim_step(x, o, at, ap, 0.5, n, 1.0, pt, backend=b), exact=False))
    return cases


def _max_error(a, b) -> float:
    a = a if isinstance(a, tuple) else (a,)
    b = b if isinstance(b, tuple) else (b,)
    return max(float((x.double() - y.double()).abs().max()) if x.numel() else 0.0 for x, y in zip(a, b))


def _passes(a, b, case: Case) -> bool:
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
