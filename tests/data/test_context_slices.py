"""2.5-D input (``context_slices: k``): each slice arrives with its k neighbours on each side as extra channels, in
training, validation, prediction and both exports alike; edge slices are replicated; 2-D inputs are refused in one
line."""

import gzip
import shutil

import numpy as np
import pytest
import torch

from spadfast import SPADTrainer
from spadfast.config import SPADConfig
from spadfast.data.synthetic_volumes import write_demo_volumes
from spadfast.data.volumes import VolumeSlices, context_indices, slice_volume
from spadfast.infer.segmenter import Segmenter, predict_folder
from spadfast.infer.volumes import predict_volume

from ..helpers import tiny_config


@pytest.mark.parametrize("context", [0, 1, 2])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slice_volume_stacks_the_neighbours_offset_major_with_edges_replicated(context, axis):
    rng = np.random.default_rng(axis * 10 + context)
    channels = [rng.uniform(-1, 1, size=(5, 6, 4)).astype(np.float32) for _ in range(2)]
    n = channels[0].shape[axis]
    for index in range(n):
        got = slice_volume(channels, axis, index, None, context)
        want = [np.take(ch, min(max(index + d, 0), n - 1), axis=axis) for d in range(-context, context + 1)
                for ch in channels]
        np.testing.assert_array_equal(got, np.stack(want))
        np.testing.assert_array_equal(got[2 * context:2 * context + 2], slice_volume(channels, axis, index, None))
    assert context_indices(0, 2, 4) == [0, 0, 0, 1, 2] and context_indices(3, 1, 4) == [2, 3, 3]


def _gunzipped(root, dest):
    """The data set with every volume uncompressed (.nii): slices are then read from memory-mapped files."""
    shutil.copytree(root, dest)
    for path in list(dest.rglob("*.nii.gz")):
        with gzip.open(path) as src, open(path.with_suffix(""), "wb") as out:
            shutil.copyfileobj(src, out)
        path.unlink()
    return dest


def test_memory_mapped_slabs_equal_decoded_volumes(tmp_path):
    root = write_demo_volumes(tmp_path / "gz", n_cases=2, shape=(12, 10, 5), num_classes=3, n_test=0)
    plain = _gunzipped(root, tmp_path / "nii")
    decoded = VolumeSlices(root, image_size=8, foreground_fraction=None, context_slices=1, cache_volumes=4)
    mapped = VolumeSlices(plain, image_size=8, foreground_fraction=None, context_slices=1, cache_volumes=0)
    assert mapped._uncompressed(0) and len(decoded) == len(mapped) == 10
    for i in range(len(decoded)):  # slices 0 and 4 of each case: the edges
        (a, ma), (b, mb) = decoded[i], mapped[i]
        assert a.shape == (3, 8, 8) and torch.equal(a, b) and torch.equal(ma, mb)


def test_training_and_prediction_see_the_same_context(tmp_path):
    root = write_demo_volumes(tmp_path / "d", n_cases=2, shape=(12, 10, 5), num_classes=3, n_test=1)
    cfg = tiny_config(train_steps=2, num_classes=3, image_size=8, resize=True, context_slices=1)
    assert cfg.input_channels == 3 and cfg.model_in_channels == 2 + 3
    trainer = SPADTrainer(cfg, root, root)
    image, mask = trainer.train_data[0]
    assert image.shape == (3, 8, 8) and mask.shape == (2, 8, 8)
    trainer.fit()
    seg = Segmenter.load(trainer.save(tmp_path / "run"))
    assert seg.config.context_slices == 1
    fed: list[torch.Tensor] = []
    segment = seg.segment
    seg.segment = lambda images, **kw: fed.append(images.clone()) or segment(images, **kw)
    case = root / "imagesTs" / "test_000_0000.nii.gz"
    predict_volume(seg, case, tmp_path / "out" / "t.nii.gz", steps=1, ensemble=1)
    test = VolumeSlices(root, image_size=8, foreground_fraction=None, split="test", context_slices=1,
                        ct_stats=None, axis=seg.config.slice_axis)
    torch.testing.assert_close(torch.cat(fed), torch.stack([test[i][0] for i in range(len(test))]), rtol=0, atol=0)


def test_2d_inputs_are_refused_in_one_line(tmp_path):
    from spadfast.data.synthetic import write_synthetic_folder

    folder = write_synthetic_folder(tmp_path / "png", 3, 16, seed=0)
    with pytest.raises(ValueError, match="`train_data`.*context_slices 1.*2-D"):
        SPADTrainer(tiny_config(context_slices=1), folder)
    with pytest.raises(ValueError, match="`train_data`.*synthetic lesions"):
        SPADTrainer(tiny_config(context_slices=1))
    with pytest.raises(ValueError, match="`context_slices`"):
        SPADConfig(context_slices=-1)
    root = write_demo_volumes(tmp_path / "d", n_cases=1, shape=(12, 10, 4), num_classes=2, n_test=0)
    trainer = SPADTrainer(tiny_config(train_steps=1, image_size=8, resize=True, context_slices=1), root)
    seg = Segmenter.load(trainer.save(tmp_path / "run"))
    with pytest.raises(ValueError, match="2-D image.*segments volumes only"):
        seg.predict(np.zeros((16, 16), np.uint8))
    with pytest.raises(ValueError, match="holds 2-D images.*segments volumes only"):
        predict_folder(seg, folder / "images", tmp_path / "pred")
    assert not (tmp_path / "pred").exists()


@pytest.mark.slow  # tracing the ONNX graphs takes seconds
def test_exports_of_a_2_5d_model_predict_like_the_run(tmp_path):
    """A 2.5-D model's safetensors export gives the run's volume maps exactly, its ONNX export (graphs taking the
    2k + 1 slices as channels) within 1e-3."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import nibabel as nib

    from spadfast.infer.onnx_export import export_onnx
    from spadfast.models.export import export_model

    root = write_demo_volumes(tmp_path / "d", n_cases=2, shape=(12, 10, 5), num_classes=3, n_test=1)
    trainer = SPADTrainer(tiny_config(train_steps=2, num_classes=3, image_size=8, resize=True, context_slices=2),
                          root)
    trainer.fit()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # every layer shapes the output (the output convolution starts at zero)
        for p in trainer.ema.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    run = trainer.save(tmp_path / "run")
    export_model(run, tmp_path / "model.safetensors")
    export_onnx(run, tmp_path / "onnx")
    case = root / "imagesTs" / "test_000_0000.nii.gz"
    maps = {}
    for name, source in (("run", run), ("safetensors", tmp_path / "model.safetensors"), ("onnx", tmp_path / "onnx")):
        seg = Segmenter.load(source) if name == "onnx" else Segmenter.from_checkpoint(source, device="cpu", amp="none")
        assert seg.config.context_slices == 2
        out = predict_volume(seg, case, tmp_path / name / "t.nii.gz", steps=2, ensemble=2, write_probabilities=True)
        maps[name] = np.asarray(nib.load(str(out.parent / "probabilities" / out.name)).dataobj)
    assert np.array_equal(maps["safetensors"], maps["run"])
    np.testing.assert_allclose(maps["onnx"], maps["run"], atol=1e-3)
