"""spadfast.evaluation.evaluate: binary PNG folders get one score per case and no per-class entries; multi-class PNGs and
NIfTI label maps get per-class metrics (3-D, millimetres from the header), and mismatches are ValueErrors naming
the files."""

import json
import math
import shutil

import cv2
import nibabel as nib
import numpy as np
import pytest

from spadfast.data.synthetic_volumes import write_demo_volumes
from spadfast.evaluation.evaluate import evaluate_folders, format_table
from spadfast.evaluation.metrics import dice, hd95, iou, per_class_metrics
from spadfast.io.nifti import write_nifti


def write_pngs(folder, maps):
    folder.mkdir(parents=True, exist_ok=True)
    for name, m in maps.items():
        cv2.imwrite(str(folder / name), m.astype(np.uint8))
    return folder


def two_class_map(shift=0):
    m = np.zeros((16, 20), np.uint8)
    m[3:10, 4:12] = 1
    m[9:14, 12 + shift : 17 + shift] = 2
    return m


def test_binary_pngs_score_each_case_without_per_class_entries(tmp_path):
    g = {"a.png": np.zeros((12, 12)), "b.png": np.zeros((12, 12))}
    g["a.png"][2:7, 2:7] = 255
    g["b.png"][5:9, 1:4] = 255
    p = {k: np.roll(v, 1, axis=1) for k, v in g.items()}
    p["b.png"][:] = 0
    report = evaluate_folders(write_pngs(tmp_path / "p", p), write_pngs(tmp_path / "g", g))
    assert [set(c) for c in report["cases"]] == [{"name", "dice", "iou", "hd95"}] * 2
    assert set(report["mean"]) == {"dice", "iou", "hd95"}
    a_p, a_g = p["a.png"] > 0, g["a.png"] > 0
    assert report["cases"][0] == {"name": "a.png", "dice": dice(a_p, a_g), "iou": iou(a_p, a_g),
                                  "hd95": hd95(a_p, a_g)}
    assert report["cases"][1]["hd95"] == math.inf and report["mean"]["hd95"] == math.inf
    spaced = evaluate_folders(tmp_path / "p", tmp_path / "g", spacing=(0.5, 2.0))
    assert spaced["cases"][0]["hd95"] == hd95(a_p, a_g, spacing=(0.5, 2.0))
    assert "mean" in format_table(report) and "[1]" not in format_table(report)
    json.loads(json.dumps(report))


def test_multiclass_pngs(tmp_path):
    g = {"x.png": two_class_map(), "y.png": two_class_map()}
    p = {"x.png": two_class_map(shift=1), "y.png": two_class_map()}
    p["y.png"][p["y.png"] == 2] = 0  # class 2 missed
    report = evaluate_folders(write_pngs(tmp_path / "p", p), write_pngs(tmp_path / "g", g), spacing=(1.0, 0.5))
    x = report["cases"][0]
    assert x["name"] == "x.png" and set(x["per_class"]) == {"1", "2"}
    assert x["per_class"] == per_class_metrics(p["x.png"], g["x.png"], [1, 2], spacing=(1.0, 0.5))
    assert x["dice"] == pytest.approx((x["per_class"]["1"]["dice"] + x["per_class"]["2"]["dice"]) / 2)
    y = report["cases"][1]
    assert y["per_class"]["2"] == {"dice": 0.0, "iou": 0.0, "hd95": math.inf}
    mean = report["mean"]
    assert mean["per_class"]["1"]["dice"] == 1.0 * (x["per_class"]["1"]["dice"] + 1.0) / 2
    assert mean["dice"] == pytest.approx((mean["per_class"]["1"]["dice"] + mean["per_class"]["2"]["dice"]) / 2)
    table = format_table(report)
    assert "dice[2]" in table and "class" in table and "inf" in table


