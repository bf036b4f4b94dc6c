"""Triton boundary_blur against spadfast.ops.reference.boundary_blur, under TRITON_INTERPRET=1 on CPU.

Explicit noise: equal to the reference to fp32 rounding (same taps, different summation order). In-kernel Philox:
determinism, statistics of the noise in the band, bit-exact passthrough of ``base`` outside the band.
"""

import pytest
import torch

from spadfast import ops
from spadfast.kernels.boundary_blur import MAX_RADIUS
from spadfast.kernels.boundary_blur import boundary_blur as triton_boundary_blur
from spadfast.ops import reference
from spadfast.ops.op_table import TOLERANCES

from .normal_stats import assert_standard_normal
from .test_canny import random_mask


def assert_matches(out: torch.Tensor, ref: torch.Tensor) -> None:
    assert out.dtype == ref.dtype and out.shape == ref.shape
    rtol, atol = TOLERANCES[out.dtype]
    torch.testing.assert_close(out, ref, rtol=rtol, atol=atol)


def band_of(mask: torch.Tensor, radius: int) -> torch.Tensor:
    return reference.boundary_band(mask, radius)


@pytest.mark.parametrize(
    "dtype, sigma, radius",
    [
        (torch.float32, 0.0, 0),
        (torch.float32, 1.3, 0),
        (torch.float32, 0.0, 1),
        (torch.float32, 1.3, 1),
        (torch.float32, 0.0, 3),
        (torch.float32, 0.7, 3),
        (torch.float16, 0.0, 1),
        (torch.float16, 1.3, 1),
        (torch.bfloat16, 0.0, 1),
        (torch.bfloat16, 1.3, 3),
    ],
)
@pytest.mark.slow
def test_explicit_noise_matches_reference(kernel_device, dtype, sigma, radius):
    shape = (2, 1, 37, 53)
    mask = random_mask(shape, "blobs", seed=radius + int(10 * sigma)).to(device=kernel_device, dtype=dtype)
    noise = torch.randn(shape).to(device=kernel_device, dtype=dtype)
    base = torch.randn(shape).to(device=kernel_device, dtype=dtype)
    args = (mask, sigma, 0.3, radius, noise, base)
    assert_matches(ops.boundary_blur(*args, backend="triton"), reference.boundary_blur(*args))


@pytest.mark.slow
@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.uint8, torch.float16])
def test_output_dtype_and_default_base(kernel_device, mask_dtype):
    mask = random_mask((2, 31, 29), "rects", seed=4).to(device=kernel_device, dtype=mask_dtype)
    noise = torch.randn(mask.shape, device=kernel_device)
    out = ops.boundary_blur(mask, 1.0, 0.5, 1, noise, backend="triton")
    ref = reference.boundary_blur(mask, 1.0, 0.5, 1, noise)
    assert out.dtype == (mask_dtype if mask_dtype.is_floating_point else torch.float32)
    assert_matches(out, ref)
    # base decides the output dtype
    base = torch.rand(mask.shape, device=kernel_device, dtype=torch.bfloat16)
    assert_matches(
        ops.boundary_blur(mask, 1.0, 0.5, 1, noise, base, backend="triton"),
        reference.boundary_blur(mask, 1.0, 0.5, 1, noise, base),
    )


@pytest.mark.parametrize("sigma", [0.0, 1.0])
def test_zero_strength(kernel_device, sigma):
    mask = random_mask((2, 1, 40, 40), "blobs", seed=8).to(kernel_device).float()
    base = torch.randn(mask.shape, device=kernel_device)
    out = ops.boundary_blur(mask, sigma, 0.0, 2, None, base, seed=1, backend="triton")
    band = band_of(mask, 2)
    assert band.any() and (~band).any()
    assert torch.equal(out[~band], base[~band])
    if sigma == 0.0:
        assert torch.equal(out[band], mask[band])
    else:
        blurred = reference.gaussian_blur(mask, sigma)
        torch.testing.assert_close(out[band], blurred[band], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(1, 1), (1, 11), (11, 1), (2, 2), (2, 1, 3, 3)])
def test_tiny(kernel_device, shape):
    # Blur and band radii larger than the image: every tap and halo load is clamped.
    mask = random_mask(shape, "noise", seed=shape[-1]).to(kernel_device)
    noise = torch.randn(shape, device=kernel_device)
    args = (mask, 2.0, 0.5, 3, noise)
    assert_matches(ops.boundary_blur(*args, backend="triton"), reference.boundary_blur(*args))


@pytest.mark.slow
@pytest.mark.parametrize("fill", [True, False])
def test_full_and_empty_masks(kernel_device, fill):
    mask = torch.full((2, 1, 19, 21), fill, device=kernel_device)
    base = torch.randn(mask.shape, device=kernel_device)
    out = ops.boundary_blur(mask, 1.0, 1.0, 1, None, base, seed=3, backend="triton")
    assert torch.equal(out, base)  # no edge, no band


@pytest.mark.slow
def test_across_tiles(kernel_device):
    mask = random_mask((1, 1, 37, 53), "noise", seed=9).to(kernel_device)
    noise = torch.randn(mask.shape, device=kernel_device)
    args = (mask, 1.0, 0.5, 2, noise)
    assert_matches(triton_boundary_blur(*args, block_size=(32, 32)), reference.boundary_blur(*args))


