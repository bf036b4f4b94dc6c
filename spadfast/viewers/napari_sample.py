"""napari sample data: the demo's synthetic lesions, and a tiny demo model trained on first use.

``spadfast demo lesions``: a stack of synthetic lesion images (uint8 ``[N,S,S]``) with their ground-truth labels.
``spadfast demo model``: the same images, their layer's ``metadata["spadfast_model"]`` naming a small model trained
on synthetic lesions the first time it is asked for (``cpu-small`` for :data:`DEMO_STEPS` steps, about a minute on a
laptop CPU) and kept in :func:`cache_dir` ``/demo-model``; the Segment widget picks that model when the layer is
chosen.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["DEMO_STEPS", "DEMO_SEED", "cache_dir", "demo_lesions", "demo_model", "lesions_sample", "model_sample"]

DEMO_STEPS = 400  # x0 prediction reaches Dice ~0.95 on these lesions after 400 steps (spadfast.demo)
DEMO_SEED = 987_654  # the demo's held-out seed: images the model never trained on


def cache_dir() -> Path:
    """Where sample models live: ``$SPADFAST_CACHE``, else ``$XDG_CACHE_HOME/spadfast``, else ``~/.cache/spadfast``."""
    if os.environ.get("SPADFAST_CACHE"):
        return Path(os.environ["SPADFAST_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "spadfast"


def demo_lesions(n: int = 8, image_size: int = 64, seed: int = DEMO_SEED) -> tuple[np.ndarray, np.ndarray]:
    """``n`` synthetic lesion images as the demo writes them (uint8 ``[n,S,S]``) and their labels (int32, 0/1)."""
    from ..data.synthetic import SyntheticLesions

    data = SyntheticLesions(n, image_size=image_size, seed=seed)
    pairs = [data.numpy(i) for i in range(n)]
    images = np.stack([np.clip(np.rint((im[0] + 1.0) * 127.5), 0, 255).astype(np.uint8) for im, _ in pairs])
    labels = np.stack([(m[0] != 0).astype(np.int32) for _, m in pairs])
    return images, labels


def demo_model(folder: str | Path | None = None, config=None) -> Path:
    """The run folder of the demo model, trained into ``folder`` (default ``cache_dir() / "demo-model"``) when it
    holds no checkpoint yet; ``config`` overrides the training config (default: ``cpu-small``, :data:`DEMO_STEPS`
    steps). Returns the folder."""
    from ..config import SPADConfig
    from ..models.checkpoint import resolve_path
    from ..train.trainer import SPADTrainer

    folder = Path(folder) if folder is not None else cache_dir() / "demo-model"
    if resolve_path(folder).is_file():
        return folder
    cfg = config or SPADConfig.preset("cpu-small", train_steps=DEMO_STEPS, synthetic_train=2048, device="cpu",
                                      progress_bar=False)
    staging = folder.with_name(folder.name + ".partial")  # a killed first use leaves no half model behind
    trainer = SPADTrainer(cfg, out_dir=staging)
    trainer.fit()
    trainer.save(staging)
    folder.parent.mkdir(parents=True, exist_ok=True)
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    staging.rename(folder)
    return folder


def lesions_sample() -> list[tuple]:
    """npe2 sample-data hook: the lesion stack and its ground truth as napari ``LayerData`` tuples."""
    images, labels = demo_lesions()
    return [(images, {"name": "spadfast lesions"}, "image"),
            (labels, {"name": "spadfast lesions ground truth", "opacity": 0.4}, "labels")]


def model_sample() -> list[tuple]:
    """npe2 sample-data hook: the lesion stack, naming the demo model (trained now on first use) in its metadata."""
    images, _ = demo_lesions()
    return [(images, {"name": "spadfast lesions", "metadata": {"spadfast_model": str(demo_model())}}, "image")]
