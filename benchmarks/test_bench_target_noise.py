"""ScD (target_noise): spadfast reference, torch.compile of it, the Triton kernel (explicit noise and Philox)."""

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

from spadfast.ops import reference

PROVIDERS = ["reference", "compiled", "triton", "triton-philox"]
# PerturbConfig's defaults at progress 0.
STRENGTH, ANCHOR_SIZE, KEEP_RATIO = 0.5, 4, 0.25


@pytest.mark.parametrize("case", OP_CASES)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_bench_target_noise(benchmark, provider, case, base_info):
    B, H, W = case
    skip_unless_available(provider)
    mask = mask_batch(B, H, W)
    g = torch.Generator(device=mask.device).manual_seed(1)
    noise = torch.randn(mask.shape, generator=g, device=mask.device)
    anchors = reference.anchor_mask(tuple(mask.shape), ANCHOR_SIZE, KEEP_RATIO, mask.device, g)
    info = dict(base_info, provider=provider, shape=[B, 1, H, W], dtype="float32",
                strength=STRENGTH, anchor_size=ANCHOR_SIZE, keep_ratio=KEEP_RATIO)
    args = (mask, STRENGTH, ANCHOR_SIZE, KEEP_RATIO)

    fn = op_provider("target_noise", provider, args, dict(noise=noise, anchors=anchors), dict(seed=0, offset=0))
    if fn is None:
        raise AssertionError(provider)
    if provider == "triton-philox":
        noise = anchors = None  # both drawn in-kernel: not read from memory

    # read mask, noise (float32), anchors (bool); write the float32 output
    run_timed(benchmark, fn, group=f"target_noise-{B}x{H}x{W}", info=info,
              bytes_moved=nbytes(mask, noise, anchors) + nbytes(mask))
