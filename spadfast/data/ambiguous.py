"""Slices with ambiguous boundaries: each training item is one "annotator" of a probability map.

:class:`AmbiguousSlices` holds 2-D images and a probability map per image (e.g. the MNI152 grey-matter map beside
the T1 template: ``scripts/diffusion_study.py prepare``). An annotator thresholds the map at ``tau``: the mask is
``prob > tau``. Training items draw ``tau ~ U(lo, hi)`` per item and epoch from ``(seed, epoch, index)``, as
:mod:`spadfast.data.slice_draws` draws slices, so batches stay a pure function of ``(seed, step)`` (loader workers,
DDP ranks and resumed runs draw the same annotators). A fixed ``tau`` (the consensus, 0.5) gives test items.

The trainer's batch stream passes its epoch to the datasets it knows as per-epoch draws (``VolumeSlices``,
``PatchDraws``): wrap the slices in :class:`spadfast.data.patches.PatchDraws` (training patches of native-size
slices; its ``draw`` asks this dataset for the epoch's annotator first). Passed bare, the trainer sees
``ds[i]``, the draws of :attr:`AmbiguousSlices.epoch` (0 unless :meth:`AmbiguousSlices.set_epoch` is called).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..ops.checks import check_int, check_number

__all__ = ["AmbiguousSlices", "annotator_tau", "fixed_taus"]

_TAU_SALT = 0xA770  # keeps the annotator draws apart from other users of (seed, epoch, index)


def annotator_tau(seed: int, epoch: int, index: int, lo: float, hi: float) -> float:
    """The threshold of the annotator that item ``index`` serves in ``epoch``: uniform in ``[lo, hi)``, a pure function
    of ``(seed, epoch, index)``."""
    rng = np.random.default_rng([_TAU_SALT, seed, epoch, index])
    return float(lo + (hi - lo) * rng.random())


def fixed_taus(n: int, lo: float = 0.3, hi: float = 0.7) -> list[float]:
    """``n`` annotators' thresholds spread over ``[lo, hi]`` at the midpoints of ``n`` equal bins (the quantiles of
    ``U(lo, hi)``): ``fixed_taus(8)`` is 0.325, 0.375, ..., 0.675.

    Example:
        >>> fixed_taus(4)
        [0.35, 0.45, 0.55, 0.65]
    """
    n = check_int(n, "n", 1)
    return [round(lo + (hi - lo) * (i + 0.5) / n, 6) for i in range(n)]


def _as_stack(value: object, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if not isinstance(value, np.ndarray):
        raise TypeError(f"`{name}` must be a numpy array or tensor [N,H,W], got {type(value).__name__}")
    if value.ndim != 3 or min(value.shape) == 0:
        raise ValueError(f"`{name}` must be a non-empty [N,H,W] array, got shape {value.shape}")
    if not (np.issubdtype(value.dtype, np.floating) or np.issubdtype(value.dtype, np.integer)):
        raise TypeError(f"`{name}` must hold real numbers, got dtype {value.dtype}")
    out = value.astype(np.float32)
    if not np.isfinite(out).all():
        raise ValueError(f"`{name}` holds NaN or infinite values")
    return out


class AmbiguousSlices(Dataset):
    """Images and per-pixel foreground probabilities as ``(image, mask)`` items, one annotator per item.

    Args:
        images: ``[N,H,W]`` (float32 or castable) in [-1, 1].
        probs: ``[N,H,W]`` foreground probabilities in [0, 1], same shape.
        tau: a fixed threshold in (0, 1) for every item (the consensus: 0.5); None draws one per item and epoch
            from ``tau_range``.
        tau_range: ``(lo, hi)`` with 0 < lo <= hi < 1, the annotators' thresholds (default ``(0.3, 0.7)``).
        seed: the draws' seed (the trainer's ``config.seed``).
        names: one name per slice (the study's test files are named by them); default ``slice000``, ...

    Returns (per item):
        ``(image, mask)``: image float32 ``[1,H,W]`` in [-1, 1]; mask float32 ``[1,H,W]`` in {0, 1}, ``prob > tau``.

    Raises:
        TypeError, ValueError: bad arrays, shapes, ranges or thresholds, naming the argument, in ``__init__``.

    Example:
        >>> import numpy as np
        >>> prob = np.tile(np.linspace(0, 1, 8, dtype=np.float32), (2, 8, 1))
        >>> ds = AmbiguousSlices(np.zeros((2, 8, 8), np.float32), prob, seed=3)
        >>> image, mask = ds.draw(1, epoch=4)
        >>> tuple(image.shape), tuple(mask.shape), ds.tau_of(1, 4) == ds.tau_of(1, 4)
        ((1, 8, 8), (1, 8, 8), True)
        >>> float(AmbiguousSlices(np.zeros((2, 8, 8)), prob, tau=0.5)[0][1].sum())
        32.0
    """

    def __init__(
        self,
        images: np.ndarray | torch.Tensor,
        probs: np.ndarray | torch.Tensor,
        tau: float | None = None,
        tau_range: Sequence[float] = (0.3, 0.7),
        seed: int = 0,
        names: Sequence[str] | None = None,
    ) -> None:
        self.images = _as_stack(images, "images")
        self.probs = _as_stack(probs, "probs")
        if self.images.shape != self.probs.shape:
            raise ValueError(f"`images` {self.images.shape} and `probs` {self.probs.shape} must have one shape [N,H,W]")
        if self.images.min() < -1 - 1e-6 or self.images.max() > 1 + 1e-6:
            raise ValueError(f"`images` must lie in [-1, 1], got [{self.images.min():.3g}, {self.images.max():.3g}]")
        if self.probs.min() < 0 or self.probs.max() > 1:
            raise ValueError(f"`probs` must lie in [0, 1], got [{self.probs.min():.3g}, {self.probs.max():.3g}]")
        if isinstance(tau_range, (str, bytes)) or len(tau_range) != 2:
            raise ValueError(f"`tau_range` must be (lo, hi), got {tau_range!r}")
        lo = check_number(tau_range[0], "tau_range", above=0, below=1)
        hi = check_number(tau_range[1], "tau_range", above=0, below=1)
        if lo > hi:
            raise ValueError(f"`tau_range` must be (lo, hi) with lo <= hi, got {tau_range!r}")
        self.tau_range = (lo, hi)
        self.tau = check_number(tau, "tau", above=0, below=1, optional=True)
        self.seed = check_int(seed, "seed", 0)
        n = self.images.shape[0]
        if names is None:
            names = [f"slice{i:03d}" for i in range(n)]
        if isinstance(names, str) or len(names) != n or len(set(names)) != n:
            raise ValueError(f"`names` must be {n} distinct names, one per slice")
        self.names = [str(s) for s in names]
        self.epoch = 0

    def __len__(self) -> int:
        return self.images.shape[0]

    def set_epoch(self, epoch: int) -> None:
        """Choose the annotators of this epoch (they depend on ``(seed, epoch, index)``)."""
        self.epoch = check_int(epoch, "epoch", 0)

    def _index(self, index: int) -> int:
        index = check_int(index, "index", -len(self))
        if index < 0:
            index += len(self)
        if index >= len(self):
            raise IndexError(f"index {index} is out of range for AmbiguousSlices of length {len(self)}")
        return index

    def tau_of(self, index: int, epoch: int | None = None) -> float:
        """The threshold item ``index`` uses in ``epoch`` (default: this one): the fixed ``tau``, or the draw."""
        if self.tau is not None:
            return self.tau
        epoch = self.epoch if epoch is None else check_int(epoch, "epoch", 0)
        return annotator_tau(self.seed, epoch, self._index(index), *self.tau_range)

    def annotation(self, index: int, tau: float) -> torch.Tensor:
        """Slice ``index`` annotated at ``tau``: float32 ``[1,H,W]`` in {0, 1} (``prob > tau``)."""
        prob = self.probs[self._index(index)]
        return torch.from_numpy((prob > check_number(tau, "tau", 0, 1)).astype(np.float32))[None]

    def probability(self, index: int) -> torch.Tensor:
        """Slice ``index``'s probability map: float32 ``[1,H,W]`` in [0, 1] (the target of ECE and Brier)."""
        return torch.from_numpy(self.probs[self._index(index)].copy())[None]

    def draw(self, index: int, epoch: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Item ``index`` as ``epoch`` (default: this one) draws it: ``ds[i]`` is ``ds.draw(i)``."""
        index = self._index(index)
        image = torch.from_numpy(self.images[index].copy())[None]
        return image, self.annotation(index, self.tau_of(index, epoch))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.draw(index)
