"""Which slice of a volume data set an item serves: seeded training draws and a fixed validation set.

Slices are numbered in file order (case by case, then along the slicing axis); ``foreground`` and ``background``
are the numbers of the slices that do and do not hold a label. Both choices are pure functions of their seeds, so
loader workers, ranks and resumed runs make the same choices without sharing state.
"""

from __future__ import annotations

import numpy as np

_DRAW_SALT = 0x501CE  # keeps the training draws apart from other users of (seed, epoch, index)
_VALIDATION_SALT = 0x7A11D


def draw_slice(
    seed: int, epoch: int, index: int, foreground_fraction: float, foreground: np.ndarray, background: np.ndarray
) -> int:
    """The slice number that item ``index`` serves in epoch ``epoch``: with probability ``foreground_fraction`` a
    uniformly chosen foreground slice, otherwise a uniformly chosen background slice (either pool stands in for
    the other when empty). ``foreground``, ``background``: int arrays of slice numbers, not both empty."""
    rng = np.random.default_rng([_DRAW_SALT, seed, epoch, index])
    want_foreground = rng.random() < foreground_fraction
    use_foreground = (want_foreground and foreground.size > 0) or background.size == 0
    pool = foreground if use_foreground else background
    return int(pool[rng.integers(pool.size)])


def validation_slices(foreground: np.ndarray, background: np.ndarray, n: int, seed: int) -> list[int]:
    """A fixed, seeded, foreground-stratified set of ``min(n, total)`` slice numbers, sorted.

    Half of the set (rounded up) comes from ``foreground`` and the rest from ``background``, each drawn without
    replacement; a pool too small for its half is filled from the other. The same arguments give the same set.
    """
    n = min(int(n), foreground.size + background.size)
    n_foreground = min(foreground.size, max((n + 1) // 2, n - background.size))
    rng = np.random.default_rng([_VALIDATION_SALT, seed])
    chosen = np.concatenate([
        rng.choice(foreground, n_foreground, replace=False),
        rng.choice(background, n - n_foreground, replace=False),
    ])
    return sorted(int(j) for j in chosen)
