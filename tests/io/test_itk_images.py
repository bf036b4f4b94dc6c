"""NRRD / MetaImage volumes through SimpleITK: the same voxels and world geometry as the NIfTI they were written
from (oblique direction included), and the same prediction, written as NIfTI on the input's grid."""

import sys

import nibabel as nib
import numpy as np
import pytest

from spadfast.io.itk_images import read_itk_as_nifti
from spadfast.io.nifti import read_nifti, volume_files
from tests.infer.test_volumes import FakeSegmenter

sitk = pytest.importorskip("SimpleITK")


def _oblique_affine() -> np.ndarray:
    c, s = np.cos(0.3), np.sin(0.3)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([0.8, 0.9, 2.5])
    affine[:3, 3] = [-40.0, 12.5, 7.0]
    return affine


@pytest.fixture
def volumes(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.normal(100, 30, (21, 17, 5)).astype(np.float32)
    nii = tmp_path / "nii" / "case_0000.nii.gz"
    nii.parent.mkdir()
    nib.save(nib.Nifti1Image(data, _oblique_affine()), str(nii))
    out = {"nii": nii}
    for suffix in (".nrrd", ".mha"):
        path = tmp_path / suffix[1:] / f"case_0000{suffix}"
        path.parent.mkdir()
        sitk.WriteImage(sitk.ReadImage(str(nii)), str(path))
        out[suffix[1:]] = path
    return out


@pytest.mark.parametrize("kind", ["nrrd", "mha"])
def test_itk_volumes_read_as_their_nifti(volumes, kind):
    ref = nib.load(str(volumes["nii"]))
    img = read_nifti(volumes[kind])
    np.testing.assert_allclose(img.affine, ref.affine, atol=1e-4)
    np.testing.assert_allclose(np.asanyarray(img.dataobj), ref.get_fdata(), rtol=1e-6)
    assert list(volume_files(volumes[kind].parent)) == ["case_0000"]


@pytest.mark.parametrize("kind", ["nrrd", "mha"])
def test_prediction_from_itk_equals_prediction_from_nifti(volumes, kind, tmp_path):
    from spadfast.infer.volumes import predict_volume_folder

    seg = FakeSegmenter(size=16, classes=2)
    for name in ("nii", kind):
        predict_volume_folder(seg, volumes[name].parent, tmp_path / f"pred_{name}", steps=1, ensemble=1)
    a = nib.load(str(tmp_path / "pred_nii" / "case.nii.gz"))
    b = nib.load(str(tmp_path / f"pred_{kind}" / "case.nii.gz"))
    np.testing.assert_allclose(b.affine, a.affine, atol=1e-4)
    assert np.array_equal(np.asarray(b.dataobj), np.asarray(a.dataobj))


def test_missing_simpleitk_or_a_corrupt_file_name_the_file(volumes, tmp_path, monkeypatch):
    bad = tmp_path / "bad.nrrd"
    bad.write_bytes(b"NRRD0004\nnot really\n")
    with pytest.raises(ValueError, match="bad.nrrd"):
        read_itk_as_nifti(bad)
    monkeypatch.setitem(sys.modules, "SimpleITK", None)
    with pytest.raises(ValueError, match="needs SimpleITK"):
        read_itk_as_nifti(volumes["nrrd"])


def _write_dicom_series(volume: "sitk.Image", folder, series_uid="1.2.826.0.1.3680043.2.1125.1"):
    """Write ``volume`` (int16) as a DICOM series, one file per slice, positions from its geometry."""
    import locale

    saved = locale.setlocale(locale.LC_ALL)  # GDCM's DICOM writer switches the C locale to "C": put it back
    try:
        _write_slices(volume, folder, series_uid)
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _write_slices(volume, folder, series_uid):
    folder.mkdir(parents=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    direction = volume.GetDirection()
    orientation = "\\".join(str(v) for v in (direction[0], direction[3], direction[6], direction[1], direction[4],
                                               direction[7]))
    for k in range(volume.GetDepth()):
        plane = volume[:, :, k]
        position = volume.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, value in (("0008|0060", "MR"), ("0020|000e", series_uid), ("0020|0013", str(k + 1)),
                           ("0020|0032", "\\".join(str(v) for v in position)), ("0020|0037", orientation),
                           ("0028|0030", "\\".join(str(v) for v in volume.GetSpacing()[:2])),
                           ("0018|0050", str(volume.GetSpacing()[2])), ("0008|0018", f"{series_uid}.{k + 1}")):
            plane.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{(7 * k) % volume.GetDepth():03d}.dcm"))  # names not in order
        writer.Execute(plane)


def test_a_dicom_series_reads_as_the_volume_it_was_written_from(tmp_path):
    rng = np.random.default_rng(2)
    data = rng.integers(0, 1000, (21, 17, 5)).astype(np.int16)
    affine = _oblique_affine()
    nii = tmp_path / "case.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), str(nii))
    _write_dicom_series(sitk.ReadImage(str(nii)), tmp_path / "dicom" / "patient7")
    (tmp_path / "dicom" / "notes.txt").write_text("not an image")
    assert list(volume_files(tmp_path / "dicom")) == ["patient7"]
    img = read_nifti(tmp_path / "dicom" / "patient7")
    np.testing.assert_allclose(img.affine, nib.load(str(nii)).affine, atol=1e-3)
    assert np.array_equal(np.asarray(img.dataobj), data)  # slices ordered by position, not by file name


def test_two_series_in_one_folder_are_refused(tmp_path):
    data = np.arange(6 * 5 * 3, dtype=np.int16).reshape(6, 5, 3)
    nii = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(nii))
    volume = sitk.ReadImage(str(nii))
    _write_dicom_series(volume, tmp_path / "mixed", "1.2.3.4")
    tmp = tmp_path / "other"
    _write_dicom_series(volume, tmp, "1.2.3.5")
    for f in tmp.iterdir():
        f.rename(tmp_path / "mixed" / f"b_{f.name}")
    with pytest.raises(ValueError, match="mixes 2 DICOM series"):
        read_nifti(tmp_path / "mixed")


def test_predict_reads_a_folder_of_dicom_series_like_nifti(tmp_path):
    from spadfast.infer.volumes import predict_volume_folder

    data = np.random.default_rng(4).integers(0, 800, (18, 16, 4)).astype(np.int16)
    (tmp_path / "nii").mkdir()
    nii = tmp_path / "nii" / "patient7.nii.gz"
    nib.save(nib.Nifti1Image(data, _oblique_affine()), str(nii))
    _write_dicom_series(sitk.ReadImage(str(nii)), tmp_path / "dicom" / "patient7")
    seg = FakeSegmenter(size=16, classes=2)
    for name in ("nii", "dicom"):
        assert predict_volume_folder(seg, tmp_path / name, tmp_path / f"pred_{name}") == ["patient7"]
    a = nib.load(str(tmp_path / "pred_nii" / "patient7.nii.gz"))
    b = nib.load(str(tmp_path / "pred_dicom" / "patient7.nii.gz"))
    np.testing.assert_allclose(b.affine, a.affine, atol=1e-3)
    assert np.array_equal(np.asarray(b.dataobj), np.asarray(a.dataobj))


def _series(tmp_path, depth=6):
    data = np.random.default_rng(9).integers(0, 500, (7, 6, depth)).astype(np.int16)
    nii = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(data, _oblique_affine()), str(nii))
    folder = tmp_path / "series"
    _write_dicom_series(sitk.ReadImage(str(nii)), folder)
    return folder


