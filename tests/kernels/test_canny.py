"""Triton Canny against spadfast.ops.reference.canny (byte-exact) and cv2.Canny, under TRITON_INTERPRET=1 on CPU."""

import cv2
import numpy as np
import pytest
import torch

from spadfast import ops
from spadfast.kernels.canny import canny as triton_canny
from spadfast.ops import reference
from spadfast.ops.blobs import blob_masks


def random_mask(shape, kind: str, seed: int = 0) -> torch.Tensor:
    """Fresh bool mask of ``shape`` (leading dims, last two H, W): smooth blobs, rectangles or pixel noise."""
    g = torch.Generator().manual_seed(seed)
    *lead, H, W = shape
    n = int(np.prod(lead)) if lead else 1
    if kind == "blobs":
        m = blob_masks((n, 1, H, W), cell=max(1, min(H, W) // 8), generator=g)
    elif kind == "rects":
        m = torch.zeros(n, 1, H, W, dtype=torch.bool)
        for i in range(n):
            for _ in range(4):
                y0, y1 = sorted(torch.randint(0, H + 1, (2,), generator=g).tolist())
                x0, x1 = sorted(torch.randint(0, W + 1, (2,), generator=g).tolist())
                m[i, 0, y0:y1, x0:x1] = True
    elif kind == "noise":
        m = torch.rand(n, 1, H, W, generator=g) > 0.5
    else:
        raise ValueError(kind)
    return m.reshape(shape)


def run_both(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return ops.canny(mask, backend="triton"), reference.canny(mask)


@pytest.mark.parametrize("kind", ["blobs", "rects", "noise"])
@pytest.mark.parametrize("shape", [(3, 1, 37, 53), (1, 1, 64, 64), (2, 45, 31), (17, 23)])
def test_matches_reference(kernel_device, shape, kind):
    mask = random_mask(shape, kind, seed=sum(shape)).to(kernel_device)
    out, ref = run_both(mask)
    assert out.dtype == torch.bool and out.shape == mask.shape
    assert ref.any(), "the test mask has no edge"
    assert torch.equal(out, ref)


def test_matches_reference_across_tiles(kernel_device):
    # Small pinned tiles: every halo crosses a tile seam in both directions.
    mask = random_mask((2, 1, 37, 53), "noise", seed=5).to(kernel_device)
    assert torch.equal(triton_canny(mask, block_size=(16, 32)), reference.canny(mask))


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (2, 2), (3, 3), (2, 1, 1, 7), (2, 5, 2)])
@pytest.mark.parametrize("fill", ["random", "full", "empty"])
def test_tiny(kernel_device, shape, fill):
    if fill == "random":
        mask = random_mask(shape, "noise", seed=len(shape) + shape[-1])
    else:
        mask = torch.full(shape, fill == "full")
    mask = mask.to(kernel_device)
    out, ref = run_both(mask)
    assert torch.equal(out, ref)
    if fill != "random":
        assert not out.any()


@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.int32, torch.int64, torch.float16, torch.bfloat16,
                                   torch.float32, torch.float64])
@pytest.mark.slow
def test_input_dtypes(kernel_device, dtype):
    mask = random_mask((2, 1, 29, 40), "blobs", seed=3)
    out = ops.canny(mask.to(device=kernel_device, dtype=dtype), backend="triton")
    assert torch.equal(out, reference.canny(mask.to(kernel_device)))


def test_channels_last_slice(kernel_device):
    # Channel 1 of a channels-last [B,3,H,W] tensor: strides (3HW, 1, 3W, 3), read in place.
    full = random_mask((2, 3, 33, 47), "rects", seed=7).to(kernel_device).contiguous(memory_format=torch.channels_last)
    mask = full[:, 1:2]
    assert not mask.is_contiguous()
    out, ref = run_both(mask)
    assert torch.equal(out, ref)


def test_non_contiguous_views(kernel_device):
    base = random_mask((2, 1, 70, 90), "blobs", seed=11).to(kernel_device)
    for view in (base[:, :, 3::2, 1::3], base[0, 0].t(), base[:1].expand(3, 1, 70, 90)):
        out, ref = run_both(view)
        assert torch.equal(out, ref)


@pytest.mark.parametrize("kind", ["blobs", "rects", "noise"])
def test_matches_cv2(kernel_device, kind):
    mask = random_mask((2, 41, 57), kind, seed=13)
    out = ops.canny(mask.to(kernel_device), backend="triton").cpu()
    for i in range(mask.shape[0]):
        expected = cv2.Canny(mask[i].numpy().astype(np.uint8) * 255, 100, 200) > 0
        assert np.array_equal(out[i].numpy(), expected)


def test_validate_false(kernel_device):
    mask = random_mask((1, 31, 31), "blobs", seed=2).to(kernel_device).float()
    assert torch.equal(ops.canny(mask, validate=False, backend="triton"), reference.canny(mask))


def test_bad_inputs(kernel_device):
    mask = random_mask((1, 1, 8, 8), "blobs").to(kernel_device)
    with pytest.raises(ValueError, match="`mask` must not require grad"):
        triton_canny(mask.float().requires_grad_())
    with pytest.raises(ValueError, match="`mask` must be binary"):
        triton_canny(mask.float() * 2)
    with pytest.raises(ValueError, match="one channel"):
        triton_canny(mask.expand(1, 2, 8, 8))
    with pytest.raises(ValueError, match="H >= 1"):
        triton_canny(mask[..., :0])
    with pytest.raises(TypeError, match="torch.Tensor"):
        triton_canny(mask.cpu().numpy())
