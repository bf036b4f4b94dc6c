"""NRRD / MetaImage volumes through SimpleITK: the same voxels and world geometry as the NIfTI they were written
from (oblique direction included), and the same prediction, written as NIfTI on the input's grid."""

import sys

import nibabel as nib
import numpy as np
import pytest

from spadfast.itk_images import read_itk_as_nifti
from spadfast.nifti import read_nifti, volume_files

from .test_predict_volumes import FakeSegmenter

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
    from spadfast.predict_volumes import predict_volume_folder

    seg = FakeSegmenter(size=16, classes=2)
    for name in ("nii", kind):
        predict_volume_folder(seg, volumes[name].parent, tmp_path / f"pred_{name}", steps=1, ensemble=1,
                              modalities=["MR"])
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
