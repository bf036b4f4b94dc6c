"""A report's cases on disk: the prediction, ground truth, image and uncertainty files of each case, and their
thumbnails (image, ground truth in red, prediction vs ground truth, uncertainty) for :mod:`spadfast.evaluation.report`.

Volumes show the slice with the most ground truth; thumbnails keep the aspect ratio with the longest side at most
``thumb_size`` px.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["GT_COLOR", "PRED_COLOR", "case_files", "thumbnails"]

GT_COLOR = (0, 0, 255)  # BGR red
PRED_COLOR = (0, 255, 0)  # BGR green


def _is_volume(path: Path) -> bool:
    return path.name.lower().endswith((".nii.gz", ".nii"))


class _Folder:
    """Finds a case's image or uncertainty file in a folder: ``folder/<name>`` (PNG masks: names are file names) or
    the NIfTI file whose stem is ``<name>`` (volumes: names are case names); PNG images by stem, NIfTI images by case
    (channel 0). Predictions and ground truth are paired by :func:`spadfast.evaluation.evaluate.list_pairs`."""

    def __init__(self, folder: Path, images: bool = False) -> None:
        self.folder, self.images = folder, images
        self._by_stem: dict[str, Path] | None = None
        self._volumes: dict[str, Path] | None = None

    def _volume_index(self) -> dict[str, Path]:
        if self._volumes is None:
            from ..io.nifti import group_cases, volume_files, volume_stem

            has_volumes = any(volume_stem(p) is not None for p in self.folder.iterdir())
            if not has_volumes:
                self._volumes = {}
            elif self.images:
                self._volumes = {case: paths[0] for case, paths in group_cases(self.folder).items()}
            else:
                self._volumes = volume_files(self.folder)
        return self._volumes

    def find(self, name: str) -> Path | None:
        if not self.images and (self.folder / name).is_file():
            return self.folder / name
        if self.images and not _is_volume(Path(name)) and "." in name:
            if self._by_stem is None:
                from ..io.files import index_folder

                self._by_stem = index_folder(self.folder)
            found = self._by_stem.get(Path(name).stem)
            if found is not None:
                return found
        return self._volume_index().get(name)


def case_files(cases: list[dict[str, Any]], pred_dir: Path, gt_dir: Path,
               images_dir: Path | None) -> list[dict[str, Path | None]]:
    """Every case's files; a missing prediction, ground truth or image is a ValueError naming the path."""
    for folder, what in ((pred_dir, "prediction"), (gt_dir, "ground-truth")):
        if not folder.is_dir():
            raise ValueError(f"{what} folder {str(folder)!r} does not exist")
    if images_dir is not None and not images_dir.is_dir():
        raise ValueError(f"images folder {str(images_dir)!r} does not exist")
    from .evaluate import list_pairs

    _, pred_files, gt_files, _ = list_pairs(pred_dir, gt_dir)  # evaluate's own pairing of the two folders
    images = _Folder(images_dir, images=True) if images_dir is not None else None
    unc_dir = pred_dir / "uncertainty"
    unc_f = _Folder(unc_dir) if unc_dir.is_dir() else None
    out = []
    for case in cases:
        name = case["name"]
        pred, gt = pred_files.get(name), gt_files.get(name)
        for path, folder, what in ((pred, pred_dir, "prediction"), (gt, gt_dir, "ground truth")):
            if path is None:
                also = "" if "." in name else f" or {name}.nii.gz"
                raise ValueError(f"{what} for case {name!r} not found: expected {str(folder / name)!r}{also}; the "
                                 "prediction and ground-truth folders do not pair with this report")
        image = None
        if images is not None:
            image = images.find(name)
            if image is None:
                raise ValueError(f"images folder {str(images_dir)!r} has no image for case {name!r}")
        unc = None
        if unc_f is not None:
            unc = unc_f.find(f"{Path(name).stem}.png") if not _is_volume(gt) else unc_f.find(name)  # type: ignore
        out.append({"pred": pred, "gt": gt, "image": image, "unc": unc})
    return out


# ------------------------------------------------------------------------------------------------- thumbnails


def _labels(path: Path) -> np.ndarray:
    """A mask file as an integer label map (0 background; 0/255 binary masks give one label, 255): ``[H,W]`` for
    images, ``[I,J,K]`` for NIfTI volumes."""
    if _is_volume(path):
        from ..io.nifti import read_nifti, read_voxels

        a = read_voxels(read_nifti(path), path)
        if a.ndim == 4 and a.shape[3] == 1:
            a = a[:, :, :, 0]
        if a.ndim != 3:
            raise ValueError(f"label map {str(path)!r} has shape {a.shape}; expected 3-D")
        return np.rint(a).astype(np.int64) if a.dtype.kind == "f" else a.astype(np.int64)
    from ..io.label_maps import read_label_png

    return read_label_png(path).astype(np.int64)


