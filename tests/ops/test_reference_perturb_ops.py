"""spadfast.ops.reference.boundary_blur (BcD) and target_noise (ScD): exact properties and noise statistics.

Independent ground truths: the band is built with cv2.Canny + cv2.dilate, the blur with scipy.ndimage, the Gaussian
taps with numpy. Statistical tolerances are 6 standard errors of the estimator for the sample size at hand.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

from spadfast import ops
from spadfast.ops import reference

BOUNDARY_BLUR = {"reference": reference.boundary_blur,
                 "ops": lambda *a, **kw: ops.boundary_blur(*a, backend="reference", **kw)}
TARGET_NOISE = {"reference": reference.target_noise,
                "ops": lambda *a, **kw: ops.target_noise(*a, backend="reference", **kw)}


# ------------------------------------------------------------------------------------------------------ helpers
def blob_masks(B: int, H: int, W: int, seed: int) -> torch.Tensor:
    """``[B,H,W]`` bool masks made of a few ellipses and rectangles (some touching the border), never empty or full."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < B:
        img = np.zeros((H, W), np.uint8)
        for _ in range(rng.integers(1, 4)):
            c = (int(rng.integers(-W // 8, W + W // 8)), int(rng.integers(-H // 8, H + H // 8)))
            axes = (int(rng.integers(2, max(3, W // 3))), int(rng.integers(2, max(3, H // 3))))
            cv2.ellipse(img, c, axes, float(rng.uniform(0, 180)), 0, 360, 1, thickness=-1)
        if rng.random() < 0.5:
            y0, x0 = rng.integers(0, H), rng.integers(0, W)
            img[y0 : y0 + rng.integers(1, H // 2 + 2), x0 : x0 + rng.integers(1, W // 2 + 2)] = 1
        if 0 < img.sum() < H * W:
            out.append(img > 0)
    return torch.from_numpy(np.stack(out))


def cv_band(mask: np.ndarray, radius: int) -> np.ndarray:
    """dilate(cv2.Canny edge, (2r+1) square) of one 2-D mask, OpenCV only."""
    edge = cv2.Canny(mask.astype(np.uint8) * 255, 100, 200)
    k = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    return cv2.dilate(edge, k) > 0


def cv_bands(masks: torch.Tensor, radius: int) -> torch.Tensor:
    return torch.from_numpy(np.stack([cv_band(m, radius) for m in masks.numpy()]))


def tap_radius(sigma: float, truncate: float = 3.0) -> int:
    return 0 if sigma == 0 else max(1, math.ceil(truncate * sigma))


def scipy_blur(x: np.ndarray, sigma: float, truncate: float = 3.0) -> np.ndarray:
    """Separable Gaussian over the last two axes, replicated border, radius ceil(truncate * sigma), float64."""
    r = tap_radius(sigma, truncate)
    if r == 0:
        return x.astype(np.float64)
    y = ndi.gaussian_filter1d(x.astype(np.float64), sigma, axis=-1, mode="nearest", radius=r)
    return ndi.gaussian_filter1d(y, sigma, axis=-2, mode="nearest", radius=r)


def z_tol(n: int) -> float:
    return 6.0 / math.sqrt(n)


# ---------------------------------------------------------------------------------------------- target_noise
@pytest.mark.parametrize("impl", list(TARGET_NOISE))
def test_target_noise_background_and_anchors_bit_identical(impl):
    m = blob_masks(4, 40, 52, 0)
    g = torch.Generator().manual_seed(0)
    anchors = torch.rand(m.shape, generator=g) < 0.3
    noise = torch.randn(m.shape, generator=g)
    out = TARGET_NOISE[impl](m, 0.8, 4, 0.25, noise=noise, anchors=anchors)
    mf = m.float()
    keep = ~m | anchors
    assert torch.equal(out[keep], mf[keep])
    assert (out[~m] == 0).all()
    assert (out[m & anchors] == 1).all()
    changed = m & ~anchors
    assert (out[changed] != 1).all()  # the noise actually lands there
    # the formula, exactly
    assert torch.equal(out, torch.where(changed, mf + 0.8 * noise, mf))


@pytest.mark.parametrize("impl", list(TARGET_NOISE))
def test_target_noise_background_bit_identical_with_generator(impl):
    m = blob_masks(3, 33, 47, 1)
    out = TARGET_NOISE[impl](m, 1.3, 3, 0.4, generator=torch.Generator().manual_seed(5))
    assert (out[~m] == 0).all()
    inside = out[m]
    kept = inside == 1  # anchors (a noisy pixel equal to exactly 1.0 has probability ~0)
    assert 0 < kept.float().mean() < 1


@pytest.mark.parametrize("impl", list(TARGET_NOISE))
def test_target_noise_strength_zero_returns_mask(impl):
    m = blob_masks(2, 30, 30, 2)
    for kw in (dict(generator=torch.Generator().manual_seed(1)), dict(noise=torch.randn(m.shape)), dict(seed=3)):
        out = TARGET_NOISE[impl](m, 0.0, **kw)
        assert out.dtype == torch.float32 and torch.equal(out, m.float())
    out = TARGET_NOISE[impl](m.double(), 0.0, noise=torch.randn(m.shape, dtype=torch.float64))
    assert out.dtype == torch.float64 and torch.equal(out, m.double())


def test_target_noise_variance_matches_strength():
    m = blob_masks(8, 96, 96, 3)
    for strength in (0.25, 1.0):
        out = reference.target_noise(m, strength, 4, 0.0, generator=torch.Generator().manual_seed(11))
        d = (out - m.float())[m].double()
        n = d.numel()
        assert n > 10_000
        assert abs(d.mean().item()) / strength < z_tol(n)
        # var of the sample variance of a normal: 2 sigma^4 / n  ->  relative std sqrt(2 / n)
        assert abs(d.pow(2).mean().item() / strength**2 - 1) < 6 * math.sqrt(2 / n)
        assert abs((d.abs() < strength).double().mean().item() - 0.6826894921) < 6 * math.sqrt(0.25 / n)


@pytest.mark.parametrize("anchor_size", [1, 4, 7])
@pytest.mark.parametrize("keep_ratio", [0.25, 0.6])
def test_target_noise_anchor_cells(anchor_size, keep_ratio):
    B, H, W = 6, 50, 69  # not multiples of the cell size: partial cells at the bottom / right
    m = torch.ones(B, H, W, dtype=torch.bool)
    out = reference.target_noise(m, 0.5, anchor_size, keep_ratio, generator=torch.Generator().manual_seed(2))
    kept = out == 1
    hc, wc = -(-H // anchor_size), -(-W // anchor_size)
    padded = torch.zeros(B, hc * anchor_size, wc * anchor_size, dtype=torch.long)
    padded[:, :H, :W] = kept.long()
    valid = torch.zeros_like(padded)
    valid[:, :H, :W] = 1
    cells = padded.view(B, hc, anchor_size, wc, anchor_size).sum((2, 4))
    sizes = valid.view(B, hc, anchor_size, wc, anchor_size).sum((2, 4))
    assert ((cells == 0) | (cells == sizes)).all(), "anchors are not whole cells"
    frac = (cells == sizes).double().mean().item()
    n = B * hc * wc
    assert abs(frac - keep_ratio) < 6 * math.sqrt(keep_ratio * (1 - keep_ratio) / n)


def test_target_noise_keep_ratio_extremes():
    m = blob_masks(2, 24, 24, 4)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(reference.target_noise(m, 0.9, 4, 1.0, generator=g), m.float())
    out = reference.target_noise(m, 0.9, 4, 0.0, generator=g)
    assert (out[m] != 1).all() and (out[~m] == 0).all()


# --------------------------------------------------------------------------------------------- boundary_blur
@pytest.mark.parametrize("radius", [0, 1, 2, 3])
def test_band_equals_opencv_dilated_canny(radius):
    m = blob_masks(6, 45, 61, 5)
    want = cv_bands(m, radius)
    assert torch.equal(reference.boundary_band(m, radius), want)
    assert torch.equal(reference.boundary_band(m.unsqueeze(1), radius)[:, 0], want)
    # the band seen through boundary_blur: outside it the output is `base`
    base = torch.full(m.shape, 5.0)
    for impl in BOUNDARY_BLUR.values():
        out = impl(m, 0.0, 0.0, radius, base=base, generator=torch.Generator().manual_seed(0))
        assert torch.equal(out != 5.0, want)


@pytest.mark.parametrize("impl", list(BOUNDARY_BLUR))
@pytest.mark.parametrize("sigma,strength,radius", [(1.0, 0.5, 1), (2.5, 0.2, 3), (0.0, 1.0, 0), (0.7, 0.0, 2)])
def test_boundary_blur_formula_with_explicit_noise(impl, sigma, strength, radius):
    m = blob_masks(4, 37, 41, 6)
    noise = torch.randn(m.shape)
    band = cv_bands(m, radius)
    blurred = reference.gaussian_blur(m.float().unsqueeze(1), sigma)[:, 0]
    out = BOUNDARY_BLUR[impl](m, sigma, strength, radius, noise=noise)
    assert out.dtype == torch.float32 and out.shape == m.shape
    assert torch.equal(out, torch.where(band, blurred + strength * noise, m.float()))
    # outside the band: the mask, bit for bit
    assert torch.equal(out[~band], m.float()[~band])
    # with `base`
    base = torch.rand(m.shape)
    out_b = BOUNDARY_BLUR[impl](m, sigma, strength, radius, noise=noise, base=base)
    assert torch.equal(out_b[~band], base[~band])
    assert torch.equal(out_b[band], out[band])
    # independent blur (scipy) inside the band
    want = scipy_blur(m.numpy(), sigma) + strength * noise.double().numpy()
    np.testing.assert_allclose(out[band].double().numpy(), want[band.numpy()], rtol=0, atol=2e-6)


def test_boundary_blur_sigma0_strength0_is_identity():
    m = blob_masks(3, 29, 31, 7)
    for impl in BOUNDARY_BLUR.values():
        for kw in (dict(), dict(noise=torch.randn(m.shape)), dict(seed=1)):
            assert torch.equal(impl(m, 0.0, 0.0, 2, **kw), m.float())


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0])
def test_boundary_blur_strength0_is_blur_in_band(sigma):
    m = blob_masks(3, 40, 40, 8)
    out = reference.boundary_blur(m, sigma, 0.0, 2, generator=torch.Generator().manual_seed(0))
    band = cv_bands(m, 2)
    want = scipy_blur(m.numpy(), sigma)
    np.testing.assert_allclose(out[band].double().numpy(), want[band.numpy()], rtol=0, atol=2e-6)
    assert torch.equal(out[~band], m.float()[~band])


def test_boundary_blur_variance_matches_strength():
    m = blob_masks(8, 128, 128, 9)
    band = cv_bands(m, 2)
    for strength in (0.1, 0.8):
        out = reference.boundary_blur(m, 1.5, strength, 2, generator=torch.Generator().manual_seed(4))
        blurred = reference.gaussian_blur(m.float().unsqueeze(1), 1.5)[:, 0]
        d = (out - blurred)[band].double()
        n = d.numel()
        assert n > 5_000
        assert abs(d.mean().item()) / strength < z_tol(n)
        assert abs(d.pow(2).mean().item() / strength**2 - 1) < 6 * math.sqrt(2 / n)


# --------------------------------------------------------------------------------------------------- Gaussian
@pytest.mark.parametrize("sigma", [0.1, 0.33, 0.5, 1.0, 1.7, 2.5, 4.0])
@pytest.mark.parametrize("truncate", [3.0, 2.0, 4.5])
def test_gaussian_weights_formula(sigma, truncate):
    w = reference.gaussian_weights(sigma, truncate)
    r = tap_radius(sigma, truncate)
    x = np.arange(-r, r + 1, dtype=np.float64)
    want = np.exp(-0.5 * (x / sigma) ** 2)
    want /= want.sum()
    assert w.dtype == torch.float32 and w.shape == (2 * r + 1,)
    np.testing.assert_allclose(w.double().numpy(), want, rtol=1e-7, atol=0)
    assert torch.equal(w, w.flip(0))
    assert abs(w.double().sum().item() - 1) < 1e-6


def test_gaussian_weights_sigma0_is_identity():
    assert torch.equal(reference.gaussian_weights(0.0), torch.ones(1))
    assert torch.equal(reference.gaussian_weights(0), torch.ones(1))


@pytest.mark.parametrize("sigma", [0.5, 1.0, 1.3, 2.0, 3.3])
@pytest.mark.parametrize("shape", [(2, 1, 31, 45), (1, 1, 5, 7), (3, 1, 1, 20), (1, 1, 12, 2)])
def test_gaussian_blur_vs_scipy(sigma, shape):
    """Interior and border pixels, including images smaller than the kernel radius."""
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    got = reference.gaussian_blur(x, sigma)
    assert got.dtype == torch.float32 and got.shape == x.shape
    want = scipy_blur(x.numpy(), sigma)
    np.testing.assert_allclose(got.double().numpy(), want, rtol=0, atol=2e-6)


# --------------------------------------------------------------------------------------- randomness and seeds
@pytest.mark.parametrize("op", ["boundary_blur", "target_noise"])
def test_determinism_and_seeds(op):
    m = blob_masks(2, 32, 32, 10)

    def run(**kw):
        if op == "boundary_blur":
            return reference.boundary_blur(m, 1.0, 0.5, 2, **kw)
        return reference.target_noise(m, 0.5, 2, 0.3, **kw)

    a, b = run(seed=7), run(seed=7)
    assert torch.equal(a, b)
    assert not torch.equal(a, run(seed=8))
    assert not torch.equal(a, run(seed=7, offset=1))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(run(generator=g1), run(generator=g2))
    g3, g4 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(4)
    assert not torch.equal(run(generator=g3), run(generator=g4))
    # ops with backend="reference" is the reference
    ops_fn = getattr(ops, op)
    if op == "boundary_blur":
        c = ops_fn(m, 1.0, 0.5, 2, seed=7, backend="reference")
    else:
        c = ops_fn(m, 0.5, 2, 0.3, seed=7, backend="reference")
    assert torch.equal(a, c)


# ----------------------------------------------------------------------------------------- dtypes and shapes
@pytest.mark.parametrize(
    "dtype,out_dtype",
    [(torch.bool, torch.float32), (torch.uint8, torch.float32), (torch.int64, torch.float32),
     (torch.float16, torch.float16), (torch.bfloat16, torch.bfloat16), (torch.float32, torch.float32),
     (torch.float64, torch.float64)],
)
def test_output_dtypes(dtype, out_dtype):
    m = blob_masks(2, 20, 24, 11)
    mt = m.to(dtype)
    noise = torch.randn(m.shape)
    anchors = torch.rand(m.shape) < 0.3
    for impl in BOUNDARY_BLUR.values():
        out = impl(mt, 1.0, 0.3, 1, noise=noise)
        assert out.dtype == out_dtype
        ref = reference.boundary_blur(m, 1.0, 0.3, 1, noise=noise)
        assert torch.equal(out, ref.to(out_dtype))  # computed in float32, rounded once
    for impl in TARGET_NOISE.values():
        out = impl(mt, 0.3, noise=noise, anchors=anchors)
        assert out.dtype == out_dtype
        assert torch.equal(out, reference.target_noise(m, 0.3, noise=noise, anchors=anchors).to(out_dtype))


def test_boundary_blur_base_dtype():
    """A float64 ``base`` is returned outside the band bit for bit (not rounded through float32)."""
    m = blob_masks(2, 20, 24, 12)
    base = torch.rand(m.shape, dtype=torch.float64)
    out = reference.boundary_blur(m, 1.0, 0.3, 1, noise=torch.randn(m.shape), base=base)
    assert out.dtype == torch.float64
    band = cv_bands(m, 1)
    assert torch.equal(out[~band], base[~band])


@pytest.mark.parametrize("layout", ["HW", "BHW", "B1HW"])
def test_shapes_follow_input(layout):
    m = blob_masks(3, 26, 30, 13)
    noise = torch.randn(m.shape)
    anchors = torch.rand(m.shape) < 0.3
    want_bb = reference.boundary_blur(m, 1.2, 0.4, 2, noise=noise)
    want_tn = reference.target_noise(m, 0.4, noise=noise, anchors=anchors)
    if layout == "HW":
        m, noise, anchors, want_bb, want_tn = m[1], noise[1], anchors[1], want_bb[1], want_tn[1]
    elif layout == "B1HW":
        m, noise, anchors = m.unsqueeze(1), noise.unsqueeze(1), anchors.unsqueeze(1)
        want_bb, want_tn = want_bb.unsqueeze(1), want_tn.unsqueeze(1)
    for impl in BOUNDARY_BLUR.values():
        out = impl(m, 1.2, 0.4, 2, noise=noise)
        assert out.shape == m.shape
        if layout == "HW":  # one image vs a row of a batch of 3: F.conv2d may round differently (1 ulp)
            torch.testing.assert_close(out, want_bb, rtol=0, atol=1e-6)
        else:
            assert torch.equal(out, want_bb)
        assert impl(m, 1.2, 0.4, 2, seed=1).shape == m.shape
    for impl in TARGET_NOISE.values():
        out = impl(m, 0.4, noise=noise, anchors=anchors)
        assert out.shape == m.shape and torch.equal(out, want_tn)
        assert impl(m, 0.4, seed=1).shape == m.shape
