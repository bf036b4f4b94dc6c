"""spadfast.ops.reference.canny / ops.canny(backend="reference") against OpenCV, byte-exact.

Ground truth: ``cv2.Canny(m.astype(uint8) * 255, 100, 200) > 0`` per image. Masks are evaluated in batches by the
reference (one call per size) and one by one by OpenCV. Also proves, with OpenCV alone, why Canny on a binary mask
has no hysteresis to do (every non-zero Sobel L1 magnitude is a multiple of 255 > 200).
"""

from __future__ import annotations

import doctest

import cv2
import numpy as np
import pytest
import torch

from spadfast import ops
from spadfast.ops import reference

IMPLS = {
    "reference": reference.canny,
    "ops-reference": lambda m, **kw: ops.canny(m, backend="reference", **kw),
}


# ------------------------------------------------------------------------------------------------------ helpers
def cv_canny(m: np.ndarray) -> np.ndarray:
    """OpenCV ground truth of one 2-D mask (any dtype holding 0/1)."""
    return cv2.Canny(np.ascontiguousarray(m).astype(np.uint8) * 255, 100, 200) > 0


def assert_batch_matches(masks: np.ndarray, out: torch.Tensor, what: str = "") -> None:
    """``out`` (``[B,H,W]`` bool) equals OpenCV per image; report the first failing mask on error."""
    assert out.dtype == torch.bool
    got = out.cpu().numpy()
    for i, m in enumerate(masks):
        want = cv_canny(m)
        if not np.array_equal(got[i], want):
            diff = np.argwhere(got[i] != want)
            raise AssertionError(
                f"{what} image {i} ({m.shape[0]}x{m.shape[1]}): {len(diff)} pixels differ, first at {diff[:5].tolist()}"
                f"\nmask=\n{m.astype(np.uint8)}\ngot=\n{got[i].astype(np.uint8)}\nwant=\n{want.astype(np.uint8)}"
            )


def _rects(rng, H, W):
    m = np.zeros((H, W), bool)
    for _ in range(rng.integers(1, 5)):
        y0, y1 = sorted(rng.integers(-2, H + 3, 2))
        x0, x1 = sorted(rng.integers(-2, W + 3, 2))
        m[max(y0, 0) : max(y1, 0) + 1, max(x0, 0) : max(x1, 0) + 1] = True
    return m


def _ellipses(rng, H, W):
    img = np.zeros((H, W), np.uint8)
    for _ in range(rng.integers(1, 4)):
        c = (int(rng.integers(-3, W + 3)), int(rng.integers(-3, H + 3)))
        axes = (int(rng.integers(0, max(W, 2))), int(rng.integers(0, max(H, 2))))
        cv2.ellipse(img, c, axes, float(rng.uniform(0, 180)), 0, 360, 1, thickness=-1)
    return img > 0


