"""2-D label maps as stored: the one reader ``evaluate``, the report and multi-class training use for PNG/TIFF
label files. Palette (indexed-colour) PNGs, as Pascal VOC and many annotation tools write them, are read as their
palette indices: the index is the class, whatever colour the palette gives it."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

# Label values above this, without a dataset.json naming the classes, are most likely not class numbers (255 is a
# common "ignore" value, or a 0/255 binary mask in a multi-class folder).
LARGE_LABEL = 100

__all__ = ["LARGE_LABEL", "palette_indices", "read_label_png"]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def palette_indices(data: np.ndarray) -> np.ndarray | None:
    """The palette indices (uint8 ``[H,W]``) of an indexed-colour PNG given as its file's bytes (uint8 ``[N]``);
    None for any other file (OpenCV would expand the palette to colours)."""
    head = data[:26].tobytes()
    if len(head) < 26 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR" or head[25] != 3:
        return None  # colour type (IHDR byte 9, file byte 25) 3 = indexed colour
    import io

    from PIL import Image  # a dependency of matplotlib, itself a core dependency

    with Image.open(io.BytesIO(data.tobytes())) as image:
        if image.mode not in ("P", "L"):  # "L": a 1-entry or gray palette Pillow collapsed
            image = image.convert("P")
        return np.array(image, dtype=np.uint8)


def read_label_png(path: str | os.PathLike) -> np.ndarray:
    """A 2-D label map (PNG or another OpenCV image) as stored: integer ``[H,W]`` (equal colour channels allowed,
    alpha ignored); 0/255 binary masks give labels 0 and 255. Refuses undecodable files and non-integer pixels."""
    path = Path(path)
    data = np.fromfile(path, dtype=np.uint8) if path.is_file() else np.zeros(0, np.uint8)
    array = palette_indices(data)
    if array is None and data.size:
        array = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if array is None:
        raise ValueError(f"cannot decode {path}: not a PNG OpenCV can read, or a corrupt file")
    if array.ndim == 3:
        colour = array[:, :, :3] if array.shape[2] >= 3 else array[:, :, :1]
        if not (colour == colour[:, :, :1]).all():
            raise ValueError(f"{path} is a colour mask whose channels disagree; label maps must be gray")
        array = colour[:, :, 0]
    if array.dtype.kind not in "iu":
        raise ValueError(f"{path} holds {array.dtype} pixels; label maps hold integers")
    return array
