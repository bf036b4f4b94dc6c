"""3-D sliding-window prediction (issue 32.2): stitching, keyed noise, predict_volume / Segmenter / export dispatch for
unet3d and cached_unet3d checkpoints, their ONNX exports, refusals."""

from __future__ import annotations

import json
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch

from spadfast.config import SPADConfig
from spadfast.data.synthetic_volumes import write_demo_volumes
from spadfast.diffusion.sampler import labels_from_probs
from spadfast.infer.segmenter import Segmenter
from spadfast.infer.sliding_window3d import gaussian_importance_3d, segment_volume_3d, window_positions_3d
from spadfast.infer.volumes import predict_volume
from spadfast.models.export import export_model
from spadfast.train.trainer import SPADTrainer

PATCH = (8, 8, 8)


@pytest.fixture(scope="module", params=["unet3d", "cached_unet3d"])
def run(tmp_path_factory, request):
    """A 2-step run of each 3-D model type on 2 tiny demo volumes (12 x 16 x 10), saved; its final conv made non-zero
    so that the windows' outputs differ."""
    tmp = tmp_path_factory.mktemp(f"{request.param}_run")
    root = write_demo_volumes(tmp / "data", n_cases=2, shape=(12, 16, 10), num_classes=3, n_test=1)
    cfg = SPADConfig(model_type=request.param, patch_size_3d=PATCH, base_channels=4, channel_mults=(1, 2),
                     attention_levels=(), num_classes=3, batch_size=2, train_steps=2, warmup_steps=1,
                     sample_steps=2, ensemble=2, device="cpu", progress_bar=False, log_every=1, tile_overlap=0.5)
    trainer = SPADTrainer(cfg, train_data=root)
    trainer.fit(2)
    torch.manual_seed(0)
    torch.nn.init.normal_(trainer.ema.out_conv.weight, std=0.3)
    path = trainer.save(tmp / "run")
    image = sorted((root / "imagesTs").glob("*.nii.gz"))[0]
    return SimpleNamespace(trainer=trainer, path=path, image=image, tmp=tmp)


def test_gaussian_and_positions_cover_the_volume():
    g = gaussian_importance_3d((4, 6, 8))
    assert g.shape == (4, 6, 8) and float(g.max()) == 1.0 and float(g.min()) > 0
    assert torch.equal(g, g.flip(0)) and torch.equal(g, g.flip(2))
    covered = torch.zeros(9, 13, 8)
    for z, y, x in window_positions_3d((9, 13, 8), (4, 6, 8), 0.5):
        covered[z:z + 4, y:y + 6, x:x + 8] += 1
    assert bool((covered > 0).all())


def test_stitching_returns_each_voxels_own_value_including_padding():
    volume = torch.linspace(-1, 1, 2 * 5 * 11 * 7).view(2, 5, 11, 7)  # smaller than the window along axis 0

    def echo(tiles, noise_keys, **_):  # each window's "probabilities" are its own voxels
        return SimpleNamespace(probs=(tiles + 1) / 2, std=tiles.abs())

    probs, std = segment_volume_3d(echo, volume, (6, 6, 6), 0.5, "case", chunk=3)
    assert probs.shape == std.shape == (2, 5, 11, 7)
    torch.testing.assert_close(probs, (volume + 1) / 2)
    torch.testing.assert_close(std, volume.abs())


def test_bad_input_refused_before_work():
    def never(*_, **__):
        raise AssertionError("segment called")

    with pytest.raises(ValueError, match="`tile_overlap`"):
        segment_volume_3d(never, torch.zeros(1, 8, 8, 8), PATCH, 1.0, "c")
    with pytest.raises(ValueError, match="`volume`"):
        segment_volume_3d(never, torch.zeros(8, 8, 8), PATCH, 0.5, "c")
    with pytest.raises(ValueError, match="`patch_size_3d`"):
        segment_volume_3d(never, torch.zeros(1, 8, 8, 8), (8, 8), 0.5, "c")


def test_windows_keyed_independent_of_chunk(run):
    volume = run.trainer.train_data.case(0)[0]
    a = segment_volume_3d(run.trainer.segment, volume, PATCH, 0.5, "c", chunk=1, seed=2, ensemble=2)
    b = segment_volume_3d(run.trainer.segment, volume, PATCH, 0.5, "c", chunk=4, seed=2, ensemble=2)
    assert a[0].shape == (2, 12, 16, 10)
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=1e-4)  # batched convs round differently, nothing more
    torch.testing.assert_close(a[1], b[1], rtol=0, atol=1e-4)
    c = segment_volume_3d(run.trainer.segment, volume, PATCH, 0.5, "other", chunk=4, seed=2, ensemble=2)
    assert not torch.equal(a[0], c[0])  # another name, other noise


