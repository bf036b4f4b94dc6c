"""What :meth:`spadfast.infer.segmenter.Segmenter.predict` returns for one image or volume."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["Prediction"]


@dataclass(frozen=True)
class Prediction(Mapping):
    """One input's segmentation at the input's size (2-D) or on its voxel grid (volumes).

    Attributes:
        labels: int ``[H,W]`` or ``[I,J,K]``, 0 background, 1..M the classes: what ``predict`` writes for the file.
        probs: float32 class probabilities (ensemble mean): ``[H,W]`` (binary), ``[M,H,W]`` (2-D, M classes) or
            ``[I,J,K,M]`` (volumes).
        std: float32 ensemble standard deviation, shaped as ``probs``.

    ``mask`` is ``labels`` (the label map, binary models: 0/1) and ``foreground`` is ``labels > 0``. It is also a
    read-only mapping with the keys ``"labels"``, ``"mask"``, ``"foreground"``, ``"probs"`` and ``"std"``.
    """

    labels: np.ndarray
    probs: np.ndarray
    std: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        return self.labels

    @property
    def foreground(self) -> np.ndarray:
        return self.labels > 0

    _KEYS = ("labels", "mask", "foreground", "probs", "std")

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._KEYS:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._KEYS)

    def __len__(self) -> int:
        return len(self._KEYS)
