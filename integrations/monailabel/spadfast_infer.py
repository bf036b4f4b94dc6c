"""The MONAI Label infer task: a NIfTI image in, spadfast's label map or uncertainty (NIfTI, input's grid) out."""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

import numpy as np
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType


class SpadfastPredictions:
    """One loaded model and its last prediction (the label and uncertainty tasks of one image share it)."""

    def __init__(self, model: str, steps: int | None = None, ensemble: int | None = None, seed: int = 0) -> None:
        from spadfast.infer.segmenter import Segmenter
        from spadfast.viewers.layers import model_class_names

        self.model = model
        self.segmenter = Segmenter.load(model)
        self.class_names = model_class_names(model, int(self.segmenter.config.num_classes))
        self.options = dict(steps=steps, ensemble=ensemble, seed=seed)
        self._lock = threading.Lock()
        self._last: tuple[tuple, object] | None = None

    def label_dict(self) -> dict[str, int]:
        return {name: k for k, name in enumerate(self.class_names) if k > 0}

    def predict(self, image: str):
        """``Segmenter.predict`` of the NIfTI ``image`` (kept for the next task asking for the same file)."""
        path = Path(image)
        if not path.name.lower().endswith((".nii", ".nii.gz")):
            raise ValueError(f"spadfast reads NIfTI volumes (.nii/.nii.gz) here, got {path.name!r}")
        key = (str(path.resolve()), path.stat().st_mtime_ns)
        with self._lock:
            if self._last is None or self._last[0] != key:
                self._last = (key, self.segmenter.predict(path, **self.options))
            return self._last[1]


class SpadfastInfer(InferTask):
    """``output="labels"``: the label map (uint8/uint16, as ``spadfast predict``); ``"uncertainty"``: float32 std."""

    def __init__(self, predictions: SpadfastPredictions, output: str) -> None:
        if output not in ("labels", "uncertainty"):
            raise ValueError(f"`output` must be 'labels' or 'uncertainty', got {output!r}")
        self.predictions, self.output = predictions, output
        what = "label map" if output == "labels" else "ensemble uncertainty (std) map"
        super().__init__(type=InferType.SEGMENTATION, labels=predictions.label_dict(), dimension=3,
                         description=f"spadfast {what} on the input's grid ({predictions.model})")

    def is_valid(self) -> bool:
        return True

    def __call__(self, request):
        import nibabel as nib

        image = request["image"]
        result = self.predictions.predict(image)
        reference = nib.load(str(image))
        if self.output == "labels":
            labels = result.labels
            data = labels.astype(np.uint8 if labels.max(initial=0) < 255 else np.uint16)
        else:
            data = np.asarray(result.std, dtype=np.float32).max(axis=-1)
        out = nib.Nifti1Image(data, reference.affine)
        out.set_qform(reference.affine, code=1)
        out.set_sform(reference.affine, code=1)
        path = tempfile.NamedTemporaryFile(suffix=".nii.gz", delete=False).name
        nib.save(out, path)
        return path, {"model": self.predictions.model, "output": self.output,
                      "class_names": list(self.predictions.class_names)}
