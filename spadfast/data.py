"""Data: synthetic lesion scans, image/mask folders, mask I/O and contour overlays.

Conventions shared by everything here: an image is float32 ``[C,H,W]`` in ``[-1, 1]`` (channel order RGB when
``C == 3``); a mask is float32 ``[1,H,W]`` holding 0 and 1. A data folder holds ``images/`` and ``masks/`` whose
files pair up by stem (``images/case7.jpg`` with ``masks/case7.png``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = [
    "IMAGE_EXTENSIONS",
    "SyntheticLesions",
    "SegmentationFolder",
    "read_image",
    "read_mask",
    "write_mask_png",
    "overlay_contour",
    "write_synthetic_folder",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
_LOSSY = (".jpg", ".jpeg")
_SALT = 0x5BAD  # keeps these random streams apart from other users of (seed, index)


# ---------------------------------------------------------------------------------------------------------------
# Argument checks


def _check_int(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}")
    return int(value)


def _check_size(size: object, name: str = "image_size") -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        s = _check_int(size, name, 1)
        return s, s
    if isinstance(size, Sequence) and not isinstance(size, (str, bytes)) and len(size) == 2:
        return _check_int(size[0], name, 1), _check_int(size[1], name, 1)
    raise TypeError(f"`{name}` must be None, an int or a pair (H, W) of ints, got {size!r}")


def _check_channels(channels: object, allow_none: bool) -> int | None:
    if channels is None and allow_none:
        return None
    if isinstance(channels, bool) or channels not in (1, 3):
        raise ValueError(f"`channels` must be 1 or 3{' or None' if allow_none else ''}, got {channels!r}")
    return int(channels)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------------
# Synthetic lesions

_GRIDS: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    if size not in _GRIDS:
        _GRIDS[size] = tuple(np.mgrid[:size, :size].astype(np.float32) + 0.5)  # type: ignore[assignment]
    return _GRIDS[size]


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Zero-mean, unit-std low-frequency noise: a ``cells x cells`` normal grid upsampled bicubically."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    field = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    return (field - field.mean()) / (field.std() + 1e-6)


def _synthetic_sample(seed: int, index: int, size: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """One scan: image float32 ``[C,S,S]`` in [-1, 1] and mask float32 ``[1,S,S]``, from ``(seed, index)`` only."""
    rng = np.random.default_rng([_SALT, seed, index])

    def u01(lo: float, hi: float) -> np.float32:  # float32 scalars keep the arrays float32
        return np.float32(rng.uniform(lo, hi))

    yy, xx = _grid(size)

    # Background tissue: a base level, smooth texture and a gentle illumination gradient.
    base = u01(-0.6, -0.3)
    texture = u01(0.12, 0.26) * _smooth_noise(rng, size, int(rng.integers(3, 8)))
    angle = rng.uniform(0, 2 * np.pi)
    gx, gy = np.float32(np.cos(angle) / size), np.float32(np.sin(angle) / size)
    image = base + texture + u01(0.0, 0.2) * (gx * xx + gy * yy - np.float32(0.5))
    if rng.random() < 0.5:  # a bright vessel-like curve: not a lesion, so a global threshold is not enough
        rot = rng.uniform(0, np.pi)
        c, s_ = np.float32(np.cos(rot)), np.float32(np.sin(rot))
        along = c * xx + s_ * yy
        across = c * yy - s_ * xx - np.float32(rng.uniform(-0.3, 0.3) * size)
        wave = u01(0.03, 0.12) * size * np.sin(along * np.float32(rng.uniform(2, 6) / size) + u01(0, 2 * np.pi))
        width = u01(0.6, 1.2) * max(1.0, size / 64)
        image = image + u01(0.35, 0.6) * np.exp(-(((across - wave) / width) ** 2))

    # Lesions: 1 or 2 wobbly ellipses. t = normalised radius (1 on a lesion's unit outline, smaller inside); the
    # union {t < s} covers exactly the drawn fraction of the image, whatever the clipping by the border.
    n_lesions = 1 if rng.random() < 0.7 else 2
    t = np.full((size, size), np.inf, dtype=np.float32)
    for k in range(n_lesions):
        if rng.random() < 0.25:  # centre near an edge, so the lesion touches the border
            along, near = rng.uniform(0.1, 0.9), rng.uniform(0.0, 0.08)
            edge = rng.integers(4)
            cy, cx = [(near, along), (1 - near, along), (along, near), (along, 1 - near)][edge]
        else:
            cy, cx = rng.uniform(0.2, 0.8, size=2)
        rot = rng.uniform(0, np.pi)
        c, s_ = np.float32(np.cos(rot) / size), np.float32(np.sin(rot) / size)
        aspect = u01(0.55, 1.0)
        scale = np.float32(1.0 if k == 0 else rng.uniform(0.45, 0.9))
        dx, dy = xx - np.float32(cx * size), yy - np.float32(cy * size)
        u = c * dx + s_ * dy
        v = (c * dy - s_ * dx) / aspect
        rho = np.sqrt(u * u + v * v) + np.float32(1e-6)
        # cos(h*theta + phase) = Re(z^h * e^(i*phase)) with z = e^(i*theta): no arctan2 or cos per pixel.
        z = np.empty(rho.shape, np.complex64)
        z.real, z.imag = u / rho, v / rho
        zh = z
        wobble = np.ones_like(rho)
        for h in range(2, 6):
            zh = zh * z
            phase = np.complex64(np.exp(1j * rng.uniform(0, 2 * np.pi)))
            wobble += np.float32(rng.uniform(0.0, 0.16) / h**0.5) * (zh * phase).real
        t = np.minimum(t, rho / (scale * wobble))
    fraction = rng.uniform(0.05, 0.30)
    kth = min(int(np.ceil(fraction * t.size)), t.size - 1)
    s = np.partition(t.ravel(), kth)[kth]
    mask = t < s

    # Lesion appearance: brighter, soft-edged, internally textured; then speckle, stronger inside the lesion.
    edge_width = u01(0.02, 0.07) * s
    soft = np.float32(1.0) / (np.float32(1.0) + np.exp(np.clip((t - s) / edge_width, -30, 30)))
    inner = _smooth_noise(rng, size, int(rng.integers(4, 10)))
    contrast = u01(0.55, 0.95) * (np.float32(1.0) + np.float32(0.15) * inner)
    image = image + contrast * soft
    speckle = u01(0.07, 0.13) * (np.float32(1.0) + np.float32(0.5) * soft)
    image = image + speckle * rng.standard_normal((size, size), dtype=np.float32)

    if channels == 1:
        out = image[None]
    else:  # a tint per channel, as in colour endoscopy or dermoscopy
        gains = rng.uniform(0.85, 1.1, size=(channels, 1, 1)).astype(np.float32)
        offsets = rng.uniform(-0.08, 0.08, size=(channels, 1, 1)).astype(np.float32)
        out = image[None] * gains + offsets
    return np.clip(out, -1.0, 1.0).astype(np.float32), mask[None].astype(np.float32)


class SyntheticLesions(Dataset):
    """Deterministic synthetic "scans" with one or two bright lesions; the mask is the lesion.

    Sample ``i`` depends only on ``(seed, i)`` (not on ``n`` or on access order) and is generated on access (about
    a millisecond at 64 x 64). The background is a smooth texture with an illumination gradient and, in half the
    samples, a thin bright vessel-like curve that is not lesion (so a global threshold does not solve it); lesions
    are wobbly ellipses covering 5%-30% of the image in all, sometimes clipped by the border, brighter by 0.55-0.95
    with soft edges and internal texture; speckle noise (std 0.07-0.2) covers everything. A small UNet trained for
    a couple of minutes on CPU at 32-48 px reaches a Dice of about 0.85-0.9.

    Args:
        n: number of samples.
        image_size: side S of the square images.
        seed: dataset seed; different seeds give independent datasets.
        channels: 1 (grayscale) or 3 (RGB, the same scan tinted per channel).

    Returns (per item):
        ``(image, mask)``: image float32 ``[C,S,S]`` in ``[-1, 1]``, mask float32 ``[1,S,S]`` in ``{0, 1}``.

    Example:
        >>> ds = SyntheticLesions(4, image_size=32, seed=1)
        >>> image, mask = ds[0]
        >>> tuple(image.shape), tuple(mask.shape), image.dtype
        ((1, 32, 32), (1, 32, 32), torch.float32)
    """

    def __init__(self, n: int, image_size: int = 64, seed: int = 0, channels: int = 1):
        self.n = _check_int(n, "n", 0)
        self.image_size = _check_int(image_size, "image_size", 8)
        self.seed = _check_int(seed, "seed", 0)
        self.channels = _check_channels(channels, allow_none=False)

    def __len__(self) -> int:
        return self.n

    def _index(self, index: int) -> int:
        index = _check_int(index, "index", -self.n)
        if index < 0:
            index += self.n
        if index >= self.n:
            raise IndexError(f"index {index} is out of range for SyntheticLesions of length {self.n}")
        return index

    def numpy(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample ``index`` as numpy arrays (same values and shapes as ``self[index]``)."""
        return _synthetic_sample(self.seed, self._index(index), self.image_size, self.channels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.numpy(index)
        return torch.from_numpy(image), torch.from_numpy(mask)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All samples stacked: images float32 ``[n,C,S,S]`` and masks float32 ``[n,1,S,S]``."""
        s, c = self.image_size, self.channels
        images = np.empty((self.n, c, s, s), np.float32)
        masks = np.empty((self.n, 1, s, s), np.float32)
        for i in range(self.n):
            images[i], masks[i] = self.numpy(i)
        return torch.from_numpy(images), torch.from_numpy(masks)


# ---------------------------------------------------------------------------------------------------------------
# Reading and writing files


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
        if not (colour == colour[:, :, :1]).all():
            raise ValueError(f"{path} is a colour mask whose channels disagree; masks must be gray (or equal RGB)")
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
    the dtype's range (> 127 for 8-bit). RGB(A) masks must have equal colour channels; alpha is ignored.

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
    return _mask_from_array(_decode(path), path)


def _write_atomic(path: Path, array: np.ndarray) -> None:
    ok, encoded = cv2.imencode(path.suffix.lower(), array)
    if not ok:
        raise ValueError(f"cannot encode an array of shape {array.shape} and dtype {array.dtype} as {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(encoded.tobytes())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _mask_2d(mask: object, name: str) -> np.ndarray:
    """``[H,W]`` or ``[1,H,W]`` binary tensor/array (bool or 0/1) as bool ``[H,W]``."""
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy() if mask.dtype != torch.bfloat16 else mask.detach().float().cpu().numpy()
    if not isinstance(mask, np.ndarray):
        raise TypeError(f"`{name}` must be a torch.Tensor or numpy.ndarray, got {type(mask).__name__}")
    if mask.dtype.kind not in "biuf":
        raise TypeError(f"`{name}` must be bool, integer or floating, got dtype {mask.dtype}")
    if mask.ndim == 3 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.ndim != 2 or mask.shape[0] == 0 or mask.shape[1] == 0:
        raise ValueError(f"`{name}` must have shape [H,W] or [1,H,W] with H, W >= 1, got {tuple(mask.shape)}")
    if mask.dtype == np.bool_:
        return mask
    if mask.dtype.kind == "f" and np.isnan(mask).any():
        raise ValueError(f"`{name}` must not contain NaN")
    bad = (mask != 0) & (mask != 1)
    if bad.any():
        raise ValueError(f"`{name}` must be binary (bool or values in {{0, 1}}), got values such as {mask[bad][:3]}")
    return mask != 0


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
    _write_atomic(path, _mask_2d(mask, "mask").astype(np.uint8) * np.uint8(255))
    return path


def _image_to_bgr_u8(image: object) -> np.ndarray:
    """Floating ``[-1,1]`` images (RGB order) or uint8 images (BGR order, as OpenCV returns them) as uint8 BGR."""
    if isinstance(image, torch.Tensor):
        image = image.detach().float().cpu().numpy() if image.is_floating_point() else image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray):
        raise TypeError(f"`image` must be a torch.Tensor or numpy.ndarray, got {type(image).__name__}")
    if image.dtype != np.uint8 and image.dtype.kind != "f":
        raise TypeError(f"`image` must be floating (values in [-1, 1]) or uint8, got dtype {image.dtype}")
    if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[2] not in (1, 3):
        image = image.transpose(1, 2, 0)  # [C,H,W] -> [H,W,C]
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"`image` must have shape [H,W], [C,H,W] or [H,W,C] with C in (1, 3), got {image.shape}")
    if image.dtype.kind == "f":
        u8 = np.clip(np.rint((image.astype(np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)
        if u8.ndim == 3:
            u8 = u8[:, :, ::-1]  # RGB -> BGR
    else:
        u8 = image
    if u8.ndim == 2:
        u8 = cv2.cvtColor(u8, cv2.COLOR_GRAY2BGR)
    return np.ascontiguousarray(u8)


def overlay_contour(
    image: torch.Tensor | np.ndarray,
    mask: torch.Tensor | np.ndarray,
    color: tuple[int, int, int] = (0, 255, 0),
) -> np.ndarray:
    """Draw the outline of ``mask`` over ``image``, for viewing or ``cv2.imwrite``.

    Args:
        image: floating in ``[-1, 1]`` (``[H,W]``, ``[C,H,W]`` or ``[H,W,C]``, RGB order when ``C == 3``, as the
            datasets here return it), or uint8 ``[H,W]`` / ``[H,W,3]`` in BGR order (as OpenCV and this function
            return it, so calls chain: draw the ground truth, then the prediction in another colour).
        mask: ``[H,W]`` or ``[1,H,W]`` binary mask (bool or 0/1) of the image's size.
        color: BGR colour of the contour.

    Returns:
        uint8 ``[H,W,3]`` BGR image (a new array).

    Raises:
        TypeError: wrong argument types.
        ValueError: bad shapes, non-binary mask, or mask and image of different sizes.

    Example:
        >>> img = torch.zeros(1, 16, 16) - 1
        >>> m = torch.zeros(16, 16); m[4:12, 4:12] = 1
        >>> out = overlay_contour(img, m, color=(0, 0, 255))
        >>> out.shape, out.dtype, out[4, 4].tolist(), out[8, 8].tolist()
        ((16, 16, 3), dtype('uint8'), [0, 0, 255], [0, 0, 0])
    """
    canvas = _image_to_bgr_u8(image).copy()
    m = _mask_2d(mask, "mask")
    if m.shape != canvas.shape[:2]:
        raise ValueError(f"`mask` must have the image's size {canvas.shape[:2]}, got {m.shape}")
    if len(color) != 3:
        raise ValueError(f"`color` must be a (B, G, R) triple, got {color!r}")
    contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    thickness = max(1, round(min(m.shape) / 256))
    cv2.drawContours(canvas, contours, -1, tuple(int(c) for c in color), thickness)
    return canvas


# ---------------------------------------------------------------------------------------------------------------
# Folders


def _index_folder(folder: Path) -> dict[str, Path]:
    """Image files of ``folder`` by stem (hidden files and other extensions skipped); one file per stem."""
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder: a data folder holds images/ and masks/")
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or p.suffix.lower() not in IMAGE_EXTENSIONS or not p.is_file():
            continue
        if p.stem in found:
            raise ValueError(f"{p} and {found[p.stem]} share the stem {p.stem!r}: one file per name")
        found[p.stem] = p
    return found


def _resize_image(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = array.shape[:2]
    if (h, w) == size:
        return array
    shrink = size[0] <= h and size[1] <= w
    return cv2.resize(array, (size[1], size[0]), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if mask.shape == size:
        return mask
    # NEAREST_EXACT samples at pixel centres like INTER_AREA/INTER_LINEAR; plain INTER_NEAREST is off by half a
    # pixel and would shift masks against their images.
    u8 = cv2.resize(mask.astype(np.uint8), (size[1], size[0]), interpolation=cv2.INTER_NEAREST_EXACT)
    return u8 != 0


class SegmentationFolder(Dataset):
    """Image/mask pairs from ``root/images`` and ``root/masks``, paired by file stem.

    Every pair is read once in ``__init__``: a missing partner, an unreadable or corrupt file, an image and mask
    of different sizes, mixed native sizes with ``image_size=None`` or an empty folder raise ``ValueError`` naming
    the file before any training starts. With ``cache=True`` (default) the decoded, resized pixels stay in memory
    in their stored dtype (uint8/uint16), otherwise files are read again on each access.

    Images: PNG, JPEG, TIFF or BMP, gray or RGB(A), 8- or 16-bit, divided by the dtype's max and mapped to
    ``[-1, 1]``; resized with INTER_AREA (shrinking) or INTER_LINEAR. Masks: see :func:`read_mask` (nonzero is
    foreground; JPEG masks thresholded at half range); resized with INTER_NEAREST_EXACT.

    Augmentation (training only): horizontal and vertical flips and, for square images, 90-degree rotations,
    identical for image and mask, drawn from ``(seed, epoch, index)`` so it is reproducible with any number of
    loader workers; call :meth:`set_epoch` each epoch for fresh draws.

    Args:
        root: folder holding ``images/`` and ``masks/``.
        image_size: ``None`` (keep the native size; all images must share it), an int S (S x S) or ``(H, W)``.
        channels: ``None`` (from the first image: 1 for gray, 3 for colour), 1 (colour converted to gray) or 3
            (gray replicated).
        augment: apply random flips/rotations.
        seed: augmentation seed.
        cache: keep decoded pixels in memory.

    Returns (per item):
        ``(image, mask)``: image float32 ``[C,H,W]`` in ``[-1, 1]``, mask float32 ``[1,H,W]`` in ``{0, 1}``.

    Attributes:
        names: sorted list of stems. paths: list of ``(image_path, mask_path)``. image_size: ``(H, W)`` of items.
        channels: C.

    Example:
        >>> import tempfile
        >>> root = write_synthetic_folder(tempfile.mkdtemp(), n=3, image_size=32, seed=0)
        >>> ds = SegmentationFolder(root, image_size=16)
        >>> ds.names, tuple(ds[0][0].shape), tuple(ds[0][1].shape)
        (['0000', '0001', '0002'], (1, 16, 16), (1, 16, 16))
    """

    def __init__(
        self,
        root: str | os.PathLike,
        image_size: int | tuple[int, int] | None = None,
        channels: int | None = None,
        augment: bool = False,
        seed: int = 0,
        cache: bool = True,
    ):
        self.root = Path(root)
        size = _check_size(image_size)
        want_channels = _check_channels(channels, allow_none=True)
        self.augment = bool(augment)
        self.seed = _check_int(seed, "seed", 0)
        self.cache = bool(cache)
        self.epoch = 0

        images = _index_folder(self.root / "images")
        masks = _index_folder(self.root / "masks")
        if not images:
            raise ValueError(f"{self.root / 'images'} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
        for stem, p in images.items():
            if stem not in masks:
                raise ValueError(f"{p} has no mask: expected {self.root / 'masks' / stem}.<png|jpg|tif|bmp>")
        for stem, p in masks.items():
            if stem not in images:
                raise ValueError(f"{p} has no image: expected {self.root / 'images' / stem}.<png|jpg|tif|bmp>")
        self.names: list[str] = sorted(images)
        self.paths: list[tuple[Path, Path]] = [(images[s], masks[s]) for s in self.names]

        self.channels: int = 0
        self._native = size is None
        self.image_size: tuple[int, int] = size or (0, 0)
        self._items: list[tuple[np.ndarray, np.ndarray, float]] = []
        for image_path, mask_path in self.paths:
            image, mask, scale = self._load(image_path, mask_path, check=True, want_channels=want_channels)
            if self.cache:
                self._items.append((image, mask, scale))

    def _load(
        self, image_path: Path, mask_path: Path, check: bool = False, want_channels: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """Decoded, resized image (stored dtype, ``[H,W]`` or ``[H,W,3]``), bool mask and the image's scale."""
        image = _to_rgb_or_gray(_decode(image_path), image_path)
        scale = _scale_of(image, image_path)
        mask = _mask_from_array(_decode(mask_path), mask_path)
        if image.shape[:2] != mask.shape:
            raise ValueError(
                f"{image_path} is {image.shape[1]}x{image.shape[0]} (WxH) but its mask {mask_path} is "
                f"{mask.shape[1]}x{mask.shape[0]}"
            )
        if check:
            if not self.channels:
                self.channels = want_channels or (1 if image.ndim == 2 else 3)
            if self._native and self.image_size == (0, 0):
                self.image_size = mask.shape
            elif self._native and self.image_size != mask.shape:
                raise ValueError(
                    f"{image_path} is {mask.shape[1]}x{mask.shape[0]} (WxH) but {self.paths[0][0]} is "
                    f"{self.image_size[1]}x{self.image_size[0]}: pass image_size to resize to one size"
                )
        return _resize_image(image, self.image_size), _resize_mask(mask, self.image_size), scale

    def set_epoch(self, epoch: int) -> None:
        """Choose the augmentation draws of this epoch (they depend on ``(seed, epoch, index)``)."""
        self.epoch = _check_int(epoch, "epoch", 0)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = _check_int(index, "index", -len(self))
        if index < 0:
            index += len(self)
        if index >= len(self):
            raise IndexError(f"index {index} is out of range for SegmentationFolder of length {len(self)}")
        image, mask, scale = self._items[index] if self.cache else self._load(*self.paths[index])

        image = image.astype(np.float32) * np.float32(2.0 / scale) - np.float32(1.0)
        if image.ndim == 2 and self.channels == 3:
            image = np.repeat(image[:, :, None], 3, axis=2)
        elif image.ndim == 3 and self.channels == 1:
            image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        if image.ndim == 2:
            image = image[:, :, None]

        if self.augment:
            rng = np.random.default_rng([_SALT, self.seed, self.epoch, index])
            flip_y, flip_x, turns = rng.random() < 0.5, rng.random() < 0.5, int(rng.integers(4))
            if flip_y:
                image, mask = image[::-1], mask[::-1]
            if flip_x:
                image, mask = image[:, ::-1], mask[:, ::-1]
            if turns and mask.shape[0] == mask.shape[1]:
                image, mask = np.rot90(image, turns), np.rot90(mask, turns)

        image_t = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))
        mask_t = torch.from_numpy(np.ascontiguousarray(mask[None], dtype=np.float32))
        return image_t.clamp_(-1.0, 1.0), mask_t


