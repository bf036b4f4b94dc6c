"""ONNX export and the onnxruntime runtime: graphs equal the PyTorch model, predictions agree with PyTorch's on
held-out images, and a corrupt, foreign or unrunnable export is refused with one clear line."""

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from spadfast import SPADTrainer  # noqa: E402
from spadfast.data.synthetic import write_synthetic_folder  # noqa: E402
from spadfast.infer.onnx_export import export_onnx  # noqa: E402
from spadfast.infer.segmenter import Segmenter  # noqa: E402

from ..helpers import tiny_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # each export traces the model (seconds)


def _run(tmp, **overrides):
    """A briefly trained model whose weights are then jittered, so that every layer (the zero-initialised output
    convolution included) shapes the output."""
    trainer = SPADTrainer(tiny_config(train_steps=2, **overrides))
    trainer.fit()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in trainer.ema.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    trainer.save(tmp / "run")
    return tmp / "run"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("onnx")
    run = _run(tmp)
    export_onnx(run, tmp / "onnx")
    return run, tmp / "onnx"


def test_graphs_equal_the_pytorch_model_at_any_batch_size(exported):
    run, folder = exported
    torch_model = Segmenter.from_checkpoint(run, device="cpu", amp="none").model
    onnx_model = Segmenter.from_onnx(folder).model
    gen = torch.Generator().manual_seed(7)
    for n in (1, 3, 8):
        image = torch.rand(n, 1, 16, 16, generator=gen) * 2 - 1
        x = torch.randn(n, 1, 16, 16, generator=gen)
        t = torch.rand(n, generator=gen) * 999
        with torch.no_grad():
            want_f = torch_model.encode(image)
            want = torch_model.denoise(x, want_f, t)
        got_f = onnx_model.encode(image)
        got = onnx_model.denoise(x, got_f, t)
        for a, b in zip(got_f, want_f):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
        assert float(want.abs().max()) > 1e-2  # a real output, not the zero-initialised one


def test_cli_predict_with_onnxruntime_agrees_with_pytorch(exported, tmp_path):
    run, folder = exported
    data = write_synthetic_folder(tmp_path / "held_out", 12, 16, seed=99)
    common = ["--images", str(data / "images"), "--steps", "3", "--ensemble", "2"]
    outs = {}
    for name, checkpoint, extra in (("torch", run, ["--amp", "none"]), ("onnx", folder, ["--runtime", "onnxruntime"])):
        out = tmp_path / name
        proc = subprocess.run([sys.executable, "-m", "spadfast", "predict", "--checkpoint", str(checkpoint), *common,
                               "--out", str(out), *extra], capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        outs[name] = np.stack([cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted(out.glob("*.png"))])
    assert outs["torch"].shape == outs["onnx"].shape == (12, 16, 16)
    assert (outs["torch"] == outs["onnx"]).mean() >= 0.999


def test_segmenter_load_takes_an_onnx_folder(exported):
    run, folder = exported
    image = (np.random.default_rng(3).random((21, 19)) * 255).astype(np.uint8)
    got = Segmenter.load(folder).predict(image, steps=2, ensemble=2)
    want = Segmenter.from_checkpoint(run, device="cpu", amp="none").predict(image, steps=2, ensemble=2)
    assert got["labels"].shape == (21, 19)
    np.testing.assert_allclose(got["probs"], want["probs"], atol=1e-3)


def test_a_corrupt_or_foreign_export_is_refused(exported, tmp_path):
    import shutil

    _, folder = exported
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    with open(bad / "denoiser.onnx", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    with pytest.raises(ValueError, match="denoiser.onnx does not match its SHA-256"):
        Segmenter.from_onnx(bad)
    old = tmp_path / "old"
    shutil.copytree(folder, old)
    meta = json.loads((old / "spadfast.json").read_text())
    (old / "spadfast.json").write_text(json.dumps({**meta, "spadfast_version": "99.0.0"}))
    with pytest.raises(ValueError, match="another major version"):
        Segmenter.from_onnx(old)


def test_missing_onnxruntime_is_one_clear_error(exported, monkeypatch):
    _, folder = exported
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ValueError, match="needs onnxruntime"):
        Segmenter.from_onnx(folder)


def test_cli_refuses_onnx_options_that_do_not_apply(exported, tmp_path):
    run, folder = exported
    data = write_synthetic_folder(tmp_path / "d", 2, 16, seed=1)
    cases = [
        (["predict", "--checkpoint", str(run), "--images", str(data / "images"), "--out", str(tmp_path / "a"),
          "--runtime", "onnxruntime"], "is not an ONNX export"),
        (["export", "--checkpoint", str(run), "--out", str(tmp_path / "b"), "--format", "onnx", "--half"],
         "--half applies to safetensors"),
        (["predict", "--checkpoint", str(folder), "--images", str(data / "images"), "--out", str(tmp_path / "c"),
          "--compile"], "is an ONNX export"),
    ]
    for argv, message in cases:
        proc = subprocess.run([sys.executable, "-m", "spadfast", *argv], capture_output=True, text=True, cwd=ROOT,
                              timeout=300)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-1000:]


@pytest.mark.parametrize("overrides", [dict(model_type="unet"), dict(perturb_mode="condition"),
                                       dict(self_condition=True), dict(self_condition=True, model_type="unet")])
def test_other_model_kinds_export_and_agree(tmp_path, overrides):
    run = _run(tmp_path, **overrides)
    export_onnx(run, tmp_path / "onnx")
    images = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    want = Segmenter.from_checkpoint(run, device="cpu", amp="none").segment(images, steps=3, ensemble=2)
    got = Segmenter.from_onnx(tmp_path / "onnx").segment(images, steps=3, ensemble=2)
    torch.testing.assert_close(got.probs, want.probs, atol=1e-3, rtol=0)


def test_a_model_with_a_supervised_prior_is_refused_in_one_line(tmp_path):
    run = _run(tmp_path, prior="supervised", prior_steps=1, prediction_type="sample")
    with pytest.raises(ValueError, match="supervised prior .*--format safetensors"):
        export_onnx(run, tmp_path / "onnx")
    assert not (tmp_path / "onnx").exists()  # refused before any file is written
