"""``Metric``: one registry entry of :data:`spadfast.evaluation.metrics.METRICS`: the function and what a report needs to show it.

A leaf module (imports nothing from spadfast), so every consumer (evaluation, report, plots, ablation table) reads
label, direction and unit from the entry instead of re-declaring them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

__all__ = ["Metric"]


@dataclass(frozen=True)
class Metric:
    """A per-mask metric ``fn(pred, target, spacing=None) -> float | float64 [B]`` and its presentation.

    ``label``: the column and axis name; ``higher_is_better``: the direction (Dice: True, HD95: False);
    ``distance``: the value is a length in the evaluation's unit (pixels, or millimetres from a NIfTI spacing),
    else unitless; ``value_range``: the values' bounds when fixed (Dice: (0, 1); plots use them as axis limits).
    Calling the entry calls ``fn``.
    """

    fn: Callable[..., float | np.ndarray]
    label: str
    higher_is_better: bool
    distance: bool = False
    value_range: tuple[float, float] | None = None

    def __call__(self, pred, target, spacing=None):
        return self.fn(pred, target, spacing=spacing)

    @property
    def arrow(self) -> str:
        """``↑`` when higher is better, else ``↓``."""
        return "↑" if self.higher_is_better else "↓"

    def axis_label(self, unit: str = "px") -> str:
        """``label`` with the length unit for a distance (``"HD95 (mm)"``), else ``label``."""
        return f"{self.label} ({unit})" if self.distance else self.label

    def best(self, values: Iterable[float]) -> float:
        """The best of ``values`` in this metric's direction."""
        return (max if self.higher_is_better else min)(values)