def test_volumes_per_class_in_millimetres(tmp_path):
    root = write_demo_volumes(tmp_path / "d", n_cases=1, n_test=2, shape=(16, 14, 6), spacing=(0.8, 0.9, 2.5),
                              num_classes=3, seed=2)
    gt = root / "labelsTs"
    pred = tmp_path / "pred"
    pred.mkdir()
    truths = {}
    for p in sorted(gt.iterdir()):
        img = nib.load(str(p))
        lab = np.asarray(img.dataobj)
        truths[p.name] = lab
        moved = np.roll(lab, 1, axis=2)  # one slice (2.5 mm) off
        write_nifti(pred / p.name, moved, reference=img)
    report = evaluate_folders(pred, gt)
    assert [c["name"] for c in report["cases"]] == ["test_000", "test_001"]
    for case, lab in zip(report["cases"], truths.values()):
        want = per_class_metrics(np.roll(lab, 1, axis=2), lab, [1, 2], spacing=(0.8, 0.9, 2.5))
        assert case["per_class"] == want
        assert case["hd95"] == pytest.approx((want["1"]["hd95"] + want["2"]["hd95"]) / 2)
    assert set(report["mean"]) == {"dice", "iou", "hd95", "per_class"}
    assert 0 < report["mean"]["dice"] < 1 and report["mean"]["hd95"] >= 2.5 - 1e-6
    # a spacing override, and identical folders score perfectly
    iso = evaluate_folders(pred, gt, spacing=(1.0, 1.0, 1.0))
    assert iso["cases"][0]["per_class"] == per_class_metrics(np.roll(truths["test_000.nii.gz"], 1, axis=2),
                                                             truths["test_000.nii.gz"], [1, 2])
    perfect = evaluate_folders(gt, gt)
    assert perfect["mean"] == {"dice": 1.0, "iou": 1.0, "hd95": 0.0,
                               "per_class": {"1": {"dice": 1.0, "iou": 1.0, "hd95": 0.0, "cases": 2},
                                             "2": {"dice": 1.0, "iou": 1.0, "hd95": 0.0, "cases": 2}}}
    assert perfect["hd95_unit"] == "mm" and set(perfect["classes"]) == {"1", "2"}
    assert "dice[1]" in format_table(report)
    with pytest.raises(ValueError, match="`spacing`"):
        evaluate_folders(pred, gt, spacing=(1.0, 1.0))


def test_volume_classes_without_dataset_json(tmp_path):
    aff = np.diag([1.0, 1.0, 2.0, 1.0])
    a = np.zeros((8, 8, 4), np.uint8)
    a[1:4, 1:4, 1:3] = 1
    b = a.copy()
    b[5:7, 5:7, 1:3] = 3  # class 3 only in this case; class 2 nowhere
    for folder, maps in (("g", {"a": a, "b": b}), ("p", {"a": a, "b": a})):
        for name, m in maps.items():
            write_nifti(tmp_path / folder / f"{name}.nii.gz", m, affine=aff)
    report = evaluate_folders(tmp_path / "p", tmp_path / "g")
    assert [list(c["per_class"]) for c in report["cases"]] == [["1"], ["1", "3"]]  # absent from both: not scored
    assert report["cases"][1]["per_class"]["3"]["hd95"] == math.inf and report["cases"][1]["dice"] == 0.5
    assert list(report["classes"]) == ["1", "3"] and report["mean"]["per_class"]["3"]["cases"] == 1
    assert report["mean"]["dice"] == 0.5  # (class 1: 1.0 + class 3: 0.0) / 2


def test_mismatches_name_the_files(tmp_path):
    root = write_demo_volumes(tmp_path / "d", n_cases=1, n_test=2, shape=(10, 10, 4))
    gt = root / "labelsTs"
    pred = tmp_path / "pred"
    shutil.copytree(gt, pred)
    (pred / "test_001.nii.gz").unlink()
    with pytest.raises(ValueError, match="prediction missing .*test_001.nii.gz"):
        evaluate_folders(pred, gt)
    shutil.copy(gt / "test_001.nii.gz", pred / "extra.nii.gz")
    shutil.copy(gt / "test_001.nii.gz", pred / "test_001.nii.gz")
    with pytest.raises(ValueError, match="no ground-truth label map for prediction .*extra.nii.gz"):
        evaluate_folders(pred, gt)
    (pred / "extra.nii.gz").unlink()
    write_nifti(pred / "test_001.nii.gz", np.zeros((10, 10, 5), np.uint8), affine=np.eye(4))
    with pytest.raises(ValueError, match="test_001.nii.gz.*shape"):
        evaluate_folders(pred, gt)
    write_nifti(pred / "test_001.nii.gz", np.zeros((10, 10, 4), np.uint8), affine=np.eye(4))
    with pytest.raises(ValueError, match="different affines"):
        evaluate_folders(pred, gt)
    ref = nib.load(str(gt / "test_001.nii.gz"))
    write_nifti(pred / "test_001.nii.gz", np.full((10, 10, 4), 9, np.uint8), reference=ref)
    with pytest.raises(ValueError, match=r"test_001.nii.gz holds labels \[9\] outside"):
        evaluate_folders(pred, gt)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="holds no .nii.gz"):
        evaluate_folders(empty, gt)
    with pytest.raises(ValueError, match="`gt` folder"):
        evaluate_folders(pred, tmp_path / "nope")
    # PNG sizes
    write_pngs(tmp_path / "pp", {"a.png": np.zeros((4, 5))})
    write_pngs(tmp_path / "gp", {"a.png": np.zeros((4, 6))})
    with pytest.raises(ValueError, match="a.png.*5x4.*a.png.*6x4"):
        evaluate_folders(tmp_path / "pp", tmp_path / "gp")


