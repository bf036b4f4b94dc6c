"""write_nifti streams the voxels: the file equals nibabel's own writer byte for byte, for every memory layout, while
peak memory stays a small fraction of the volume (no serialised or compressed copy)."""

import gzip
import tracemalloc

import nibabel as nib
import numpy as np
import pytest

from spadfast.nifti_write import write_nifti
from spadfast.orientation import Reorientation


def _nibabel_bytes(data, affine, slope, tmp_path):
    img = nib.Nifti1Image(np.ascontiguousarray(data), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_slope_inter(slope, 0.0)
    nib.save(img, str(tmp_path / "nibabel.nii"))
    return (tmp_path / "nibabel.nii").read_bytes()


LAYOUTS = {
    "C": lambda a: a,
    "F": np.asfortranarray,
    "flipped view": lambda a: a[::-1, :, ::-1],
    "transposed view": lambda a: a.transpose(1, 0, 2, *range(3, a.ndim)),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("shape,dtype,slope", [((7, 6, 5), np.uint8, 1.0), ((9, 4, 3, 2), np.float32, 1.0),
                                               ((5, 5, 2, 3), np.uint8, 1 / 255), ((6, 3, 1), np.uint16, 1.0)])
def test_bytes_equal_nibabels_writer(tmp_path, layout, shape, dtype, slope):
    rng = np.random.default_rng(0)
    data = LAYOUTS[layout]((rng.random(shape) * 200).astype(dtype))
    affine = np.array([[0, 0, 2.5, -3], [1.2, 0, 0, 4], [0, -0.8, 0, 1], [0, 0, 0, 1.0]])
    want = _nibabel_bytes(data, affine, slope, tmp_path)
    write_nifti(tmp_path / "ours.nii", data, affine=affine, slope=slope)
    assert (tmp_path / "ours.nii").read_bytes() == want
    write_nifti(tmp_path / "ours.nii.gz", data, affine=affine, slope=slope)
    assert gzip.decompress((tmp_path / "ours.nii.gz").read_bytes()) == want


@pytest.mark.parametrize("layout", ["C", "F", "reoriented view"])
def test_peak_memory_is_a_fraction_of_the_volume(tmp_path, layout):
    data = np.random.default_rng(1).random((64, 60, 40, 4), dtype=np.float32)
    if layout == "F":
        data = np.asfortranarray(data)
    elif layout == "reoriented view":
        data = Reorientation(np.array([[0, 0, -2.0, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]])).to_stored(data)
    tracemalloc.start()
    try:
        write_nifti(tmp_path / "p.nii.gz", data, affine=np.eye(4))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 0.3 * data.nbytes, peak / data.nbytes  # nibabel's own save peaks above 1x
    assert np.array_equal(np.asarray(nib.load(str(tmp_path / "p.nii.gz")).dataobj), data)
