import importlib

import numpy as np
import torch

import spadfast.runtime.profiling as profiling
from spadfast.evaluation.visualize import perturbation_grid


def test_perturbation_grid_layout():
    mask = torch.zeros(20, 24)
    mask[5:15, 6:18] = 1
    grid = perturbation_grid(mask, progresses=(0.0, 1.0), scale=1)
    assert grid.shape == (40, 120) and grid.dtype == np.uint8
    clean = (mask.numpy() * 255).astype(np.uint8)
    last = grid[20:, :]
    for col in (0, 2, 3, 4):  # at p = 1 every perturbation is off: mask, ScD, BcD and both equal the mask
        assert np.array_equal(last[:, col * 24 : (col + 1) * 24], clean)
    assert not np.array_equal(grid[:20, 96:], clean)  # at p = 0 training sees a perturbed mask


def test_nvtx_ranges_are_off_unless_asked(monkeypatch):
    monkeypatch.delenv("SPADFAST_NVTX", raising=False)
    importlib.reload(profiling)
    assert not profiling.enabled()
    with profiling.nvtx_range("x"):
        pass
    monkeypatch.setenv("SPADFAST_NVTX", "1")
    importlib.reload(profiling)
    try:
        import nvtx  # noqa: F401

        has_nvtx = True
    except ImportError:
        has_nvtx = False
    assert profiling.enabled() == has_nvtx  # optional package: absent means a silent no-op
    with profiling.nvtx_range("spad_perturb"):
        pass
    monkeypatch.delenv("SPADFAST_NVTX")
    importlib.reload(profiling)
