"""napari reader for spadfast prediction folders (``spadfast predict --out DIR``, with or without ``--uncertainty``).

For each label map in the folder (``<case>.png``/``.tif`` 2-D, ``<case>.nii.gz``/``.nii`` volumes) it returns the
image (when found beside the folder, see :func:`find_image`), the labels (Labels layer) and the uncertainty map of
``uncertainty/<case>.*`` (Image layer, ``magma``; a volume's classes reduced to the largest std).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["napari_get_reader", "read_prediction_folder", "find_image", "label_map_files"]

_IMAGE_EXTS = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
_VOLUME_EXTS = (".nii.gz", ".nii")


def _stem(path: Path) -> str:
    name = path.name
    for ext in _VOLUME_EXTS + _IMAGE_EXTS:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return path.stem


def label_map_files(folder: Path) -> list[Path]:
    """The label maps ``predict`` wrote in ``folder`` (top level only: ``uncertainty/``, ``probabilities/`` and
    ``overlays/`` hold the other outputs), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(_IMAGE_EXTS + _VOLUME_EXTS))


def find_image(folder: Path, stem: str) -> Path | None:
    """The input image of case ``stem``: looked up in ``folder/images``, ``folder/../images`` and
    ``folder/../test/images`` (the demo's layout), as ``<stem>.<ext>`` or, for volumes, ``<stem>_0000.nii.gz``."""
    for where in (folder / "images", folder.parent / "images", folder.parent / "test" / "images"):
        if not where.is_dir():
            continue
        for name in [stem + e for e in _IMAGE_EXTS + _VOLUME_EXTS] + [f"{stem}_0000{e}" for e in _VOLUME_EXTS]:
            if (where / name).is_file():
                return where / name
    return None


def _read(path: Path) -> tuple[np.ndarray, tuple[float, ...] | None]:
    """Array (volumes: ``[I,J,K]`` as stored, spacing from the header) and its pixel spacing (None for 2-D)."""
    if path.name.lower().endswith(_VOLUME_EXTS):
        import nibabel as nib

        image = nib.load(str(path))
        return np.asanyarray(image.dataobj), tuple(float(z) for z in image.header.get_zooms()[:3])
    import cv2

    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise ValueError(f"{path} is not a readable image")
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_BGRA2RGBA if array.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    return array, None


def read_prediction_folder(path: str | Path) -> list[tuple]:
    """napari ``LayerData`` tuples ``(data, kwargs, layer_type)`` for every case in the prediction folder ``path``:
    image (``"<case>"``), labels (``"<case> labels"``; 0/255 binary PNGs read as 0/1) and uncertainty
    (``"<case> uncertainty"``, float32 in [0, 1]: PNGs hold ``std * 2 * 255``), volumes at their header spacing.
    A folder with no label map is a ValueError naming it."""
    folder = Path(path)
    files = label_map_files(folder) if folder.is_dir() else []
    if not files:
        raise ValueError(f"{folder} holds no label maps (.png/.tif/.nii.gz): not a spadfast prediction folder")
    layers: list[tuple] = []
    for file in files:
        stem = _stem(file)
        labels, spacing = _read(file)
        labels = np.asarray(labels)
        if labels.ndim == 3 and spacing is None:
            labels = labels[..., 0]
        if spacing is None and labels.max(initial=0) == 255 and set(np.unique(labels)) <= {0, 255}:
            labels = (labels > 0).astype(np.uint8)
        scale = {"scale": spacing} if spacing is not None else {}
        image_file = find_image(folder, stem)
        if image_file is not None:
            image, _ = _read(image_file)
            rgb = image.ndim == 3 and spacing is None
            layers.append((image, {"name": stem, "rgb": rgb, **scale}, "image"))
        layers.append((labels.astype(np.int32), {"name": f"{stem} labels", **scale}, "labels"))
        maps = [p for p in (folder / "uncertainty").glob(f"{stem}.*") if _stem(p) == stem] \
            if (folder / "uncertainty").is_dir() else []
        if maps:
            std, _ = _read(maps[0])
            std = np.asarray(std, dtype=np.float32)
            if spacing is None:  # the PNG holds std * 2 * 255 (predict_folder)
                std = std / (2 * 255)
            elif std.ndim == 4:
                std = std.max(axis=-1)
            layers.append((std, {"name": f"{stem} uncertainty", "colormap": "magma", "blending": "additive",
                                 **scale}, "image"))
    return layers


def napari_get_reader(path):
    """npe2 reader hook: :func:`read_prediction_folder` for a folder holding label maps, else None."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    folder = Path(path)
    if not folder.is_dir() or not label_map_files(folder):
        return None
    return read_prediction_folder
