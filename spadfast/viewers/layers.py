"""A viewer layer's array segmented as :meth:`spadfast.Segmenter.predict` segments it: labels plus uncertainty.

No napari or Qt here: the napari widget runs :func:`iter_segment_layer` in a worker thread (one ``yield`` per slice,
so a cancel stops between slices) and tests call :func:`segment_layer` on arrays.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["MODES", "LayerSegmentation", "check_layer", "iter_segment_layer", "segment_layer", "load_segmenter",
           "model_class_names"]

# "image": a 2-D layer; "slice": the stack's slice at ``current`` (other slices stay 0); "stack": every slice through
# the 2-D path; "volume": the stack as one volume through the model's own volume path (volume models only).
MODES = ("image", "slice", "stack", "volume")


@dataclass(frozen=True)
class LayerSegmentation:
    """What the viewer shows for one layer, on the layer's own grid (``rgb`` channels dropped).

    Attributes:
        labels: int32 ``[H,W]`` or ``[Z,H,W]``: 0 background, 1..M the classes (``Prediction.labels``).
        uncertainty: float32, shaped as ``labels``: the ensemble std (``Prediction.std``; several classes: the
            largest class std, as ``predict --uncertainty`` writes it).
        class_names: ``num_classes`` names, background first.
    """

    labels: np.ndarray
    uncertainty: np.ndarray
    class_names: tuple[str, ...]


def model_class_names(path: str | Path, num_classes: int) -> tuple[str, ...]:
    """The class names a model records (``spadfast export --labels``; ONNX exports: ``spadfast.json``), background
    first, or ``("background", "class 1", ...)`` when it records none."""
    names = None
    path = Path(path)
    try:
        if path.is_dir() and (path / "spadfast.json").is_file():
            names = json.loads((path / "spadfast.json").read_text()).get("class_names")
        else:
            from safetensors import safe_open

            from ..models.checkpoint import resolve_path

            with safe_open(str(resolve_path(path)), framework="pt") as f:
                meta = f.metadata() or {}
            names = json.loads(meta.get("meta", "{}")).get("class_names")
    except (OSError, ValueError, json.JSONDecodeError):
        names = None
    if isinstance(names, list) and len(names) == num_classes:
        return tuple(str(n) for n in names)
    return _default_names(num_classes)


def _default_names(num_classes: int) -> tuple[str, ...]:
    return ("background",) + tuple(f"class {k}" for k in range(1, num_classes))


_CACHE: dict[tuple[str, float], object] = {}


def load_segmenter(path: str | Path):
    """:meth:`spadfast.Segmenter.load` of a run folder, export or ONNX export folder, kept while the file is
    unchanged (a widget segments many layers with one model). A missing path is a ValueError naming it."""
    from ..infer.segmenter import Segmenter
    from ..models.checkpoint import resolve_path

    if path is None or str(path).strip() in ("", "."):
        raise ValueError("choose a model: a run folder, a .safetensors export or an ONNX export folder")
    path = Path(path).expanduser()
    if not path.exists():
        raise ValueError(f"model {str(path)!r} does not exist")
    stamp_file = path / "spadfast.json" if (path / "spadfast.json").is_file() else resolve_path(path)
    key = (str(path.resolve()), stamp_file.stat().st_mtime if stamp_file.is_file() else 0.0)
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = Segmenter.load(path, device=None)
    return _CACHE[key]


def check_layer(shape: Sequence[int], rgb: bool, config, mode: str, current: int = 0) -> None:
    """Refuse, before any work, a layer the model cannot read, in one line naming the problem.

    ``shape``: the layer's data shape (with the trailing RGB(A) axis when ``rgb``). Raises ValueError: an RGB layer
    for a 1-channel model (or a gray one for a 3-channel model), more dimensions than a 2-D image or a stack, a mode
    that does not fit the layer, a ``current`` slice out of range; ``volume`` with a model trained on 2-D images.
    """
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {', '.join(MODES)}, got {mode!r}")
    channels = int(config.image_channels)
    if rgb and channels == 1:
        raise ValueError("the layer is RGB but the model reads 1 channel (gray): convert the layer to gray first")
    if not rgb and channels == 3:
        raise ValueError("the layer is gray but the model reads 3 channels (RGB): choose an RGB layer")
    spatial = len(shape) - (1 if rgb else 0)
    if spatial not in (2, 3):
        raise ValueError(f"the layer has {spatial} spatial dimensions (shape {tuple(shape)}); the model reads 2-D "
                         "images and 3-D stacks: take a 2-D or 3-D part of it first")
    if spatial == 2 and mode != "image":
        raise ValueError(f"mode {mode!r} needs a 3-D stack; this layer is one 2-D image (shape {tuple(shape)})")
    if spatial == 3 and mode == "image":
        raise ValueError(f"the layer is a 3-D stack (shape {tuple(shape)}): choose the current slice, the whole "
                         "stack slice by slice, or the volume path")
    if mode == "slice" and not 0 <= current < shape[0]:
        raise ValueError(f"`current` slice {current} is outside the stack's {shape[0]} slices")
    if mode == "volume":
        if rgb:
            raise ValueError("the volume path reads gray volumes; this layer is RGB")
        from ..infer.volumes import check_volume_model

        check_volume_model(config, "the chosen model")


def _uncertainty(std: np.ndarray) -> np.ndarray:
    """A 2-D prediction's std: binary models ``[H,W]`` as is; ``[M,H,W]``: the largest class std (as
    ``predict --uncertainty`` writes it)."""
    std = np.asarray(std, dtype=np.float32)
    return std if std.ndim == 2 else std.max(axis=0)


def iter_segment_layer(segmenter, data, rgb: bool = False, mode: str = "image", current: int = 0,
                       scale: Sequence[float] | None = None, steps: int | None = None,
                       ensemble: int | None = None, tta: bool = False, seed: int = 0,
                       class_names: Sequence[str] | None = None,
                       ) -> Generator[tuple[int, int], None, LayerSegmentation]:
    """Segment a layer's array, yielding ``(done, total)`` after each slice; returns the :class:`LayerSegmentation`.

    ``data``: ``[H,W]``, ``[H,W,3|4]`` (``rgb``), ``[Z,H,W]`` or ``[Z,H,W,3|4]`` in any dtype
    :meth:`spadfast.Segmenter.predict` reads. Each 2-D image or slice is ``Segmenter.predict(image)`` with the
    default noise key (``"array"``), so a slice's labels equal predicting that slice alone. ``mode="volume"``
    writes the stack as a NIfTI volume of spacing ``scale`` (``[Z,H,W]`` axes as ``[I,J,K]``, default 1 mm) and
    predicts it as ``spadfast predict`` predicts NIfTI. ``steps``/``ensemble`` None: the model's own.
    """
    data = np.asarray(data)
    config = segmenter.config
    check_layer(data.shape, rgb, config, mode, current)
    names = tuple(class_names) if class_names else _default_names(int(config.num_classes))
    kwargs = dict(steps=steps, ensemble=ensemble, seed=seed, tta=tta)
    if mode == "image":
        yield 0, 1
        p = segmenter.predict(data, **kwargs)
        yield 1, 1
        return LayerSegmentation(p.labels.astype(np.int32), _uncertainty(p.std), names)
    if mode == "volume":
        import nibabel as nib

        spacing = [float(s) for s in (scale if scale is not None else (1.0, 1.0, 1.0))][-3:]
        image = nib.Nifti1Image(data.astype(np.float32), np.diag([*spacing, 1.0]))
        yield 0, 1
        p = segmenter.predict(image, **kwargs)
        yield 1, 1
        std = np.asarray(p.std, dtype=np.float32)  # [I,J,K,M]: classes last
        return LayerSegmentation(p.labels.astype(np.int32), std.max(axis=-1) if std.ndim == 4 else std, names)
    spatial = data.shape[:3]
    labels = np.zeros(spatial, np.int32)
    uncertainty = np.zeros(spatial, np.float32)
    indices = [current] if mode == "slice" else list(range(spatial[0]))
    yield 0, len(indices)
    for done, z in enumerate(indices, start=1):
        p = segmenter.predict(data[z], **kwargs)
        labels[z] = p.labels
        uncertainty[z] = _uncertainty(p.std)
        yield done, len(indices)
    return LayerSegmentation(labels, uncertainty, names)


def segment_layer(segmenter, data, progress: Callable[[int, int], None] | None = None,
                  **kwargs) -> LayerSegmentation:
    """:func:`iter_segment_layer` run to the end (``progress(done, total)`` after each slice)."""
    steps = iter_segment_layer(segmenter, data, **kwargs)
    while True:
        try:
            done, total = next(steps)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(done, total)
