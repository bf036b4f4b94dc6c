"""Shared test set-up.

Triton kernels run under the interpreter on machines without a GPU; TRITON_INTERPRET must be set before anything
imports triton, hence here, at collection start. On a GPU machine the same kernel tests run compiled on CUDA.
"""

import os
import shutil

if shutil.which("nvidia-smi") is None:
    os.environ.setdefault("TRITON_INTERPRET", "1")

# The tests' tensors are tiny: intra-op threads (torch, OpenMP, BLAS) cost more in start-up and contention on a
# shared CPU than they save. Set before torch and numpy load; an explicit OMP_NUM_THREADS is kept.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


def kernel_devices() -> list[str]:
    """Devices on which the Triton kernel tests run: CUDA when compiled kernels can run, else CPU (interpreter)."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        return ["cpu"]
    return ["cuda"] if torch.cuda.is_available() else []


@pytest.fixture(params=kernel_devices() or [pytest.param("none", marks=pytest.mark.skip(reason="no Triton device"))])
def kernel_device(request) -> str:
    return request.param


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    yield
