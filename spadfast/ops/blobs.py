"""Random smooth blob masks: the inputs tests, ``spadfast verify`` and the benchmarks run ops on."""

from __future__ import annotations

import numpy as np
import torch

from .checks import check_int


def blob_masks(shape: tuple[int, ...], seed: int = 0, cell: int = 6, threshold: float = 0.5,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Random smooth blobs: bool ``shape`` (``[..., H, W]``) on the CPU, the masks tests, ``spadfast verify`` and the
    benchmarks run ops on.

    Uniform noise on a grid of about ``cell`` px cells, bilinearly up-sampled and thresholded at ``threshold``:
    about ``1 - threshold`` of the pixels are foreground, in several blobs with curved boundaries, some touching
    the border. Drawn from ``generator`` when given, else from ``seed``.

    Example:
        >>> m = blob_masks((2, 1, 24, 30), seed=0)
        >>> m.shape, m.dtype
        (torch.Size([2, 1, 24, 30]), torch.bool)
    """
    *lead, H, W = shape
    n = int(np.prod(lead)) if lead else 1
    g = generator if generator is not None else torch.Generator().manual_seed(check_int(seed, "seed", 0))
    low = torch.rand((n, 1, max(2, H // cell), max(2, W // cell)), generator=g)
    up = torch.nn.functional.interpolate(low, size=(H, W), mode="bilinear", align_corners=False)
    return (up > threshold).reshape(shape)
