"""Writing NIfTI-1 volumes: label, probability and uncertainty maps on the input's grid, atomically, with the voxels
streamed to the (gzip) file one plane at a time."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from .files import write_atomic
from .nifti import _nib, volume_stem


def _stream_nifti(img, data: np.ndarray, path: Path, tmp: Path) -> None:
    """Write ``img`` (whose voxels are ``data``) to the temporary file ``tmp`` for ``path``, through a gzip stream
    when ``path`` ends in ``.gz``. nibabel's own writer copies the whole volume; here the header comes from nibabel
    and the voxels follow in NIfTI's Fortran order one 2-D plane at a time, so no second copy is ever built."""
    img.update_header()  # shape, dtype, affine -> header, as nibabel's save does
    header = img.header
    header.set_data_offset(352)  # single-file NIfTI-1: the 348-byte header and the 4-byte extension flag
    with open(tmp, "wb") as raw:
        gz = path.name.lower().endswith(".gz")
        with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0, filename="") if gz else raw as out:
            header.write_to(out)
            written = 348 + 4 + sum(e.get_sizeondisk() for e in header.extensions)
            out.write(b"\0" * (int(header.get_data_offset()) - written))
            trailing = data.shape[2:]
            for index in np.ndindex(*reversed(trailing)):  # Fortran order: the first trailing axis fastest
                plane = data[(slice(None), slice(None), *reversed(index))]
                out.write(np.ascontiguousarray(plane.T).tobytes())  # [I,J] with I fastest


def write_nifti(path: str | os.PathLike, data: np.ndarray, reference=None, affine: np.ndarray | None = None,
                slope: float = 1.0) -> Path:
    """Write ``data`` as a NIfTI-1 file (``.nii.gz`` gzipped, ``.nii`` not), atomically and streamed: the voxels
    go to the file in blocks, so peak memory stays near ``data`` itself (no serialised or compressed copy).

    Args:
        path: destination ending in ``.nii.gz`` or ``.nii``; missing folders are created.
        data: the voxels, ``[I,J,K]`` or ``[I,J,K,C]``; its dtype is stored as is (uint8/uint16 labels, float32
            probabilities).
        reference: a nibabel image whose geometry to copy: its header (qform and sform with their codes, units,
            pixdim) with the data type, shape and scaling replaced; the file read back has exactly the reference's
            affine. ``None``: a fresh header from ``affine``.
        affine: 4x4 voxel-to-world matrix when ``reference`` is None (qform and sform codes set to 1, scanner).
        slope: NIfTI ``scl_slope`` (readers see ``data * slope``): 1/255 stores [0, 1] maps as uint8.

    Returns:
        The path written.
    """
    nib = _nib()
    path = Path(path)
    if volume_stem(path) is None:
        raise ValueError(f"`path` must end in .nii.gz or .nii, got {path}")
    data = np.asarray(data)
    if reference is not None:
        header = reference.header.copy()
        header.set_data_dtype(data.dtype)
        header["cal_min"], header["cal_max"] = 0, 0
        zooms = list(header.get_zooms()[:3]) + [1.0] * (data.ndim - 3)
        img = nib.Nifti1Image(data, None, header=header)
        img.header.set_zooms(zooms[: data.ndim])
        img.header.set_slope_inter(slope, 0.0)  # after construction: building an image from an array resets it
    else:
        if affine is None:
            raise ValueError("`affine` is required when `reference` is None")
        img = nib.Nifti1Image(data, np.asarray(affine, dtype=np.float64))
        img.set_qform(np.asarray(affine, dtype=np.float64), code=1)
        img.set_sform(np.asarray(affine, dtype=np.float64), code=1)
        img.header.set_xyzt_units("mm", "sec")
        img.header.set_slope_inter(slope, 0.0)
    return write_atomic(path, lambda tmp: _stream_nifti(img, data, path, tmp))
