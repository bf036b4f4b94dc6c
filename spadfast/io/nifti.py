"""NIfTI files in the Medical Segmentation Decathlon / nnU-Net layout: names, cases, dataset.json, reading and writing.

Layout (``root`` of a data set)::

    imagesTr/<case>_0000.nii.gz, <case>_0001.nii.gz, ...   one file per modality (channel), nnU-Net style
    imagesTr/<case>.nii.gz                                 or one file per case: 3-D, or 4-D with the modalities
                                                           last (the original Decathlon release; dataset.json
                                                           must then list as many modalities as the 4th axis)
    labelsTr/<case>.nii.gz                                 integer label map 0..C-1 (0 = background)
    imagesTs/, labelsTs/                                   the same for the test split
    dataset.json                                           optional; Decathlon ``"labels": {"0": "background",
                                                           ...}``, ``"modality": {"0": "CT"}`` or nnU-Net v2
                                                           ``"labels": {"background": 0, ...}``,
                                                           ``"channel_names": {"0": "CT"}``

Arrays are in the file's voxel order ``(i, j, k)`` as nibabel returns them (no reorientation); a voxel's size in
millimetres is ``header.get_zooms()[:3]`` (``spacing``). Every error names the file.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..ops.checks import is_int
from .files import write_atomic

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")  # the last four through SimpleITK
GEOMETRY_ATOL = 1e-3  # millimetres: affines that differ by less are the same geometry
_CHANNEL = re.compile(r"(.+)_(\d{4})")



def volume_stem(path: str | os.PathLike) -> str | None:
    """``case_0000`` for ``case_0000.nii.gz`` / ``case_0000.nii``; None for any other file (and hidden files)."""
    name = Path(path).name
    if name.startswith("."):
        return None
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def case_stem(stem: str) -> tuple[str, int | None]:
    """``("case", 1)`` for ``case_0001`` (nnU-Net channel suffix), ``("case", None)`` for ``case``."""
    m = _CHANNEL.fullmatch(stem)
    return (m.group(1), int(m.group(2))) if m else (stem, None)


def volume_files(folder: str | os.PathLike) -> dict[str, Path]:
    """``.nii.gz`` / ``.nii`` files of ``folder`` by stem (hidden files skipped); ValueError if two share a stem."""
    folder = Path(folder)
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        stem = volume_stem(p)
        if stem is None and p.is_dir():  # a sub-folder holding one DICOM series is a case
            from .itk_images import is_dicom_series_dir

            stem = p.name if is_dicom_series_dir(p) else None
        elif not p.is_file():
            continue
        if stem is None:
            continue
        if stem in found:
            raise ValueError(f"{p} and {found[stem]} hold the same case {stem!r}: keep one of .nii.gz / .nii")
        found[stem] = p
    return found


def is_volume_folder(root: str | os.PathLike) -> bool:
    """True when ``root`` is a Decathlon / nnU-Net data set: ``root/imagesTr`` holds ``.nii.gz`` / ``.nii`` files."""
    folder = Path(root) / "imagesTr"
    return folder.is_dir() and any(volume_stem(p) is not None for p in folder.iterdir())


def group_cases(folder: str | os.PathLike, label_stems: Sequence[str] | None = None) -> dict[str, list[Path]]:
    """Image files of ``folder`` grouped by case: ``{case: [channel 0 path, channel 1 path, ...]}``, sorted by case.

    ``<case>_0000.nii.gz``, ``<case>_0001.nii.gz``, ... are the channels of ``<case>``; a file without a 4-digit
    suffix is a whole case on its own (3-D, or 4-D with the modalities last), and so is a sub-folder holding a DICOM
    series, whatever its name (``case_0001/`` is case ``case_0001``: channel suffixes apply to files only). Hidden
    files (``._case.nii.gz`` from macOS archives) are skipped. When ``label_stems`` (the label maps' names) is given
    and every image file's name is one of them, each file is a whole case even if its name ends in 4 digits
    (``case_0001.nii.gz`` with ``labelsTr/case_0001.nii.gz``).

    Raises:
        ValueError: the folder is missing or holds no volumes, a case's channel numbers are not 0..n-1, or a case
            has both a ``<case>.nii.gz`` and ``<case>_0000.nii.gz`` (names the files).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder of .nii.gz volumes")
    by_case: dict[str, dict[int | None, Path]] = {}
    files = volume_files(folder)
    whole = label_stems is not None and bool(files) and set(files) <= set(label_stems)
    for stem, path in files.items():
        # a DICOM series folder is one case whatever its name: channel suffixes name files
        case, channel = (stem, None) if whole or path.is_dir() else case_stem(stem)
        entry = by_case.setdefault(case, {})
        if (channel is None and entry) or (channel is not None and None in entry):
            other = next(iter(entry.values()))
            raise ValueError(f"{path} and {other} both claim case {case!r}: use either <case>.nii.gz (one file) "
                             "or <case>_0000.nii.gz, <case>_0001.nii.gz, ... (one file per modality)")
        entry[channel] = path
    if not by_case:
        from .itk_images import check_not_loose_dicom

        check_not_loose_dicom(folder, None)
        raise ValueError(f"{folder} holds no .nii.gz / .nii volumes")
    out: dict[str, list[Path]] = {}
    for case in sorted(by_case):
        entry = by_case[case]
        if None in entry:
            out[case] = [entry[None]]
            continue
        channels = sorted(entry)  # type: ignore[type-var]
        for want, got in enumerate(channels):
            if want != got:
                raise ValueError(f"case {case!r} in {folder} has no channel {want:04d}: expected "
                                 f"{folder / f'{case}_{want:04d}.nii.gz'} (found {[p.name for p in entry.values()]})")
        out[case] = [entry[c] for c in channels]
    return out


# ---------------------------------------------------------------------------------------------------------------
# dataset.json


@dataclass(frozen=True)
class DatasetInfo:
    """What ``dataset.json`` says: ``modalities`` (one name per channel, e.g. ``["CT"]``; empty when not given)
    and ``class_names`` (index = label value, ``[0]`` is the background; empty when not given)."""

    modalities: tuple[str, ...] = ()
    class_names: tuple[str, ...] = ()
    path: Path | None = None


def _indexed_names(mapping: object, key: str, path: Path) -> tuple[str, ...]:
    """``{"0": "CT", "1": "MR"}`` -> ``("CT", "MR")``, checking the keys are 0..n-1."""
    if not isinstance(mapping, dict):
        raise ValueError(f"{path}: {key!r} must be an object such as {{\"0\": \"CT\"}}, got {mapping!r}")
    try:
        items = sorted((int(k), str(v)) for k, v in mapping.items())
    except (TypeError, ValueError):
        raise ValueError(f"{path}: the keys of {key!r} must be channel numbers \"0\", \"1\", ...") from None
    if [i for i, _ in items] != list(range(len(items))):
        raise ValueError(f"{path}: the keys of {key!r} must be 0..{len(items) - 1}, got {[i for i, _ in items]}")
    return tuple(v for _, v in items)


def read_dataset_json(root: str | os.PathLike) -> DatasetInfo:
    """Read ``root/dataset.json`` in the Decathlon or the nnU-Net v2 form; an empty :class:`DatasetInfo` if absent.

    Decathlon: ``"labels": {"0": "background", "1": "liver"}``, ``"modality": {"0": "CT"}``. nnU-Net v2:
    ``"labels": {"background": 0, "liver": 1}``, ``"channel_names": {"0": "CT"}``. Labels must be exactly
    0..C-1 with 0 the background.

    Raises:
        ValueError: invalid JSON, or labels/modalities in neither form, not consecutive from 0, or nnU-Net
            region labels (``"tumor": [1, 2]``), which spadfast does not support (names the file).
    """
    path = Path(root) / "dataset.json"
    if not path.is_file():
        return DatasetInfo()
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read {path}: {e}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path} must hold a JSON object")
    modalities: tuple[str, ...] = ()
    for key in ("channel_names", "modality"):
        if key in meta:
            modalities = _indexed_names(meta[key], key, path)
            break
    class_names: tuple[str, ...] = ()
    labels = meta.get("labels")
    if labels is not None:
        if not isinstance(labels, dict) or not labels:
            raise ValueError(f"{path}: 'labels' must be a non-empty object")
        if all(isinstance(k, str) and k.strip().lstrip("-").isdigit() for k in labels):  # Decathlon: value -> name
            class_names = _indexed_names(labels, "labels", path)
        else:  # nnU-Net v2: name -> value
            pairs = []
            for name, value in labels.items():
                if isinstance(value, (list, tuple)):
                    raise ValueError(f"{path}: label {name!r} is a region {value} (nnU-Net region training); "
                                     "spadfast needs one integer value per class")
                if not is_int(value):
                    raise ValueError(f"{path}: label {name!r} must map to an integer, got {value!r}")
                pairs.append((value, str(name)))
            pairs.sort()
            if [v for v, _ in pairs] != list(range(len(pairs))):
                raise ValueError(f"{path}: label values must be 0..{len(pairs) - 1}, got {[v for v, _ in pairs]}")
            class_names = tuple(n for _, n in pairs)
        if len(class_names) < 2:
            raise ValueError(f"{path}: 'labels' must name the background and at least one class")
        if any(n.strip().lower() == "ignore" for n in class_names):
            raise ValueError(f"{path}: nnU-Net's 'ignore' label (partial annotation) is not supported by spadfast; "
                             "relabel those voxels or drop the cases")
    return DatasetInfo(modalities=modalities, class_names=class_names, path=path)


