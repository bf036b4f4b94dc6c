"""Ahead-of-time compile check: every kernel launch variant, compiled for named GPU targets without a GPU.

The variants come from the launchers themselves: each case below is a call of a launcher on ``meta`` tensors, and
:func:`spadfast.kernels.utils.plan` returns the launch that call would make on CUDA (grid, arguments, constexprs,
warps). Triton's own binder turns those arguments into the signature and specialisation attributes it would use at
launch, and :func:`triton.compile` builds PTX and a cubin for ``GPUTarget("cuda", cc, 32)``; the ptxas log gives
registers and spills. So the check cannot drift from what runs.

The cases cover every dtype, Philox vs explicit noise, with and without ``base`` / ``anchors``, every band radius
(0..``MAX_RADIUS``) and every (radius, blur) pair that :class:`spadfast.PerturbConfig`'s defaults produce over
training, the tile shrink of small images, and int32 vs int64 scalars (Philox offsets and seeds >= 2**31, strides
>= 2**31). Cases marked ``default`` are reachable from spadfast's default configuration (training perturbation and
DDIM sampling); the budget for them is no spills.

Run ``python -m spadfast.kernels.aot --arch sm_80 --arch sm_90`` (or ``spadfast verify --compile-only``). Triton
compiles under the interpreter only in a process where ``TRITON_INTERPRET`` is unset: :func:`run` re-executes itself
in such a process when needed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from .variants import AotCase

__all__ = ["ARCHS", "Result", "cases", "compile_case", "compile_all", "failed", "format_table", "format_wide",
           "main", "occupancy", "run"]

ARCHS = {"sm_80": 80, "sm_90": 90, "sm_100": 100}
DEFAULT_ARCHS = ("sm_80", "sm_90")

# Per-SM limits for the occupancy estimate: registers, warps, blocks, shared memory (bytes, opt-in maximum).
_SM_LIMITS = {80: (65536, 64, 32, 163 * 1024), 90: (65536, 64, 32, 227 * 1024), 100: (65536, 64, 32, 227 * 1024)}


@dataclass
class Result:
    op: str
    variant: str  # case label, then the constexprs / warps / int64 scalars that select the binary
    arch: str
    default: bool
    registers: int | None = None
    spills: int | None = None  # bytes of spill stores + loads
    shared: int | None = None  # bytes of shared memory per block
    occupancy: float | None = None  # resident warps / max warps per SM, from registers, warps and shared memory
    num_warps: int | None = None
    div64: int | None = None  # 64-bit integer divisions / remainders in the PTX (index arithmetic to avoid)
    seconds: float = 0.0
    error: str | None = None


def cases(ops: Iterable[str] | None = None) -> list[AotCase]:
    """Every launch variant of the named ops (default: every op-table row), in table order: each op's own
    ``aot_variants()``."""
    from spadfast.ops.op_table import OPS

    return [c for op in (ops or OPS) for c in OPS[op].aot_variants()]


# ------------------------------------------------------------------------------------------------------ compiling
def _parse_ptxas(log: str) -> tuple[int | None, int | None]:
    regs = re.search(r"Used (\d+) registers", log)
    spill = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    return (int(regs.group(1)) if regs else None, int(spill.group(1)) + int(spill.group(2)) if spill else None)


def occupancy(cc: int, registers: int, num_warps: int, shared: int) -> float:
    """Resident warps per SM over the maximum, from registers (allocated per warp in units of 256), warps per block
    and shared memory per block (the CUDA occupancy calculator's rule, without the L1/shared carve-out choice)."""
    regs_sm, warps_sm, blocks_sm, smem_sm = _SM_LIMITS[cc]
    per_warp = math.ceil(max(registers, 1) * 32 / 256) * 256
    blocks = min(blocks_sm, warps_sm // num_warps, regs_sm // (per_warp * num_warps))
    if shared:
        blocks = min(blocks, smem_sm // shared)
    return blocks * num_warps / warps_sm


class _Compiler:
    """Triton's binder and compiler for one target; results cached per process."""

    def __init__(self, arch: str):
        from triton.backends.compiler import GPUTarget
        from triton.backends.nvidia.compiler import sm_arch_from_capability
        from triton.compiler import make_backend

        if arch not in ARCHS:
            raise ValueError(f"`arch` must be one of {sorted(ARCHS)}, got {arch!r}")
        self.arch, self.cc = arch, ARCHS[arch]
        self.target_name = sm_arch_from_capability(self.cc)  # sm_90 compiles as sm_90a, as Triton does
        self.target = GPUTarget("cuda", self.cc, 32)
        self.backend = make_backend(self.target)
        self.binders: dict = {}

    def bind(self, launch):
        """``(options, signature, constexprs, attrs)`` exactly as ``kernel[grid](...)`` would pass to the compiler."""
        from triton.runtime.jit import create_function_from_signature

        kernel = launch.kernel
        if not hasattr(kernel, "_pack_args"):
            raise RuntimeError("Triton kernels are interpreted in this process (TRITON_INTERPRET=1): use run()")
        binder = self.binders.get(kernel)
        if binder is None:
            binder = self.binders[kernel] = create_function_from_signature(kernel.signature, kernel.params,
                                                                           self.backend)  # fmt: skip
        kwargs = dict(launch.constexprs, num_warps=launch.num_warps)
        bound, specialization, options = binder(*launch.args, **kwargs)
        return kernel._pack_args(self.backend, kwargs, bound, specialization, options)

    def compile(self, launch) -> tuple[int | None, int | None, int, int]:
        import triton
        from triton import knobs
        from triton.compiler import ASTSource

        options, signature, constexprs, attrs = self.bind(launch)
        src = ASTSource(launch.kernel, signature, constexprs, attrs)
        log = io.StringIO()
        with contextlib.redirect_stdout(log), knobs.nvidia.scope():
            knobs.nvidia.dump_ptxas_log = True
            compiled = triton.compile(src, target=self.target, options=options.__dict__)
        ptx = compiled.asm["ptx"]
        regs, spills = _parse_ptxas(log.getvalue())
        if regs is None:  # a Triton cache hit runs no ptxas: ask ptxas about the cached PTX
            regs, spills = _parse_ptxas(self._ptxas(ptx))
        div64 = len(re.findall(r"\b(?:div|rem)\.[su]64\b", ptx))
        return regs, spills, int(compiled.metadata.shared), div64

    def _ptxas(self, ptx: str) -> str:
        import tempfile

        from triton.backends.nvidia.compiler import get_ptxas

        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "k.ptx"
            path.write_text(ptx)
            cmd = [get_ptxas(self.cc).path, "-v", f"--gpu-name={self.target_name}", str(path), "-o",
                   str(Path(d) / "k.cubin")]  # fmt: skip
            return subprocess.run(cmd, capture_output=True, text=True, check=True).stderr


_COMPILERS: dict[str, _Compiler] = {}
_RESULTS: dict[tuple, tuple] = {}


def compile_case(case: AotCase, arch: str) -> Result:
    """Plan ``case`` and compile it for ``arch``; errors are recorded in the result, not raised."""
    from spadfast.ops.op_table import OPS

    from .utils import plan

    compiler = _COMPILERS.get(arch) or _COMPILERS.setdefault(arch, _Compiler(arch))
    result = Result(case.op, case.label, compiler.target_name, case.default)
    t0 = time.perf_counter()
    try:
        args, kwargs = case.call()
        launch = plan(OPS[case.op].launcher, *args, **kwargs)
        _, signature, _, _ = compiler.bind(launch)
        wide = sorted(k for k, v in signature.items() if v in ("i64", "u64"))
        result.variant = f"{case.label} [{launch.variant}{' i64:' + ','.join(wide) if wide else ''}]"
        result.num_warps = launch.num_warps
        key = (arch, launch.kernel.fn.__qualname__, tuple(signature.items()),
               tuple(sorted(launch.constexprs.items())), launch.num_warps)  # fmt: skip
        if key not in _RESULTS:
            _RESULTS[key] = compiler.compile(launch)
        result.registers, result.spills, result.shared, result.div64 = _RESULTS[key]
        if result.registers is not None:
            result.occupancy = occupancy(compiler.cc, result.registers, launch.num_warps, result.shared)
    except Exception as e:  # a variant that does not compile is a failed row, not a crashed check
        result.error = f"{type(e).__name__}: {e}".strip()
    result.seconds = time.perf_counter() - t0
    return result


def compile_all(archs: Iterable[str] = DEFAULT_ARCHS, ops: Iterable[str] | None = None,
                subset: Callable[[AotCase, str], bool] | None = None, shard: tuple[int, int] = (0, 1)) -> list[Result]:
    """Compile every case for every arch (``subset(case, arch)`` False skips one); ``shard=(i, n)`` compiles every
    n-th of them from the i-th (one of n parallel processes)."""
    all_cases = cases(ops)
    todo = [(c, a) for a in archs for c in all_cases if subset is None or subset(c, a)]
    return [compile_case(c, a) for c, a in todo[shard[0] :: shard[1]]]


# ------------------------------------------------------------------------------------------------------- reporting
def format_table(results: list[Result]) -> str:
    """Markdown table: op, variant, arch, registers, spills, shared memory, estimated occupancy, 64-bit integer
    divisions in the PTX, status."""
    lines = ["| op | variant | arch | default | registers | spills (B) | shared (B) | occupancy | div64 | status |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---|"]  # fmt: skip
    for r in results:
        occ = f"{r.occupancy:.0%}" if r.occupancy is not None else "-"
        status = "ok" if r.error is None else "FAIL: " + r.error.splitlines()[0][:80]
        if r.error is None and r.default and r.spills:
            status = "SPILLS (default variant)"
        cells = [r.op, r.variant, r.arch, "yes" if r.default else "", _num(r.registers), _num(r.spills),
                 _num(r.shared), occ, _num(r.div64), status]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_wide(results: list[Result]) -> str:
    """Markdown table with one row per variant and ``registers / spills / occupancy`` per target, for RESULTS.md."""
    archs = list(dict.fromkeys(r.arch for r in results))
    rows: dict[tuple[str, str], dict[str, Result]] = {}
    for r in results:
        rows.setdefault((r.op, r.variant), {})[r.arch] = r
    head = "| op | variant | default | " + " | ".join(f"{a}: regs / spills / occ." for a in archs) + " | shared (B) |"
    lines = [head, "|---|---|---|" + "---:|" * (len(archs) + 1)]
    for (op, variant), by_arch in rows.items():
        cells = []
        for a in archs:
            r = by_arch.get(a)
            if r is None:
                cells.append("")
            elif r.error:
                cells.append("FAIL")
            else:
                cells.append(f"{r.registers} / {r.spills} / {r.occupancy:.1%}".replace(".0%", "%"))
        any_row = next(iter(by_arch.values()))
        lines.append(f"| {op} | {variant} | {'yes' if any_row.default else ''} | " + " | ".join(cells)
                     + f" | {_num(any_row.shared)} |")  # fmt: skip
    return "\n".join(lines)


def _num(v) -> str:
    return "-" if v is None else str(v)


def failed(results: list[Result]) -> list[Result]:
    """Rows that fail the check: compile errors, and spills in a variant reachable from the defaults."""
    return [r for r in results if r.error is not None or (r.default and r.spills)]


def _interpreting() -> bool:
    from triton import knobs

    return bool(knobs.runtime.interpret) or os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def run(archs: Iterable[str] = DEFAULT_ARCHS, ops: Iterable[str] | None = None, quick: bool = False,
        jobs: int | None = None) -> list[Result]:  # fmt: skip
    """:func:`compile_all` in ``jobs`` parallel processes (default: up to 4, one per CPU), each a fresh Python without
    ``TRITON_INTERPRET`` (Triton compiles nothing in a process that interprets kernels); in this process when
    ``jobs == 1`` and it does not interpret.

    ``quick``: every case for sm_90 (else the last arch named); for the others the cases reachable from the defaults
    (int32 offsets) plus the first case of each op. What the CPU test suite runs.
    """
    archs = list(archs)
    for a in archs:
        if a not in ARCHS:
            raise ValueError(f"`arch` must be one of {sorted(ARCHS)}, got {a!r}")
    jobs = jobs or max(1, min(4, os.cpu_count() or 1))
    if jobs == 1 and not _interpreting():
        return compile_all(archs, ops, _quick_subset(archs) if quick else None)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    cmd = [sys.executable, "-m", "spadfast.kernels.aot", "--json", "-"] + [f"--arch={a}" for a in archs]
    cmd += [f"--op={o}" for o in ops or ()] + (["--quick"] if quick else [])
    procs = [subprocess.Popen(cmd + [f"--shard={i}/{jobs}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for i in range(jobs)]  # fmt: skip
    shards = []
    for proc in procs:
        out, err = proc.communicate()
        if proc.returncode not in (0, 1):
            raise RuntimeError(f"the compile check's subprocess failed:\n{err[-4000:]}")
        shards.append([Result(**row) for row in json.loads(out)])
    # Shard i holds entries i, i + jobs, ...: interleave back into table order.
    return [shard[k] for k in range(max(map(len, shards))) for shard in shards if k < len(shard)]


def _quick_subset(archs: list[str]) -> Callable[[AotCase, str], bool]:
    full = "sm_90" if "sm_90" in archs else archs[-1]
    first_of_op: dict[tuple[str, str], str] = {}

    def keep(case: AotCase, arch: str) -> bool:
        first = first_of_op.setdefault((case.op, arch), case.label) == case.label
        return arch == full or first or (case.default and "offset-i64" not in case.label)

    return keep


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spadfast.kernels.aot", description=__doc__.splitlines()[0])
    parser.add_argument("--arch", action="append", choices=sorted(ARCHS), help="target (repeatable)")
    parser.add_argument("--op", action="append", help="restrict to these ops (repeatable)")
    parser.add_argument("--quick", action="store_true", help="full matrix for sm_90, a subset for the other archs")
    parser.add_argument("--json", metavar="PATH", help="write the rows as JSON ('-': stdout, no table)")
    parser.add_argument("--wide", action="store_true", help="one row per variant, one column per target")
    parser.add_argument("--jobs", type=int, help="parallel compile processes (default: up to 4, one per CPU)")
    parser.add_argument("--shard", help=argparse.SUPPRESS)  # I/N: this process compiles entries I, I+N, ...
    args = parser.parse_args(argv)
    archs = args.arch or list(DEFAULT_ARCHS)
    if args.shard:
        i, n = (int(v) for v in args.shard.split("/"))
        results = compile_all(archs, args.op, _quick_subset(archs) if args.quick else None, shard=(i, n))
    else:
        results = run(archs, args.op, args.quick, args.jobs)
    if args.json == "-":
        print(json.dumps([asdict(r) for r in results]))
    else:
        print(format_wide(results) if args.wide else format_table(results))
        if args.json:
            Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=1))
        bad = failed(results)
        print(f"\n{len(results)} rows, {len(bad)} failed" if bad else f"\n{len(results)} rows, all compiled")
    return 1 if failed(results) else 0


if __name__ == "__main__":
    sys.exit(main())
