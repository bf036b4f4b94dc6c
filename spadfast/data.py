"""Deprecated: import the data layer's names from their home modules.

- :mod:`spadfast.files`: ``IMAGE_EXTENSIONS``, ``read_image``, ``read_mask``, ``read_model_input``, ``write_mask_png``.
- :mod:`spadfast.folders`: ``SegmentationFolder``. :mod:`spadfast.synthetic`: ``SyntheticLesions``,
  ``write_synthetic_folder``. :mod:`spadfast.visualize`: ``overlay_contour``.

Importing this module warns once (``DeprecationWarning``); its names still resolve, so older scripts keep running.
"""

import warnings

from .files import IMAGE_EXTENSIONS, read_image, read_mask, read_model_input, write_mask_png  # noqa: F401
from .folders import SegmentationFolder  # noqa: F401
from .synthetic import SyntheticLesions, write_synthetic_folder  # noqa: F401
from .visualize import overlay_contour  # noqa: F401

warnings.warn(
    "spadfast.data is deprecated: import from spadfast.files, spadfast.folders, spadfast.synthetic or "
    "spadfast.visualize",
    DeprecationWarning,
    stacklevel=2,
)
