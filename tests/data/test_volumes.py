"""spadfast.data.volumes: the Decathlon / nnU-Net layout, dataset.json in both forms, normalisation, slice sampling, the
volume cache, and a clear ValueError naming the file for every kind of bad input."""

import gzip
import json

import nibabel as nib
import numpy as np
import pytest
import torch

from spadfast.data import volumes
from spadfast.data.synthetic_volumes import write_demo_volumes
from spadfast.data.volumes import VolumeSlices, coarsest_axis
from spadfast.io import volume_norm
from spadfast.io.nifti import group_cases, is_volume_folder, read_dataset_json
from spadfast.io.nifti import write_nifti
from spadfast.io.volume_norm import apply_normalization, normalization_params

SHAPE = (12, 10, 6)
SPACING = (0.8, 0.9, 2.5)


def affine_of(spacing=SPACING, origin=(1.0, -2.0, 3.0)) -> np.ndarray:
    a = np.diag([*spacing, 1.0])
    a[:3, 3] = origin
    return a


def blob_labels(seed: int, shape=SHAPE, classes: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, np.uint8)
    for c in range(1, classes):
        lo = [int(rng.integers(0, s // 2)) for s in shape]
        hi = [lo[i] + int(rng.integers(2, shape[i] // 2 + 1)) for i in range(3)]
        lab[lo[0] : hi[0], lo[1] : hi[1], 1 : shape[2] - 2] = c
    return lab


def write_set(root, n=2, classes=3, channels=1, json_form="decathlon", modality="MR", shape=SHAPE, seed=0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        lab = blob_labels(seed + i, shape, classes)
        aff = affine_of()
        for c in range(channels):
            img = (lab * 100.0 + rng.normal(0, 5, shape) + 50 * c).astype(np.float32)
            write_nifti(root / "imagesTr" / f"c{i}_{c:04d}.nii.gz", img, affine=aff)
        write_nifti(root / "labelsTr" / f"c{i}.nii.gz", lab, affine=aff)
    names = ["background", "a", "b", "c"][:classes]
    mods = {str(c): modality for c in range(channels)}
    if json_form == "decathlon":
        meta = {"labels": {str(i): n for i, n in enumerate(names)}, "modality": mods}
    elif json_form == "nnunet":
        meta = {"labels": {n: i for i, n in enumerate(names)}, "channel_names": mods}
    else:
        meta = None
    if meta is not None:
        (root / "dataset.json").write_text(json.dumps(meta))
    return root


# ---------------------------------------------------------------------------------------------------------------
# Layout and dataset.json


def test_demo_volumes_and_basic_items(tmp_path):
    root = write_demo_volumes(tmp_path / "d", n_cases=3, shape=(16, 14, 6), num_classes=3, seed=1)
    assert is_volume_folder(root) and not is_volume_folder(tmp_path)
    assert sorted(p.name for p in (root / "imagesTs").iterdir()) == ["test_000_0000.nii.gz", "test_001_0000.nii.gz"]
    assert sorted(p.name for p in (root / "labelsTs").iterdir()) == ["test_000.nii.gz", "test_001.nii.gz"]
    ds = VolumeSlices(root, image_size=16)
    assert ds.case_names == ["case_000", "case_001", "case_002"]
    assert ds.num_classes == 3 and ds.mask_channels == 2 and ds.class_names == ["background", "organ", "lesion"]
    assert ds.modalities == ["MR"] and ds.image_channels == 1
    assert ds.axis == 2  # coarsest spacing 2.5 mm
    assert len(ds) == 3 * 6
    for i in range(len(ds)):
        image, mask = ds[i]
        assert image.dtype == torch.float32 and image.shape == (1, 16, 16)
        assert mask.dtype == torch.float32 and mask.shape == (2, 16, 16)
        assert float(image.min()) >= -1 and float(image.max()) <= 1
        assert set(mask.unique().tolist()) <= {0.0, 1.0} and float(mask.sum(0).max()) <= 1
    test = VolumeSlices(root, image_size=8, split="test", foreground_fraction=None)
    assert test.case_names == ["test_000", "test_001"] and test[0][0].shape == (1, 8, 8)


def test_binary_set_keeps_the_png_format(tmp_path):
    root = write_set(tmp_path, classes=2, json_form=None)
    ds = VolumeSlices(root, image_size=10)
    assert ds.num_classes == 2 and ds.class_names == ["background", "class 1"] and ds.modalities == ["unknown"]
    image, mask = ds[3]
    assert mask.shape == (1, 10, 10) and image.shape == (1, 10, 10)


def test_both_json_forms_agree(tmp_path):
    a = VolumeSlices(write_set(tmp_path / "a", json_form="decathlon", channels=2), image_size=8)
    b = VolumeSlices(write_set(tmp_path / "b", json_form="nnunet", channels=2), image_size=8)
    assert a.class_names == b.class_names == ["background", "a", "b"]
    assert a.modalities == b.modalities == ["MR", "MR"] and a.image_channels == 2
    for i in range(len(a)):
        assert torch.equal(a[i][0], b[i][0]) and torch.equal(a[i][1], b[i][1])


def test_group_cases(tmp_path):
    for name in ["b_0001.nii.gz", "b_0000.nii.gz", "a_0000.nii.gz", "._a_0000.nii.gz", "notes.txt", "c.nii"]:
        (tmp_path / name).write_bytes(b"")
    groups = group_cases(tmp_path)
    assert list(groups) == ["a", "b", "c"]
    assert [p.name for p in groups["b"]] == ["b_0000.nii.gz", "b_0001.nii.gz"]
    # names ending in 4 digits that are the labels' names are whole cases
    assert list(group_cases(tmp_path, label_stems=["a_0000", "b_0000", "b_0001", "c"])) == ["a_0000", "b_0000",
                                                                                           "b_0001", "c"]
    assert list(group_cases(tmp_path, label_stems=["a", "b", "c"])) == ["a", "b", "c"]
    (tmp_path / "b_0003.nii.gz").write_bytes(b"")
    with pytest.raises(ValueError, match="no channel 0002"):
        group_cases(tmp_path)


def test_dataset_json_errors(tmp_path):
    for meta, match in [
        ({"labels": {"background": 0, "tumor": [1, 2]}}, "region"),
        ({"labels": {"0": "background", "2": "x"}}, "0..1"),
        ({"labels": {"background": 0, "x": 2}}, "0..1"),
        ({"labels": {"0": "background"}}, "at least one class"),
        ({"modality": ["CT"]}, "modality"),
        ({"labels": {"background": 0, "x": 1, "ignore": 2}}, "ignore"),
    ]:
        (tmp_path / "dataset.json").write_text(json.dumps(meta))
        with pytest.raises(ValueError, match=match) as err:
            read_dataset_json(tmp_path)
        assert "dataset.json" in str(err.value)
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(ValueError, match="dataset.json"):
        read_dataset_json(tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# Axis, sampling, cache


def test_axis_choice_and_slices(tmp_path):
    assert coarsest_axis((0.8, 0.8, 2.5)) == 2 and coarsest_axis((3.0, 1.0, 1.0)) == 0
    assert coarsest_axis((1.0, 1.0, 1.0)) == 2 and coarsest_axis((1.0, 2.0, 2.0)) == 2
    root = write_set(tmp_path)
    ds0 = VolumeSlices(root, image_size=(12, 6), axis=1, foreground_fraction=None)
    assert ds0.axis == 1 and len(ds0) == 2 * SHAPE[1]
    # Slice k of case 0 along axis 1 at native size is the label map's [:, k, :], one-hot.
    lab = np.asarray(nib.load(root / "labelsTr" / "c0.nii.gz").dataobj)
    for k in range(SHAPE[1]):
        _, mask = ds0[k]
        np.testing.assert_array_equal(mask.numpy(), np.stack([lab[:, k, :] == 1, lab[:, k, :] == 2]).astype(float))
    with pytest.raises(ValueError, match="`axis`"):
        VolumeSlices(root, image_size=8, axis=3)


def test_foreground_fraction_is_deterministic_and_biased(tmp_path):
    root = write_set(tmp_path)
    all_fg = VolumeSlices(root, image_size=8, foreground_fraction=1.0, seed=3)
    assert all(all_fg[i][1].sum() > 0 for i in range(len(all_fg)))
    no_fg = VolumeSlices(root, image_size=8, foreground_fraction=0.0, seed=3)
    assert all(no_fg[i][1].sum() == 0 for i in range(len(no_fg)))  # slices 0 and K-1..K-2 hold no labels
    a = VolumeSlices(root, image_size=8, seed=5)
    b = VolumeSlices(root, image_size=8, seed=5)
    assert [a.slice_of(i) for i in range(len(a))] == [b.slice_of(i) for i in range(len(b))]
    a.set_epoch(1)
    assert [a.slice_of(i) for i in range(len(a))] != [b.slice_of(i) for i in range(len(b))]
    seq = VolumeSlices(root, image_size=8, foreground_fraction=None)
    assert [seq.slice_of(i) for i in range(len(seq))] == [(c, k) for c in range(2) for k in range(SHAPE[2])]
    with pytest.raises(ValueError, match="`foreground_fraction`"):
        VolumeSlices(root, image_size=8, foreground_fraction=1.5)


def test_volume_cache_streams_from_disk(tmp_path, monkeypatch):
    root = write_set(tmp_path, n=3)
    cached = VolumeSlices(root, image_size=8, foreground_fraction=None, cache_volumes=1)
    assert len(cached._cache) == 1
    reads = []
    real = volumes.load_case
    monkeypatch.setattr(volumes, "load_case", lambda *a, **k: reads.append(a[0][0].name) or real(*a, **k))
    items = [cached[i] for i in range(len(cached))]
    assert len(cached._cache) == 1
    assert reads == ["c0_0000.nii.gz", "c1_0000.nii.gz", "c2_0000.nii.gz"]  # in order: each read once
    reads.clear()
    cached[len(cached) - 1]
    assert reads == []  # the last case is still cached
    none = VolumeSlices(root, image_size=8, foreground_fraction=None, cache_volumes=0)
    assert len(none._cache) == 0
    for i, (x, y) in enumerate(items):
        x2, y2 = none[i]
        assert torch.equal(x, x2) and torch.equal(y, y2)


# ---------------------------------------------------------------------------------------------------------------
# Normalisation


def test_normalisation_rules():
    rng = np.random.default_rng(0)
    ct = np.full((20, 20, 10), -1024.0)
    ct[4:16, 4:16] = rng.normal(40, 100, (12, 12, 10))
    p = normalization_params(ct, "ct")
    body = ct[ct > np.percentile(ct, 1)]
    assert p.kind == "window"
    np.testing.assert_allclose([p.a, p.b], np.percentile(body, [0.5, 99.5]))
    out = apply_normalization(ct, p)
    assert out.dtype == np.float32 and out.min() == -1 and out.max() == 1
    mr = np.zeros((20, 20, 10))
    mr[4:16, 4:16] = rng.normal(500, 50, (12, 12, 10))
    q = normalization_params(mr, "MR")
    assert q.kind == "zscore" and q.a == pytest.approx(mr[mr > 0].mean()) and q.b == pytest.approx(mr[mr > 0].std())
    z = apply_normalization(mr, q)
    np.testing.assert_allclose(z[5, 5], np.clip((mr[5, 5] - q.a) / q.b, -3, 3) / 3, rtol=1e-5, atol=1e-6)
    assert z[0, 0, 0] == -1.0  # background is far below the body: clipped at -3 sd
    w = normalization_params(mr, "MR", window=(0, 1000))
    assert apply_normalization(np.array([-5.0, 0.0, 500.0, 2000.0]), w).tolist() == [-1.0, -1.0, 0.0, 1.0]
    assert not apply_normalization(np.ones(5), normalization_params(np.ones(5), "MR")).any()  # constant volume


def test_ct_dataset_uses_ct_rule(tmp_path):
    root = write_demo_volumes(tmp_path, n_cases=2, shape=(16, 16, 5), modality="CT", n_test=0)
    ds = VolumeSlices(root, image_size=16, foreground_fraction=None)
    assert ds.modalities == ["CT"] and all(c.norm[0].kind == "window" for c in ds._cases)
    windowed = VolumeSlices(root, image_size=16, foreground_fraction=None, window=(-200, 200))
    assert windowed._cases[0].norm[0] == volume_norm.NormParams("window", -200.0, 200.0)
    with pytest.raises(ValueError, match="`window`"):
        VolumeSlices(root, image_size=16, window=(5, 1))


# ---------------------------------------------------------------------------------------------------------------
# Bad input: a ValueError naming the file, from __init__


def _write(path, data, affine=None):
    write_nifti(path, data, affine=affine_of() if affine is None else affine)


@pytest.mark.parametrize(
    "case",
    ["label_shape", "label_affine", "non_integer", "outside_classes", "negative", "four_d", "truncated_image",
     "truncated_label", "not_nifti", "modality_shape", "modality_spacing", "no_label", "no_image", "channels_differ"],
)
def test_bad_input_names_the_file(tmp_path, case):
    root = write_set(tmp_path, n=2, channels=2)
    img0, lab0 = root / "imagesTr" / "c0_0000.nii.gz", root / "labelsTr" / "c0.nii.gz"
    lab = blob_labels(0)
    culprit, match = lab0, None
    if case == "label_shape":
        _write(lab0, lab[:, :, :5])
        match = "shape"
    elif case == "label_affine":
        _write(lab0, lab, affine_of(spacing=(0.8, 0.9, 3.0)))
        match = "different affines"
    elif case == "non_integer":
        _write(lab0, lab.astype(np.float32) + 0.5)
        match = "non-integer"
    elif case == "outside_classes":
        bad = lab.copy()
        bad[0, 0, 0] = 7
        _write(lab0, bad)
        match = r"labels \[7\] outside dataset.json's classes 0..2"
    elif case == "negative":
        _write(lab0, lab.astype(np.int16) - 1)
        match = "negative"
    elif case == "four_d":
        (root / "imagesTr" / "c0_0001.nii.gz").unlink()
        img0.rename(root / "imagesTr" / "c0.nii.gz")
        culprit = root / "imagesTr" / "c0.nii.gz"
        _write(culprit, np.zeros((*SHAPE, 3), np.float32))
        match = "4-D image .* without a channel convention"
    elif case in ("truncated_image", "truncated_label"):
        culprit = img0 if case == "truncated_image" else lab0
        data = culprit.read_bytes()
        culprit.write_bytes(data[: len(data) // 2])
        match = "truncated or corrupt"
    elif case == "not_nifti":
        img0.write_bytes(gzip.compress(b"hello, not an image"))
        culprit, match = img0, "cannot read"
    elif case == "modality_shape":
        culprit = root / "imagesTr" / "c0_0001.nii.gz"
        _write(culprit, np.zeros((12, 10, 7), np.float32))
        match = "one voxel grid"
    elif case == "modality_spacing":
        culprit = root / "imagesTr" / "c0_0001.nii.gz"
        _write(culprit, np.zeros(SHAPE, np.float32), affine_of(spacing=(0.8, 0.9, 2.0)))
        match = "different affines"
    elif case == "no_label":
        lab0.unlink()
        culprit, match = img0, "has no label map"
    elif case == "no_image":
        _write(root / "labelsTr" / "extra.nii.gz", lab)
        culprit, match = root / "labelsTr" / "extra.nii.gz", "has no image"
    elif case == "channels_differ":
        (root / "imagesTr" / "c0_0001.nii.gz").unlink()
        (root / "dataset.json").unlink()
        culprit, match = root / "imagesTr" / "c0_0000.nii.gz", "modalities"
    with pytest.raises(ValueError, match=match) as err:
        VolumeSlices(root, image_size=8)
    assert str(culprit) in str(err.value) or culprit.name in str(err.value), str(err.value)


def test_four_d_image_with_a_channel_convention(tmp_path):
    """The original Decathlon release: one 4-D file per case, modalities last, listed in dataset.json."""
    lab = blob_labels(1)
    img = np.stack([lab * 100.0, lab * -50.0], axis=-1).astype(np.float32)
    _write(tmp_path / "imagesTr" / "x.nii.gz", img)
    _write(tmp_path / "labelsTr" / "x.nii.gz", lab)
    (tmp_path / "dataset.json").write_text(json.dumps({"modality": {"0": "T1", "1": "T2"},
                                                       "labels": {"0": "bg", "1": "a", "2": "b"}}))
    ds = VolumeSlices(tmp_path, image_size=8)
    assert ds.image_channels == 2 and ds.modalities == ["T1", "T2"] and ds[0][0].shape == (2, 8, 8)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_uncompressed_cases_read_one_slice(tmp_path, monkeypatch, axis):
    """A cache miss on .nii files reads one slice through the memory map; items equal the .nii.gz data set's."""
    gz = write_set(tmp_path / "gz", n=2, channels=2)
    plain = tmp_path / "plain"
    for p in gz.rglob("*"):
        if p.is_file():
            dest = plain / p.relative_to(gz)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if p.name.endswith(".gz"):
                dest.with_suffix("").write_bytes(gzip.decompress(p.read_bytes()))
            else:
                dest.write_bytes(p.read_bytes())
    a = VolumeSlices(gz, image_size=(9, 7), axis=axis, foreground_fraction=None, cache_volumes=0)
    b = VolumeSlices(plain, image_size=(9, 7), axis=axis, foreground_fraction=None, cache_volumes=0)
    want = [a[i] for i in range(len(a))]
    monkeypatch.setattr(volumes, "load_case", lambda *a, **k: pytest.fail("decoded a whole volume"))
    for i, (xa, ya) in enumerate(want):
        xb, yb = b[i]
        torch.testing.assert_close(xb, xa, rtol=0, atol=0)
        assert torch.equal(ya, yb)


def test_stats_sample_ignores_memory_order(monkeypatch):
    monkeypatch.setattr(volume_norm, "STATS_VOXELS", 100)
    x = np.random.default_rng(1).normal(size=(20, 16, 9)) * 100
    for modality in ("CT", "MR"):
        a = normalization_params(x, modality)
        b = normalization_params(np.asfortranarray(x), modality)
        assert a == b
    assert volume_norm._stats_sample(x).size <= 2 * 100


def test_init_workers_do_not_change_the_data_set(tmp_path):
    root = write_set(tmp_path, n=4, channels=2)
    one = VolumeSlices(root, image_size=8, init_workers=1, cache_volumes=2)
    three = VolumeSlices(root, image_size=8, init_workers=3, cache_volumes=2)
    assert [c.norm for c in one._cases] == [c.norm for c in three._cases]
    assert list(one._cache) == list(three._cache) == [2, 3]
    for i in range(len(one)):
        assert torch.equal(one[i][0], three[i][0]) and torch.equal(one[i][1], three[i][1])
    # with several threads the first bad case in order is the one reported
    for name in ("c1.nii.gz", "c3.nii.gz"):
        data = (root / "labelsTr" / name).read_bytes()
        (root / "labelsTr" / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="c1.nii.gz"):
        VolumeSlices(root, image_size=8, init_workers=4)


def test_case_names_ending_in_four_digits(tmp_path):
    """KiTS-style names: imagesTr/case_0001.nii.gz with labelsTr/case_0001.nii.gz (no channel suffix)."""
    for i in range(2):
        lab = blob_labels(i)
        _write(tmp_path / "imagesTr" / f"case_{i:04d}.nii.gz", lab * 100.0)
        _write(tmp_path / "labelsTr" / f"case_{i:04d}.nii.gz", lab)
    ds = VolumeSlices(tmp_path, image_size=8)
    assert ds.case_names == ["case_0000", "case_0001"] and ds.image_channels == 1


def test_case_subsets(tmp_path):
    root = write_set(tmp_path, n=3)
    (root / "labelsTr" / "c2.nii.gz").write_bytes(b"broken")  # not read when c2 is left out
    val = VolumeSlices(root, image_size=8, cases=["c1"], foreground_fraction=None)
    assert val.case_names == ["c1"] and len(val) == SHAPE[2]
    with pytest.raises(ValueError, match="c9"):
        VolumeSlices(root, image_size=8, cases=["c0", "c9"])
    with pytest.raises(TypeError, match="`cases`"):
        VolumeSlices(root, image_size=8, cases="c0")
