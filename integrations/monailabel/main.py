"""MONAI Label app serving spadfast models to 3D Slicer and OHIF.

    monailabel start_server --app integrations/monailabel --studies DIR --conf model RUN_OR_EXPORT

Two infer models, both :meth:`spadfast.Segmenter.predict` of the NIfTI image on the input's grid:
``spadfast`` returns the label map (what ``spadfast predict`` writes for the same file) and ``spadfast_uncertainty``
the ensemble std (float32, the largest class std per voxel). The model comes from ``--conf model PATH`` or the
``SPADFAST_MODEL`` environment variable (a run folder, a ``.safetensors`` export or an ONNX export folder); optional
``--conf steps N``, ``--conf members K``, ``--conf seed S``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from monailabel.interfaces.app import MONAILabelApp  # noqa: E402
from spadfast_infer import SpadfastInfer, SpadfastPredictions  # noqa: E402


class SpadfastApp(MONAILabelApp):
    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        model = conf.get("model") or os.environ.get("SPADFAST_MODEL")
        if not model:
            raise ValueError("spadfast MONAI Label app: pass the model with --conf model PATH (a run folder, a "
                             ".safetensors export or an ONNX export folder) or set SPADFAST_MODEL")
        if not Path(model).exists():
            raise ValueError(f"spadfast MONAI Label app: model {model!r} does not exist")
        steps, members = conf.get("steps"), conf.get("members")
        self.predictions = SpadfastPredictions(model, steps=int(steps) if steps else None,
                                               ensemble=int(members) if members else None,
                                               seed=int(conf.get("seed", 0)))
        super().__init__(app_dir=app_dir, studies=studies, conf=conf, name="spadfast",
                         description="spadfast conditional-diffusion segmentation with per-voxel uncertainty",
                         version="1", labels=self.predictions.label_dict())

    def init_infers(self):
        return {"spadfast": SpadfastInfer(self.predictions, "labels"),
                "spadfast_uncertainty": SpadfastInfer(self.predictions, "uncertainty")}

    def init_trainers(self):
        return {}

    def init_strategies(self):
        from monailabel.tasks.activelearning.first import First

        return {"first": First()}
