"""BcD (boundary_blur): spadfast reference, torch.compile of it, the Triton kernel (explicit noise and Philox)."""

from __future__ import annotations

import pytest
import torch
from benchutils import (
    OP_CASES,
    blob_masks,
    compiled_reference,
    nbytes,
    run_timed,
    skip_unless_available,
    triton_launcher,
)

from spadfast import reference

PROVIDERS = ["reference", "compiled", "triton", "triton-philox"]
# PerturbConfig's maxima (progress 0): the widest band and blur the trainer asks for.
SIGMA, STRENGTH, RADIUS = 2.0, 0.3, 3


@pytest.mark.parametrize("case", OP_CASES)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_bench_boundary_blur(benchmark, provider, case, base_info):
    B, H, W = case
    skip_unless_available(provider)
    mask = blob_masks(B, H, W)
    g = torch.Generator(device=mask.device).manual_seed(1)
    noise = torch.randn(mask.shape, generator=g, device=mask.device)
    base = mask.clone()  # stands in for the ScD output, as spad_perturb passes it
    info = dict(base_info, provider=provider, shape=[B, 1, H, W], dtype="float32",
                sigma=SIGMA, strength=STRENGTH, radius=RADIUS)

    if provider == "reference":
        def fn():
            return reference.boundary_blur(mask, SIGMA, STRENGTH, RADIUS, noise=noise, base=base, validate=False)
    elif provider == "compiled":
        compiled = compiled_reference("boundary_blur")

        def fn():
            return compiled(mask, SIGMA, STRENGTH, RADIUS, noise=noise, base=base, validate=False)
    elif provider == "triton":
        launcher = triton_launcher("boundary_blur")

        def fn():
            return launcher(mask, SIGMA, STRENGTH, RADIUS, noise=noise, base=base, validate=False)
    elif provider == "triton-philox":
        launcher = triton_launcher("boundary_blur")
        noise = None  # drawn in-kernel

        def fn():
            return launcher(mask, SIGMA, STRENGTH, RADIUS, base=base, seed=0, offset=0, validate=False)
    else:
        raise AssertionError(provider)

    # read mask, noise, base; write the float32 output
    run_timed(benchmark, fn, group=f"boundary_blur-{B}x{H}x{W}", info=info,
              bytes_moved=nbytes(mask, noise, base) + nbytes(mask))