# ---------------------------------------------------------------------------------------------------------------
# Reading and writing NIfTI


def _nib():
    try:
        import nibabel
    except ImportError:  # pragma: no cover - nibabel is a requirement of the volume features
        raise ImportError("reading NIfTI volumes needs nibabel: pip install 'nibabel>=5'") from None
    return nibabel


def read_nifti(path: str | os.PathLike):
    """Open a NIfTI file (header only; the voxels are read by :func:`read_voxels`) as a nibabel image.

    Raises:
        ValueError: missing, unreadable, not NIfTI, or a header cut short (names the file).
    """
    nib = _nib()
    path = Path(path)
    if path.name.lower().endswith((".nrrd", ".nhdr", ".mha", ".mhd")) or path.is_dir():
        from .itk_images import read_itk_as_nifti

        return read_itk_as_nifti(path)
    try:
        img = nib.load(str(path))
    except Exception as e:  # nibabel raises ImageFileError, EOFError, OSError, gzip/zlib errors, ...
        raise ValueError(f"cannot read {path}: not a NIfTI file, or a truncated or corrupt one ({e})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise ValueError(f"{path} is a {type(img).__name__}, not a NIfTI image")
    return img


def read_voxels(img, path: str | os.PathLike) -> np.ndarray:
    """The voxels of ``img`` (scaling by ``scl_slope``/``scl_inter`` applied) in their stored or scaled dtype.

    Raises:
        ValueError: the data is cut short or corrupt (a truncated ``.nii.gz``), names the file.
    """
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as e:
        raise ValueError(f"cannot decode {path}: truncated or corrupt NIfTI data ({type(e).__name__}: {e})") from None
    return np.asarray(data)


def spacing_of(img) -> tuple[float, float, float]:
    """Voxel size in millimetres along the array's first three axes (``header.get_zooms()[:3]``)."""
    zooms = [float(z) for z in img.header.get_zooms()[:3]]
    while len(zooms) < 3:
        zooms.append(1.0)
    return zooms[0], zooms[1], zooms[2]


def same_affine(a, b) -> bool:
    """Two NIfTI images' affines agree within :data:`GEOMETRY_ATOL` millimetres."""
    return bool(np.allclose(a.affine, b.affine, rtol=0, atol=GEOMETRY_ATOL))


def same_geometry(a, b) -> bool:
    """Two NIfTI images lie on the same voxel grid: equal spatial shape and :func:`same_affine`."""
    return tuple(a.shape[:3]) == tuple(b.shape[:3]) and same_affine(a, b)


@dataclass
class CaseImage:
    """A case's image as read by :func:`load_case`: ``channels`` one raw float32 ``[I,J,K]`` array per modality
    (in the file's memory order, usually Fortran; None when only the headers were read), ``reference`` the nibabel
    image of channel 0 (geometry), ``paths`` its files, ``shape`` ``(I, J, K)``, ``spacing`` in mm."""

    channels: list[np.ndarray] | None
    reference: object
    paths: list[Path]
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]