def test_binary_against_multiclass_png_is_an_error(tmp_path):
    write_pngs(tmp_path / "g", {"x.png": two_class_map()})
    write_pngs(tmp_path / "p", {"x.png": (two_class_map() > 0) * 255})
    with pytest.raises(ValueError, match=r"p/x.png holds the value 255"):
        evaluate_folders(tmp_path / "p", tmp_path / "g")


# ---------------------------------------------------------------------------------------------------------------
# Which classes count: a sweep of label-map pairs against a direct computation


def _pairs(stray):
    """(name, pred, gt) label maps [8,9,4]: classes missing from one side, absent from both, both empty, and a
    prediction that is background but for one voxel of the value ``stray``."""
    def blob(value, box):
        m = np.zeros((8, 9, 4), np.uint8)
        m[box] = value
        return m

    one, two = (slice(1, 4), slice(1, 5), slice(0, 3)), (slice(4, 8), slice(5, 9), slice(1, 4))
    gt_12 = blob(1, one) + blob(2, two)
    shifted = blob(1, (slice(2, 5), slice(1, 5), slice(0, 3)))
    stray_map = np.zeros((8, 9, 4), np.uint8)
    stray_map[7, 0, 0] = stray
    return [
        ("a_missed", blob(1, one), gt_12),  # class 2 missed
        ("b_hallucinated", shifted + blob(3, two), blob(1, one)),  # class 3 only predicted; 2 in neither
        ("c_empty", np.zeros((8, 9, 4), np.uint8), np.zeros((8, 9, 4), np.uint8)),
        ("d_partial", blob(2, two), blob(2, (slice(5, 8), slice(5, 9), slice(1, 4)))),
        ("e_stray", stray_map, blob(1, one)),
    ]


def _by_hand(pairs, spacing):
    """Per case: mean over the classes in either map (none: 1, 1, 0); per class: mean over those cases; overall:
    mean of the per-class means."""
    cases, per_class = {}, {}
    for name, p, g in pairs:
        classes = sorted((set(np.unique(p).tolist()) | set(np.unique(g).tolist())) - {0})
        scores = {}
        for c in classes:
            pc, gc = p == c, g == c
            inter, union = np.logical_and(pc, gc).sum(), np.logical_or(pc, gc).sum()
            scores[c] = {"dice": 2 * inter / (pc.sum() + gc.sum()), "iou": inter / union,
                         "hd95": hd95(pc, gc, spacing=spacing)}
            per_class.setdefault(c, []).append(scores[c])
        cases[name] = {k: np.mean([s[k] for s in scores.values()]) for k in ("dice", "iou", "hd95")} if scores \
            else {"dice": 1.0, "iou": 1.0, "hd95": 0.0}
    class_means = {c: {k: np.mean([s[k] for s in v]) for k in ("dice", "iou", "hd95")} for c, v in per_class.items()}
    overall = {k: np.mean([m[k] for m in class_means.values()]) for k in ("dice", "iou", "hd95")}
    return cases, class_means, overall


