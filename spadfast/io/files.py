"""Image and mask files: reading, resizing, turning a stored image into model input, and atomic writes.

Conventions: an image on disk is PNG/JPEG/TIFF/BMP, gray or RGB(A), 8/16-bit or float in [0, 1]; a model input is
float32 ``[C,H,W]`` in ``[-1, 1]`` (RGB order when ``C == 3``); a mask is bool ``[H,W]`` (nonzero is foreground).
Every file spadfast writes (masks, JSON reports, checkpoints) goes through :func:`write_atomic`: a temporary file
named ``.<name>.spadfast-tmp-*`` in the same folder, fsynced, then renamed over the target.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from ..ops.checks import binary_array, check_int, is_int
from ..ops.constants import INTENSITY_NORMS
from .label_maps import palette_indices

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
_LOSSY = (".jpg", ".jpeg")
TEMP_MARKER = ".spadfast-tmp-"


def check_size(size: object, name: str = "image_size") -> tuple[int, int] | None:
    if size is None:
        return None
    if is_int(size):
        s = check_int(size, name, 1)
        return s, s
    if isinstance(size, Sequence) and not isinstance(size, (str, bytes)) and len(size) == 2:
        return check_int(size[0], name, 1), check_int(size[1], name, 1)
    raise TypeError(f"`{name}` must be None, an int or a pair (H, W) of ints, got {size!r}")


def check_channels(channels: object, allow_none: bool) -> int | None:
    if channels is None and allow_none:
        return None
    if not is_int(channels) or channels not in (1, 3):
        raise ValueError(f"`channels` must be 1 or 3{' or None' if allow_none else ''}, got {channels!r}")
    return int(channels)  # type: ignore[arg-type]


#


def _decode(path: str | os.PathLike, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    """Decode an image file as stored (8/16-bit or float, 1/3/4 channels); ValueError naming the file if unreadable.
    Reads the bytes with numpy so that any path (non-ASCII included) works."""
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e}") from e
    array = cv2.imdecode(data, flags) if data.size else None
    if array is None:
        raise ValueError(f"cannot decode {path}: not an image OpenCV can read, or a corrupt file")
    if path.suffix.lower() in (".tif", ".tiff"):
        ok, pages = cv2.imdecodemulti(data, flags)
        if ok and len(pages) > 1:
            raise ValueError(f"{path} is a multipage TIFF ({len(pages)} pages); spadfast reads one 2-D image per "
                             "file: split the pages into files (or use NIfTI for volumes)")
    return array


def _to_rgb_or_gray(array: np.ndarray, path: Path) -> np.ndarray:
    """OpenCV's BGR(A) / gray(+alpha) layout to ``[H,W]`` gray or ``[H,W,3]`` RGB; alpha is dropped."""
    if array.ndim == 2:
        return array
    if array.ndim == 3 and array.shape[2] == 1:
        return array[:, :, 0]
    if array.ndim == 3 and array.shape[2] == 2:
        return array[:, :, 0]
    if array.ndim == 3 and array.shape[2] in (3, 4):
        return np.ascontiguousarray(array[:, :, 2::-1])
    raise ValueError(f"{path} has an unsupported layout {array.shape}: expected gray, RGB or RGBA")


