"""spadfast: fast Structure- and Progress-Aware Diffusion (SPAD) for medical image segmentation."""

__version__ = "0.1.0"

from . import ops, reference, schedule  # noqa: E402

__all__ = ["__version__", "ops", "reference", "schedule"]
