"""spadfast.infer.volumes with a fake segmenter: a predicted volume read back has exactly the source geometry
(shape, affine, qform/sform and their codes, zooms) for oblique affines and anisotropic spacing, 3-class labels
come back where the image says they are, and the slices it feeds the model are VolumeSlices' slices."""

import math

import nibabel as nib
import numpy as np
import pytest
import torch

from spadfast import SampleResult, SPADConfig
from spadfast.data.synthetic_volumes import write_demo_volumes
from spadfast.data.volumes import VolumeSlices
from spadfast.diffusion.sampler import labels_from_probs
from spadfast.evaluation.metrics import per_class_metrics
from spadfast.infer.volumes import predict_volume, predict_volume_folder
from spadfast.io.nifti import write_nifti

WINDOW = (0.0, 300.0)  # label c has intensity 100 c: -1, -1/3, 1/3, 1 after the window
CENTRES = (-1 / 3, 1 / 3, 1.0)


class FakeSegmenter:
    """Class k's probability is 1 at its intensity centre and falls to 0.5 half-way to the next one. Its config
    records modalities, as a model trained on volumes does."""

    def __init__(self, channels: int = 1, size: int = 16, classes: int = 2, resize: bool = True, **preprocessing):
        self.config = SPADConfig(image_size=size, image_channels=channels, device="cpu", channel_mults=(1,),
                                 attention_levels=(), modalities=("MR",) * channels, resize=resize, **preprocessing)
        self.classes = classes
        self.batches: list[torch.Tensor] = []
        self.keys: list[int] = []

    def segment(self, images, steps=None, ensemble=None, seed=0, noise_keys=None):
        assert images.dim() == 4 and images.shape[1] == self.config.image_channels
        self.batches.append(images.clone())
        self.keys.extend(noise_keys)
        x = images[:, :1]
        probs = torch.cat([(1 - 3 * (x - c).abs()).clamp(0, 1) for c in CENTRES[: self.classes]], dim=1)
        std = 0.1 * probs
        return SampleResult(probs, std, probs > 0.5)


def oblique_affine(spacing=(0.7, 1.1, 3.0), angles=(0.3, -0.2, 0.5), origin=(-12.5, 40.0, 7.25)):
    a, b, c = angles
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    aff = np.eye(4)
    aff[:3, :3] = rz @ ry @ rx @ np.diag(spacing)
    aff[:3, 3] = origin
    return aff


def three_class_labels(shape=(12, 10, 6)) -> np.ndarray:
    lab = np.zeros(shape, np.uint8)
    lab[2:9, 2:8, 1:5] = 1
    lab[4:7, 3:6, 2:4] = 2
    return lab


def write_source(path, lab, affine, qform_code=1, sform_code=2, dtype=np.int16, slope=None):
    image = (lab.astype(np.float32) * 100).astype(dtype)
    img = nib.Nifti1Image(image, affine)
    img.set_qform(affine, code=qform_code)
    img.set_sform(affine, code=sform_code)
    if slope is not None:
        img.header.set_slope_inter(*slope)
    nib.save(img, str(path))
    return path


def assert_same_geometry(out_path, src_path, shape):
    out, src = nib.load(str(out_path)), nib.load(str(src_path))
    assert out.shape == shape
    np.testing.assert_array_equal(out.affine, src.affine)
    for get in ("get_qform", "get_sform"):
        m_out, code_out = getattr(out.header, get)(coded=True)
        m_src, code_src = getattr(src.header, get)(coded=True)
        assert code_out == code_src
        np.testing.assert_array_equal(m_out, m_src)
    assert out.header.get_zooms()[:3] == src.header.get_zooms()[:3]
    assert out.header.get_xyzt_units() == src.header.get_xyzt_units()


@pytest.mark.parametrize("axis", [None, 0, 1])
def test_native_size_round_trip_is_exact(tmp_path, axis):
    lab = three_class_labels()
    src = write_source(tmp_path / "case_0000.nii.gz", lab, oblique_affine())
    shape = lab.shape
    plane = [s for i, s in enumerate(shape) if i != (2 if axis is None else axis)]
    seg = FakeSegmenter(size=plane[0], intensity_window=WINDOW)
    out = predict_volume(seg, [src], tmp_path / "out" / "case.nii.gz", axis=axis, image_size=tuple(plane),
                         batch_size=4)
    assert out == tmp_path / "out" / "case.nii.gz"
    assert_same_geometry(out, src, shape)
    got = nib.load(str(out))
    assert got.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(got.dataobj), lab)