def load_case(paths: Sequence[str | os.PathLike], n_modalities: int | None = None, decode: bool = True) -> CaseImage:
    """Read one case's modalities and check that they agree.

    Args:
        paths: ``[<case>_0000.nii.gz, <case>_0001.nii.gz, ...]``, or one file (3-D, or 4-D with modalities last).
        n_modalities: how many modalities ``dataset.json`` lists (None when it lists none); a 4-D file is read as
            channels-last only when its 4th axis has exactly this size (or 1).
        decode: read the voxels (else headers only: ``image`` is None).

    Returns:
        :class:`CaseImage` whose ``channels`` are float32 ``[I,J,K]`` raw intensities (not normalised).

    Raises:
        ValueError: unreadable/truncated file, an image that is not 3-D, a 4-D image without a channel convention,
            modalities whose shapes or affines (spacing, orientation, origin) differ, non-finite voxels (names the
            files).
    """
    paths = [Path(p) for p in paths]
    imgs = [read_nifti(p) for p in paths]
    channels_last = False
    for p, img in zip(paths, imgs):
        shape = tuple(img.shape)
        if len(shape) == 4 and shape[3] == 1:
            continue
        if len(shape) == 4:
            if len(paths) == 1 and n_modalities is not None and shape[3] == n_modalities:
                channels_last = True
                continue
            raise ValueError(
                f"{p} is a 4-D image {shape} without a channel convention: store each modality as "
                f"<case>_0000.nii.gz, <case>_0001.nii.gz, ..., or list {shape[3]} modalities in dataset.json "
                "(then a single <case>.nii.gz holds them along its last axis)"
            )
        if len(shape) != 3:
            raise ValueError(f"{p} has shape {shape}: spadfast reads 3-D volumes (or 4-D with modalities last)")
    ref_path, ref = paths[0], imgs[0]
    for p, img in zip(paths[1:], imgs[1:]):
        if tuple(img.shape[:3]) != tuple(ref.shape[:3]):
            raise ValueError(f"{p} has shape {tuple(img.shape[:3])} but {ref_path} (same case) has "
                             f"{tuple(ref.shape[:3])}: a case's modalities must share one voxel grid")
        if not same_geometry(img, ref):
            raise ValueError(f"{p} and {ref_path} (same case) have different affines (spacing "
                             f"{spacing_of(img)} vs {spacing_of(ref)}): a case's modalities must share one voxel grid")
    shape3 = tuple(int(s) for s in ref.shape[:3])
    chans: list[np.ndarray] | None = None
    if decode:
        chans = []
        for p, img in zip(paths, imgs):
            data = read_voxels(img, p)
            if data.dtype.kind not in "biuf":
                raise ValueError(f"{p} holds voxels of type {data.dtype}; expected integers or floats")
            floating = data.dtype.kind == "f"
            data = data.astype(np.float32, copy=False)  # keeps the memory order: no transposing copy
            if floating and not np.isfinite(data).all():
                raise ValueError(f"{p} holds NaN or infinite voxels")
            if channels_last:
                chans.extend(data[..., c] for c in range(data.shape[3]))
            else:
                chans.append(data.reshape(shape3, order="A"))
    return CaseImage(chans, ref, paths, shape3, spacing_of(ref))  # type: ignore[arg-type]