def _scale_of(array: np.ndarray, path: Path) -> float:
    """The value that maps to 1.0: the dtype's max for integers; floats must already lie in [0, 1]."""
    if array.dtype == np.uint8:
        return 255.0
    if array.dtype == np.uint16:
        return 65535.0
    if array.dtype.kind == "f":
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise ValueError(f"{path} holds floating-point values outside [0, 1]; only such float images are read")
        return 1.0
    raise ValueError(f"{path} has pixel type {array.dtype}; supported: 8-bit, 16-bit unsigned, float in [0, 1]")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as float32 in ``[0, 1]`` (8/16-bit integers divided by their dtype's max).

    Args:
        path: a PNG, JPEG, TIFF or BMP file; grayscale, RGB or RGBA (alpha dropped), 8- or 16-bit.

    Returns:
        float32 ``[H,W]`` for grayscale files, ``[H,W,3]`` in RGB order for colour files.

    Raises:
        ValueError: the file is missing, unreadable or corrupt, or has an unsupported pixel type (names the file).

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.png"
        >>> _ = cv2.imwrite(str(p), np.full((2, 3), 255, np.uint8))
        >>> read_image(p)
        array([[1., 1., 1.],
               [1., 1., 1.]], dtype=float32)
    """
    path = Path(path)
    array = _to_rgb_or_gray(_decode(path), path)
    return (array.astype(np.float32) / np.float32(_scale_of(array, path))).astype(np.float32)


def _mask_from_array(array: np.ndarray, path: Path) -> np.ndarray:
    if array.ndim == 3:
        colour = array[:, :, :3] if array.shape[2] >= 3 else array[:, :, :1]
        has_alpha = array.shape[2] in (2, 4)
        if has_alpha and (colour == colour[:1, :1]).all() and not (array[:, :, -1] == array[0, 0, -1]).all():
            # annotation tools often export the label in the alpha channel over a constant colour
            colour = array[:, :, -1:]
        elif not (colour == colour[:, :, :1]).all():
            raise ValueError(f"{path} is a colour mask whose channels disagree; masks must be gray (or equal RGB), "
                             "or a constant colour with the label in alpha")
        array = colour[:, :, 0]
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ValueError(f"{path} holds NaN or infinite mask values")
    if path.suffix.lower() in _LOSSY:
        # JPEG noise makes "nonzero" meaningless: threshold at half the dtype's range instead.
        top = 255 if array.dtype == np.uint8 else 65535 if array.dtype == np.uint16 else 1
        return array > top / 2
    return array != 0


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a binary mask: any nonzero pixel is foreground (0/1, 0/255 and 0/65535 masks all work).

    JPEG masks are the exception: compression noise scatters small nonzero values, so they are thresholded at half
    the dtype's range (> 127 for 8-bit). RGB(A) masks must have equal colour channels (alpha ignored), except a
    constant colour with a varying alpha, where alpha is the label (a common export of annotation tools). An
    indexed-colour (palette) PNG is read by palette index: index 0 is background. A multipage TIFF is refused.

    Args:
        path: a PNG, JPEG, TIFF or BMP mask file.

    Returns:
        bool ``[H,W]``.

    Raises:
        ValueError: missing, unreadable or corrupt file, or a colour mask whose channels disagree (names the file).

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "m.png"
        >>> _ = cv2.imwrite(str(p), np.array([[0, 1], [255, 0]], np.uint8))
        >>> read_mask(p)
        array([[False,  True],
               [ True, False]])
    """
    path = Path(path)
    indices = palette_indices(np.fromfile(path, dtype=np.uint8)) if path.suffix.lower() == ".png" and \
        path.is_file() else None
    return indices != 0 if indices is not None else _mask_from_array(_decode(path), path)

def write_atomic(path: str | os.PathLike, write: Callable[[Path], None], mode: int = 0o644) -> Path:
    """Create ``path`` atomically: ``write(tmp)`` fills a temporary file beside it, which is fsynced and renamed.

    A crash leaves either the old file or the new one, never a half-written one; the temporary file is named
    ``.<name>.spadfast-tmp-*`` (see :func:`remove_stale_temps`) and removed on any error.

    Raises:
        OSError: writing failed (a full disk, no permission, ...): same ``errno``, ``filename`` is ``path``, the
            message says that any previous file at ``path`` is unchanged; calling again once the cause is gone
            writes the file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}{TEMP_MARKER}")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # mkstemp creates 0600; outputs are shared like any other file
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        reason = e.strerror or str(e)
        raise OSError(e.errno, f"cannot write ({reason}; any previous file there is unchanged)", str(path)) from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """:func:`write_atomic` of raw bytes."""
    return write_atomic(path, lambda tmp: tmp.write_bytes(data))


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """:func:`write_atomic` of UTF-8 text (JSON reports)."""
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete temporary files that an interrupted :func:`write_atomic` left in ``folder``; returns them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.iterdir() if p.name.startswith(".") and TEMP_MARKER in p.name and p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_image(path: Path, array: np.ndarray) -> Path:
    ok, encoded = cv2.imencode(path.suffix.lower(), array)
    if not ok:
        raise ValueError(f"cannot encode an array of shape {array.shape} and dtype {array.dtype} as {path}")
    return write_bytes_atomic(path, encoded.tobytes())


def mask_2d(mask: object, name: str) -> np.ndarray:
    """``[H,W]`` or ``[1,H,W]`` binary tensor/array (bool or 0/1) as bool ``[H,W]`` (:func:`binary_array`'s rules)."""
    batch = binary_array(mask, name, 2)
    if batch.shape[0] != 1:
        raise ValueError(f"`{name}` must have shape [H,W] or [1,H,W] with H, W >= 1, got {tuple(mask.shape)}")
    return batch[0]


def write_mask_png(path: str | os.PathLike, mask: torch.Tensor | np.ndarray) -> Path:
    """Write a binary mask as an 8-bit PNG holding 0 and 255, atomically (temporary file, then ``os.replace``).

    Args:
        path: destination, ending in ``.png``; missing parent folders are created.
        mask: ``[H,W]`` or ``[1,H,W]``, bool or 0/1 values (torch tensor or numpy array).

    Returns:
        The path written.

    Raises:
        TypeError: ``mask`` is not a tensor/array of a real dtype.
        ValueError: ``path`` does not end in ``.png``, or ``mask`` has a bad shape or non-binary values.

    Example:
        >>> import tempfile, pathlib
        >>> p = write_mask_png(pathlib.Path(tempfile.mkdtemp()) / "m.png", np.eye(3, dtype=bool))
        >>> bool((read_mask(p) == np.eye(3, dtype=bool)).all())
        True
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"`path` must end in .png, got {path}")
    _write_image(path, mask_2d(mask, "mask").astype(np.uint8) * np.uint8(255))
    return path
def pair_folder(root: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """``root/images`` and ``root/masks`` paired by file stem: ``(images, masks)``, both ``stem -> file``. An empty
    images folder, an image without a mask or a mask without an image is a ValueError naming the file."""
    images, masks = index_folder(root / "images"), index_folder(root / "masks")
    if not images:
        raise ValueError(f"{root / 'images'} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
    for stem, p in images.items():
        if stem not in masks:
            raise ValueError(f"{p} has no mask: expected {root / 'masks' / stem}.<png|jpg|tif|bmp>")
    for stem, p in masks.items():
        if stem not in images:
            raise ValueError(f"{p} has no image: expected {root / 'images' / stem}.<png|jpg|tif|bmp>")
    return images, masks


def is_hidden(path: Path) -> bool:
    """The one rule for files spadfast ignores in folders: names starting with "." (macOS ``._name`` included)."""
    return Path(path).name.startswith(".")


def index_folder(folder: Path) -> dict[str, Path]:
    """Image files of ``folder`` by stem (hidden files and other extensions skipped); one file per stem."""
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder: a data folder holds images/ and masks/")
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if is_hidden(p) or p.suffix.lower() not in IMAGE_EXTENSIONS or not p.is_file():
            continue
        if p.stem in found:
            raise ValueError(f"{p} and {found[p.stem]} share the stem {p.stem!r}: one file per name")
        found[p.stem] = p
    return found


def resize_image(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = array.shape[:2]
    if (h, w) == size:
        return array
    shrink = size[0] <= h and size[1] <= w
    return cv2.resize(array, (size[1], size[0]), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if mask.shape == size:
        return mask
    # NEAREST_EXACT samples at pixel centres like INTER_AREA/INTER_LINEAR; plain INTER_NEAREST is off by half a
    # pixel and would shift masks against their images.
    u8 = cv2.resize(mask.astype(np.uint8), (size[1], size[0]), interpolation=cv2.INTER_NEAREST_EXACT)
    return u8 != 0


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A class map ``[H,W]`` (uint8/uint16) resized by nearest neighbour at pixel centres, values kept."""
    if labels.shape == size:
        return labels
    return cv2.resize(labels, (size[1], size[0]), interpolation=cv2.INTER_NEAREST_EXACT)


LOW_RANGE_FRACTION = 0.125  # below this fraction of its dtype's range an integer image is probably 12-bit-in-16


def intensity_range(array: np.ndarray, scale: float, norm: str) -> tuple[float, float]:
    """The stored values ``(lo, hi)`` that map to -1 and 1 under ``norm``.

    ``dtype``: ``(0, dtype max)`` (8/16-bit) or ``(0, 1)`` (float), the same for every image. ``minmax``: the
    image's own min and max. ``percentile``: its 0.5th and 99.5th percentiles (robust to hot pixels; values
    outside are clipped). A constant image maps to -1.
    """
    if norm == "dtype":
        return 0.0, float(scale)
    if norm == "minmax":
        lo, hi = float(array.min()), float(array.max())
    elif norm == "percentile":
        lo, hi = (float(v) for v in np.percentile(array, (0.5, 99.5)))
    else:
        raise ValueError(f"`intensity_norm` must be one of {INTENSITY_NORMS}, got {norm!r}")
    return lo, (hi if hi > lo else lo + 1.0)


def used_range_fraction(array: np.ndarray, scale: float) -> float:
    """Fraction of the dtype's range an image reaches (1.0 for float images)."""
    return float(array.max()) / scale if array.dtype.kind in "ui" else 1.0


def load_stored(
    path: str | os.PathLike, size: tuple[int, int] | None = None, norm: str = "dtype"
) -> tuple[np.ndarray, float, float, float]:
    """Decode an image file and resize it in its stored dtype (the cacheable half of :func:`read_model_input`).

    Returns ``(array, lo, hi, used)``: ``[H,W]`` gray or ``[H,W,3]`` RGB in the file's dtype (uint8/uint16/float32),
    resized to ``size`` = ``(H, W)`` when given (INTER_AREA when shrinking, INTER_LINEAR otherwise); the stored
    values that map to -1 and 1 (:func:`intensity_range`, computed on the full-resolution image); and the fraction
    of the dtype's range the image reaches (:func:`used_range_fraction`).
    """
    path = Path(path)
    return stored_array(_to_rgb_or_gray(_decode(path), path), path, size, norm)


def stored_array(array: np.ndarray, path: Path, size: tuple[int, int] | None, norm: str):
    """:func:`load_stored` of an already decoded ``[H,W]`` / ``[H,W,3]`` RGB array (``path`` names it in errors)."""
    scale = _scale_of(array, path)
    lo, hi = intensity_range(array, scale, norm)
    used = used_range_fraction(array, scale)
    return (resize_image(array, size) if size is not None else array), lo, hi, used


def stored_to_model(array: np.ndarray, lo: float, hi: float, channels: int) -> np.ndarray:
    """A stored (resized) image from :func:`load_stored` as model input: float32 ``[C,H,W]`` in ``[-1, 1]``.

    ``lo`` maps to -1 and ``hi`` to 1 (values outside are clipped). Colour is converted to gray
    (``channels == 1``) or gray replicated (``channels == 3``) after scaling.
    """
    image = (array.astype(np.float32) - np.float32(lo)) * np.float32(2.0 / (hi - lo)) - np.float32(1.0)
    if image.ndim == 2 and channels == 3:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.ndim == 3 and channels == 1:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if image.ndim == 2:
        image = image[:, :, None]
    return np.clip(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32), -1.0, 1.0)


def read_model_input(
    path: str | os.PathLike, size: tuple[int, int] | int | None, channels: int, norm: str = "dtype"
) -> tuple[np.ndarray, tuple[int, int], float]:
    """The one path from an image file to model input, shared by training folders and ``predict``.

    Returns float32 ``[C,H,W]`` in ``[-1, 1]`` (resized to ``size``; intensities by ``norm``, see
    :func:`intensity_range`), the file's native ``(H, W)``, and the fraction of its dtype's range it uses.
    """
    size = check_size(size)
    path = Path(path)
    decoded = _to_rgb_or_gray(_decode(path), path)
    array, lo, hi, used = stored_array(decoded, path, size, norm)
    native = decoded.shape[:2]
    return stored_to_model(array, lo, hi, check_channels(channels, allow_none=False)), native, used


def warn_low_range(fractions: list[float], where: str) -> None:
    """Warn once when most integer images of a set reach only a small part of their dtype's range."""
    if fractions and float(np.median(fractions)) < LOW_RANGE_FRACTION:
        import warnings

        warnings.warn(
            f"images in {where} reach only {100 * float(np.median(fractions)):.1f}% of their dtype's range (median), "
            "e.g. 12-bit data stored as 16-bit: with intensity_norm='dtype' they land near -1; set "
            "`intensity_norm` to 'minmax' or 'percentile'", UserWarning, stacklevel=3,
        )
