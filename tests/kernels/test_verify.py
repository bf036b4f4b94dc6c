import pytest

from spadfast import verify
from spadfast.ops.op_table import OPS

pytestmark = pytest.mark.slow


@pytest.fixture
def cpu_interpreter(kernel_device):
    if kernel_device != "cpu":
        pytest.skip("the CLI check is exercised on CUDA by running `spadfast verify` itself")
    return kernel_device


def test_verify_passes_and_prints_a_table(cpu_interpreter, capsys):
    assert verify.run_verify(device="cpu", quick=True) == 0
    out = capsys.readouterr().out
    for op in OPS:  # every op-table row reports its own cases
        assert f"\n{op}" in out
    assert "ddim_step[v_prediction]" in out
    assert "FAIL" not in out and "all passed" in out


def test_verify_reports_a_wrong_kernel(cpu_interpreter, capsys, monkeypatch):
    import spadfast.kernels.canny as kcanny

    real = kcanny.canny

    def broken(mask, validate=True):
        out = real(mask, validate=validate).clone()
        out.view(-1)[0] = ~out.view(-1)[0]
        return out

    monkeypatch.setattr(kcanny, "canny", broken)
    assert verify.run_verify(device="cpu", quick=True) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "failed" in out


def test_verify_refuses_cpu_without_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        verify.run_verify(device="cpu")