def n_channels_of(case: CaseImage) -> int:
    """Channels of a case from its headers: number of files, or the 4-D file's last axis."""
    if len(case.paths) == 1 and len(case.reference.shape) == 4:  # type: ignore[attr-defined]
        return int(case.reference.shape[3])  # type: ignore[attr-defined]
    return len(case.paths)


def read_label(path: str | os.PathLike, image: CaseImage | None = None, classes: int | None = None) -> np.ndarray:
    """Read a label map as an integer array ``[I,J,K]`` (uint8 when every value fits, else int64).

    Args:
        path: ``labelsTr/<case>.nii.gz``.
        image: the case's image; the label map must have its shape and affine.
        classes: C (background included) from dataset.json: every value must lie in 0..C-1.

    Raises:
        ValueError: unreadable or truncated file; shape or affine unlike the image's; non-integer, negative or
            out-of-range labels (names the file).
    """
    path = Path(path)
    img = read_nifti(path)
    shape = tuple(img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise ValueError(f"{path} has shape {tuple(img.shape)}: a label map must be 3-D")
    if image is not None:
        ref, ref_path = image.reference, image.paths[0]
        if shape != image.shape:
            raise ValueError(f"{path} has shape {shape} but its image {ref_path} has {image.shape}")
        if not same_affine(img, ref):
            raise ValueError(
                f"{path} and its image {ref_path} have different affines (spacing {spacing_of(img)} vs "
                f"{spacing_of(ref)}; max difference "
                f"{float(np.abs(img.affine - ref.affine).max()):.4g} mm): labels must lie on the image's grid"  # type: ignore
            )
    data = read_voxels(img, path).reshape(shape)
    if data.dtype.kind == "b":
        data = data.astype(np.uint8)
    if data.dtype.kind == "f":
        if not np.isfinite(data).all():
            raise ValueError(f"{path} holds NaN or infinite labels")
        frac = data != np.round(data)
        if frac.any():
            raise ValueError(f"{path} holds non-integer labels such as {data[frac][:3].tolist()}: a label map "
                             "stores class numbers 0..C-1")
    elif data.dtype.kind not in "iu":
        raise ValueError(f"{path} holds labels of type {data.dtype}; expected integers")
    lo, hi = (data.min(), data.max()) if data.size else (0, 0)
    if lo < 0:
        raise ValueError(f"{path} holds negative labels (minimum {lo}); labels are 0..C-1")
    if classes is not None and hi >= classes:
        found = sorted(int(v) for v in np.unique(data) if v >= classes)
        raise ValueError(f"{path} holds labels {found[:5]} outside dataset.json's classes 0..{classes - 1}")
    return data.astype(np.uint8 if hi < 256 else np.int64, copy=False)


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