def test_resized_slices_scaled_source_and_outputs(tmp_path):
    """Model size 16 vs native 12x10 (bilinear both ways), a scaled int16 source (slope/inter must not leak into
    the label map), and the optional probability and uncertainty volumes."""
    lab = three_class_labels((20, 14, 5))
    aff = oblique_affine(spacing=(0.6, 0.9, 4.0))
    # stored 100 c with slope 2, inter -1024: scaled intensities -1024, -824, -624 (same window positions)
    src = write_source(tmp_path / "p_0000.nii", lab, aff, qform_code=2, sform_code=1, slope=(2.0, -1024.0))
    assert np.asarray(nib.load(str(src)).dataobj).min() == -1024
    seg = FakeSegmenter(size=16, intensity_window=(-1024, -424))
    out = predict_volume(seg, [src], tmp_path / "o" / "p.nii.gz", axis=None,
                         write_probabilities=True, write_uncertainty=True)
    assert_same_geometry(out, src, lab.shape)
    got = nib.load(str(out))
    assert (got.dataobj.slope, got.dataobj.inter) == (1.0, 0.0)
    pred = np.asarray(got.dataobj)
    assert pred.dtype == np.uint8 and set(np.unique(pred)) <= {0, 1, 2}
    scores = per_class_metrics(pred, lab, classes=[1, 2], spacing=(0.6, 0.9, 4.0))
    # The fake calls the blend of classes 1 and 2 (intensity 0) background, so edges cost a little.
    assert scores["1"]["dice"] > 0.75 and scores["2"]["dice"] > 0.6, scores
    probs = nib.load(str(tmp_path / "o" / "probabilities" / "p.nii.gz"))
    std = nib.load(str(tmp_path / "o" / "uncertainty" / "p.nii.gz"))
    assert probs.shape == (*lab.shape, 2) and probs.get_data_dtype() == np.float32
    np.testing.assert_array_equal(probs.affine, nib.load(str(src)).affine)
    p = np.asarray(probs.dataobj)
    np.testing.assert_array_equal(labels_from_probs(np.moveaxis(p, -1, 1)), pred)  # the one label rule ([I,K,J,Z])
    np.testing.assert_allclose(np.asarray(std.dataobj), 0.1 * p, rtol=1e-5, atol=1e-6)
    # the fed slices: 5 slices of 16x16 along the coarsest axis (2), keyed by case and slice
    assert sum(b.shape[0] for b in seg.batches) == 5 and seg.batches[0].shape[1:] == (1, 16, 16)
    assert len(set(seg.keys)) == 5


def test_binary_model_writes_0_1(tmp_path):
    lab = (three_class_labels() > 0).astype(np.uint8)
    src = write_source(tmp_path / "b_0000.nii.gz", lab, oblique_affine())
    out = predict_volume(FakeSegmenter(size=12, classes=1, intensity_window=WINDOW), [src], tmp_path / "b.nii.gz",
                         axis=2, image_size=(12, 10))
    np.testing.assert_array_equal(np.asarray(nib.load(str(out)).dataobj), lab)


def test_folder_of_multimodal_cases_matches_training_slices(tmp_path):
    """predict_volume_folder groups _0000/_0001 by case, reads modalities from dataset.json, and feeds the model
    exactly the slices VolumeSlices serves for training (one normalisation and slicing path)."""
    root = write_demo_volumes(tmp_path / "d", n_cases=2, shape=(14, 12, 5), num_classes=3, n_test=0)
    # add a second modality per case
    for p in sorted((root / "imagesTr").glob("*_0000.nii.gz")):
        img = nib.load(str(p))
        write_nifti(p.with_name(p.name.replace("_0000", "_0001")), np.asarray(img.dataobj) * 2.0 + 5,
                    reference=img)
    meta = (root / "dataset.json").read_text().replace('"modality": {\n    "0": "MR"\n  }',
                                                         '"modality": {"0": "MR", "1": "T2"}')
    (root / "dataset.json").write_text(meta)
    ds = VolumeSlices(root, image_size=16, foreground_fraction=None)
    assert ds.modalities == ["MR", "T2"]
    seg = FakeSegmenter(channels=2, size=16, classes=2)
    names = predict_volume_folder(seg, root / "imagesTr", tmp_path / "pred", batch_size=3)
    assert names == ["case_000", "case_001"]
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == ["case_000.nii.gz", "case_001.nii.gz"]
    fed = torch.cat(seg.batches)
    want = torch.stack([ds[i][0] for i in range(len(ds))])
    torch.testing.assert_close(fed, want, rtol=0, atol=0)
    for case in names:
        assert_same_geometry(tmp_path / "pred" / f"{case}.nii.gz", root / "imagesTr" / f"{case}_0000.nii.gz",
                             (14, 12, 5))


