"""``reorient: RAS``: volumes brought to one axis order before slicing, and their predictions brought back.

A volume's array axes follow however the scanner or converter stored it (RAS, LPS, axes permuted, oblique); the
same anatomy stored two ways gives two different stacks of slices, flipped or transposed. With ``reorient: RAS``
each case's arrays are permuted and flipped (never resampled) so that array axes 0, 1, 2 point as closely as the
affine allows to Right, Anterior, Superior (nibabel's closest canonical orientation); slicing, the slice axis and
the noise keys then refer to those axes, and every output is permuted back onto the input's own voxel grid. A volume
stored in LPS, RAS or any axis order therefore gives the same prediction in world space, voxel for voxel.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["REORIENT_CODES", "Reorientation"]

REORIENT_CODES = ("RAS",)  # the values of config.reorient besides None


class Reorientation:
    """The axis permutation and flips taking a volume with ``affine`` (4x4, voxel -> RAS mm) to ``code``'s axes.

    Spatial axes come first in every array passed (``[I,J,K]`` or ``[I,J,K,...]``); see :meth:`to_standard` for
    channel-first arrays. ``None`` as ``code`` is the identity.
    """

    def __init__(self, affine: np.ndarray, code: str | None = "RAS") -> None:
        from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

        if code is not None and code not in REORIENT_CODES:
            raise ValueError(f"`reorient` must be None or one of {REORIENT_CODES}, got {code!r}")
        self.identity = code is None
        if self.identity:
            return
        stored = io_orientation(np.asarray(affine, dtype=np.float64))
        self._forward = ornt_transform(stored, axcodes2ornt(tuple(code)))
        self._backward = ornt_transform(axcodes2ornt(tuple(code)), stored)
        self.identity = bool((self._forward == [[0, 1], [1, 1], [2, 1]]).all())

    def to_standard(self, array: np.ndarray, first_axis: int = 0) -> np.ndarray:
        """``array`` with its three spatial axes (from ``first_axis``) permuted and flipped to the standard order."""
        return self._apply(array, first_axis, forward=True)

    def to_stored(self, array: np.ndarray, first_axis: int = 0) -> np.ndarray:
        """The inverse of :meth:`to_standard`: back onto the input's voxel grid, as a view of ``array`` (outputs are
        written straight from it, without a reordered copy)."""
        return self._apply(array, first_axis, forward=False, contiguous=False)

    def shape(self, shape: Sequence[int]) -> tuple[int, int, int]:
        """A stored ``(I, J, K)`` shape (or spacing) in the standard order (no flips apply to sizes)."""
        if self.identity:
            return tuple(shape)  # type: ignore[return-value]
        out = [0] * 3
        for axis, (new_axis, _) in enumerate(self._forward):
            out[int(new_axis)] = shape[axis]
        return tuple(out)  # type: ignore[return-value]

    def spacing(self, spacing: Sequence[float]) -> tuple[float, float, float]:
        return self.shape(spacing)  # type: ignore[return-value, arg-type]

    def _apply(self, array: np.ndarray, first_axis: int, forward: bool, contiguous: bool = True) -> np.ndarray:
        if self.identity:
            return array
        from nibabel.orientations import apply_orientation

        moved = np.moveaxis(array, range(first_axis, first_axis + 3), range(3)) if first_axis else array
        out = apply_orientation(moved, self._forward if forward else self._backward)
        out = np.moveaxis(out, range(3), range(first_axis, first_axis + 3)) if first_axis else out
        return np.ascontiguousarray(out) if contiguous else out