def _write_pairs(tmp_path, pairs, kind):
    if kind == "png":  # the middle plane of each volume as a 2-D label map
        write_pngs(tmp_path / "p", {f"{n}.png": p[:, :, 1] for n, p, _ in pairs})
        write_pngs(tmp_path / "g", {f"{n}.png": g[:, :, 1] for n, _, g in pairs})
        return [(f"{n}.png", p[:, :, 1], g[:, :, 1]) for n, p, g in pairs], (1.0, 1.0)
    aff = np.diag([0.7, 0.8, 2.0, 1.0])
    for n, p, g in pairs:
        write_nifti(tmp_path / "d" / "p" / f"{n}.nii.gz", p, affine=aff)
        write_nifti(tmp_path / "d" / "g" / f"{n}.nii.gz", g, affine=aff)
    if kind == "nifti+dataset.json":
        labels = {"0": "background", "1": "liver", "2": "spleen", "3": "kidney"}
        (tmp_path / "d" / "dataset.json").write_text(json.dumps({"labels": labels}))
    return pairs, (0.7, 0.8, 2.0)


def _assert_matches(report, pairs, spacing):
    cases, class_means, overall = _by_hand(pairs, spacing)
    assert [c["name"] for c in report["cases"]] == [n for n, _, _ in pairs]
    for case in report["cases"]:
        assert {k: case[k] for k in ("dice", "iou", "hd95")} == pytest.approx(cases[case["name"]]), case["name"]
    assert sorted(report["mean"]["per_class"], key=int) == [str(c) for c in sorted(class_means)]
    for c, want in class_means.items():
        assert {k: report["mean"]["per_class"][str(c)][k] for k in want} == pytest.approx(want)
    assert {k: report["mean"][k] for k in overall} == pytest.approx(overall)


@pytest.mark.parametrize("kind", ["nifti", "nifti+dataset.json", "png"])
def test_class_means_match_a_direct_computation(tmp_path, kind):
    stray = 7 if kind != "nifti" else 255  # 255 in a PNG label map is refused; 7 is a plausible stray class
    pairs = _pairs(stray)
    if kind == "nifti+dataset.json":  # dataset.json names classes 0..3: a stray label is an error naming it
        pairs_bad, _ = _write_pairs(tmp_path / "bad", pairs, kind)
        with pytest.raises(ValueError, match=r"e_stray\.nii\.gz holds labels \[7\] outside dataset\.json"):
            evaluate_folders(tmp_path / "bad" / "d" / "p", tmp_path / "bad" / "d" / "g")
        pairs = pairs[:-1]
    written, spacing = _write_pairs(tmp_path, pairs, kind)
    root = tmp_path if kind == "png" else tmp_path / "d"
    if kind == "nifti":
        with pytest.warns(UserWarning, match=r"e_stray\.nii\.gz holds the label value 255 and no dataset\.json"):
            report = evaluate_folders(root / "p", root / "g")
    else:
        report = evaluate_folders(root / "p", root / "g")
    _assert_matches(report, written, spacing)
    hallucinated = next(c for c in report["cases"] if c["name"].startswith("b_"))
    assert sorted(hallucinated["per_class"]) == ["1", "3"]  # class 2 is in neither map: not scored
    if kind == "nifti+dataset.json":
        assert report["classes"] == {"1": "liver", "2": "spleen", "3": "kidney"}
    table = format_table(report)
    assert "b_hallucinated" in table and "cases" in table


def test_a_stray_label_does_not_inflate_the_mean(tmp_path):
    gt = np.zeros((6, 6, 3), np.uint8)
    gt[1:4, 1:4, :] = 1
    pred = np.zeros_like(gt)
    pred[5, 5, 2] = 255
    write_nifti(tmp_path / "g" / "x.nii.gz", gt, affine=np.eye(4))
    write_nifti(tmp_path / "p" / "x.nii.gz", pred, affine=np.eye(4))
    with pytest.warns(UserWarning, match=r"p/x\.nii\.gz holds the label value 255"):
        report = evaluate_folders(tmp_path / "p", tmp_path / "g")
    assert report["mean"]["dice"] == 0.0 and report["mean"]["iou"] == 0.0  # class 1 missed, 255 hallucinated
    assert set(report["mean"]["per_class"]) == {"1", "255"}


def test_evaluate_shard_outside_a_process_group_is_refused(tmp_path):
    with pytest.raises(ValueError, match="shard"):
        evaluate_folders(tmp_path, tmp_path, shard=(0, 2))
    with pytest.raises(ValueError, match="shard"):
        evaluate_folders(tmp_path, tmp_path, shard=(1, 1))


