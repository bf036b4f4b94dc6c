"""write_nifti streams the voxels: the file equals nibabel's own writer byte for byte, for every memory layout, while
peak memory stays a small fraction of the volume (no serialised or compressed copy)."""

import gzip
import tracemalloc

import nibabel as nib
import numpy as np
import pytest

from spadfast.io.nifti import write_nifti
from spadfast.io.orientation import Reorientation


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


def _reference(tmp_path, kind: str):
    """A NIfTI input as AFNI/FreeSurfer (header extensions), NIfTI-2 or a big-endian converter writes it."""
    affine = np.array([[0, 0, 2.5, -3], [1.2, 0, 0, 4], [0, -0.8, 0, 1], [0, 0, 0, 1.0]])
    voxels = np.arange(7 * 6 * 5, dtype=np.int16).reshape(7, 6, 5)
    image_class = nib.Nifti2Image if kind == "nifti2" else nib.Nifti1Image
    img = image_class(voxels, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=2)
    if kind == "extensions":
        img.header.extensions.append(nib.nifti1.Nifti1Extension("afni", b"<AFNI_attributes ni_form='x'/>" * 3))
        img.header.extensions.append(nib.nifti1.Nifti1Extension(14, b"FreeSurfer tags" * 5))
    if kind == "big-endian":
        img = image_class(voxels, affine, header=img.header.as_byteswapped(">"))
    nib.save(img, str(tmp_path / f"{kind}.nii.gz"))
    return nib.load(str(tmp_path / f"{kind}.nii.gz"))


@pytest.mark.parametrize("kind", ["extensions", "nifti2", "big-endian"])
@pytest.mark.parametrize("shape,dtype,slope", [((7, 6, 5), np.uint8, 1.0), ((7, 6, 5, 2), np.float32, 1.0),
                                               ((7, 6, 5, 2), np.uint8, 1 / 255)])
def test_maps_on_a_reference_with_extensions_nifti2_or_big_endian_equal_nibabels_writer(tmp_path, kind, shape,
                                                                                       dtype, slope):
    """Label, probability (float32 and uint8-scaled) maps on such an input's grid: nibabel's own writer on the same
    header without the extensions gives the same bytes, and the file reads back with the input's geometry."""
    from spadfast.io.nifti import check_reference_writable

    reference = _reference(tmp_path, kind)
    data = (np.random.default_rng(2).random(shape) * 200).astype(dtype)
    check_reference_writable(reference, "input", [(shape, np.dtype(dtype), slope)])
    ours = write_nifti(tmp_path / "ours.nii", data, reference=reference, slope=slope)
    header = reference.header.copy()
    del header.extensions[:]
    header.set_data_dtype(dtype)
    header["cal_min"], header["cal_max"] = 0, 0
    img = type(reference)(data, None, header=header)
    img.header.set_zooms(reference.header.get_zooms()[:3] + (1.0,) * (len(shape) - 3))
    img.header.set_slope_inter(slope, 0.0)
    nib.save(img, str(tmp_path / "nibabel.nii"))
    assert ours.read_bytes() == (tmp_path / "nibabel.nii").read_bytes()
    back = nib.load(str(ours))
    assert type(back) is type(reference) and len(back.header.extensions) == 0
    np.testing.assert_array_equal(back.affine, reference.affine)
    assert back.header.get_sform(coded=True)[1] == 2
    np.testing.assert_allclose(back.get_fdata(), data * slope, rtol=1e-6)
    assert len(reference.header.extensions) == (2 if kind == "extensions" else 0)  # the input's header untouched


def test_an_unwritable_reference_header_is_a_value_error_naming_the_input(tmp_path):
    from spadfast.io.nifti import check_reference_writable

    reference = _reference(tmp_path, "nifti2")
    with pytest.raises(ValueError, match=r"case_0000\.nii\.gz: cannot write a float32 \[7, 6, 5, 70000\] map"):
        check_reference_writable(nib.Nifti1Image(np.zeros((7, 6, 5), np.int16), reference.affine),
                                 "case_0000.nii.gz", [((7, 6, 5, 70000), np.dtype(np.float32), 1.0)])
