"""Several trained models as one segmenter: the ensemble's members are split across the models.

``ModelEnsemble([a, b, c])`` (what ``Segmenter.load([a, b, c])`` returns) is a
:class:`~spadfast.predict.Segmenter`: ``predict`` (arrays, files, volumes, ``tta``), ``segment`` and ``config``
work as for one model, and ``predict_folder``, sliding windows and test-time augmentation take it as they take one
model: member k of an image is sampled by model ``k mod n`` (with noise keyed by ``(key, model)``), the
probabilities are the mean over all members and the uncertainty their std, so an ensemble of K members costs the
same denoiser rows however many models share it. Every model must get a member: an ensemble of fewer members than
models is refused (:func:`spadfast.predict.check_members`), as is test-time augmentation that leaves a model one
member (each model's members are spread over the views, so no model is dropped). Models must agree on what defines
their input and output (image size and channels, classes, resize, intensity normalisation, modalities); typically
the k folds of one data set (``spadfast ablate --folds``).
"""

from __future__ import annotations

import torch

from .predict import Segmenter, check_members
from .sampler import SampleResult

__all__ = ["ModelEnsemble", "SHARED_KEYS"]

SHARED_KEYS = ("image_size", "image_channels", "num_classes", "resize", "intensity_norm", "modalities",
               "intensity_window", "slice_axis", "reorient",
               "target_spacing")


class ModelEnsemble(Segmenter):
    """Members of one sampling call split across ``segmenters`` (module docstring); a :class:`Segmenter` whose
    ``model``/``sampler`` are the first model's (the others are in ``segmenters``)."""

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
        self.model = getattr(segmenters[0], "model", None)
        self.sampler = getattr(segmenters[0], "sampler", None)

    def segment(self, images: torch.Tensor, steps: int | None = None, ensemble: int | None = None,
                seed: int | None = 0, return_members: bool = False,
                noise_keys: list[int] | None = None) -> SampleResult:
        return self._segment_with([seg.segment for seg in self.segmenters], images, steps, ensemble, seed,
                                  return_members, noise_keys)

    def segment_tta(self, images: torch.Tensor, steps: int | None = None, ensemble: int | None = None,
                    seed: int | None = 0, return_members: bool = False,
                    noise_keys: list[int] | None = None) -> SampleResult:
        """:meth:`segment` with each model's members spread over the test-time views (:func:`spadfast.tta.with_tta`
        of every model), so TTA drops no model."""
        from .tta import with_tta

        check_members(self, ensemble, tta=True)
        return self._segment_with([with_tta(seg) for seg in self.segmenters], images, steps, ensemble, seed,
                                  return_members, noise_keys)

    def _segment_with(self, segments: list, images, steps, ensemble, seed, return_members,
                      noise_keys) -> SampleResult:
        n = len(segments)
        K = check_members(self, ensemble, tta=False)
        keys = list(noise_keys) if noise_keys is not None else [0] * images.shape[0]
        members = []
        for i, segment in enumerate(segments):
            count = len(range(i, K, n))
            model_keys = [(key * 1_000_033 + i) % 2**31 for key in keys]
            result = segment(images, steps=steps, ensemble=count, seed=seed, return_members=True,
                             noise_keys=model_keys)
            m = result.members
            members.append(m if m.dim() == 5 else m.unsqueeze(2))  # [B,k,M,H,W]
        return SampleResult.from_members(torch.cat(members, dim=1), self.config.threshold, return_members)
