"""The SPAD study's per-image scores against direct computations, and checkpoint evaluation with common noise."""

import itertools

import numpy as np
import pytest

from spadfast.ops.blobs import blob_masks
from spadfast.study.grid_eval import STUDY_METRICS, boundary_f1, evaluate_checkpoint, image_scores, spurious_components


def _blobs(seed: int, shape=(23, 29)) -> np.ndarray:
    return blob_masks(shape, seed=seed, cell=7, threshold=0.65).numpy()


def _boundary_brute(m):
    h, w = m.shape
    out = np.zeros_like(m)
    for y, x in itertools.product(range(h), range(w)):
        if m[y, x]:
            nb = [(y + dy, x + dx) for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1))
                  if 0 <= y + dy < h and 0 <= x + dx < w]
            out[y, x] = any(not m[q] for q in nb)
    return out


def _f1_brute(p, g, tol=1.0):
    bp, bg = np.argwhere(_boundary_brute(p)), np.argwhere(_boundary_brute(g))
    if len(bp) == 0 and len(bg) == 0:
        return 1.0
    if len(bp) == 0 or len(bg) == 0:
        return 0.0
    d = np.sqrt(((bp[:, None, :] - bg[None, :, :]) ** 2).sum(-1))
    prec, rec = (d.min(1) <= tol).mean(), (d.min(0) <= tol).mean()
    return 0.0 if prec + rec == 0 else 2 * prec * rec / (prec + rec)


@pytest.mark.parametrize("seed", range(12))
def test_boundary_f1_matches_a_brute_force_count(seed):
    p, g = _blobs(seed), _blobs(seed + 100)
    assert boundary_f1(p, g) == pytest.approx(_f1_brute(p, g))
    assert boundary_f1(g, g) == 1.0


def test_spurious_components_count_predictions_away_from_the_truth():
    gt = np.zeros((20, 20), bool)
    gt[2:6, 2:6] = True
    pred = np.zeros_like(gt)
    pred[3:5, 3:9] = True  # overlaps the truth
    pred[12:14, 12:14] = True  # spurious
    pred[17, 1] = True  # spurious, one pixel
    assert spurious_components(pred, gt) == 2
    assert spurious_components(np.zeros_like(gt), gt) == 0


def test_calibration_scores_match_direct_computations():
    rng = np.random.default_rng(0)
    gt = _blobs(3, (31, 27))
    prob = np.clip(gt * 0.7 + rng.random(gt.shape) * 0.3, 0, 1)
    s = image_scores(prob, gt)
    assert set(s) == set(STUDY_METRICS)
    assert s["brier"] == pytest.approx(((prob - gt) ** 2).mean())
    bins = np.minimum((prob * 10).astype(int), 9)
    ece = sum(abs(prob[bins == b].sum() - gt[bins == b].sum()) for b in range(10)) / prob.size
    assert s["ece"] == pytest.approx(ece)
    edge = _boundary_brute(gt)
    e = np.argwhere(edge)
    near = np.array([[np.sqrt(((e - [y, x]) ** 2).sum(1)).min() <= 3 for x in range(gt.shape[1])]
                     for y in range(gt.shape[0])])
    assert s["brier_band"] == pytest.approx(((prob[near] - gt[near]) ** 2).mean())
    assert np.isnan(image_scores(prob, np.zeros_like(gt))["brier_band"])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from spadfast import SPADTrainer
    from spadfast.data.synthetic import write_synthetic_folder

    from ..helpers import tiny_config

    root = tmp_path_factory.mktemp("study_eval")
    write_synthetic_folder(root / "data", 5, 16, seed=1)
    trainer = SPADTrainer(tiny_config(train_steps=2))
    trainer.fit()
    trainer.save(root / "run")
    return root


def test_evaluate_checkpoint_gives_every_pair_and_common_noise(tiny_run):
    data = tiny_run / "data"
    recs = evaluate_checkpoint(tiny_run / "run", data / "images", data / "masks", steps=(1, 3), ensembles=(1, 2))
    assert [(r["steps"], r["ensemble"]) for r in recs] == [(1, 1), (1, 2), (3, 1), (3, 2)]
    assert all(len(r["cases"]) == 5 for r in recs)
    # noise keyed per image name: the batch an image sits in does not change its scores
    again = evaluate_checkpoint(tiny_run / "run", data / "images", data / "masks", steps=(1, 3), ensembles=(1, 2),
                                batch_size=2)
    for r, q in zip(recs, again):
        for a, b in zip(r["cases"], q["cases"]):
            assert a["name"] == b["name"]
            for k in STUDY_METRICS:  # batched convolutions round differently: equal up to float32 noise
                assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-5), (a["name"], k)


