"""Triton ``target_noise`` (ScD) against ``spadfast.ops.reference.target_noise``; statistics of the in-kernel Philox."""

import pytest
import torch

from spadfast import ops
from spadfast.kernels.target_noise import target_noise as triton_target_noise
from spadfast.ops import reference
from spadfast.ops.op_table import TOLERANCES

from .layouts import LAYOUTS, column_major
from .normal_stats import assert_standard_normal, assert_uncorrelated_neighbours

BLOCK = (64, 128)  # one program per image for every shape below under the interpreter


def _triton(*args, **kwargs):
    return ops.target_noise(*args, backend="triton", **kwargs)


def _random_case(shape, device, mask_dtype=torch.float32, noise_dtype=torch.float32):
    mask = (torch.rand(shape, device=device) < 0.6).to(mask_dtype)
    noise = torch.randn(shape, device=device).to(noise_dtype)
    anchors = torch.rand(shape, device=device) < 0.3
    return mask, noise, anchors


def _check_against_reference(got, mask, noise, anchors, strength=0.7):
    want = reference.target_noise(mask, strength, noise=noise, anchors=anchors)
    assert got.dtype == want.dtype and got.shape == want.shape == mask.shape
    noisy = (mask.float() > 0.5) & ~anchors
    passthrough = mask.to(want.dtype)
    # Background and anchors: bit-identical to the input (and to the reference).
    assert torch.equal(got[~noisy], passthrough[~noisy])
    assert torch.equal(want[~noisy], passthrough[~noisy])
    rtol, atol = TOLERANCES.get(got.dtype, TOLERANCES[torch.float32])
    torch.testing.assert_close(got[noisy], want[noisy], rtol=rtol, atol=atol)
    assert noisy.any() and (~noisy).any()


@pytest.mark.parametrize("shape", [(1, 1, 37, 53), (3, 1, 37, 53), (2, 29, 31), (41, 23)])
@pytest.mark.parametrize(
    "mask_dtype, noise_dtype",
    [
        (torch.float32, torch.float32),
        (torch.float16, torch.float16),
        (torch.bfloat16, torch.bfloat16),
        (torch.float16, torch.float32),
        (torch.bool, torch.float32),
        (torch.uint8, torch.float16),
        (torch.int64, torch.float32),
        (torch.float64, torch.float32),
    ],
)
def test_explicit_matches_reference(kernel_device, shape, mask_dtype, noise_dtype):
    mask, noise, anchors = _random_case(shape, kernel_device, mask_dtype, noise_dtype)
    got = _triton(mask, 0.7, 4, 0.25, noise, anchors)
    _check_against_reference(got, mask, noise, anchors)


@pytest.mark.slow
@pytest.mark.parametrize("mask_layout", list(LAYOUTS))
@pytest.mark.parametrize("other_layout", ["contiguous", "column_major", "strided_view"])
@pytest.mark.parametrize("mask_dtype", [torch.float16, torch.bool])
def test_layouts(kernel_device, mask_layout, other_layout, mask_dtype):
    mask, noise, anchors = _random_case((2, 1, 37, 53), kernel_device, mask_dtype)
    m = LAYOUTS[mask_layout](mask)
    n, a = LAYOUTS[other_layout](noise), LAYOUTS[other_layout](anchors)
    got = _triton(m, 0.7, 4, 0.25, n, a)
    _check_against_reference(got, mask, noise, anchors)
    if mask_layout == "column_major":
        assert got.stride() == m.stride()  # dense inputs keep their layout


def test_edge_parameters(kernel_device):
    mask, noise, _ = _random_case((2, 1, 37, 53), kernel_device)
    assert torch.equal(_triton(mask, 0.0, 4, 0.25, noise, None, seed=1), mask)  # strength 0: the mask itself
    assert torch.equal(_triton(mask, 0.5, 3, 1.0, None, None, seed=2), mask)  # keep_ratio 1: every cell an anchor
    # keep_ratio 0: no anchors, every target pixel noised with the given noise.
    got = _triton(mask, 0.5, 3, 0.0, noise, None, seed=3)
    torch.testing.assert_close(got, torch.where(mask > 0.5, mask + 0.5 * noise, mask), rtol=1e-5, atol=1e-5)


# -------------------------------------------------------------------------------------------------- Philox paths
def _draw(mask, **kwargs):
    kwargs.setdefault("strength", 0.5)
    strength = kwargs.pop("strength")
    return triton_target_noise(mask, strength, block_size=BLOCK, **kwargs)


@pytest.mark.slow
def test_philox_determinism(kernel_device):
    mask = (torch.rand(2, 1, 37, 53, device=kernel_device) < 0.7).float()
    a = _draw(mask, seed=7, offset=5)
    assert torch.equal(a, _draw(mask, seed=7, offset=5))
    assert not torch.equal(a, _draw(mask, seed=7, offset=6))
    assert not torch.equal(a, _draw(mask, seed=8, offset=5))
    # Counters are logical pixel indices: the draws do not depend on the layout.
    assert torch.equal(a, _draw(column_major(mask), seed=7, offset=5))
    assert torch.equal(a, _draw(mask.bool(), seed=7, offset=5))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    b = _draw(mask, generator=g1)
    assert torch.equal(b, _draw(mask, generator=g2))
    assert not torch.equal(b, _draw(mask, generator=g1))  # the generator advanced
    torch.manual_seed(11)
    c = _draw(mask)
    torch.manual_seed(11)
    assert torch.equal(c, _draw(mask))