def test_bad_arguments(tmp_path):
    lab = three_class_labels()
    src = write_source(tmp_path / "c_0000.nii.gz", lab, oblique_affine())
    seg = FakeSegmenter(channels=2)
    with pytest.raises(ValueError, match="config.image_channels"):
        predict_volume(seg, [src], tmp_path / "c.nii.gz")
    with pytest.raises(ValueError, match="`out_path`"):
        predict_volume(FakeSegmenter(), [src], tmp_path / "c.png")
    with pytest.raises(ValueError, match="`axis`"):
        predict_volume(FakeSegmenter(), [src], tmp_path / "c.nii.gz", axis=5)
    with pytest.raises(ValueError, match="`batch_size`"):
        predict_volume(FakeSegmenter(), [src], tmp_path / "c.nii.gz", batch_size=0)
    broken = tmp_path / "d_0000.nii.gz"
    broken.write_bytes(src.read_bytes()[:200])
    with pytest.raises(ValueError, match="d_0000.nii.gz"):
        predict_volume(FakeSegmenter(), [broken], tmp_path / "d.nii.gz")


def test_with_a_real_trainer_binary(tmp_path):
    """End to end with a binary model: VolumeSlices trains a SPADTrainer, predict_volume_folder segments
    imagesTs, evaluate scores against labelsTs (the README's volume example, tiny)."""
    from spadfast import SPADTrainer
    from spadfast.evaluation.evaluate import evaluate_folders
    from tests.helpers import tiny_config

    root = write_demo_volumes(tmp_path / "d", n_cases=2, n_test=1, shape=(16, 16, 4), num_classes=2)
    ds = VolumeSlices(root, image_size=16)
    trainer = SPADTrainer(tiny_config(image_size=16, train_steps=2, batch_size=2), train_data=ds)
    trainer.fit()
    names = predict_volume_folder(trainer, root / "imagesTs", tmp_path / "pred", steps=2, ensemble=1)
    assert names == ["test_000"]
    assert_same_geometry(tmp_path / "pred" / "test_000.nii.gz", root / "imagesTs" / "test_000_0000.nii.gz",
                         (16, 16, 4))
    report = evaluate_folders(tmp_path / "pred", root / "labelsTs")
    assert set(report["mean"]["per_class"]) == {"1"}


def test_channels_last_source_gives_a_3d_label_map(tmp_path):
    """The original Decathlon layout: one 4-D file, modalities last; the label map has its spatial shape and affine."""
    lab = three_class_labels()
    aff = oblique_affine()
    image = np.stack([lab * 100.0, lab * 50.0], axis=-1).astype(np.float32)
    img = nib.Nifti1Image(image, aff)
    img.set_qform(aff, code=1)
    img.set_sform(aff, code=1)
    nib.save(img, str(tmp_path / "v.nii.gz"))
    seg = FakeSegmenter(channels=2, size=12, intensity_window=WINDOW)
    out = predict_volume(seg, tmp_path / "v.nii.gz", tmp_path / "out" / "v.nii.gz", axis=2, image_size=(12, 10))
    got = nib.load(str(out))
    assert got.shape == lab.shape
    np.testing.assert_array_equal(got.affine, nib.load(str(tmp_path / "v.nii.gz")).affine)  # as stored (float32)
    np.testing.assert_array_equal(np.asarray(got.dataobj), lab)


@pytest.mark.parametrize("ct_normalization", ["volume", "dataset"])
def test_ct_folder_uses_the_training_normalisation(tmp_path, ct_normalization):
    """imagesTs of a CT data set: the model (trained on it, so recording "CT") gets the CT rule for prediction as
    for training: each volume's own percentile window, or the training set's statistics from the config."""
    from spadfast.io.volume_norm import ct_stats_to_flat

    root = write_demo_volumes(tmp_path / "d", n_cases=2, n_test=2, shape=(12, 12, 4), modality="CT", num_classes=3)
    seg = FakeSegmenter(size=16)
    seg.config.ct_normalization = ct_normalization
    stats = None
    if ct_normalization == "dataset":
        stats = VolumeSlices(root, image_size=16, ct_stats="compute").ct_stats  # the training set's (imagesTr)
        seg.config.ct_stats = ct_stats_to_flat(stats)
    ds = VolumeSlices(root, image_size=16, foreground_fraction=None, split="test", ct_stats=stats)
    assert ds.modalities == ["CT"]
    seg.config.modalities = tuple(ds.modalities)
    predict_volume_folder(seg, root / "imagesTs", tmp_path / "pred")
    fed = torch.cat(seg.batches)
    torch.testing.assert_close(fed, torch.stack([ds[i][0] for i in range(len(ds))]), rtol=0, atol=0)
    kind = "window" if ct_normalization == "volume" else "ct_dataset"
    assert all(c.norm[0].kind == kind for c in ds._cases)


def image_model_config(**overrides) -> SPADConfig:
    return SPADConfig(image_size=12, device="cpu", channel_mults=(1,), attention_levels=(), **overrides)