def test_aurc_in_image_scores_uses_the_given_uncertainty():
    from spadfast.evaluation.calibration import aurc

    gt = _blobs(5)
    prob = np.clip(gt * 0.8 + np.random.default_rng(1).random(gt.shape) * 0.3, 0, 1)
    assert image_scores(prob, gt)["aurc"] == pytest.approx(aurc(prob * (1 - prob), (prob > 0.5) != gt))
    u = np.random.default_rng(2).random(gt.shape)
    assert image_scores(prob, gt, uncertainty=u)["aurc"] == pytest.approx(aurc(u, (prob > 0.5) != gt))
    assert image_scores(prob, gt, ece_bins=3)["ece"] != image_scores(prob, gt, ece_bins=20)["ece"]


def test_grid_has_a_fusion_axis_timings_and_ambiguity_scores(tiny_run):
    data = tiny_run / "data"
    recs = evaluate_checkpoint(tiny_run / "run", data / "images", data / "masks", steps=(3,), ensembles=(1, 2),
                               fusions=("none", "uncertainty"), annotator_dirs=[data / "masks", data / "masks"],
                               shared=False)
    assert [(r["steps"], r["step_fusion"], r["ensemble"]) for r in recs] == [
        (3, "none", 1), (3, "none", 2), (3, "uncertainty", 1), (3, "uncertainty", 2)]
    assert all(r["seconds_per_image"] > 0 for r in recs)
    for case in recs[0]["cases"] + recs[2]["cases"]:  # one member against two identical annotators
        assert case["hm_iou"] == pytest.approx(case["iou"])
        assert case["ged"] == pytest.approx(2 * (1 - case["iou"]))
    assert {"aurc", "ged", "hm_iou"} <= set(recs[1]["mean"])
    assert any(a["dice"] != b["dice"] or a["brier"] != b["brier"] for a, b in zip(recs[1]["cases"], recs[3]["cases"]))
    with pytest.raises(ValueError, match="`fusions`"):
        evaluate_checkpoint(tiny_run / "run", data / "images", data / "masks", fusions=("max",))
    with pytest.raises(ValueError, match="`uncertainty`"):
        evaluate_checkpoint(tiny_run / "run", data / "images", data / "masks", uncertainty="entropy")


def test_whole_image_scoring_equals_the_model_size_path_on_one_window_and_tiles_larger_images(tiny_run, tmp_path):
    data = tiny_run / "data"
    kw = dict(steps=(2,), ensembles=(2,), uncertainty="std")
    small = evaluate_checkpoint(tiny_run / "run", data / "images", data / "masks", **kw)
    whole = evaluate_checkpoint(tiny_run / "run", data / "images", data / "masks", whole_image=True, tile=8, **kw)
    for a, b in zip(small[0]["cases"], whole[0]["cases"]):  # a 16 px image is one window keyed as the image
        for k in STUDY_METRICS:
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-5, nan_ok=True), k
    import cv2

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        cv2.imwrite(str(tmp_path / "images" / f"big{i}.png"), rng.integers(0, 255, (37, 29), dtype=np.uint8))
        cv2.imwrite(str(tmp_path / "masks" / f"big{i}.png"), _blobs(i, (37, 29)).astype(np.uint8) * 255)
    rec = evaluate_checkpoint(tiny_run / "run", tmp_path / "images", tmp_path / "masks", whole_image=True, tile=8,
                              **kw)[0]
    for case in rec["cases"]:
        assert 0 <= case["dice_nonempty_tiles"] <= 1 and 0 <= case["empty_tile_fp_rate"] <= 1
    with pytest.raises(ValueError, match="whole_image"):
        evaluate_checkpoint(tiny_run / "run", tmp_path / "images", tmp_path / "masks", **kw)


def test_whole_images_stitch_every_member_for_the_ambiguity_scores(tiny_run):
    """GED and HM-IoU of whole images: each member is stitched over the windows as the mean is, so on images of one
    window they equal the model-size path's."""
    data = tiny_run / "data"
    kw = dict(steps=(2,), ensembles=(3,), annotator_dirs=[data / "masks", data / "masks"])
    small = evaluate_checkpoint(tiny_run / "run", data / "images", data / "masks", **kw)[0]["cases"]
    whole = evaluate_checkpoint(tiny_run / "run", data / "images", data / "masks", whole_image=True, tile=8,
                                **kw)[0]["cases"]
    for a, b in zip(small, whole):
        assert a["ged"] == pytest.approx(b["ged"], abs=1e-6) and a["hm_iou"] == pytest.approx(b["hm_iou"], abs=1e-6)