def test_philox_noise_statistics(kernel_device):
    # The full mask (every pixel a target) and no anchors expose the whole noise field: z = (out - 1) / strength.
    shape = (2, 1, 64, 96)
    mask = torch.ones(shape, device=kernel_device)
    no_anchors = torch.zeros(shape, dtype=torch.bool, device=kernel_device)
    z = (_draw(mask, anchors=no_anchors, seed=1234) - 1) / 0.5
    assert_standard_normal(z)
    assert_uncorrelated_neighbours(z)


def test_philox_noise_on_random_mask(kernel_device):
    # On a random mask the noised pixels (target minus anchors) are standard normal, the rest passes through.
    mask = (torch.rand(3, 1, 64, 96, device=kernel_device) < 0.6).float()
    # Fixed seed, so the test is deterministic. (Seed 99 gives KS p = 0.00098, a 1-in-1000 draw: over 60 seeds the
    # p-values of this test are uniform, KS p = 0.44.)
    out = _draw(mask, seed=5, anchor_size=4, keep_ratio=0.25)
    changed = out != mask
    assert not (changed & (mask == 0)).any()
    assert 0.6 * 0.7 < changed.float().mean().item() < 0.6 * 0.8
    assert_standard_normal((out[changed] - 1) / 0.5)


def _cell_ids(B, H, W, size, device):
    hc, wc = -(-H // size), -(-W // size)
    b = torch.arange(B, device=device).view(B, 1, 1, 1)
    y = torch.arange(H, device=device).view(1, 1, H, 1) // size
    x = torch.arange(W, device=device).view(1, 1, 1, W) // size
    return ((b * hc + y) * wc + x).expand(B, 1, H, W), B * hc * wc


@pytest.mark.parametrize("shape, anchor_size, keep_ratio", [((3, 1, 37, 53), 4, 0.25), ((2, 1, 64, 96), 3, 0.6)])
def test_philox_anchor_cells(kernel_device, shape, anchor_size, keep_ratio):
    B, _, H, W = shape
    mask = torch.ones(shape, device=kernel_device)
    seed = 2024
    out = _draw(mask, seed=seed, anchor_size=anchor_size, keep_ratio=keep_ratio)
    anchor = (out == 1).float()  # a noised pixel equals 1 with probability 0
    ids, n_cells = _cell_ids(B, H, W, anchor_size, kernel_device)
    lo = torch.ones(n_cells, device=kernel_device).scatter_reduce(0, ids.flatten(), anchor.flatten(), "amin")
    hi = torch.zeros(n_cells, device=kernel_device).scatter_reduce(0, ids.flatten(), anchor.flatten(), "amax")
    assert torch.equal(lo, hi)  # anchors are whole cells, partial border cells included
    fraction = hi.mean().item()
    assert abs(fraction - keep_ratio) < 4 * (keep_ratio * (1 - keep_ratio) / n_cells) ** 0.5
    # The noise stream is the same with or without in-kernel anchors, and independent of the anchor draw.
    no_anchors = torch.zeros(shape, dtype=torch.bool, device=kernel_device)
    field = _draw(mask, seed=seed, anchors=no_anchors)
    keep = anchor == 0
    assert torch.equal(out[keep], field[keep])
    cell_noise = torch.zeros(n_cells, device=kernel_device).scatter_reduce(
        0, ids.flatten(), field.flatten() - 1, "mean", include_self=False
    )
    r = torch.corrcoef(torch.stack([hi, cell_noise]))[0, 1].item()
    assert abs(r) < 4 / n_cells**0.5


# ----------------------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "change, error, match",
    [
        ({"mask": torch.tensor([[0.0, 0.5], [1.0, 1.0]])}, ValueError, "binary"),
        ({"mask": torch.zeros(2, 3, 4, 5)}, ValueError, "one channel"),
        ({"strength": -1.0}, ValueError, "strength"),
        ({"anchor_size": 0}, ValueError, "anchor_size"),
        ({"anchor_size": 2.0}, TypeError, "anchor_size"),
        ({"keep_ratio": 1.5}, ValueError, "keep_ratio"),
        ({"noise": torch.randn(2, 3)}, ValueError, "noise"),
        ({"noise": torch.ones(2, 2, dtype=torch.int32)}, TypeError, "noise"),
        ({"anchors": torch.ones(2, 2)}, TypeError, "anchors"),
        ({"generator": 0}, TypeError, "generator"),
        ({"offset": -1}, ValueError, "offset"),
        ({"mask": torch.ones(2, 2, requires_grad=True)}, ValueError, "mask"),
    ],
)
def test_invalid_arguments_like_reference(kernel_device, change, error, match):
    kwargs = {"mask": torch.tensor([[0.0, 1.0], [1.0, 1.0]]), "strength": 0.5}
    kwargs.update(change)
    kwargs = {
        k: v.detach().to(kernel_device).requires_grad_(v.requires_grad) if isinstance(v, torch.Tensor) else v
        for k, v in kwargs.items()
    }
    for fn in (reference.target_noise, triton_target_noise):
        with pytest.raises(error, match=match):
            fn(**kwargs)


def test_noise_requiring_grad_raises(kernel_device):
    mask, noise, anchors = _random_case((1, 1, 5, 6), kernel_device)
    with pytest.raises(ValueError, match="`noise` must not require grad"):
        triton_target_noise(mask, 0.5, noise=noise.requires_grad_(True), anchors=anchors)