@pytest.mark.parametrize(
    "overrides, allow, refused",
    [
        (dict(), False, True),  # binary, trained on 2-D images: no modalities recorded
        (dict(), True, False),  # ... run on volumes on request
        (dict(modalities=("MR",)), False, False),  # binary, trained on volumes
        (dict(num_classes=3), False, False),  # multi-class: volumes only
    ],
)
def test_a_binary_model_trained_on_2d_images_is_refused_on_volumes(tmp_path, overrides, allow, refused):
    root = write_demo_volumes(tmp_path / "d", n_cases=1, n_test=1, shape=(12, 10, 3), num_classes=2)
    seg = FakeSegmenter(size=12, classes=1)
    seg.config = image_model_config(**overrides)
    out = tmp_path / "pred"
    calls = [
        lambda: predict_volume_folder(seg, root / "imagesTs", out, allow_image_model=allow),
        lambda: predict_volume(seg, [root / "imagesTs" / "test_000_0000.nii.gz"], out / "one.nii.gz",
                               allow_image_model=allow),
    ]
    for call in calls:
        if refused:
            with pytest.raises(ValueError, match="trained on 2-D images.*allow_image_model"):
                call()
            assert not out.exists() and seg.batches == []
        else:
            call()
            assert out.is_dir()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny binary checkpoint trained on PNGs and one trained on volumes, and the volume set."""
    from spadfast import SPADTrainer
    from spadfast.data.synthetic import write_synthetic_folder
    from tests.helpers import tiny_config

    base = tmp_path_factory.mktemp("runs")
    root = write_demo_volumes(base / "vol", n_cases=1, n_test=2, shape=(16, 16, 3), num_classes=2)
    png = SPADTrainer(tiny_config(), train_data=write_synthetic_folder(base / "png", 3, 16))
    png.fit(1)
    vol = SPADTrainer(tiny_config(), train_data=VolumeSlices(root, image_size=16))
    vol.fit(1)
    return {"png": png.save(base / "png_run"), "vol": vol.save(base / "vol_run"), "root": root}


def predict_cli(capsys, checkpoint, images, out) -> tuple[int, list[str]]:
    from spadfast.cli import main

    code = main(["predict", "--checkpoint", str(checkpoint), "--images", str(images), "--out", str(out),
                 "--steps", "1", "--ensemble", "1"])
    return code, capsys.readouterr().err.splitlines()


def test_cli_refuses_a_png_model_on_volumes_in_one_line(runs, tmp_path, capsys):
    code, err = predict_cli(capsys, runs["png"], runs["root"] / "imagesTs", tmp_path / "pred")
    assert code == 2 and len(err) == 1 and "trained on 2-D images" in err[0], err
    assert not (tmp_path / "pred").exists()
    code, _ = predict_cli(capsys, runs["vol"], runs["root"] / "imagesTs", tmp_path / "pred")
    assert code == 0 and sorted(p.name for p in (tmp_path / "pred").glob("*.nii.gz")) == [
        "test_000.nii.gz", "test_001.nii.gz"]


@pytest.mark.parametrize("image_ext", [".png", ".jpg", ".tif"])
@pytest.mark.parametrize("volume_ext", [".nii.gz", ".nii"])
def test_a_folder_mixing_images_and_volumes_is_refused_before_work(runs, tmp_path, capsys, image_ext, volume_ext):
    import cv2

    from spadfast.infer.segmenter import predict_folder

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    source = nib.load(str(runs["root"] / "imagesTs" / "test_000_0000.nii.gz"))
    nib.save(source, str(mixed / f"test_000_0000{volume_ext}"))
    cv2.imwrite(str(mixed / f"slice{image_ext}"), np.zeros((16, 16), np.uint8))
    pattern = f"mixes 2-D images and NIfTI volumes.*slice{image_ext}.*test_000_0000{volume_ext}"
    seg = FakeSegmenter(size=16, classes=1)
    for call in (lambda: predict_volume_folder(seg, mixed, tmp_path / "a"),
                 lambda: predict_folder(seg, mixed, tmp_path / "b")):
        with pytest.raises(ValueError, match=pattern):
            call()
    assert seg.batches == [] and not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    code, err = predict_cli(capsys, runs["vol"], mixed, tmp_path / "pred")
    assert code == 2 and len(err) == 1 and str(mixed) in err[0] and "mixes" in err[0], err
    assert not (tmp_path / "pred").exists()


def test_volume_settings_are_one_dataclass_with_keyword_overrides():
    from dataclasses import fields

    from spadfast.infer.volumes import VolumeSettings, _settings

    base = VolumeSettings(steps=3, write_uncertainty=True)
    merged = _settings(base, {"steps": 5, "batch_size": 2})
    assert (merged.steps, merged.batch_size, merged.write_uncertainty) == (5, 2, True)
    assert _settings(None, {}) == VolumeSettings()
    assert len(fields(VolumeSettings)) == 13
    with pytest.raises(TypeError, match="stepz"):
        _settings(None, {"stepz": 5})
    with pytest.raises(TypeError, match="settings"):
        _settings({"steps": 5}, {})


def test_native_slices_are_segmented_at_their_own_size_with_sliding_windows(tmp_path):
    """resize: false: each slice keeps its in-plane size; a pointwise model gives exactly its pointwise labels."""
    import nibabel as nib

    from spadfast.io.volume_norm import normalize_volume

    rng = np.random.default_rng(0)
    data = rng.normal(0, 1, (37, 29, 3)).astype(np.float32)
    src = tmp_path / "case_0000.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([0.8, 0.8, 3.0, 1.0])), str(src))
    seg = FakeSegmenter(size=16, classes=2, resize=False)
    out = predict_volume(seg, [src], tmp_path / "out" / "case.nii.gz", axis=2, write_probabilities=True)
    assert all(b.shape[-2:] == (16, 16) for b in seg.batches)  # windows of image_size, never a resized slice
    normed, _ = normalize_volume([data], ["MR"])
    x = torch.from_numpy(normed[0])[None]
    want = torch.cat([(1 - 3 * (x - c).abs()).clamp(0, 1) for c in CENTRES[:2]], dim=0)  # [2, I, J, K]
    probs = nib.load(str(tmp_path / "out" / "probabilities" / "case.nii.gz")).get_fdata(dtype=np.float32)
    np.testing.assert_allclose(probs, np.moveaxis(want.numpy(), 0, -1), rtol=1e-5, atol=1e-5)
    assert nib.load(str(out)).shape == data.shape


def test_uint8_maps_are_a_quarter_of_the_memory_and_read_back_as_floats(tmp_path):
    import nibabel as nib

    rng = np.random.default_rng(3)
    data = rng.normal(0, 1, (20, 18, 3)).astype(np.float32)
    src = tmp_path / "case_0000.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([0.8, 0.8, 3.0, 1.0])), str(src))
    seg = FakeSegmenter(size=16, classes=2)
    full = predict_volume(seg, [src], tmp_path / "a" / "case.nii.gz", axis=2, write_probabilities=True,
                          write_uncertainty=True)
    small = predict_volume(seg, [src], tmp_path / "b" / "case.nii.gz", axis=2, write_probabilities=True,
                           write_uncertainty=True, uint8_maps=True, progress=True)
    for sub in ("probabilities", "uncertainty"):
        a = nib.load(str(full.parent / sub / "case.nii.gz"))
        b = nib.load(str(small.parent / sub / "case.nii.gz"))
        assert a.get_data_dtype() == np.float32 and b.get_data_dtype() == np.uint8
        np.testing.assert_allclose(b.get_fdata(), a.get_fdata(), atol=0.5 / 255 + 1e-6)
        np.testing.assert_allclose(b.affine, a.affine)
    assert np.array_equal(nib.load(str(full)).get_fdata(), nib.load(str(small)).get_fdata())  # the same labels


def test_target_spacing_resamples_each_slice_and_maps_back_to_the_input_grid(tmp_path):
    """A pointwise model: the probabilities are exactly its pointwise output on the slice resampled to the target
    spacing, resampled back to the slice's own size."""
    import nibabel as nib

    from spadfast.data.volumes import resize_plane, spacing_size
    from spadfast.io.volume_norm import normalize_volume

    rng = np.random.default_rng(1)
    data = rng.normal(0, 1, (37, 29, 3)).astype(np.float32)
    src = tmp_path / "case_0000.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([0.7, 0.5, 3.0, 1.0])), str(src))
    assert spacing_size(data.shape, (0.7, 0.5, 3.0), 2, (1.6, 1.1)) == (16, 13)  # 37 * 0.7 / 1.6, 29 * 0.5 / 1.1
    seg = FakeSegmenter(size=8, classes=2, resize=False, target_spacing=(1.6, 1.1))
    out = predict_volume(seg, [src], tmp_path / "out" / "case.nii.gz", axis=2, write_probabilities=True)
    assert nib.load(str(out)).shape == data.shape
    normed, _ = normalize_volume([data], ["MR"])
    probs = nib.load(str(tmp_path / "out" / "probabilities" / "case.nii.gz")).get_fdata(dtype=np.float32)
    for k in range(3):
        small = np.clip(resize_plane(normed[0][:, :, k], (16, 13)), -1, 1)
        for c, centre in enumerate(CENTRES[:2]):
            want = resize_plane(np.clip(1 - 3 * np.abs(small - centre), 0, 1).astype(np.float32), (37, 29))
            np.testing.assert_allclose(probs[:, :, k, c], want, atol=1e-5)


