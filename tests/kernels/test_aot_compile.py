"""Ahead-of-time compile check (no GPU): every kernel launch variant compiles for sm_80, sm_90 and sm_100.

The full variant matrix runs for sm_90; sm_80 and sm_100 run the variants reachable from the defaults plus one per
op (``spadfast.kernels.aot.run(quick=True)``), in one subprocess per test session (Triton compiles only where
``TRITON_INTERPRET`` is unset). The full matrix for every target: ``spadfast verify --compile-only --arch ...``.
"""

from __future__ import annotations

import re

import pytest

pytest.importorskip("triton")

from spadfast.kernels import aot  # noqa: E402
from spadfast.kernels.boundary_blur import MAX_RADIUS  # noqa: E402
from spadfast.kernels.variants import AotCase  # noqa: E402
from spadfast.ops.op_table import OPS  # noqa: E402

pytestmark = pytest.mark.slow

ARCHS = ["sm_80", "sm_90", "sm_100"]


@pytest.fixture(scope="module")
def results() -> list[aot.Result]:
    return aot.run(ARCHS, quick=True)


def _rows(results, arch=None, op=None):
    return [r for r in results if (arch is None or r.arch.startswith(arch)) and (op is None or r.op == op)]


def test_every_variant_compiles_for_every_target(results):
    bad = [f"{r.op} {r.variant} {r.arch}: {r.error}" for r in results if r.error]
    assert not bad, "\n".join(bad)
    for arch in ARCHS:
        for op in OPS:
            assert _rows(results, arch + ("a" if arch != "sm_80" else ""), op), (arch, op)


def test_no_spills_in_variants_reachable_from_the_defaults(results):
    spilling = [f"{r.op} {r.variant} {r.arch}: {r.spills} B" for r in results if r.default and r.spills]
    assert not spilling, "\n".join(spilling)
    assert not aot.failed(results)


def test_the_sm90_matrix_covers_every_variant_axis(results):
    sm90 = _rows(results, "sm_90")
    labels = {op: " | ".join(r.variant for r in sm90 if r.op == op) for op in OPS}
    for op in ("canny", "boundary_blur", "target_noise"):
        for dtype in ("fp32", "fp16", "bf16", "u8", "bool"):
            assert f"{dtype} " in labels[op], (op, dtype)
    for dtype in ("fp32", "fp16", "bf16"):  # ddim_step takes floating samples only
        assert f"{dtype} " in labels["ddim_step"]
    assert "HAS_NOISE=1" in labels["boundary_blur"] and "HAS_NOISE=0" in labels["boundary_blur"]
    assert "HAS_BASE=1" in labels["boundary_blur"] and "HAS_BASE=0" in labels["boundary_blur"]
    for radius in range(MAX_RADIUS + 1):
        assert f"R_BAND={radius} " in labels["boundary_blur"]
    assert "HAS_ANCHORS=1" in labels["target_noise"] and "HAS_NOISE=1" in labels["target_noise"]
    for noise in (0, 1, 2):
        assert f"NOISE={noise} " in labels["ddim_step"]
    for mode in (0, 1, 2):
        assert f"ALPHA_T={mode} " in labels["ddim_step"]
    for op in OPS:  # int64 scalars: Philox offsets or strides >= 2**31
        assert re.search(r"i64:\S*(offset|stride)", labels[op]), op


def test_occupancy_budget_of_default_variants(results):
    # Below 25 % only where the tile is documented as the best that does not spill (boundary_blur from radius 3:
    # kernels/boundary_blur.py::tile_for_radius).
    for r in results:
        if r.default and r.occupancy is not None and r.occupancy < 0.25:
            assert r.op == "boundary_blur" and "R_BAND=3" in r.variant and "w4" in r.variant, r
            assert r.occupancy >= 0.1875, r
    for r in _rows(results, op="target_noise"):  # was 166-172 registers at 4 warps (12-19 %)
        if r.default:
            assert r.occupancy >= 0.5, r


def test_ddim_step_has_no_64_bit_division(results):
    rows = _rows(results, op="ddim_step")
    assert rows and all(r.div64 == 0 for r in rows), [(r.variant, r.arch, r.div64) for r in rows if r.div64]


# ------------------------------------------------------------------------------------ reporting (no compilation)
def test_a_failing_variant_is_a_failed_row_and_a_nonzero_exit(monkeypatch, capsys):
    def broken():
        raise RuntimeError("injected compile failure")

    row = aot.compile_case(AotCase("canny", "injected", broken), "sm_90")
    assert row.error and "injected compile failure" in row.error
    assert aot.failed([row]) == [row]
    assert "FAIL: RuntimeError: injected compile failure" in aot.format_table([row])

    from spadfast import verify

    monkeypatch.setattr(aot, "run", lambda archs, quick=False: [row])
    assert verify.run_verify(compile_only=True, archs=["sm_80"]) == 1
    out = capsys.readouterr().out
    assert "| canny | injected | sm_90a |" in out and "1 failed" in out
    ok = aot.Result("canny", "fine", "sm_90a", True, 100, 0, 512, 0.25, 4, 0)
    monkeypatch.setattr(aot, "run", lambda archs, quick=False: [ok])
    assert verify.run_verify(compile_only=True) == 0
    spilled = aot.Result("canny", "spills", "sm_90a", True, 255, 64, 512, 0.125, 4, 0)
    monkeypatch.setattr(aot, "run", lambda archs, quick=False: [spilled])
    assert verify.run_verify(compile_only=True) == 1


def test_unknown_arch_is_rejected():
    from spadfast import verify

    with pytest.raises(ValueError, match="`arch` must be one of"):
        verify.run_verify(compile_only=True, archs=["sm_61"])


def test_occupancy_estimate():
    # 128 registers x 16 warps fill the 64K register file with one program: 16 of 64 warps.
    assert aot.occupancy(90, 128, 16, 2048) == 0.25
    assert aot.occupancy(80, 32, 8, 0) == 1.0
    assert aot.occupancy(80, 165, 4, 0) == 0.1875  # 168 x 32 = 5376 per warp: 3 programs of 4 warps
    assert aot.occupancy(90, 32, 4, 200 * 1024) == 4 / 64  # shared memory bound: one program


def test_wide_table_has_one_row_per_variant_and_a_column_per_target():
    rows = [aot.Result("canny", "a", "sm_80", True, 100, 0, 512, 0.25, 4, 0),
            aot.Result("canny", "a", "sm_90a", True, 90, 0, 512, 0.1875, 4, 0),
            aot.Result("canny", "b", "sm_90a", False, error="boom")]  # fmt: skip
    lines = aot.format_wide(rows).splitlines()
    assert "sm_80: regs / spills / occ." in lines[0] and "sm_90a: regs / spills / occ." in lines[0]
    assert lines[2] == "| canny | a | yes | 100 / 0 / 25% | 90 / 0 / 18.8% | 512 |"
    assert lines[3] == "| canny | b |  |  | FAIL | - |"
