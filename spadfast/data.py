"""Data, one import away: the public names of the data layer, re-exported from where they live.

- :mod:`spadfast.files`: reading images and masks, resizing, image file -> model input, atomic writes.
- :mod:`spadfast.synthetic`: ``SyntheticLesions`` and ``write_synthetic_folder``.
- :mod:`spadfast.folders`: ``SegmentationFolder`` (``images/`` + ``masks/`` paired by stem).
- :mod:`spadfast.batches`: dataset coercion and the resumable per-rank batch stream used by the trainer.
- :mod:`spadfast.augment`: the one augmentation. :mod:`spadfast.visualize`: ``overlay_contour`` and other pictures.

Conventions: an image is float32 ``[C,H,W]`` in ``[-1, 1]`` (RGB order when ``C == 3``); a mask is float32
``[1,H,W]`` holding 0 and 1.
"""

from .files import IMAGE_EXTENSIONS, read_image, read_mask, read_model_input, write_mask_png
from .folders import SegmentationFolder
from .synthetic import SyntheticLesions, write_synthetic_folder
from .visualize import overlay_contour

__all__ = [
    "IMAGE_EXTENSIONS",
    "SyntheticLesions",
    "SegmentationFolder",
    "read_image",
    "read_mask",
    "read_model_input",
    "write_mask_png",
    "overlay_contour",
    "write_synthetic_folder",
]
