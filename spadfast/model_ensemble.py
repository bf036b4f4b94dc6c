"""Several trained models as one segmenter: the ensemble's members are split across the models.

``ModelEnsemble([a, b, c])`` has a :class:`~spadfast.predict.Segmenter`'s ``config`` and ``segment`` signature, so
``predict_folder``, sliding windows, test-time augmentation and ``Segmenter.predict`` take it as they take one
model: member k of an image is sampled by model ``k mod n`` (with noise keyed by ``(key, model)``), the
probabilities are the mean over all members and the uncertainty their std, so an ensemble of K members costs the
same denoiser rows however many models share it. Models must agree on what defines their input and output
(image size and channels, classes, resize, intensity normalisation, modalities); typically the k folds of one
data set (``spadfast ablate --folds``).
"""

from __future__ import annotations

import torch

from .sampler import SampleResult

__all__ = ["ModelEnsemble", "SHARED_KEYS"]

SHARED_KEYS = ("image_size", "image_channels", "num_classes", "resize", "intensity_norm", "modalities",
               "intensity_window", "slice_axis", "reorient",
               "target_spacing")


class ModelEnsemble:
    """Members of one sampling call split across ``segmenters`` (module docstring)."""

    def __init__(self, segmenters: list, names: list[str] | None = None) -> None:
        if len(segmenters) < 1:
            raise ValueError("a model ensemble needs at least one model")
        first = segmenters[0].config
        for i, seg in enumerate(segmenters[1:], 1):
            for key in SHARED_KEYS:
                a, b = getattr(first, key), getattr(seg.config, key)
                if a != b:
                    which = names[i] if names else f"model {i}"
                    raise ValueError(f"{which} has `{key}` {b!r} but the first model has {a!r}: an ensemble's "
                                     "models must read and write the same images")
        self.segmenters = list(segmenters)
        self.config = first

    def segment(self, images: torch.Tensor, steps: int | None = None, ensemble: int | None = None,
                seed: int | None = 0, return_members: bool = False,
                noise_keys: list[int] | None = None) -> SampleResult:
        n = len(self.segmenters)
        K = ensemble or self.config.ensemble
        keys = list(noise_keys) if noise_keys is not None else [0] * images.shape[0]
        members = []
        for i, seg in enumerate(self.segmenters[:K]):
            count = len(range(i, K, n))
            model_keys = [(key * 1_000_033 + i) % 2**31 for key in keys]
            result = seg.segment(images, steps=steps, ensemble=count, seed=seed, return_members=True,
                                 noise_keys=model_keys)
            m = result.members
            members.append(m if m.dim() == 5 else m.unsqueeze(2))  # [B,k,M,H,W]
        return SampleResult.from_members(torch.cat(members, dim=1), self.config.threshold, return_members)