def test_predict_volume_maps_on_the_input_grid_equal_a_direct_call(run):
    seg = Segmenter.from_checkpoint(run.path, device="cpu")
    out = predict_volume(seg, [run.image], run.tmp / "pred" / "case.nii.gz", write_probabilities=True,
                         write_uncertainty=True, seed=1, batch_size=3)
    labels_img, ref = nib.load(str(out)), nib.load(str(run.image))
    assert labels_img.shape == ref.shape and np.allclose(labels_img.affine, ref.affine)
    probs = np.asarray(nib.load(str(out.parent / "probabilities" / out.name)).dataobj)
    std = np.asarray(nib.load(str(out.parent / "uncertainty" / out.name)).dataobj)
    assert probs.shape == (*ref.shape, 2) and std.shape == (*ref.shape, 2)
    # the direct call: the model's normalisation of the case, then the 3-D window
    from spadfast.io.volume_norm import normalize_volume

    normed, _ = normalize_volume([np.asarray(ref.dataobj, dtype=np.float32)], ["MR"], None, None)
    direct_p, direct_s = segment_volume_3d(seg.segment, torch.from_numpy(np.stack(normed)), PATCH, 0.5, "test_000",
                                           chunk=1, seed=1)
    # batch_size 3 against chunk 1 at the default 16 members: 48 rows per denoiser call against 16 pick other float32
    # convolution blockings (up to ~3e-5 here; the cached model's encoder too); at 5 members 1e-6 holds (below)
    atol = 1e-4
    np.testing.assert_allclose(probs, np.moveaxis(direct_p.numpy(), 0, -1), atol=atol)
    np.testing.assert_allclose(std, np.moveaxis(direct_s.numpy(), 0, -1), atol=atol)
    assert np.array_equal(np.asarray(labels_img.dataobj), labels_from_probs(direct_p[None].numpy(), 0.5)[0])
    if seg.config.model_type == "unet3d":  # 5 members (15 rows per call against 5): the two paths agree to 1e-6
        seg.config.ensemble = 5
        out = predict_volume(seg, [run.image], run.tmp / "pred_5" / "case.nii.gz", write_probabilities=True,
                             seed=1, batch_size=3)
        probs = np.asarray(nib.load(str(out.parent / "probabilities" / out.name)).dataobj)
        direct_p, _ = segment_volume_3d(seg.segment, torch.from_numpy(np.stack(normed)), PATCH, 0.5, "test_000",
                                        chunk=1, seed=1)
        np.testing.assert_allclose(probs, np.moveaxis(direct_p.numpy(), 0, -1), atol=1e-6)
    # Segmenter.predict of the same file: the same maps (8 windows per call instead of 3: conv rounding differs)
    pred = seg.predict(run.image, seed=1)
    np.testing.assert_allclose(pred.probs, probs, atol=1e-4)


def test_safetensors_export_predicts_like_the_run(run):
    exported = export_model(run.path, run.tmp / "model.safetensors")
    a = Segmenter.from_checkpoint(run.path, device="cpu")
    b = Segmenter.from_checkpoint(exported, device="cpu")
    windows = torch.rand(1, 1, *PATCH) * 2 - 1
    assert torch.equal(a.segment(windows, seed=0).probs, b.segment(windows, seed=0).probs)


@pytest.mark.slow  # tracing the graphs takes seconds
def test_onnx_export_predicts_volumes_like_pytorch(run):
    """The 3-D model's ONNX graphs (window-sized, batch dynamic) run by onnxruntime inside the same sampler and 3-D
    sliding windows give the PyTorch model's maps."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from spadfast.infer.onnx_export import export_onnx

    export_onnx(run.path, run.tmp / "onnx")
    meta = json.loads((run.tmp / "onnx" / "spadfast.json").read_text())
    assert set(meta["files"]) == ({"encoder.onnx", "denoiser.onnx"} if meta["cached_encoder"] else {"denoiser.onnx"})
    assert meta["cached_encoder"] == (meta["config"]["model_type"] == "cached_unet3d")
    onnx = Segmenter.load(run.tmp / "onnx")
    torch_seg = Segmenter.from_checkpoint(run.path, device="cpu", amp="none")
    got = predict_volume(onnx, [run.image], run.tmp / "onnx_pred" / "case.nii.gz", write_probabilities=True, seed=1)
    want = predict_volume(torch_seg, [run.image], run.tmp / "torch_pred" / "case.nii.gz", write_probabilities=True,
                          seed=1)
    p_got, p_want = (np.asarray(nib.load(str(o.parent / "probabilities" / o.name)).dataobj) for o in (got, want))
    np.testing.assert_allclose(p_got, p_want, atol=1e-3)
    # the CLI with --runtime onnxruntime writes what the ONNX segmenter wrote
    from spadfast.cli import main

    assert main(["predict", "--checkpoint", str(run.tmp / "onnx"), "--runtime", "onnxruntime", "--images",
                 str(run.image.parent), "--out", str(run.tmp / "onnx_cli"), "--seed", "1"]) == 0
    written = run.tmp / "onnx_cli" / run.image.name.replace("_0000", "")
    assert np.array_equal(np.asarray(nib.load(str(written)).dataobj), np.asarray(nib.load(str(got)).dataobj))


def test_refusals(run):
    seg = Segmenter.from_checkpoint(run.path, device="cpu")
    with pytest.raises(ValueError, match="3-D"):
        seg.predict(np.zeros((16, 16), np.float32))
    with pytest.raises(ValueError, match="`tta`"):
        predict_volume(seg, [run.image], run.tmp / "tta.nii.gz", tta=True)
    with pytest.raises(ValueError, match=r"\[B,C,D,H,W\]"):
        seg.segment(torch.zeros(1, 1, 8, 8))
    from PIL import Image

    from spadfast.infer.segmenter import predict_folder

    flat = run.tmp / "flat_images"
    flat.mkdir(exist_ok=True)
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(flat / "a.png")
    with pytest.raises(ValueError, match="holds 2-D images, and the model is 3-D"):
        predict_folder(seg, flat, run.tmp / "flat_out")
    assert not (run.tmp / "flat_out").exists()
