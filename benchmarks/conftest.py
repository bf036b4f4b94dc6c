"""Shared set-up of the spadfast benchmarks (pytest-benchmark, provider as a parameter).

Run: ``python -m pytest benchmarks/ --benchmark-only`` (see benchmarks/README.md). This file lives in benchmarks/, so
it never sees tests/conftest.py (which sets ``TRITON_INTERPRET=1`` for the kernel tests) and ``pytest tests`` never
collects these files. The Triton interpreter is never timed: with ``TRITON_INTERPRET`` set, Triton providers skip.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
import torch
from benchutils import DEVICE, device_name, sync


@pytest.fixture(scope="session")
def device() -> torch.device:
    return DEVICE


@pytest.fixture(scope="session", name="sync")
def sync_fixture() -> Callable[..., None]:
    """The ``sync(device)`` helper, as a fixture."""
    return sync


@pytest.fixture
def base_info(device) -> dict[str, object]:
    info: dict[str, object] = {"device": device_name(device), "torch": torch.__version__}
    if device.type == "cpu":
        info["torch_threads"] = torch.get_num_threads()
        info["loadavg_1m"] = round(os.getloadavg()[0], 2)  # other processes on the machine skew CPU timings
    return info


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