def test_calibration_against_a_probability_map(tiny_run, tmp_path):
    from spadfast.io.files import read_mask

    data = tiny_run / "data"
    rng = np.random.default_rng(3)
    stems = sorted(p.stem for p in (data / "masks").glob("*.png"))
    maps = {}
    for stem in stems:
        maps[stem] = rng.random(read_mask(data / "masks" / f"{stem}.png").shape)
        np.save(tmp_path / f"{stem}.npy", maps[stem])
    rec = evaluate_checkpoint(tiny_run / "run", data / "images", data / "masks", steps=(2,), ensembles=(2,),
                              prob_dir=tmp_path)[0]
    hard = evaluate_checkpoint(tiny_run / "run", data / "images", data / "masks", steps=(2,), ensembles=(2,))[0]
    for case, plain in zip(rec["cases"], hard["cases"]):
        assert case["brier"] == plain["brier"]  # the mask-based scores are unchanged
        assert 0 <= case["brier_prob"] <= 1 and 0 <= case["ece_prob"] <= 1
        assert case["brier_prob"] != pytest.approx(case["brier"])
    assert {"brier_prob", "ece_prob", "brier_prob_band", "ece_prob_band"} <= set(rec["mean"])
    # a map equal to the mask gives the mask-based scores exactly
    for stem in stems:
        np.save(tmp_path / f"{stem}.npy", read_mask(data / "masks" / f"{stem}.png").astype(np.float64))
    same = evaluate_checkpoint(tiny_run / "run", data / "images", data / "masks", steps=(2,), ensembles=(2,),
                               prob_dir=tmp_path)[0]
    for case in same["cases"]:
        assert case["brier_prob"] == pytest.approx(case["brier"]) and case["ece_prob"] == pytest.approx(case["ece"])
        assert case["brier_prob_band"] == pytest.approx(case["brier_band"], nan_ok=True)
    np.save(tmp_path / f"{stems[0]}.npy", np.full((3, 3), 0.5))
    with pytest.raises(ValueError, match="probability map of the mask's shape"):
        evaluate_checkpoint(tiny_run / "run", data / "images", data / "masks", steps=(1,), ensembles=(1,),
                            prob_dir=tmp_path)


def test_several_runs_are_scored_as_one_ensemble(tiny_run):
    data = tiny_run / "data"
    runs = [tiny_run / "run", tiny_run / "run"]
    rec = evaluate_checkpoint(runs, data / "images", data / "masks", steps=(2,), ensembles=(2,))[0]
    one = evaluate_checkpoint(tiny_run / "run", data / "images", data / "masks", steps=(2,), ensembles=(1,))[0]
    assert len(rec["cases"]) == len(one["cases"]) and all(0 <= c["dice"] <= 1 for c in rec["cases"])
    with pytest.raises(ValueError, match="`ensembles` must be >= the 2 runs"):
        evaluate_checkpoint(runs, data / "images", data / "masks", steps=(2,), ensembles=(1,))


@pytest.mark.parametrize("whole_image", [False, True])
def test_shared_pass_scores_equal_separate_sampling(tiny_run, whole_image):
    """One pass per step count (the default) scores every (fusion, ensemble) cell as sampling it on its own does."""
    data = tiny_run / "data"
    kw = dict(steps=(1, 2, 3), ensembles=(1, 3), fusions=("none", "mean", "uncertainty"), whole_image=whole_image,
              annotator_dirs=[data / "masks", data / "masks"], tile=8)
    shared = evaluate_checkpoint(tiny_run / "run", data / "images", data / "masks", **kw)
    alone = evaluate_checkpoint(tiny_run / "run", data / "images", data / "masks", shared=False, **kw)
    assert [(r["steps"], r["step_fusion"], r["ensemble"]) for r in shared] == [
        (r["steps"], r["step_fusion"], r["ensemble"]) for r in alone]
    assert all(r["seconds_per_image"] is None and r["pass_seconds_per_image"] > 0 for r in shared)
    assert all(r["seconds_per_image"] > 0 for r in alone)
    names = [k for k in alone[0]["cases"][0] if k != "name"]
    assert {"ged", "hm_iou", "aurc"} <= set(names) and (not whole_image or "dice_nonempty_tiles" in names)
    for r, q in zip(shared, alone):
        for a, b in zip(r["cases"], q["cases"]):
            for k in names:  # other batch compositions round differently: equal up to float32 noise
                # AURC ranks pixels by uncertainty: on this untrained model most pixels nearly tie, and 1e-6 of
                # rounding reorders them (the ranking, not the maps, moves)
                tol = dict(abs=1e-3) if k == "aurc" else dict(rel=1e-4, abs=1e-5)
                assert a[k] == pytest.approx(b[k], nan_ok=True, **tol), (r["step_fusion"], k)
    # the fusions differ from each other, so equality above is not one repeated cell
    assert any(a["brier"] != b["brier"] for a, b in zip(shared[-1]["cases"], shared[-5]["cases"]))