def test_training_slices_are_resampled_to_the_target_spacing(tmp_path):
    from spadfast.config import SPADConfig
    from spadfast.data.synthetic_volumes import write_demo_volumes
    from spadfast.data.volumes import VolumeSlices

    root = write_demo_volumes(tmp_path / "vols", n_cases=2, shape=(24, 22, 4), seed=0)
    native = VolumeSlices(root, image_size=None, foreground_fraction=None)
    coarse = VolumeSlices(root, image_size=None, foreground_fraction=None, target_spacing=(2.0, 2.0))
    for i in range(len(native)):
        (x, y), (xs, ys) = native[i], coarse[i]
        case, _ = native.slice_of(i)
        sp = [s for a, s in enumerate(native.spacings[case]) if a != native.axis]
        want = tuple(max(1, round(n * s / 2.0)) for n, s in zip(x.shape[-2:], sp))
        assert tuple(xs.shape[-2:]) == want == tuple(ys.shape[-2:])
        assert set(ys.unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="target_spacing"):
        SPADConfig(target_spacing=(1.0, 1.0), resize=True)
    with pytest.raises(ValueError, match="target_spacing"):
        SPADConfig(target_spacing=(1.0, 0.0))
    with pytest.raises(ValueError, match="target_spacing"):
        VolumeSlices(root, image_size=None, target_spacing=(1.0,))