def test_gather_or_raise_without_a_process_group():
    from spadfast.runtime.distributed import gather_or_raise

    assert gather_or_raise(lambda: 5) == [5]
    with pytest.raises(KeyError):
        gather_or_raise(lambda: {}["x"])  # not an input error: raised as it is, untouched
    with pytest.raises(ValueError, match="boom"):
        gather_or_raise(lambda: (_ for _ in ()).throw(ValueError("boom")))


def test_one_process_call_inside_a_larger_job_stays_local(tmp_path, monkeypatch):
    """Default shard (0, 1) on one rank of a process group: no collective (the other ranks are not scoring)."""
    from spadfast.runtime import distributed

    for sub in ("p", "g"):
        (tmp_path / sub).mkdir()
        cv2.imwrite(str(tmp_path / sub / "a.png"), np.eye(8, dtype=np.uint8) * 255)
    monkeypatch.setattr(distributed, "world_size", lambda: 4)
    monkeypatch.setattr(distributed, "rank", lambda: 2)
    monkeypatch.setattr(distributed, "gather_or_raise", lambda work: pytest.fail("a collective was entered"))
    assert evaluate_folders(tmp_path / "p", tmp_path / "g")["mean"]["dice"] == 1.0


def test_ignore_equal_to_the_foreground_of_binary_masks_is_refused(tmp_path, capsys):
    """Issue 29.14: --ignore 255 on 0/255 masks would ignore every foreground pixel (Dice 0 everywhere)."""
    from spadfast.cli import main as cli_main

    g = {"a.png": np.zeros((12, 12)), "b.png": np.zeros((12, 12))}
    g["a.png"][2:7, 2:7] = 255
    g["b.png"][5:9, 1:4] = 255
    pred, gt = write_pngs(tmp_path / "p", g), write_pngs(tmp_path / "g", g)
    with pytest.raises(ValueError, match=r"--ignore 255: every nonzero ground-truth pixel holds 255 \(e.g. .*a\.png"):
        evaluate_folders(pred, gt, ignore=255)
    assert cli_main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--ignore", "255"]) == 2
    err = capsys.readouterr().err
    assert "drop --ignore" in err and len(err.strip().splitlines()) == 1
    assert evaluate_folders(pred, gt)["mean"]["dice"] == 1.0
    labelled = {k: np.where(v > 0, 1, 0) for k, v in g.items()}  # 0/1 masks with 255 where nobody annotated
    labelled["b.png"][0, :] = 255
    report = evaluate_folders(write_pngs(tmp_path / "p1", {k: np.where(v == 1, 255, 0) for k, v in labelled.items()}),
                              write_pngs(tmp_path / "g1", labelled), ignore=255)
    assert report["mean"]["dice"] == 1.0


def test_ignore_equal_to_the_foreground_of_binary_label_volumes_is_refused(tmp_path):
    """Issue 29.14 on volumes: --ignore 255 on 0/255 NIfTI label maps would ignore every foreground voxel; refused
    before any case is scored, naming a file. A set where 255 marks unannotated voxels beside classes scores."""
    from spadfast.io.nifti import write_nifti

    aff = np.diag([1.0, 1.0, 2.0, 1.0])
    binary = np.zeros((10, 10, 4), np.uint8)
    binary[2:6, 3:7, 1:3] = 255
    for folder in ("p", "g"):
        write_nifti(tmp_path / folder / "case_a.nii.gz", binary, affine=aff)
        write_nifti(tmp_path / folder / "case_b.nii.gz", np.roll(binary, 2, axis=0), affine=aff)
    with pytest.raises(ValueError, match=r"--ignore 255: every nonzero ground-truth voxel holds 255 \(e.g. .*case_a"):
        evaluate_folders(tmp_path / "p", tmp_path / "g", ignore=255)
    labels = np.where(binary > 0, 1, 0).astype(np.uint8)
    labels[0, :, :] = 255  # not annotated
    for folder in ("p1", "g1"):
        write_nifti(tmp_path / folder / "case_a.nii.gz", np.where(labels == 255, 0, labels).astype(np.uint8)
                    if folder == "p1" else labels, affine=aff)
    assert evaluate_folders(tmp_path / "p1", tmp_path / "g1", ignore=255)["mean"]["dice"] == 1.0
