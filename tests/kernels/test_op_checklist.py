"""The "add an op" checklist of docs/ARCHITECTURE.md, counted: every op-table row has each of its pieces, so an op
missing from verify, the AOT check, the tests or the benchmarks fails here instead of passing everything."""

from pathlib import Path

import pytest
import torch

from spadfast import ops
from spadfast.kernels.variants import AotCase, VerifyCase
from spadfast.ops import reference
from spadfast.ops.op_table import OPS

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", list(OPS))
def test_every_op_row_has_every_piece(name):
    spec = OPS[name]
    assert callable(getattr(reference, name)), "reference"
    assert callable(spec.launcher), "launcher in kernels/<module>.py"
    assert callable(getattr(ops, name)), "public wrapper in spadfast/ops/dispatch.py"
    cases = spec.verify_cases((1, 1, 9, 11), "cpu", torch.Generator().manual_seed(0))
    assert cases and all(isinstance(c, VerifyCase) and c.op.split("[")[0] == name for c in cases), "verify cases"
    variants = spec.aot_variants()
    assert variants and all(isinstance(c, AotCase) and c.op == name for c in variants), "AOT variants"
    assert (ROOT / "tests" / "kernels" / f"test_{spec.kernel_module}.py").is_file(), "kernel test file"
    assert (ROOT / "benchmarks" / f"test_bench_{name}.py").is_file(), "benchmark"


def test_the_checklist_names_every_piece():
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    item = text[text.index("**Add an op**"):text.index("**Add a data format**")]
    for piece in ("reference.py", "kernels/<op>.py", "verify_cases", "aot_variants", "ops/op_table.py", "ops/dispatch.py",
                  "tests/kernels/test_<op>.py", "benchmarks/test_bench_<op>.py"):
        assert piece in item, piece