def _store_permuted_and_flipped(path):
    """Rewrite a NIfTI file with its axes 0 and 1 swapped and the first flipped (same anatomy, another storage)."""
    img = nib.load(str(path))
    nib.save(img.as_reoriented(np.array([[1, -1], [0, 1], [2, 1]])), str(path))


def test_the_documented_call_preprocesses_as_the_model_was_trained_and_equals_predict(tmp_path, capsys):
    """A CT model trained with ``reorient: RAS``: ``predict_volume(seg, path, out)`` with no settings feeds the model
    exactly the slices training saw (CT window, RAS order), and writes the bytes ``spadfast predict`` writes."""
    from spadfast import SPADTrainer
    from spadfast.cli import main
    from spadfast.infer.segmenter import Segmenter
    from tests.helpers import tiny_config

    root = write_demo_volumes(tmp_path / "d", n_cases=1, n_test=1, shape=(16, 12, 4), modality="CT", num_classes=2)
    case = root / "imagesTs" / "test_000_0000.nii.gz"
    _store_permuted_and_flipped(case)
    _store_permuted_and_flipped(root / "labelsTs" / "test_000.nii.gz")
    trainer = SPADTrainer(tiny_config(reorient="RAS", train_steps=1, image_size=16, resize=True), root)
    trainer.fit()
    seg = Segmenter.load(trainer.save(tmp_path / "run"))
    assert seg.config.modalities == ("CT",) and seg.config.reorient == "RAS"

    fed: list[torch.Tensor] = []
    segment = seg.segment
    seg.segment = lambda images, **kw: fed.append(images.clone()) or segment(images, **kw)
    api = predict_volume(seg, case, tmp_path / "api" / "test_000.nii.gz", steps=1, ensemble=1)
    from spadfast.io.volume_norm import ct_stats_from_flat

    training = VolumeSlices(root, image_size=16, foreground_fraction=None, split="test", reorient="RAS",
                            ct_stats=ct_stats_from_flat(seg.config.ct_stats))  # the training set's CT statistics
    assert training.modalities == ["CT"] and training._cases[0].norm[0].kind == "ct_dataset"
    torch.testing.assert_close(torch.cat(fed), torch.stack([training[i][0] for i in range(len(training))]),
                               rtol=0, atol=0)

    code = main(["predict", "--checkpoint", str(tmp_path / "run"), "--images", str(root / "imagesTs"), "--out",
                 str(tmp_path / "cli"), "--steps", "1", "--ensemble", "1", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "cli" / "test_000.nii.gz").read_bytes() == api.read_bytes()
    labels = seg.predict(case, steps=1, ensemble=1).labels
    np.testing.assert_array_equal(labels, np.asarray(nib.load(str(api)).dataobj))


def test_preprocessing_is_not_a_prediction_setting(tmp_path):
    """The model's config is the one source of the preprocessing: the old per-call knobs are refused by name."""
    from spadfast.infer.volumes import model_preprocessing

    src = write_source(tmp_path / "c_0000.nii.gz", three_class_labels(), oblique_affine())
    seg = FakeSegmenter(intensity_window=WINDOW, reorient="RAS", slice_axis=1)
    for option, key in (("window", "intensity_window"), ("modalities", "modalities"), ("reorient", "reorient"),
                        ("target_spacing", "target_spacing")):
        with pytest.raises(TypeError, match=f"`{option}` is not a prediction setting.*`{key}`"):
            predict_volume(seg, [src], tmp_path / "c.nii.gz", **{option: None})
    prep = model_preprocessing(seg.config)
    assert (prep.modalities, prep.window, prep.reorient, prep.target_spacing, prep.axis) == (
        ("MR",), WINDOW, "RAS", (), 1)
    assert model_preprocessing(image_model_config(), ["CT"]).modalities == ("CT",)  # a model recording none
    predict_volume(seg, [src], tmp_path / "c.nii.gz", batch_size=20)
    assert len(seg.batches) == 1 and seg.batches[0].shape[0] == 10  # the model's slice axis 1 (RAS order)


@pytest.mark.parametrize("kind", ["extensions", "nifti2"])
def test_maps_are_written_for_inputs_with_header_extensions_or_nifti2(tmp_path, kind):
    """AFNI/FreeSurfer inputs carry header extensions, some converters write NIfTI-2: the label, probability and
    uncertainty maps are written on their grid (the extensions are not copied)."""
    lab = three_class_labels()
    affine = oblique_affine()
    image_class = nib.Nifti2Image if kind == "nifti2" else nib.Nifti1Image
    img = image_class((lab * 100).astype(np.int16), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=2)
    if kind == "extensions":
        img.header.extensions.append(nib.nifti1.Nifti1Extension("afni", b"<AFNI_attributes self_idcode='x'/>" * 4))
    src = tmp_path / "case_0000.nii.gz"
    nib.save(img, str(src))
    seg = FakeSegmenter(size=12, intensity_window=WINDOW)
    out = predict_volume(seg, [src], tmp_path / "out" / "case.nii.gz", axis=2, image_size=(12, 10),
                         write_probabilities=True, write_uncertainty=True)
    assert_same_geometry(out, src, lab.shape)
    np.testing.assert_array_equal(np.asarray(nib.load(str(out)).dataobj), lab)
    for sub in ("probabilities", "uncertainty"):
        maps = nib.load(str(tmp_path / "out" / sub / "case.nii.gz"))
        assert type(maps) is image_class and maps.shape == (*lab.shape, 2) and not maps.header.extensions
        np.testing.assert_array_equal(maps.affine, nib.load(str(src)).affine)


def test_an_unwritable_input_header_fails_before_the_case_is_segmented(tmp_path, monkeypatch):
    from nibabel.spatialimages import HeaderDataError

    import spadfast.io.nifti as nifti_write

    src = write_source(tmp_path / "case_0000.nii.gz", three_class_labels(), oblique_affine())

    def refuse(header, out):
        raise HeaderDataError("no header for you")

    monkeypatch.setattr(nifti_write, "_write_header", refuse)
    seg = FakeSegmenter(size=12)
    with pytest.raises(ValueError, match=r"case_0000\.nii\.gz: cannot write a uint8 \[12, 10, 6\] map.*no header"):
        predict_volume(seg, [src], tmp_path / "out" / "case.nii.gz")
    assert seg.batches == [] and not (tmp_path / "out").exists()


class MembersSegmenter(FakeSegmenter):
    """A model that is neither flip- nor transpose-invariant (foreground only in the slice's upper-left quarter)
    and returns its members, as test-time augmentation needs."""

    def segment(self, images, steps=None, ensemble=None, seed=0, return_members=False, noise_keys=None):
        self.batches.append(images.clone())
        H, W = images.shape[-2:]
        corner = ((torch.arange(H) < H // 2).view(H, 1) & (torch.arange(W) < W // 2).view(1, W)).float()
        probs = (images[:, :1] > 0).float() * corner
        members = probs[:, None].expand(-1, ensemble or 1, -1, -1, -1)
        return SampleResult.from_members(members, 0.5, return_members=return_members)


def test_tta_augments_every_slice_of_a_volume(tmp_path):
    data = np.random.default_rng(5).normal(size=(12, 12, 3)).astype(np.float32)
    src = tmp_path / "case_0000.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([0.8, 0.8, 3.0, 1.0])), str(src))
    plain, tta = MembersSegmenter(size=12), MembersSegmenter(size=12)
    a = segment_volume_probs(plain, src, tta=False)
    b = segment_volume_probs(tta, src, tta=True)
    assert len(tta.batches) == 2 * len(plain.batches)  # two views of each batch of slices
    torch.testing.assert_close(tta.batches[1], tta.batches[0].flip(-1))  # view 1 of spadfast.infer.tta: a flip of W
    corner = np.zeros((12, 12), bool)
    corner[:6, :6] = True
    flipped_corner = corner[:, ::-1]
    normed = plain.batches[0][:, 0].numpy().transpose(1, 2, 0)  # [I,J,K] slices along axis 2
    want = 0.5 * ((normed > 0) & corner[..., None]) + 0.5 * ((normed > 0) & flipped_corner[..., None])
    np.testing.assert_allclose(b, want, atol=1e-6)
    assert not np.allclose(a, b)


def segment_volume_probs(seg, src, tta):
    from spadfast.infer.volumes import segment_volume

    return segment_volume(seg, [src], axis=2, ensemble=2, tta=tta, write_probabilities=True)["probs"][..., 0]


def test_overlay_and_loose_dicom_slices_are_refused_in_one_line_before_work(runs, tmp_path, capsys):
    from spadfast.cli import main
    from spadfast.infer.segmenter import predict_folder

    code = main(["predict", "--checkpoint", str(runs["vol"]), "--images", str(runs["root"] / "imagesTs"), "--out",
                 str(tmp_path / "pred"), "--overlay"])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 1 and "--overlay draws contours on 2-D images" in err[0], err
    assert not (tmp_path / "pred").exists()
    loose = tmp_path / "dicom"
    loose.mkdir()
    for k in range(3):
        (loose / f"IM{k:04d}.dcm").write_bytes(b"\0" * 128 + b"DICM")
    pattern = "holds DICOM slices directly: move each series into its own sub-folder"
    seg = FakeSegmenter(size=16, classes=1)
    for call in (lambda: predict_volume_folder(seg, loose, tmp_path / "a"),
                 lambda: predict_folder(seg, loose, tmp_path / "b")):
        with pytest.raises(ValueError, match=pattern):
            call()
    code, err = predict_cli(capsys, runs["vol"], loose, tmp_path / "pred")
    assert code == 2 and len(err) == 1 and pattern in err[0] and str(loose) in err[0], err


def test_cli_tta_reaches_volume_slices(runs, tmp_path, capsys):
    from spadfast.cli import main

    maps = {}
    for flag in ([], ["--tta"]):
        out = tmp_path / f"pred{len(flag)}"
        code = main(["predict", "--checkpoint", str(runs["vol"]), "--images", str(runs["root"] / "imagesTs"),
                     "--out", str(out), "--steps", "1", "--ensemble", "2", "--probabilities", *flag])
        assert code == 0, capsys.readouterr().err
        maps[bool(flag)] = nib.load(str(out / "probabilities" / "test_000.nii.gz")).get_fdata()
    assert maps[True].shape == maps[False].shape and not np.allclose(maps[True], maps[False])


def test_tta_with_one_member_is_refused_before_work(tmp_path):
    src = write_source(tmp_path / "case_0000.nii.gz", three_class_labels(), oblique_affine())
    seg = MembersSegmenter(size=12)
    with pytest.raises(ValueError, match="test-time augmentation with `ensemble` 1"):
        predict_volume(seg, [src], tmp_path / "out" / "case.nii.gz", ensemble=1, tta=True)
    with pytest.raises(ValueError, match="test-time augmentation with `ensemble` 1"):
        predict_volume_folder(seg, tmp_path, tmp_path / "out", ensemble=1, tta=True)
    assert seg.batches == [] and not (tmp_path / "out").exists()


def test_native_slices_share_sampler_calls_and_predict_as_slice_by_slice(tmp_path):
    """Volume prediction at native resolution sends the windows of ``batch_size`` slices in one sampler call (a
    slice's few windows no longer fill a call each), and every window keeps its noise key: the label, probability
    and uncertainty maps equal slice-by-slice prediction."""
    from spadfast import SPADTrainer
    from spadfast.infer.segmenter import Segmenter
    from tests.helpers import tiny_config

    root = write_demo_volumes(tmp_path / "d", n_cases=1, n_test=1, shape=(20, 18, 5), num_classes=3)
    trainer = SPADTrainer(tiny_config(train_steps=1, num_classes=3, image_size=8, resize=False), root)
    seg = Segmenter.load(trainer.save(tmp_path / "run"))
    calls: list[int] = []
    segment = seg.segment
    seg.segment = lambda images, **kw: calls.append(images.shape[0]) or segment(images, **kw)
    case = root / "imagesTs" / "test_000_0000.nii.gz"
    maps = {}
    for batch_size in (1, 3, 5):
        calls.clear()
        out = predict_volume(seg, case, tmp_path / str(batch_size) / "t.nii.gz", steps=2, ensemble=2,
                             batch_size=batch_size, write_probabilities=True, write_uncertainty=True)
        maps[batch_size] = [np.asarray(nib.load(str(p)).dataobj) for p in sorted(out.parent.rglob("*.nii.gz"))]
        windows_per_slice = 16  # 20 x 18 slices in 8 x 8 windows at overlap 0.5: 4 x 4 positions
        assert calls == [windows_per_slice * min(batch_size, 5 - s) for s in range(0, 5, batch_size)]
    assert len(maps[1]) == 3
    for batch_size in (3, 5):
        for a, b in zip(maps[1], maps[batch_size]):
            np.testing.assert_array_equal(a, b)