@pytest.mark.slow
def test_strided_inputs(kernel_device):
    # Mask: channel 2 of a channels-last [B,3,H,W]; noise: a transposed view; base: a stepped slice.
    H, W = 33, 45
    full = random_mask((2, 3, H, W), "blobs", seed=12).to(kernel_device).float()
    mask = full.contiguous(memory_format=torch.channels_last)[:, 2:3]
    noise = torch.randn(2, 1, W, H, device=kernel_device).transpose(2, 3)
    base = torch.randn(2, 1, 2 * H, W, device=kernel_device)[:, :, ::2]
    assert not (mask.is_contiguous() or noise.is_contiguous() or base.is_contiguous())
    args = (mask, 0.8, 0.4, 1, noise, base)
    assert_matches(ops.boundary_blur(*args, backend="triton"), reference.boundary_blur(*args))
    # 2-D and 3-D layouts come back in their own shape
    args2 = (mask[0, 0], 0.8, 0.4, 1, noise[0, 0], base[0, 0])
    assert_matches(ops.boundary_blur(*args2, backend="triton"), reference.boundary_blur(*args2))


@pytest.mark.slow
def test_philox_determinism(kernel_device):
    mask = random_mask((2, 1, 30, 30), "blobs", seed=1).to(kernel_device)
    band = band_of(mask, 1)

    def run(**kw):
        return ops.boundary_blur(mask, 0.0, 1.0, 1, backend="triton", **kw)

    a = run(seed=123, offset=7)
    assert torch.equal(a, run(seed=123, offset=7))
    assert not torch.equal(a[band], run(seed=123, offset=8)[band])
    assert not torch.equal(a[band], run(seed=124, offset=7)[band])
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(run(generator=g1), run(generator=g2))
    torch.manual_seed(42)
    b = run()
    torch.manual_seed(42)
    assert torch.equal(b, run())


def test_philox_statistics(kernel_device):
    # Pixel noise has a band covering most pixels; sigma = 0 leaves out - mask = noise there.
    mask = random_mask((1, 1, 128, 128), "noise", seed=21).to(kernel_device).float()
    base = torch.randn(mask.shape, device=kernel_device)
    out = ops.boundary_blur(mask, 0.0, 1.0, 1, None, base, seed=2024, offset=0, backend="triton")
    band = band_of(mask, 1)
    assert band.float().mean() > 0.8
    assert torch.equal(out[~band], base[~band])
    d = (out - mask)[0, 0].double().cpu()
    b = band[0, 0].cpu()
    assert_standard_normal(d[b], std_tolerance=0.03)
    for pair in ((d[:, :-1], d[:, 1:], b[:, :-1] & b[:, 1:]), (d[:-1], d[1:], b[:-1] & b[1:])):
        u, v = pair[0][pair[2]], pair[1][pair[2]]  # neighbours inside the band only
        corr = torch.corrcoef(torch.stack([u, v]))[0, 1].item()
        assert abs(corr) < 4 / u.numel() ** 0.5


def test_requires_grad_rejected(kernel_device):
    mask = random_mask((1, 1, 8, 8), "blobs").to(kernel_device).float()
    noise = torch.randn(mask.shape, device=kernel_device)
    base = torch.randn(mask.shape, device=kernel_device)
    for name, kw in (
        ("mask", dict(mask=mask.clone().requires_grad_())),
        ("noise", dict(noise=noise.clone().requires_grad_())),
        ("base", dict(base=base.clone().requires_grad_())),
    ):
        args = dict(mask=mask, sigma=1.0, strength=0.5, noise=noise, base=base) | kw
        with pytest.raises(ValueError, match=f"`{name}` must not require grad"):
            triton_boundary_blur(**args)


def test_bad_inputs(kernel_device):
    mask = random_mask((1, 1, 8, 8), "blobs").to(kernel_device)
    with pytest.raises(ValueError, match="`sigma`"):
        triton_boundary_blur(mask, -1.0, 0.5)
    with pytest.raises(ValueError, match="`strength`"):
        triton_boundary_blur(mask, 1.0, float("nan"))
    with pytest.raises(ValueError, match="`radius`"):
        triton_boundary_blur(mask, 1.0, 0.5, -1)
    with pytest.raises(TypeError, match="`noise` must be a floating tensor"):
        triton_boundary_blur(mask, 1.0, 0.5, 1, torch.zeros(1, 1, 8, 8, dtype=torch.int32, device=kernel_device))
    with pytest.raises(ValueError, match="`base` must have the shape"):
        triton_boundary_blur(mask, 1.0, 0.5, 1, None, torch.zeros(1, 1, 8, 9, device=kernel_device))
    with pytest.raises(ValueError, match="`mask` must be binary"):
        triton_boundary_blur(mask.float() * 3, 1.0, 0.5)
    with pytest.raises(ValueError, match="`seed`"):
        triton_boundary_blur(mask, 1.0, 0.5, seed=-1)


@pytest.mark.slow
@pytest.mark.parametrize("radius", range(MAX_RADIUS + 1))
def test_every_band_radius_matches_reference(kernel_device, radius):
    mask = random_mask((2, 1, 29, 41), "blobs", seed=radius).to(kernel_device)
    noise = torch.randn(mask.shape, device=kernel_device)
    args = (mask, 1.0, 0.5, radius, noise)
    assert_matches(ops.boundary_blur(*args, backend="triton"), reference.boundary_blur(*args))
    with pytest.raises(ValueError, match="`radius` must be <= "):
        ops.boundary_blur(mask, 1.0, 0.5, MAX_RADIUS + 1, noise, backend="triton")
