"""2-D label maps as stored: the one reader ``evaluate`` and the report use for PNG/TIFF label files."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

__all__ = ["read_label_png"]


def read_label_png(path: str | os.PathLike) -> np.ndarray:
    """A 2-D label map (PNG or another OpenCV image) as stored: integer ``[H,W]`` (equal colour channels allowed,
    alpha ignored); 0/255 binary masks give labels 0 and 255. Refuses undecodable files and non-integer pixels."""
    path = Path(path)
    data = np.fromfile(path, dtype=np.uint8) if path.is_file() else np.zeros(0, np.uint8)
    array = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
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
