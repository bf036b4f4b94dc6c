"""Canny on binary masks: spadfast reference, torch.compile of it, the Triton kernel, OpenCV and kornia."""

from __future__ import annotations

import pytest
import torch
from benchutils import (
    DEVICE,
    OP_CASES,
    compiled_reference,
    device_name,
    mask_batch,
    nbytes,
    run_timed,
    skip_unless_available,
    triton_launcher,
)

from spadfast.ops import reference

PROVIDERS = ["reference", "compiled", "triton", "cv2", "kornia"]


@pytest.mark.parametrize("case", OP_CASES)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_bench_canny(benchmark, provider, case, base_info):
    B, H, W = case
    skip_unless_available(provider)
    mask = mask_batch(B, H, W)
    out_bytes = B * H * W  # bool edges
    info = dict(base_info, provider=provider, shape=[B, 1, H, W], dtype=str(mask.dtype).removeprefix("torch."))
    device = DEVICE

    if provider == "reference":
        def fn():
            return reference.canny(mask, validate=False)
    elif provider == "compiled":
        compiled = compiled_reference("canny")

        def fn():
            return compiled(mask, validate=False)
    elif provider == "triton":
        launcher = triton_launcher("canny")

        def fn():
            return launcher(mask, validate=False)
    elif provider == "cv2":
        cv2 = pytest.importorskip("cv2")
        images = (mask[:, 0].cpu().numpy() * 255).astype("uint8")  # conversion not timed
        device = torch.device("cpu")
        info.update(device=device_name(device), dtype="uint8", note="cv2.Canny(m, 100, 200) per image, CPU")

        def fn():
            return [cv2.Canny(images[b], 100, 200) for b in range(B)]

        run_timed(benchmark, fn, group=f"canny-{B}x{H}x{W}", info=info, bytes_moved=2 * images.nbytes, device=device)
        return
    elif provider == "kornia":
        kornia = pytest.importorskip("kornia", reason="kornia does not import here")
        info["note"] = "kornia.filters.canny defaults (Gaussian 5x5, hysteresis): a peer, not OpenCV semantics"

        def fn():
            return kornia.filters.canny(mask)

        out_bytes = 2 * nbytes(mask)  # float magnitude + float edges
    else:
        raise AssertionError(provider)

    run_timed(benchmark, fn, group=f"canny-{B}x{H}x{W}", info=info, bytes_moved=nbytes(mask) + out_bytes,
              device=device)