def _blocky(rng, H, W):
    f = int(rng.integers(2, 9))
    small = rng.random((H // f + 2, W // f + 2)) < rng.uniform(0.2, 0.8)
    big = np.repeat(np.repeat(small, f, 0), f, 1)
    oy, ox = rng.integers(0, f, 2)
    return big[oy : oy + H, ox : ox + W]


def _lines(rng, H, W):
    img = np.zeros((H, W), np.uint8)
    for _ in range(rng.integers(1, 5)):
        p0 = (int(rng.integers(-2, W + 2)), int(rng.integers(-2, H + 2)))
        kind = rng.integers(0, 3)
        if kind == 0:  # horizontal
            p1 = (int(rng.integers(-2, W + 2)), p0[1])
        elif kind == 1:  # vertical
            p1 = (p0[0], int(rng.integers(-2, H + 2)))
        else:  # any direction (diagonals included)
            p1 = (int(rng.integers(-2, W + 2)), int(rng.integers(-2, H + 2)))
        cv2.line(img, p0, p1, 1, thickness=1)
    return img > 0


def _checker(rng, H, W):
    s = int(rng.integers(1, 5))
    oy, ox = rng.integers(0, 2 * s, 2)
    yy, xx = np.mgrid[0:H, 0:W]
    return (((yy + oy) // s + (xx + ox) // s) % 2).astype(bool)


def _pixels(rng, H, W):
    m = np.zeros((H, W), bool)
    k = int(rng.integers(1, 4))
    m[rng.integers(0, H, k), rng.integers(0, W, k)] = True
    return m


KINDS = {
    "bernoulli": lambda rng, H, W: rng.random((H, W)) < rng.random(),
    "rects": _rects,
    "ellipses": _ellipses,
    "blocky": _blocky,
    "lines": _lines,
    "checker": _checker,
    "pixels": _pixels,
    "full": lambda rng, H, W: np.ones((H, W), bool),
    "empty": lambda rng, H, W: np.zeros((H, W), bool),
}


def random_masks(rng: np.random.Generator, H: int, W: int, n: int) -> np.ndarray:
    """``n`` masks of size HxW cycling through every kind; a random half of the non-trivial ones is inverted."""
    names = list(KINDS)
    out = []
    for i in range(n):
        name = names[i % len(names)]
        m = KINDS[name](rng, H, W).astype(bool)
        if name not in ("full", "empty") and rng.random() < 0.5:
            m = ~m
        out.append(m)
    return np.stack(out)


SIZES = (
    [(1, 1), (1, 2), (2, 1), (2, 2), (1, 7), (7, 1), (1, 33), (33, 1), (2, 5), (5, 2), (3, 3)]
    + [(h, w) for h in (3, 5, 9, 17, 31, 45, 69) for w in (4, 7, 13, 26, 37, 61, 70)]
    + [(64, 64), (70, 69), (67, 67)]
)


# ------------------------------------------------------------------------------------------------- main sweep
@pytest.mark.parametrize("impl", list(IMPLS))
def test_random_masks_match_opencv(impl):
    fn = IMPLS[impl]
    rng = np.random.default_rng(1234)
    total = 0
    for H, W in SIZES:
        n = 64 if H * W > 4 else 24
        masks = random_masks(rng, H, W, n)
        out = fn(torch.from_numpy(masks))  # [B,H,W]
        assert out.shape == masks.shape
        assert_batch_matches(masks, out, f"{impl} {H}x{W}")
        total += n
    assert total >= 3000


def test_large_masks_match_opencv():
    rng = np.random.default_rng(7)
    masks = random_masks(rng, 256, 256, 12)
    out = reference.canny(torch.from_numpy(masks).unsqueeze(1))  # [B,1,H,W]
    assert out.shape == (12, 1, 256, 256)
    assert_batch_matches(masks, out[:, 0], "256x256")


@pytest.mark.slow
@pytest.mark.parametrize("H,W", [(1, 1), (1, 2), (2, 1), (2, 2), (3, 3), (1, 12), (12, 1), (2, 6), (6, 2), (4, 4)])
def test_exhaustive_small_masks(H, W):
    """Every binary mask of a small size (up to 2**16 of them)."""
    n = H * W
    idx = np.arange(1 << n)
    masks = ((idx[:, None] >> np.arange(n)) & 1).astype(bool).reshape(-1, H, W)
    out = reference.canny(torch.from_numpy(masks))
    assert_batch_matches(masks, out, f"exhaustive {H}x{W}")


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (2, 2), (13, 8), (256, 256)])
@pytest.mark.parametrize("fill", [0, 1])
def test_full_and_empty(shape, fill):
    m = torch.full(shape, bool(fill))
    out = reference.canny(m)
    assert out.shape == shape and not out.any()
    assert np.array_equal(out.numpy(), cv_canny(m.numpy()))


# ------------------------------------------------------------------------------------------ layouts and dtypes
@pytest.mark.parametrize("impl", list(IMPLS))
def test_unbatched_each_image(impl):
    rng = np.random.default_rng(3)
    for H, W in [(1, 1), (1, 5), (6, 1), (11, 17), (40, 23)]:
        for m in random_masks(rng, H, W, 9):
            out = IMPLS[impl](torch.from_numpy(m))
            assert out.shape == (H, W) and out.dtype == torch.bool
            assert np.array_equal(out.numpy(), cv_canny(m))


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("layout", ["BHW", "B1HW"])
@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.int32, torch.int64, torch.float16, torch.float32,
                                   torch.float64])
def test_dtypes_and_batch_layouts(impl, layout, dtype):
    rng = np.random.default_rng(11)
    masks = random_masks(rng, 19, 27, 27)
    t = torch.from_numpy(masks).to(dtype)
    if layout == "B1HW":
        t = t.unsqueeze(1)
    out = IMPLS[impl](t)
    assert out.shape == t.shape and out.dtype == torch.bool
    assert_batch_matches(masks, out.reshape(masks.shape), f"{dtype} {layout}")


