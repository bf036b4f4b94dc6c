"""NRRD and MetaImage volumes (``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``) and DICOM series (a folder per case) read
through SimpleITK as NIfTI images.

SimpleITK (an optional dependency: ``pip install spadfast[itk]``) reads the file; the voxels are reordered to
NIfTI's ``[i, j, k]`` (ITK arrays come ``[k, j, i]``) and the physical geometry becomes a NIfTI affine: ITK's
``direction * spacing`` and ``origin`` are in LPS millimetres, NIfTI's affine maps to RAS, so both first rows flip
sign. Everything downstream (normalisation, slicing, prediction written as NIfTI on the input's exact grid) then
works as for ``.nii.gz``: a volume stored as NRRD/MHA and as NIfTI gives the same prediction in world space.
"""

from __future__ import annotations

import locale
import os
from pathlib import Path

import numpy as np

__all__ = ["ITK_SUFFIXES", "is_itk_volume", "is_dicom_series_dir", "check_not_loose_dicom",
           "read_itk_as_nifti"]

ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def is_itk_volume(path: str | os.PathLike) -> bool:
    return Path(path).name.lower().endswith(ITK_SUFFIXES)


def is_dicom_series_dir(path: str | os.PathLike) -> bool:
    """A folder holding DICOM files (``.dcm``, or the ``DICM`` marker at byte 128): one case, one series."""
    path = Path(path)
    if not path.is_dir() or path.name.startswith("."):
        return False
    for p in path.iterdir():
        if p.is_file() and not p.name.startswith("."):
            if p.suffix.lower() == ".dcm":
                return True
            with open(p, "rb") as f:
                if f.read(132)[128:] == b"DICM":
                    return True
    return False


def check_not_loose_dicom(folder: str | os.PathLike, name: str | None = "images") -> None:
    """ValueError naming ``folder`` (and the argument ``name``, if any) when it holds DICOM slices itself: a series
    is read from its own sub-folder (one case each), so such a folder would hold no case at all."""
    folder = Path(folder)
    if is_dicom_series_dir(folder):
        what = f"`{name}` folder {str(folder)!r}" if name else str(folder)
        raise ValueError(f"{what} holds DICOM slices directly: move each series into its own sub-folder "
                         f"({str(folder / '<case>')!r}, one case per series)")


def _read_dicom_series(folder: Path, sitk):
    """The one image series of ``folder``, slices ordered by position (GDCM), as a SimpleITK image."""
    reader = sitk.ImageSeriesReader()
    ids = reader.GetGDCMSeriesIDs(str(folder))
    if not ids:
        raise ValueError(f"{folder} holds no DICOM image series (a report or other non-image DICOM?)")
    if len(ids) > 1:
        raise ValueError(f"{folder} mixes {len(ids)} DICOM series ({', '.join(ids[:3])}): one series per folder")
    files = reader.GetGDCMSeriesFileNames(str(folder), ids[0])
    _check_slice_geometry(folder, files, sitk)
    reader.SetFileNames(files)
    return reader.Execute()  # rescale slope/intercept: ITK applies each slice's own


def _check_slice_geometry(folder: Path, files, sitk) -> None:
    """Refuse a series whose slices (in GDCM's position order) differ in orientation or are not evenly spaced
    along the slice normal: a missing slice, a duplicate, or two stacks in one series."""
    if len(files) < 2:
        return
    positions, orientations = [], []
    header = sitk.ImageFileReader()
    for f in files:
        header.SetFileName(f)
        header.ReadImageInformation()
        tags = {t: header.GetMetaData(t) for t in ("0020|0032", "0020|0037") if header.HasMetaDataKey(t)}
        if len(tags) < 2:
            return  # no patient geometry (e.g. secondary capture): GDCM orders by instance number
        positions.append([float(v) for v in tags["0020|0032"].split("\\")])
        orientations.append([float(v) for v in tags["0020|0037"].split("\\")])
    orientations_arr = np.asarray(orientations)
    if np.abs(orientations_arr - orientations_arr[0]).max() > 1e-4:
        raise ValueError(f"{folder}: the DICOM slices have different orientations (0020,0037): not one stack")
    row, col = orientations_arr[0, :3], orientations_arr[0, 3:]
    along = np.sort(np.asarray(positions) @ np.cross(row, col))  # slice positions along the normal, mm
    steps = np.diff(along)
    if steps.min() < 1e-3:  # (GDCM then falls back to file-name order)
        raise ValueError(f"{folder}: two DICOM slices share the position {along[int(steps.argmin())]:.3f} mm along "
                         "the slice normal (a duplicated slice, or two acquisitions in one series)")
    order = np.diff(np.asarray(positions) @ np.cross(row, col))
    if not ((order > 0).all() or (order < 0).all()):
        raise ValueError(f"{folder}: the DICOM slices could not be ordered by position")
    typical = float(np.median(steps))
    if np.abs(steps - typical).max() > max(0.01 * typical, 1e-3):
        k = int(np.abs(steps - typical).argmax())
        raise ValueError(f"{folder}: the DICOM slices are not evenly spaced: {steps[k]:.3f} mm between the slices at "
                         f"{along[k]:.3f} and {along[k + 1]:.3f} mm, {typical:.3f} mm elsewhere (a missing slice?)")


def read_itk_as_nifti(path: str | os.PathLike):
    """The volume at ``path`` (an NRRD/MetaImage file, or a folder holding one DICOM series) as an in-memory
    ``nibabel.Nifti1Image``. ValueError naming the file when SimpleITK is missing or cannot read it."""
    import nibabel as nib

    path = Path(path)
    try:
        import SimpleITK as sitk
    except ImportError:
        raise ValueError(f"{path}: reading NRRD/MetaImage/DICOM volumes needs SimpleITK (pip install SimpleITK, or "
                         "spadfast[itk])") from None
    saved = locale.setlocale(locale.LC_ALL)  # GDCM may switch the C locale (Python's text I/O would go ASCII)
    try:
        image = _read_dicom_series(path, sitk) if path.is_dir() else sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise ValueError(f"cannot read {path}: not a volume SimpleITK can read, or a corrupt one ({e})") from None
    finally:
        locale.setlocale(locale.LC_ALL, saved)
    if image.GetDimension() != 3:
        raise ValueError(f"{path} has {image.GetDimension()} dimensions: a volume must be 3-D")
    array = sitk.GetArrayFromImage(image)  # [k, j, i] (+ components)
    array = np.ascontiguousarray(np.moveaxis(array, (0, 1, 2), (2, 1, 0)))
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
    affine = np.eye(4)
    affine[:3, :3] = _LPS_TO_RAS @ direction @ np.diag(spacing)
    affine[:3, 3] = _LPS_TO_RAS @ np.asarray(image.GetOrigin(), dtype=np.float64)
    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    return img
