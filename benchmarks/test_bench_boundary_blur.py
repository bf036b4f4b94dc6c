"""BcD (boundary_blur): spadfast reference, torch.compile of it, the Triton kernel (explicit noise and Philox)."""

from __future__ import annotations

import pytest
import torch
from benchutils import (
    OP_CASES,
    mask_batch,
    nbytes,
    op_provider,
    run_timed,
    skip_unless_available,
)

PROVIDERS = ["reference", "compiled", "triton", "triton-philox"]
# PerturbConfig's maxima (progress 0): the widest band and blur the trainer asks for.
SIGMA, STRENGTH, RADIUS = 2.0, 0.3, 3


@pytest.mark.parametrize("case", OP_CASES)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_bench_boundary_blur(benchmark, provider, case, base_info):
    B, H, W = case
    skip_unless_available(provider)
    mask = mask_batch(B, H, W)
    g = torch.Generator(device=mask.device).manual_seed(1)
    noise = torch.randn(mask.shape, generator=g, device=mask.device)
    base = mask.clone()  # stands in for the ScD output, as spad_perturb passes it
    info = dict(base_info, provider=provider, shape=[B, 1, H, W], dtype="float32",
                sigma=SIGMA, strength=STRENGTH, radius=RADIUS)

    args = (mask, SIGMA, STRENGTH, RADIUS)
    fn = op_provider("boundary_blur", provider, args, dict(noise=noise, base=base), dict(base=base, seed=0, offset=0))
    if fn is None:
        raise AssertionError(provider)
    if provider == "triton-philox":
        noise = None  # drawn in-kernel: not read from memory

    # read mask, noise, base; write the float32 output
    run_timed(benchmark, fn, group=f"boundary_blur-{B}x{H}x{W}", info=info,
              bytes_moved=nbytes(mask, noise, base) + nbytes(mask))
