"""spadfast.evaluate: binary PNG folders keep today's report exactly; multi-class PNGs and NIfTI label maps get
per-class metrics (3-D, millimetres from the header), and mismatches are ValueErrors naming the files."""

import json
import math
import shutil

import cv2
import nibabel as nib
import numpy as np
import pytest

from spadfast.evaluate import evaluate_folders, format_table
from spadfast.metrics import dice, hd95, iou, per_class_metrics
from spadfast.volumes import write_demo_volumes, write_nifti


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


def test_binary_pngs_keep_todays_report(tmp_path):
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
                               "per_class": {"1": {"dice": 1.0, "iou": 1.0, "hd95": 0.0},
                                             "2": {"dice": 1.0, "iou": 1.0, "hd95": 0.0}}}
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
    assert [list(c["per_class"]) for c in report["cases"]] == [["1", "2", "3"]] * 2
    assert report["cases"][0]["per_class"]["3"] == {"dice": 1.0, "iou": 1.0, "hd95": 0.0}  # absent from both
    assert report["cases"][1]["per_class"]["3"]["hd95"] == math.inf


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
