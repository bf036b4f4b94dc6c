"""spadfast.evaluation.metrics against independent computations: coordinate sets for Dice/IoU, scipy erosion plus brute-force
pairwise distances (cdist) and a hand-written percentile for HD95; an optional cross-check against MONAI."""

import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.spatial.distance import cdist

from spadfast.diffusion.sampler import labels_from_probs
from spadfast.evaluation import metrics
from spadfast.evaluation.metrics import dice, hd95, iou, per_class_metrics, summarize, surface

# ---------------------------------------------------------------------------------------------------------------
# Independent references


def ref_dice_iou(p: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    a = set(zip(*np.nonzero(p)))
    b = set(zip(*np.nonzero(t)))
    if not a and not b:
        return 1.0, 1.0
    return 2 * len(a & b) / (len(a) + len(b)), len(a & b) / len(a | b)


def ref_surface(m: np.ndarray) -> np.ndarray:
    cross = ndimage.generate_binary_structure(2, 1)
    return m ^ ndimage.binary_erosion(m, structure=cross, border_value=0)


def ref_percentile95(d: np.ndarray) -> float:
    d = sorted(d.tolist())
    pos = 0.95 * (len(d) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(d) - 1)
    return d[lo] + (d[hi] - d[lo]) * (pos - lo)


def ref_hd95(p: np.ndarray, t: np.ndarray, spacing=(1.0, 1.0)) -> float:
    sp, st = ref_surface(p), ref_surface(t)
    if not sp.any() and not st.any():
        return 0.0
    if not sp.any() or not st.any():
        return math.inf
    a = np.argwhere(sp) * np.asarray(spacing)
    b = np.argwhere(st) * np.asarray(spacing)
    d = cdist(a, b)
    return max(ref_percentile95(d.min(axis=1)), ref_percentile95(d.min(axis=0)))


# ---------------------------------------------------------------------------------------------------------------
# Random masks of many kinds


def random_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    kind = rng.integers(0, 9)
    if kind == 0:  # smooth blob
        sigma = rng.uniform(0.5, 4.0)
        field = ndimage.gaussian_filter(rng.standard_normal((h, w)), sigma, mode="wrap")
        return field > rng.uniform(-0.3, 0.3) * field.std()
    if kind == 1:  # salt noise
        return rng.random((h, w)) < rng.uniform(0.02, 0.6)
    if kind == 2:  # a few single pixels
        m = np.zeros((h, w), bool)
        k = rng.integers(1, 4)
        m[rng.integers(0, h, k), rng.integers(0, w, k)] = True
        return m
    if kind == 3:  # rectangle touching the border
        m = np.zeros((h, w), bool)
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        m[: y0 + 1, x0:] = True if rng.random() < 0.5 else False
        m[y0:, : x0 + 1] = True
        return m
    if kind == 4:
        return np.zeros((h, w), bool)
    if kind == 5:
        return np.ones((h, w), bool)
    if kind == 6:  # ellipse, possibly clipped by the border
        yy, xx = np.mgrid[:h, :w]
        cy, cx = rng.uniform(-2, h + 1), rng.uniform(-2, w + 1)
        ry, rx = rng.uniform(0.5, h), rng.uniform(0.5, w)
        return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    if kind == 7:  # thin lines
        m = np.zeros((h, w), bool)
        m[rng.integers(0, h), :] = True
        m[:, rng.integers(0, w)] = rng.random() < 0.5
        return m
    return ndimage.binary_dilation(rng.random((h, w)) < 0.05, iterations=int(rng.integers(0, 3)))


def random_pair(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    p = random_mask(rng, h, w)
    r = rng.random()
    if r < 0.35:
        t = random_mask(rng, h, w)
    elif r < 0.6:  # a near miss: shifted copy
        t = np.roll(p, (int(rng.integers(-3, 4)), int(rng.integers(-3, 4))), axis=(0, 1))
    elif r < 0.8:
        t = ndimage.binary_dilation(p, iterations=int(rng.integers(1, 3))) if p.any() else random_mask(rng, h, w)
    else:
        t = p.copy()
        flip = rng.random((h, w)) < 0.05
        t ^= flip
    return p, t


def random_cases(seed: int, n: int, max_side: int = 29) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        h, w = int(rng.integers(1, max_side + 1)), int(rng.integers(1, max_side + 1))
        out.append(random_pair(rng, h, w))
    return out


CASES = random_cases(0, 400)
SPACINGS = [(1.0, 1.0), (0.7, 1.3), (2.5, 0.4)]


# ---------------------------------------------------------------------------------------------------------------
# Agreement with the references


def test_dice_iou_match_coordinate_sets():
    for p, t in CASES:
        d_ref, j_ref = ref_dice_iou(p, t)
        assert dice(p, t) == pytest.approx(d_ref, rel=1e-12, abs=0)
        assert iou(p, t) == pytest.approx(j_ref, rel=1e-12, abs=0)


def test_surface_matches_scipy_erosion():
    for p, t in CASES:
        np.testing.assert_array_equal(surface(p), ref_surface(p))
        np.testing.assert_array_equal(surface(torch.from_numpy(t)), ref_surface(t))


@pytest.mark.parametrize("spacing", SPACINGS)
def test_hd95_matches_brute_force(spacing):
    for p, t in CASES:
        want = ref_hd95(p, t, spacing)
        got = hd95(p, t, spacing=spacing)
        assert isinstance(got, float)
        if math.isinf(want):
            assert got == math.inf
        else:
            assert got == pytest.approx(want, rel=1e-12, abs=1e-12), (p.astype(int), t.astype(int))


def test_hd95_larger_images_match_brute_force():
    rng = np.random.default_rng(1)
    for _ in range(8):
        h, w = int(rng.integers(60, 97)), int(rng.integers(60, 97))
        p, t = random_pair(rng, h, w)
        spacing = (float(rng.uniform(0.3, 3)), float(rng.uniform(0.3, 3)))
        want = ref_hd95(p, t, spacing)
        got = hd95(p, t, spacing)
        assert got == pytest.approx(want, rel=1e-12, abs=1e-12) or (math.isinf(want) and got == math.inf)


# ---------------------------------------------------------------------------------------------------------------
# Conventions and known values


def test_empty_conventions():
    z = np.zeros((7, 9), bool)
    m = z.copy()
    m[3, 4] = True
    assert dice(z, z) == 1.0 and iou(z, z) == 1.0 and hd95(z, z) == 0.0
    assert dice(z, m) == 0.0 and iou(m, z) == 0.0
    assert hd95(z, m) == math.inf and hd95(m, z) == math.inf


def test_known_values():
    full = np.ones((5, 6), bool)
    assert hd95(full, full) == 0.0 and dice(full, full) == 1.0
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[0, 0] = True
    b[3, 4] = True
    assert hd95(a, b) == 5.0
    assert hd95(a, b, spacing=(2.0, 0.5)) == pytest.approx(math.hypot(6.0, 2.0))
    # The border counts as surface: a full mask's surface is the image frame, a shifted square's is its ring.
    sq = np.zeros((10, 10), bool)
    sq[1:9, 1:9] = True
    assert hd95(full[:5, :5], full[:5, :5]) == 0.0
    # Ring vs frame: 4 of the frame's 36 pixels (its corners, > 5%) lie sqrt(2) from the ring, the rest 1.
    assert hd95(sq, np.ones((10, 10), bool)) == math.sqrt(2.0)


# ---------------------------------------------------------------------------------------------------------------
# Batches, layouts and dtypes


def test_batched_equals_per_image():
    rng = np.random.default_rng(2)
    h, w = 17, 23
    pairs = [random_pair(rng, h, w) for _ in range(12)]
    p = np.stack([a for a, _ in pairs])
    t = np.stack([b for _, b in pairs])
    spacing = (1.5, 0.5)
    per_image = {
        "dice": np.array([dice(a, b) for a, b in pairs]),
        "iou": np.array([iou(a, b) for a, b in pairs]),
        "hd95": np.array([hd95(a, b, spacing) for a, b in pairs]),
    }
    layouts = [
        (p, t),
        (p[:, None], t[:, None]),
        (torch.from_numpy(p), torch.from_numpy(t)),
        (torch.from_numpy(p).float()[:, None], torch.from_numpy(t).float()[:, None]),
        (p.astype(np.uint8), t.astype(np.int64)),
        (torch.from_numpy(p).half(), torch.from_numpy(t).to(torch.int32)),
    ]
    for a, b in layouts:
        for name, fn in (("dice", dice), ("iou", iou)):
            got = fn(a, b)
            assert isinstance(got, np.ndarray) and got.dtype == np.float64 and got.shape == (12,)
            np.testing.assert_array_equal(got, per_image[name])
        got = hd95(a, b, spacing)
        assert isinstance(got, np.ndarray) and got.dtype == np.float64 and got.shape == (12,)
        np.testing.assert_array_equal(got, per_image["hd95"])


def test_single_image_returns_float_and_accepts_grad_tensors():
    p = torch.zeros(6, 6, requires_grad=True)
    t = torch.ones(6, 6)
    for fn in (dice, iou, hd95):
        assert isinstance(fn(p, t), float)
    assert isinstance(dice(p[None], t[None]), np.ndarray)


# ---------------------------------------------------------------------------------------------------------------
# Bad inputs


@pytest.mark.parametrize("fn", [dice, iou, hd95])
def test_bad_inputs(fn):
    good = np.zeros((4, 4), bool)
    with pytest.raises(TypeError, match="`pred`"):
        fn([[0, 1]], good)
    with pytest.raises(TypeError, match="`target`"):
        fn(good, None)
    with pytest.raises(TypeError, match="`pred`"):
        fn(torch.zeros(4, 4, dtype=torch.complex64), good)
    with pytest.raises(TypeError, match="`target`"):
        fn(good, np.array([["a"] * 4] * 4))
    with pytest.raises(ValueError, match="`target` must have the shape of `pred`"):
        fn(good, np.zeros((4, 5), bool))
    with pytest.raises(ValueError, match="`target` must have the shape of `pred`"):
        fn(good[None], good[None, None])
    with pytest.raises(ValueError, match="`pred` must be binary"):
        fn(np.full((4, 4), 2), good)
    with pytest.raises(ValueError, match="`target` must be binary"):
        fn(good, torch.full((4, 4), 0.5))
    nan = np.zeros((4, 4))
    nan[1, 1] = np.nan
    with pytest.raises(ValueError, match="`pred` must not contain NaN"):
        fn(nan, good)
    with pytest.raises(ValueError, match="`pred` must have exactly one channel"):
        fn(np.zeros((2, 3, 4, 4)), np.zeros((2, 3, 4, 4)))
    with pytest.raises(ValueError, match="`pred` must have shape"):
        fn(np.zeros(4), np.zeros(4))
    with pytest.raises(ValueError, match="`pred` must hold at least one image"):
        fn(np.zeros((0, 4, 4)), np.zeros((0, 4, 4)))
    with pytest.raises(ValueError, match="`target` must have H >= 1"):
        fn(good, np.zeros((4, 0)))


def test_bad_spacing():
    m = np.ones((3, 3), bool)
    for bad in [(1.0,), "ab", 1.0, (1.0, "x"), (True, 1.0)]:
        with pytest.raises(TypeError, match="`spacing`"):
            hd95(m, m, spacing=bad)
    for bad in [(0.0, 1.0), (-1.0, 1.0), (float("inf"), 1.0), (1.0, float("nan"))]:
        with pytest.raises(ValueError, match="`spacing`"):
            hd95(m, m, spacing=bad)
    assert hd95(m, m, spacing=[2, np.float32(0.5)]) == 0.0


# ---------------------------------------------------------------------------------------------------------------
# summarize


def test_summarize():
    cases = [
        {"name": "a", "dice": 1.0, "iou": 1.0, "hd95": 2.0},
        {"name": "b", "dice": 0.5, "iou": 0.25, "hd95": math.inf},
        {"name": "c", "dice": 0.0, "iou": 0.0, "hd95": 4.0},
    ]
    assert summarize(cases) == {"dice": 0.5, "iou": pytest.approx(1.25 / 3), "hd95": math.inf}
    assert summarize(cases[::2])["hd95"] == 3.0
    assert all(math.isnan(v) for v in summarize([]).values())
    with pytest.raises(ValueError, match="hd95"):
        summarize([{"dice": 1.0, "iou": 1.0}])


# ---------------------------------------------------------------------------------------------------------------
# Optional: MONAI itself


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_hd95_matches_monai():
    monai_metrics = pytest.importorskip("monai.metrics")
    rng = np.random.default_rng(3)
    for spacing in SPACINGS:
        for _ in range(40):
            h, w = int(rng.integers(2, 40)), int(rng.integers(2, 40))
            p, t = random_pair(rng, h, w)
            if not p.any() or not t.any():
                continue
            want = monai_metrics.compute_hausdorff_distance(
                torch.from_numpy(p)[None, None].float(),
                torch.from_numpy(t)[None, None].float(),
                percentile=95,
                spacing=spacing,
            )
            # MONAI returns float32.
            assert hd95(p, t, spacing) == pytest.approx(float(want), rel=1e-5, abs=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# 3-D masks (spacing of length 3), per-class metrics, the label rule and the registry


def ref_surface3(m: np.ndarray) -> np.ndarray:
    cross = ndimage.generate_binary_structure(3, 1)
    return m ^ ndimage.binary_erosion(m, structure=cross, border_value=0)


def ref_hd95_3d(p: np.ndarray, t: np.ndarray, spacing) -> float:
    sp, st = ref_surface3(p), ref_surface3(t)
    if not sp.any() and not st.any():
        return 0.0
    if not sp.any() or not st.any():
        return math.inf
    d = cdist(np.argwhere(sp) * np.asarray(spacing), np.argwhere(st) * np.asarray(spacing))
    return max(ref_percentile95(d.min(axis=1)), ref_percentile95(d.min(axis=0)))


def random_volume_pair(rng: np.random.Generator, shape) -> tuple[np.ndarray, np.ndarray]:
    kind = rng.integers(0, 4)
    if kind == 0:  # smooth blobs
        field = ndimage.gaussian_filter(rng.standard_normal(shape), rng.uniform(0.7, 2.0))
        p = field > 0.2 * field.std()
    elif kind == 1:
        p = rng.random(shape) < 0.1
    elif kind == 2:  # a box touching the border
        p = np.zeros(shape, bool)
        p[: rng.integers(1, shape[0] + 1), rng.integers(0, shape[1]) :, 1:] = True
    else:
        p = np.zeros(shape, bool)
    r = rng.random()
    if r < 0.4:
        t = np.roll(p, tuple(int(v) for v in rng.integers(-2, 3, 3)), axis=(0, 1, 2))
    elif r < 0.7:
        t = ndimage.binary_dilation(p) if p.any() else rng.random(shape) < 0.05
    else:
        t = p ^ (rng.random(shape) < 0.03)
    return p, t


SPACINGS_3D = [(1.0, 1.0, 1.0), (0.8, 0.8, 2.5), (3.0, 0.5, 1.2)]
CASES_3D = [random_volume_pair(np.random.default_rng(10 + i), (12, 10, 6)) for i in range(24)]


@pytest.mark.parametrize("spacing", SPACINGS_3D)
def test_hd95_3d_matches_brute_force(spacing):
    for p, t in CASES_3D:
        want = ref_hd95_3d(p, t, spacing)
        got = hd95(p, t, spacing=spacing)
        assert isinstance(got, float)
        assert got == pytest.approx(want, rel=1e-12, abs=1e-12) or (math.isinf(want) and got == math.inf)


def test_dice_iou_surface_3d():
    for p, t in CASES_3D:
        d_ref, j_ref = ref_dice_iou(p, t)
        assert dice(p, t, spacing=(1, 1, 1)) == pytest.approx(d_ref, rel=1e-12)
        assert iou(p, t, spacing=(2.0, 1.0, 0.5)) == pytest.approx(j_ref, rel=1e-12)
        np.testing.assert_array_equal(surface(p, ndim=3), ref_surface3(p))


def test_3d_batches_and_layouts():
    p = np.stack([a for a, _ in CASES_3D[:5]])
    t = np.stack([b for _, b in CASES_3D[:5]])
    sp = (0.8, 0.8, 2.5)
    want = np.array([hd95(a, b, sp) for a, b in CASES_3D[:5]])
    for a, b in [(p, t), (p[:, None], t[:, None]), (torch.from_numpy(p).float(), torch.from_numpy(t).int())]:
        np.testing.assert_array_equal(hd95(a, b, sp), want)
        assert dice(a, b, sp).shape == (5,)
    with pytest.raises(ValueError, match=r"\[D,H,W\]"):
        hd95(p[0, 0], t[0, 0], sp)  # 2-D masks with a 3-D spacing
    with pytest.raises(ValueError, match="exactly one channel"):
        dice(np.zeros((2, 2, 3, 3, 3)), np.zeros((2, 2, 3, 3, 3)), spacing=sp)
    # Without a 3-D spacing a [D,H,W] array is a batch of 2-D images.
    assert hd95(p[0], t[0]).shape == (12,)


def _monai_hd95(p, t, spacing):
    from monai.metrics import compute_hausdorff_distance

    return float(compute_hausdorff_distance(torch.from_numpy(p)[None, None].float(),
                                            torch.from_numpy(t)[None, None].float(), percentile=95,
                                            spacing=list(spacing)))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_3d_matches_monai():
    monai_metrics = pytest.importorskip("monai.metrics")
    rng = np.random.default_rng(7)
    for spacing in SPACINGS_3D:
        for _ in range(8):
            p, t = random_volume_pair(rng, (14, 11, 7))
            if not p.any() or not t.any():
                continue
            assert hd95(p, t, spacing) == pytest.approx(_monai_hd95(p, t, spacing), rel=1e-5, abs=1e-5)
            want_dice = monai_metrics.compute_dice(torch.from_numpy(p)[None, None].float(),
                                                   torch.from_numpy(t)[None, None].float())
            assert dice(p, t, spacing) == pytest.approx(float(want_dice), rel=1e-6)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_per_class_matches_monai_2d_and_3d():
    monai_metrics = pytest.importorskip("monai.metrics")
    from monai.networks.utils import one_hot

    rng = np.random.default_rng(8)
    for shape, spacing in [((20, 17), (0.7, 1.9)), ((12, 10, 6), (0.8, 0.8, 2.5))]:
        field = ndimage.gaussian_filter(rng.standard_normal(shape), 1.5)
        gt = np.digitize(field, np.quantile(field, [0.5, 0.8]))  # labels 0, 1, 2
        pred = np.roll(gt, 1, axis=0)
        pred[(rng.random(shape) < 0.02)] = 2
        got = per_class_metrics(pred, gt, classes=[1, 2], spacing=spacing)
        oh_p = one_hot(torch.from_numpy(pred)[None, None], 3)
        oh_t = one_hot(torch.from_numpy(gt)[None, None], 3)
        want_hd = monai_metrics.compute_hausdorff_distance(oh_p, oh_t, include_background=False, percentile=95,
                                                           spacing=list(spacing))[0]
        want_dice = monai_metrics.compute_dice(oh_p, oh_t, include_background=False)[0]
        for i, c in enumerate(("1", "2")):
            assert got[c]["hd95"] == pytest.approx(float(want_hd[i]), rel=1e-5, abs=1e-5)
            assert got[c]["dice"] == pytest.approx(float(want_dice[i]), rel=1e-6)
            assert got[c]["iou"] == pytest.approx(iou(pred == int(c), gt == int(c), spacing=spacing))


def test_per_class_conventions_and_errors():
    gt = np.zeros((5, 6, 4), np.uint8)
    gt[1:3, 1:3, 1:3] = 1
    res = per_class_metrics(gt, gt, classes=range(1, 4), spacing=(1.0, 2.0, 3.0))
    assert list(res) == ["1", "2", "3"]
    assert res["1"] == {"dice": 1.0, "iou": 1.0, "hd95": 0.0}
    assert res["3"] == {"dice": 1.0, "iou": 1.0, "hd95": 0.0}  # absent from both
    res = per_class_metrics(torch.zeros(5, 6, 4), gt.astype(float), classes=[1], spacing=(1.0, 2.0, 3.0))
    assert res["1"]["hd95"] == math.inf and res["1"]["dice"] == 0.0
    assert per_class_metrics(gt[0], gt[0], [1])["1"]["dice"] == 1.0  # 2-D, unit spacing
    with pytest.raises(ValueError, match="`spacing` must have one entry per axis"):
        per_class_metrics(gt, gt, [1], spacing=(1.0, 1.0))
    with pytest.raises(ValueError, match="`gt_labels` must have the shape"):
        per_class_metrics(gt, gt[:4], [1])
    with pytest.raises(ValueError, match="integer labels"):
        per_class_metrics(gt + 0.5, gt, [1])
    with pytest.raises(ValueError, match="`classes`"):
        per_class_metrics(gt, gt, [])


def test_labels_from_probs():
    probs = np.array([[[0.9, 0.2, 0.6, 0.5]], [[0.05, 0.7, 0.6, 0.5]]], np.float32)  # [K=2, 1, 4]
    np.testing.assert_array_equal(labels_from_probs(probs), [[1, 2, 1, 0]])
    got = labels_from_probs(torch.from_numpy(probs)[None].repeat(3, 1, 1, 1))
    assert got.dtype == torch.int64 and got.shape == (3, 1, 4)
    assert got.tolist() == [[[1, 2, 1, 0]]] * 3
    assert labels_from_probs(probs, threshold=0.8).tolist() == [[1, 0, 0, 0]]
    # K = 1 is the binary rule probs > threshold.
    one = torch.rand(2, 1, 5, 5)
    assert torch.equal(labels_from_probs(one), (one[:, 0] > 0.5).long())
    with pytest.raises(ValueError, match="`probs`"):
        labels_from_probs(np.zeros((4, 4)))


def test_registry_drives_summarize(monkeypatch):
    assert set(metrics.METRICS) == {"dice", "iou", "hd95"}
    cases = [
        {"name": "a", "dice": 1.0, "iou": 1.0, "hd95": 0.0,
         "per_class": {"1": {"dice": 1.0, "iou": 1.0, "hd95": 0.0}, "2": {"dice": 0.5, "iou": 0.25, "hd95": 2.0}}},
        {"name": "b", "dice": 0.5, "iou": 0.5, "hd95": 4.0,
         "per_class": {"1": {"dice": 0.0, "iou": 0.0, "hd95": 6.0}, "2": {"dice": 1.0, "iou": 1.0, "hd95": 2.0}}},
    ]
    out = summarize(cases)
    assert out["per_class"] == {"1": {"dice": 0.5, "iou": 0.5, "hd95": 3.0}, "2": {"dice": 0.75, "iou": 0.625,
                                                                                     "hd95": 2.0}}
    assert out["dice"] == 0.75
    monkeypatch.setitem(metrics.METRICS, "volume_diff", lambda p, t, spacing=None: 0.0)
    with pytest.raises(ValueError, match="volume_diff"):
        summarize(cases)
