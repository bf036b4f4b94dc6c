"""Writing NIfTI volumes: label, probability and uncertainty maps on the input's grid, atomically, with the voxels
streamed to the (gzip) file one plane at a time. A reference's format is kept (NIfTI-2 in, NIfTI-2 out; otherwise
NIfTI-1); its header extensions (AFNI, FreeSurfer, ...) describe the input, not the maps, and are not copied."""

from __future__ import annotations

import gzip
import io
import os
from pathlib import Path

import numpy as np

from .files import write_atomic
from .nifti import _nib, volume_stem

__all__ = ["write_nifti", "check_reference_writable"]


def _write_header(header, out) -> None:
    """The single-file header of ``header`` (no extensions) and the zero padding up to its voxel offset."""
    header.set_data_offset(header.single_vox_offset)  # 348 (NIfTI-1) / 540 (NIfTI-2) bytes + the extension flag
    header.write_to(out)
    out.write(b"\0" * (int(header.get_data_offset()) - header.single_vox_offset))


def _stream_nifti(img, data: np.ndarray, path: Path, tmp: Path) -> None:
    """Write ``img`` (whose voxels are ``data``) to the temporary file ``tmp`` for ``path``, through a gzip stream
    when ``path`` ends in ``.gz``. nibabel's own writer copies the whole volume; here the header comes from nibabel
    and the voxels follow in NIfTI's Fortran order one 2-D plane at a time, so no second copy is ever built."""
    img.update_header()  # shape, dtype, affine -> header, as nibabel's save does
    header = img.header
    stored = data.dtype.newbyteorder(header.endianness)  # the byte order the header declares
    with open(tmp, "wb") as raw:
        gz = path.name.lower().endswith(".gz")
        with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0, filename="") if gz else raw as out:
            _write_header(header, out)
            trailing = data.shape[2:]
            for index in np.ndindex(*reversed(trailing)):  # Fortran order: the first trailing axis fastest
                plane = data[(slice(None), slice(None), *reversed(index))]
                out.write(np.ascontiguousarray(plane.T, dtype=stored).tobytes())  # [I,J] with I fastest


def _image(data, reference, affine: np.ndarray | None, slope: float):
    """The nibabel image whose header :func:`write_nifti` writes for ``data`` (any array with its shape and
    dtype): ``reference``'s geometry and format, or a fresh NIfTI-1 header from ``affine``."""
    nib = _nib()
    if reference is not None:
        header = reference.header.copy()
        del header.extensions[:]  # the input's extensions: nothing of them holds for the maps
        header.set_data_dtype(data.dtype)
        header["cal_min"], header["cal_max"] = 0, 0
        zooms = list(header.get_zooms()[:3]) + [1.0] * (data.ndim - 3)
        image_class = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
        img = image_class(data, None, header=header)
        img.header.set_zooms(zooms[: data.ndim])
        img.header.set_slope_inter(slope, 0.0)  # after construction: building an image from an array resets it
        return img
    if affine is None:
        raise ValueError("`affine` is required when `reference` is None")
    img = nib.Nifti1Image(data, np.asarray(affine, dtype=np.float64))
    img.set_qform(np.asarray(affine, dtype=np.float64), code=1)
    img.set_sform(np.asarray(affine, dtype=np.float64), code=1)
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_slope_inter(slope, 0.0)
    return img


def check_reference_writable(reference, where: object, outputs: list[tuple[tuple[int, ...], np.dtype, float]]) -> None:
    """ValueError naming ``where`` unless :func:`write_nifti` can write a header for every ``(shape, dtype, slope)``
    of ``outputs`` on ``reference``'s grid: run before a long segmentation, so that it never ends in a writer error.
    No voxels are allocated (each shape is a zero-stride view)."""
    for shape, dtype, slope in outputs:
        try:
            img = _image(np.broadcast_to(np.zeros((), dtype), shape), reference, None, slope)
            img.update_header()
            _write_header(img.header, io.BytesIO())
        except Exception as e:  # nibabel raises HeaderDataError, ValueError, ... on a header it cannot write
            raise ValueError(f"{where}: cannot write a {np.dtype(dtype).name} {list(shape)} map with this input's "
                             f"NIfTI header ({type(e).__name__}: {e})") from None


def write_nifti(path: str | os.PathLike, data: np.ndarray, reference=None, affine: np.ndarray | None = None,
                slope: float = 1.0) -> Path:
    """Write ``data`` as a NIfTI file (``.nii.gz`` gzipped, ``.nii`` not), atomically and streamed: the voxels
    go to the file in blocks, so peak memory stays near ``data`` itself (no serialised or compressed copy).

    Args:
        path: destination ending in ``.nii.gz`` or ``.nii``; missing folders are created.
        data: the voxels, ``[I,J,K]`` or ``[I,J,K,C]``; its dtype is stored as is (uint8/uint16 labels, float32
            probabilities).
        reference: a nibabel image (NIfTI-1 or NIfTI-2) whose geometry and format to copy: its header (qform and
            sform with their codes, units, pixdim, byte order) with the data type, shape and scaling replaced and
            its extensions dropped; the file read back has exactly the reference's affine. ``None``: a fresh
            NIfTI-1 header from ``affine``.
        affine: 4x4 voxel-to-world matrix when ``reference`` is None (qform and sform codes set to 1, scanner).
        slope: NIfTI ``scl_slope`` (readers see ``data * slope``): 1/255 stores [0, 1] maps as uint8.

    Returns:
        The path written.
    """
    path = Path(path)
    if volume_stem(path) is None:
        raise ValueError(f"`path` must end in .nii.gz or .nii, got {path}")
    data = np.asarray(data)
    img = _image(data, reference, affine, slope)
    return write_atomic(path, lambda tmp: _stream_nifti(img, data, path, tmp))
