"""NRRD and MetaImage volumes (``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``) read through SimpleITK as NIfTI images.

SimpleITK (an optional dependency: ``pip install spadfast[itk]``) reads the file; the voxels are reordered to
NIfTI's ``[i, j, k]`` (ITK arrays come ``[k, j, i]``) and the physical geometry becomes a NIfTI affine: ITK's
``direction * spacing`` and ``origin`` are in LPS millimetres, NIfTI's affine maps to RAS, so both first rows flip
sign. Everything downstream (normalisation, slicing, prediction written as NIfTI on the input's exact grid) then
works as for ``.nii.gz``: a volume stored as NRRD/MHA and as NIfTI gives the same prediction in world space.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["ITK_SUFFIXES", "is_itk_volume", "read_itk_as_nifti"]

ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def is_itk_volume(path: str | os.PathLike) -> bool:
    return Path(path).name.lower().endswith(ITK_SUFFIXES)


def read_itk_as_nifti(path: str | os.PathLike):
    """The volume at ``path`` as an in-memory ``nibabel.Nifti1Image`` (3-D; a vector image becomes channels-last
    4-D). ValueError naming the file when SimpleITK is missing or cannot read it."""
    import nibabel as nib

    path = Path(path)
    try:
        import SimpleITK as sitk
    except ImportError:
        raise ValueError(f"{path}: reading NRRD/MetaImage volumes needs SimpleITK (pip install SimpleITK, or "
                         "spadfast[itk])") from None
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise ValueError(f"cannot read {path}: not a volume SimpleITK can read, or a corrupt one ({e})") from None
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