def _to_unit(plane: np.ndarray) -> np.ndarray:
    """A volume's intensity plane as float32 in [0, 1], windowed to its 0.5-99.5th percentiles."""
    plane = plane.astype(np.float32)
    lo, hi = np.percentile(plane, [0.5, 99.5]) if plane.size else (0.0, 1.0)
    return np.clip((plane - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(plane)


def _case_planes(files: dict[str, Path | None]) -> dict[str, Any]:
    """What a case's thumbnails show: ``gt``/``pred`` int label maps ``[H,W]``, ``image`` float32 ``[H,W]`` or
    ``[H,W,3]`` RGB in [0, 1] (or None), ``unc`` uint8 ``[H,W]`` (or None) and ``note`` (the slice of a volume).

    Volumes are shown on one slice along the coarsest axis (the largest voxel size): the slice with the most
    ground-truth foreground (else the most predicted foreground, else the middle one).
    """
    import cv2

    gt_path, pred_path = files["gt"], files["pred"]
    gt, pred = _labels(gt_path), _labels(pred_path)  # type: ignore[arg-type]
    if pred.shape != gt.shape:
        raise ValueError(f"{str(pred_path)!r} has shape {pred.shape} but {str(gt_path)!r} has {gt.shape}")
    out: dict[str, Any] = {"image": None, "unc": None, "note": ""}
    if gt.ndim == 3:
        from ..data.volumes import coarsest_axis
        from ..io.nifti import read_nifti, read_voxels, spacing_of

        axis = coarsest_axis(spacing_of(read_nifti(gt_path)))
        others = tuple(i for i in range(3) if i != axis)
        counts = (gt > 0).sum(axis=others)
        if not counts.any():
            counts = (pred > 0).sum(axis=others)
        index = int(np.argmax(counts)) if counts.any() else gt.shape[axis] // 2

        def plane(a: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(np.take(a, index, axis=axis))

        out.update(gt=plane(gt), pred=plane(pred), note=f"slice {index} of {gt.shape[axis]}, axis {axis}")
        if files["image"] is not None:
            vol = read_voxels(read_nifti(files["image"]), files["image"])
            vol = vol[..., 0] if vol.ndim == 4 else vol
            if vol.shape != gt.shape:
                raise ValueError(f"image {str(files['image'])!r} has shape {vol.shape} but its label map "
                                 f"{str(gt_path)!r} has {gt.shape}")
            out["image"] = _to_unit(plane(vol))
        if files["unc"] is not None:
            u = read_voxels(read_nifti(files["unc"]), files["unc"]).astype(np.float32)
            u = u.max(axis=3) if u.ndim == 4 else u
            if u.shape == gt.shape:
                out["unc"] = np.clip(plane(u) * 2 * 255, 0, 255).astype(np.uint8)
        return out
    out.update(gt=gt, pred=pred)
    if files["image"] is not None:
        from ..io.files import read_image

        image = read_image(files["image"])
        if image.shape[:2] != gt.shape:
            raise ValueError(f"image {str(files['image'])!r} is {image.shape[1]}x{image.shape[0]} but its mask "
                             f"{str(gt_path)!r} is {gt.shape[1]}x{gt.shape[0]}")
        out["image"] = image
    if files["unc"] is not None:
        u = cv2.imread(str(files["unc"]), cv2.IMREAD_GRAYSCALE)
        if u is None:
            raise ValueError(f"cannot read uncertainty map {str(files['unc'])!r}")
        if u.shape == gt.shape:
            out["unc"] = u
    return out


def _scale(shape: tuple[int, int], size: int) -> tuple[int, int, bool]:
    """Thumbnail size for an ``[H,W]`` image: shrink to ``size``, or enlarge by a whole factor (crisp pixels)."""
    h, w = shape
    if max(h, w) > size:
        f = size / max(h, w)
        return max(1, round(h * f)), max(1, round(w * f)), False
    k = max(1, size // max(h, w))
    return h * k, w * k, True


def _resize_labels(labels: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    import cv2

    if labels.shape == hw:
        return labels
    return cv2.resize(labels.astype(np.int32), (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST_EXACT)


def _draw(canvas: np.ndarray, labels: np.ndarray, color: tuple[int, int, int]) -> None:
    import cv2

    for value in np.unique(labels):
        if value == 0:
            continue
        contours, _ = cv2.findContours((labels == value).astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(canvas, contours, -1, color, max(1, round(min(labels.shape) / 160)))


def _write_png(path: Path, array: np.ndarray) -> None:
    import cv2

    ok, data = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise ValueError(f"cannot encode thumbnail {path}")
    path.write_bytes(data.tobytes())


def thumbnails(
    files: dict[str, Path | None], folder: Path, key: str, size: int
) -> tuple[dict[str, str], tuple[int, int], str]:
    """Write the case's thumbnails (uint8 BGR PNGs, longest side <= ``size``); returns kind -> relative path, the
    thumbnails' ``(H, W)`` and a note (which slice of a volume is shown)."""
    import cv2

    planes = _case_planes(files)
    gt, pred = planes["gt"], planes["pred"]
    th, tw, enlarge = _scale(gt.shape, size)
    interp = cv2.INTER_NEAREST if enlarge else cv2.INTER_AREA
    if planes["image"] is not None:
        u8 = np.clip(np.rint(planes["image"] * 255), 0, 255).astype(np.uint8)
        u8 = cv2.cvtColor(u8, cv2.COLOR_GRAY2BGR) if u8.ndim == 2 else cv2.cvtColor(u8, cv2.COLOR_RGB2BGR)
        base = cv2.resize(u8, (tw, th), interpolation=interp)
    else:
        base = np.zeros((th, tw, 3), np.uint8)
    gt_s, pred_s = _resize_labels(gt, (th, tw)), _resize_labels(pred, (th, tw))
    gt_canvas = base.copy()
    _draw(gt_canvas, gt_s, GT_COLOR)
    both = gt_canvas.copy()
    _draw(both, pred_s, PRED_COLOR)
    pictures = {"gt": gt_canvas, "pred": both}
    if planes["image"] is not None:
        pictures["img"] = base
    if planes["unc"] is not None:
        u = cv2.resize(planes["unc"], (tw, th), interpolation=interp)
        pictures["unc"] = cv2.applyColorMap(u, cv2.COLORMAP_INFERNO)
    out = {}
    for kind, picture in pictures.items():
        rel = f"thumbs/{key}_{kind}.png"
        _write_png(folder / rel, picture)
        out[kind] = rel
    return out, (th, tw), planes["note"]