@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.float32])
def test_channels_last(dtype):
    rng = np.random.default_rng(5)
    masks = random_masks(rng, 21, 34, 18)
    t = torch.from_numpy(masks).to(dtype).unsqueeze(1).contiguous(memory_format=torch.channels_last)
    assert t.is_contiguous(memory_format=torch.channels_last)  # with C == 1 also "contiguous" by torch's rules
    for fn in IMPLS.values():
        out = fn(t)
        assert out.shape == t.shape
        assert_batch_matches(masks, out[:, 0], "channels_last")


def test_non_contiguous_views():
    rng = np.random.default_rng(9)
    base = torch.from_numpy(random_masks(rng, 47, 63, 18))
    views = {
        "transposed": base.transpose(-1, -2),
        "strided": base[:, ::2, ::3],
        "offset-slice": base[1::2, 3:40, 5:],
        "permuted-strided": base.permute(0, 2, 1)[:, 1:, ::2],
    }
    for name, v in views.items():
        assert not v.is_contiguous()
        want = np.ascontiguousarray(v.numpy())
        for fn in IMPLS.values():
            assert_batch_matches(want, fn(v), name)
            assert_batch_matches(want, fn(v.float().unsqueeze(1))[:, 0], name + " float [B,1,H,W]")
    u = base[0].t()  # unbatched, non-contiguous
    assert np.array_equal(reference.canny(u).numpy(), cv_canny(u.numpy()))


def test_validate_false_same_result():
    rng = np.random.default_rng(2)
    masks = random_masks(rng, 15, 16, 18)
    t = torch.from_numpy(masks)
    assert torch.equal(reference.canny(t, validate=False), reference.canny(t))
    assert torch.equal(ops.canny(t.float(), validate=False, backend="reference"), reference.canny(t))


# ----------------------------------------------------------------------- independent proof: no weak pixels
def _cv_sobel_l1(m255: np.ndarray, ddepth: int) -> np.ndarray:
    dx = cv2.Sobel(m255, ddepth, 1, 0, ksize=3, borderType=cv2.BORDER_REPLICATE)
    dy = cv2.Sobel(m255, ddepth, 0, 1, ksize=3, borderType=cv2.BORDER_REPLICATE)
    return np.abs(dx.astype(np.float64)) + np.abs(dy.astype(np.float64))


def test_no_weak_pixels_opencv_only():
    """On 0/255 images no Sobel L1 magnitude lies in (100, 200]: hysteresis has nothing to decide."""
    rng = np.random.default_rng(21)
    for H, W in [(1, 1), (1, 8), (8, 1), (2, 2), (9, 14), (33, 31), (64, 70)]:
        for m in random_masks(rng, H, W, 45):
            m255 = m.astype(np.uint8) * 255
            for ddepth in (cv2.CV_16S, cv2.CV_32F):
                mag = _cv_sobel_l1(m255, ddepth)
                assert not np.any((mag > 100) & (mag <= 200))
                assert np.all(np.mod(mag, 255) == 0)  # multiples of 255: 0 or >= 255
            a = cv2.Canny(m255, 100, 200)
            assert np.array_equal(a, cv2.Canny(m255, 200, 201))
            assert np.array_equal(a, cv2.Canny(m255, 254, 255))


def test_canny_magnitude_equals_opencv_sobel():
    rng = np.random.default_rng(31)
    for H, W in [(1, 1), (1, 6), (6, 1), (2, 2), (12, 19), (50, 37)]:
        masks = random_masks(rng, H, W, 27)
        mag = reference.canny_magnitude(torch.from_numpy(masks))
        assert mag.dtype == torch.float32 and mag.shape == masks.shape
        for i, m in enumerate(masks):
            want = _cv_sobel_l1(m.astype(np.uint8) * 255, cv2.CV_32F)
            assert np.array_equal(mag[i].numpy().astype(np.float64), want), (H, W, i)
    # unbatched and [B,1,H,W] keep their shapes
    m = torch.from_numpy(masks[3])
    assert reference.canny_magnitude(m).shape == m.shape
    assert reference.canny_magnitude(m[None, None]).shape == (1, 1) + tuple(m.shape)


# ------------------------------------------------------------------------------------------------ docstring
def test_docstring_example():
    m = torch.zeros(8, 8, dtype=torch.bool)
    m[2:6, 2:6] = True
    assert int(reference.canny(m).sum()) == 12
    assert np.array_equal(reference.canny(m).numpy(), cv_canny(m.numpy()))
    # and the docstring itself runs as a doctest
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    tests = finder.find(reference.canny, "canny", globs={"torch": torch, "canny": reference.canny})
    assert tests and any(t.examples for t in tests)
    for t in tests:
        runner.run(t)
    assert runner.summarize(verbose=False).failed == 0
