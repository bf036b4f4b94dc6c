"""``--device mps`` (Apple GPUs): accepted by the config and the CLI, refused with a clear line where no MPS device
exists (as on this machine), reference ops and float32 there, and an op without an MPS kernel reported as one line.
This machine has no Apple GPU: what runs on one is not tested here."""

import pytest
import torch

from spadfast import cli
from spadfast.config import SPADConfig
from spadfast.infer.segmenter import _resolve_amp
from spadfast.ops import resolve_backend
from spadfast.runtime.distributed import resolve_device

HAS_MPS = hasattr(torch.backends, "mps") and torch.backends.mps.is_available()


def test_config_accepts_mps_and_still_refuses_nonsense():
    assert SPADConfig(device="mps").device == "mps"
    with pytest.raises(ValueError, match="'mps'"):
        SPADConfig(device="tpu")


@pytest.mark.skipif(HAS_MPS, reason="this machine has an Apple GPU")
def test_mps_without_an_apple_gpu_is_one_clear_error(capsys):
    with pytest.raises(ValueError, match="no usable Apple GPU"):
        resolve_device("mps")
    assert cli.main(["train", "--device", "mps", "--steps", "1", "--out", "/tmp/spadfast-mps-never"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no usable Apple GPU" in err


def test_auto_amp_is_float32_on_mps_and_triton_is_refused_there():
    assert _resolve_amp("auto", torch.device("mps")) == "none"

    class FakeMps:  # resolve_backend only reads the device: no MPS tensor can exist on this machine
        device = torch.device("mps")
        is_cuda = False

    assert resolve_backend("auto", FakeMps()) == "reference"
    from spadfast.ops import triton_available

    if triton_available():
        with pytest.raises(ValueError, match="no Apple GPU"):
            resolve_backend("triton", FakeMps())


def test_an_op_without_an_mps_kernel_is_one_line(monkeypatch, capsys):
    def handler(args):
        raise NotImplementedError("The operator 'aten::grid_sampler_2d_backward' is not currently implemented for "
                                  "the MPS device.\nIf you want this op to be added ...")

    monkeypatch.setattr(cli, "cmd_verify", handler)
    assert cli.main(["verify"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "aten::grid_sampler_2d_backward" in err and "PYTORCH_ENABLE_MPS_FALLBACK=1" in err

    def other(args):
        raise NotImplementedError("a bug, not a device limit")

    monkeypatch.setattr(cli, "cmd_verify", other)
    with pytest.raises(NotImplementedError):
        cli.main(["verify"])
