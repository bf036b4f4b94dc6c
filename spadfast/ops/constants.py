"""Names shared across spadfast with one definition each (a leaf module: imports nothing from spadfast)."""

from __future__ import annotations

# Prediction targets of the denoiser, as diffusers names them; their order is the DDIM kernel's PREDICTION code.
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")

# ``backend=`` of every op: "auto" (Triton on CUDA tensors, the reference otherwise), or one of them forced.
BACKENDS = ("auto", "reference", "triton")

# Image file -> [-1, 1] intensity normalisations (spadfast.io.files.intensity_range).
INTENSITY_NORMS = ("dtype", "minmax", "percentile")

# Native resolution (``resize: false``): images smaller than this on a side are refused (no model level could see
# them).
MIN_SIDE = 8

__all__ = ["PREDICTION_TYPES", "BACKENDS", "INTENSITY_NORMS", "MIN_SIDE"]

# PerturbConfig defaults that fix kernel launch variants (band radius, blur width, anchor cells): the kernels'
# ahead-of-time check enumerates what training launches with them, without importing the config.
PERTURB_KERNEL_DEFAULTS = {"band_radius_max": 3, "blur_sigma_max": 2.0, "anchor_size": 4, "keep_ratio": 0.25}