def test_a_missing_slice_is_refused_by_folder(tmp_path):
    folder = _series(tmp_path)
    read_nifti(folder)  # whole: fine
    (folder / "slice001.dcm").unlink()  # a middle slice (file names are shuffled positions)
    with pytest.raises(ValueError, match=r"series: the DICOM slices are not evenly spaced.*missing slice"):
        read_nifti(folder)


def test_a_duplicated_slice_is_refused_by_folder(tmp_path):
    folder = _series(tmp_path)
    import shutil

    shutil.copy(folder / "slice001.dcm", folder / "copy.dcm")
    with pytest.raises(ValueError, match="share the position"):
        read_nifti(folder)


def test_per_slice_rescale_is_applied_like_reading_each_file(tmp_path):
    """CT series store int16 with a rescale slope/intercept per slice: the volume equals each file read alone."""
    import locale

    folder = tmp_path / "ct"
    folder.mkdir()
    saved = locale.setlocale(locale.LC_ALL)
    try:
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        raw = np.random.default_rng(3).integers(0, 2000, (4, 5, 6)).astype(np.int16)
        for k in range(4):
            plane = sitk.GetImageFromArray(raw[k])
            for tag, value in (("0008|0060", "CT"), ("0020|000e", "1.2.3"), ("0020|0013", str(k + 1)),
                               ("0020|0032", f"0\\0\\{2.5 * k}"), ("0020|0037", "1\\0\\0\\0\\1\\0"),
                               ("0028|1053", str(1 + k)), ("0028|1052", "-1024"), ("0008|0018", f"1.2.3.{k + 1}")):
                plane.SetMetaData(tag, value)
            writer.SetFileName(str(folder / f"s{3 - k}.dcm"))
            writer.Execute(plane)
        alone = {}
        for f in folder.iterdir():
            image = sitk.ReadImage(str(f))
            alone[round(image.GetOrigin()[2] / 2.5)] = sitk.GetArrayFromImage(image)[0]
    finally:
        locale.setlocale(locale.LC_ALL, saved)
    volume = np.asarray(read_nifti(folder).dataobj)  # [i, j, k]
    for k in range(4):
        assert np.array_equal(volume[:, :, k].T, alone[k])
        # GDCM's writer stored round((v + 1024) / slope); reading applied each slice's slope and intercept again
        assert np.abs(volume[:, :, k].T.astype(np.int64) - raw[k]).max() <= k + 1


def test_dicom_series_folders_named_like_channels_are_cases_of_their_own(tmp_path):
    """Channel suffixes (_0000, _0001) name files: a series folder ``case_0001/`` is case ``case_0001``, and
    ``x_0000/`` with ``x_0001/`` are two cases, not one two-channel case."""
    from spadfast.infer.volumes import predict_volume_folder
    from spadfast.io.nifti import group_cases

    data = np.random.default_rng(6).integers(0, 800, (12, 10, 3)).astype(np.int16)
    nii = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(data, _oblique_affine()), str(nii))
    volume = sitk.ReadImage(str(nii))
    _write_dicom_series(volume, tmp_path / "lone" / "case_0001")
    for name in ("x_0000", "x_0001"):
        _write_dicom_series(volume, tmp_path / "pair" / name)
    assert group_cases(tmp_path / "lone") == {"case_0001": [tmp_path / "lone" / "case_0001"]}
    assert group_cases(tmp_path / "pair") == {n: [tmp_path / "pair" / n] for n in ("x_0000", "x_0001")}
    seg = FakeSegmenter(size=16, classes=2)
    assert predict_volume_folder(seg, tmp_path / "pair", tmp_path / "pred") == ["x_0000", "x_0001"]
    a, b = (nib.load(str(tmp_path / "pred" / f"x_000{i}.nii.gz")) for i in (0, 1))
    assert a.shape == b.shape == data.shape and np.array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
    assert len(set(seg.keys)) == 2 * 3  # each series keyed by its own folder name, slice by slice