def write_synthetic_folder(
    root: str | os.PathLike, n: int, image_size: int = 64, seed: int = 0, channels: int = 1
) -> Path:
    """Write ``SyntheticLesions(n, image_size, seed, channels)`` as a data folder of 8-bit PNGs.

    ``root/images/NNNN.png`` (gray, or colour when ``channels == 3``) and ``root/masks/NNNN.png`` (0/255). Files
    with the same names are overwritten; other files already there are left in place.

    Args:
        root: output folder (created).
        n: number of samples.
        image_size: side of the square images.
        seed: dataset seed.
        channels: 1 or 3.

    Returns:
        ``Path(root)``.

    Example:
        >>> import tempfile
        >>> root = write_synthetic_folder(tempfile.mkdtemp(), n=2, image_size=16)
        >>> sorted(p.name for p in (root / "masks").iterdir())
        ['0000.png', '0001.png']
    """
    root = Path(root)
    data = SyntheticLesions(n, image_size=image_size, seed=seed, channels=channels)
    width = max(4, len(str(max(n - 1, 0))))
    for i in range(len(data)):
        image, mask = data.numpy(i)
        u8 = np.clip(np.rint((image + 1.0) * 127.5), 0, 255).astype(np.uint8)
        u8 = u8[0] if channels == 1 else np.ascontiguousarray(u8.transpose(1, 2, 0)[:, :, ::-1])  # RGB -> BGR
        _write_atomic(root / "images" / f"{i:0{width}d}.png", u8)
        write_mask_png(root / "masks" / f"{i:0{width}d}.png", mask[0] != 0)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    return root
