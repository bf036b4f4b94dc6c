"""Several trained models as one segmenter: the ensemble's members are split across the models.

``ModelEnsemble([a, b, c])`` (what ``Segmenter.load([a, b, c])`` returns) works as a
:class:`~spadfast.infer.segmenter.Segmenter`: ``predict`` (arrays, files, volumes, ``tta``), ``segment`` and ``config``
work as for one model, and ``predict_folder``, sliding windows and test-time augmentation take it as they take one
model: member k of an image is sampled by model ``k mod n`` (with noise keyed by ``(key, model)``), the
probabilities are the mean over all members and the uncertainty their std, so an ensemble of K members costs the
same denoiser rows however many models share it. Every model must get a member: an ensemble of fewer members than
models is refused (:func:`check_members`), as is test-time augmentation that leaves a model one
member (each model's members are spread over the views, so no model is dropped). Models must agree on what defines
their input and output (image size and channels, classes, resize, intensity normalisation, modalities); typically
the k folds of one data set (``spadfast ablate --folds``).
"""

from __future__ import annotations

import torch

from ..diffusion.sampler import SampleResult
from ..ops.checks import check_int

__all__ = ["ModelEnsemble", "SHARED_KEYS", "check_members"]

SHARED_KEYS = ("image_size", "image_channels", "num_classes", "resize", "intensity_norm", "modalities",
               "intensity_window", "slice_axis", "reorient",
               "target_spacing")


class ModelEnsemble:
    """Members of one sampling call split across ``segmenters`` (module docstring); ``predict``, ``segment`` and
    ``config`` as a :class:`~spadfast.infer.segmenter.Segmenter`'s, ``model``/``sampler`` the first model's (the others are
    in ``segmenters``)."""

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

    @property
    def step_fusion(self) -> str:
        """The models' step fusion (set on every model; "uncertainty" weighs each model's own members)."""
        return self.segmenters[0].step_fusion

    @step_fusion.setter
    def step_fusion(self, value: str) -> None:
        for seg in self.segmenters:
            seg.step_fusion = value

    def predict(self, x, steps: int | None = None, ensemble: int | None = None, seed: int = 0,
                name: str | None = None, tta: bool = False):
        """:meth:`spadfast.infer.segmenter.Segmenter.predict` with this ensemble's members (same arguments and result)."""
        # Segmenter.predict reads only config and segment; taken from the member's class, since this module sits
        # below spadfast.infer.segmenter (which builds ensembles in Segmenter.load)
        return type(self.segmenters[0]).predict(self, x, steps, ensemble, seed, name, tta)

    def segment(self, images: torch.Tensor, steps: int | None = None, ensemble: int | None = None,
                seed: int | None = 0, return_members: bool = False,
                noise_keys: list[int] | None = None) -> SampleResult:
        return self._segment_with([seg.segment for seg in self.segmenters], images, steps, ensemble, seed,
                                  return_members, noise_keys)

    def segment_tta(self, images: torch.Tensor, steps: int | None = None, ensemble: int | None = None,
                    seed: int | None = 0, return_members: bool = False,
                    noise_keys: list[int] | None = None) -> SampleResult:
        """:meth:`segment` with each model's members spread over the test-time views (:func:`spadfast.infer.tta.with_tta`
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


def check_members(segmenter, ensemble: int | None, tta: bool = False, name: str = "ensemble") -> int:
    """The member count of a sampling call (``ensemble``, default the config's), refused where it would drop work
    silently: fewer members than the models of a :class:`spadfast.infer.ensemble.ModelEnsemble` (member k runs on
    model k mod n, so the last models would never run), or ``tta`` with fewer than 2 members per model (member 0 of
    a model sees the image as is: one member is plain sampling). ``name``: the argument the message names."""
    K = segmenter.config.ensemble if ensemble is None else check_int(ensemble, name, 1)
    what = f"`{name}` {K}" if ensemble is not None else f"the config's `ensemble` {K}"
    models = len(getattr(segmenter, "segmenters", ())) or 1
    if K < models:
        raise ValueError(f"{what} is below the {models} models of the ensemble: models {K + 1}..{models} would never "
                         f"run; pass {name} >= {models} (a multiple of {models} weighs the models equally)")
    if tta and K < 2 * models:
        per = f" per model ({models} models)" if models > 1 else ""
        raise ValueError(f"test-time augmentation with {what} gives a member the image as is and no other view"
                         f"{per}: pass {name} >= {2 * models} (8 members{per} see every view of a square image)")
    return K
