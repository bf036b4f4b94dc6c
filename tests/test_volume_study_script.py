"""scripts/volume_study.py: the MNI read from a wheel-like zip (members missing: one ValueError naming it), area
averaging, the label rule, the slab split's guard gap, the arm table, the prepared Decathlon sets and baselines, and a
2-step smoke run of one arm of each kind through run / evaluate / collect / report (resumable: a rerun trains
nothing)."""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import volume_study as vs  # noqa: E402

MEMBERS = tuple(vs.MEMBERS.values())
SHAPE = (80, 80, 64)  # 1 mm: 40 x 40 x 32 at 2 mm, three slabs; in-plane wider than the 3-D patch


def _maps(shape=SHAPE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A T1-like uint8 volume and uint8 0..255 GM / WM maps: a WM core in a GM shell, filling most of the grid."""
    grids = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    r = np.sqrt(sum(((g - s / 2) / (s / 2)) ** 2 for g, s in zip(grids, shape)))
    wm = np.clip((0.6 - r) * 8, 0, 1)
    gm = np.clip((0.95 - r) * 8, 0, 1) - wm
    t1 = np.clip(gm * 160 + wm * 210 + np.random.default_rng(0).normal(5, 2, shape), 0, 255)
    return t1.astype(np.uint8), np.round(gm * 255).astype(np.uint8), np.round(wm * 255).astype(np.uint8)


def _wheel(folder: Path, members=MEMBERS) -> Path:
    """A stand-in for the nilearn wheel: a zip holding small NIfTI files under the wheel's member names."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / "nilearn-0-py3-none-any.whl"
    affine = np.array([[1, 0, 0, -40], [0, 1, 0, -40], [0, 0, 1, -30], [0, 0, 0, 1]], np.float64)
    with zipfile.ZipFile(wheel, "w") as z:
        for member, arr in zip(members, _maps()):
            path = folder / Path(member).name
            nib.save(nib.Nifti1Image(arr, affine), str(path))
            z.write(path, member)
    return wheel


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("volume_study")
    vs.prepare(out, _wheel(out / "source"), log=lambda m: None)
    return out


def test_read_mni_scales_the_maps_and_refuses_a_zip_without_the_members(tmp_path):
    t1, gm, wm, affine = vs.read_mni(_wheel(tmp_path / "good"))
    _, gm_ref, wm_ref = _maps()
    assert t1.shape == gm.shape == wm.shape == SHAPE and t1.dtype == np.float32
    np.testing.assert_allclose(gm, gm_ref / 255.0, atol=1e-6)
    np.testing.assert_allclose(wm, wm_ref / 255.0, atol=1e-6)
    assert affine[0, 3] == -40
    members = (vs.MEMBERS["t1"], vs.MEMBERS["gm"], "nilearn/other.nii.gz")
    with pytest.raises(ValueError, match="holds no " + vs.MEMBERS["wm"]):
        vs.read_mni(_wheel(tmp_path / "bad", members))
    assert vs.main(["prepare", "--out", str(tmp_path / "s"), "--nilearn-wheel",
                    str(tmp_path / "bad" / "nilearn-0-py3-none-any.whl")]) == 2


def test_area_averaging_and_its_affine():
    v = np.arange(5 * 4 * 6, dtype=np.float32).reshape(5, 4, 6)
    got = vs.downsample2(v)
    assert got.shape == (2, 2, 3) and got.dtype == np.float32
    assert got[1, 0, 2] == pytest.approx(v[2:4, 0:2, 4:6].mean())
    a = np.diag([1.0, 1.0, 1.0, 1.0])
    a[:3, 3] = [-10, -20, -30]
    a2 = vs.affine2(a)
    np.testing.assert_allclose(a2[:3, :3], np.eye(3) * 2)
    np.testing.assert_allclose(a2[:3, 3], [-9.5, -19.5, -29.5])  # the centre of the first 2x2x2 block


def test_label_rule_is_the_argmax_over_background_gm_and_wm():
    gm = np.array([0.0, 0.5, 0.3, 0.4, 0.2, 1 / 3])
    wm = np.array([0.0, 0.1, 0.6, 0.4, 0.2, 1 / 3])
    # background = 1 - gm - wm: 1, 0.4, 0.1, 0.2, 0.6, 1/3 (a three-way tie goes to the lowest label)
    assert vs.tissue_labels(gm, wm).tolist() == [0, 1, 2, 1, 0, 0]
    assert vs.tissue_labels(gm, wm).dtype == np.uint8


@pytest.mark.parametrize("n_slices", [30, 78, 100])
def test_no_training_slab_lies_within_the_guard_gap_of_a_held_out_slab(n_slices):
    starts = vs.slab_starts(n_slices)
    train, test = vs.split_slabs(len(starts))
    assert train and test and not set(train) & set(test)
    assert all(s + vs.SLAB <= n_slices for s in starts)
    for a in train:
        for b in test:
            lo, hi = sorted((starts[a], starts[b]))
            assert hi - (lo + vs.SLAB) >= vs.GUARD  # slices strictly between the two slabs
    with pytest.raises(ValueError, match="cannot hold out"):
        vs.split_slabs(1)


def test_prepared_sets_follow_the_decathlon_layout_and_the_split(study):
    brain = study / "data" / "brain"
    meta = json.loads((brain / "dataset.json").read_text())
    info = json.loads((brain / "split.json").read_text())
    assert meta["modality"] == {"0": "MR"} and meta["labels"] == {"0": "background", "1": "GM", "2": "WM"}
    assert info["train"] == ["slab00", "slab02"] and info["test"] == ["slab01"]
    for case in info["train"]:
        img = nib.load(str(brain / "imagesTr" / f"{case}_0000.nii.gz"))
        lab = np.asarray(nib.load(str(brain / "labelsTr" / f"{case}.nii.gz")).dataobj)
        assert img.shape == lab.shape and img.shape[2] == vs.SLAB
        np.testing.assert_allclose(img.header.get_zooms(), (2, 2, 2))
        assert set(np.unique(lab)) == {0, 1, 2}
    ranges = {c: info["subjects"][c]["z"] for c in info["subjects"]}
    for a in info["train"]:
        for b in info["test"]:
            (_, hi_a), (lo_b, _) = sorted((ranges[a], ranges[b]))
            assert lo_b - hi_a >= vs.GUARD
    assert info["intensity_window"][1] > info["intensity_window"][0]
    ct = json.loads((study / "data" / "ct" / "dataset.json").read_text())
    assert ct["modality"] == {"0": "CT"} and len(ct["labels"]) == 3
    for d in vs.DATASETS:
        base = json.loads((study / "data" / d / vs.BASELINE_FILE).read_text())
        assert 0 <= base["t1"] < base["t2"] < 256 and sorted(base["order"]) == [0, 1, 2]
        assert 0 <= base["report"]["mean"]["dice"] <= 1
    assert json.loads((brain / vs.BASELINE_FILE).read_text())["report"]["mean"]["dice"] > 0.8  # separable classes


def test_the_clean_slabs_are_the_brain_slabs_without_their_transform(study):
    brain, clean = study / "data" / "brain", study / "data" / vs.CLEAN_SET
    info, clean_info = (json.loads((d / "split.json").read_text()) for d in (brain, clean))
    assert clean_info["intensity_window"] == info["intensity_window"] and clean_info["window_of"] == "brain"
    assert (clean_info["train"], clean_info["test"]) == (info["train"], info["test"])
    t1 = vs.downsample2(_maps()[0].astype(np.float32))
    lo = [a for a, _ in info["crop"]]
    for tag, cases in (("Tr", info["train"]), ("Ts", info["test"])):
        for case in cases:
            image = np.asarray(nib.load(str(clean / f"images{tag}" / f"{case}_0000.nii.gz")).dataobj)
            transformed = np.asarray(nib.load(str(brain / f"images{tag}" / f"{case}_0000.nii.gz")).dataobj)
            z0 = clean_info["subjects"][case]["z"][0]
            want = t1[lo[0]:lo[0] + image.shape[0], lo[1]:lo[1] + image.shape[1], z0:z0 + vs.SLAB]
            np.testing.assert_array_equal(image, want)
            assert not np.allclose(image, transformed)
            for kind in ("labels",):
                a = np.asarray(nib.load(str(clean / f"{kind}{tag}" / f"{case}.nii.gz")).dataobj)
                b = np.asarray(nib.load(str(brain / f"{kind}{tag}" / f"{case}.nii.gz")).dataobj)
                np.testing.assert_array_equal(a, b)
    tuned, study_thr = (json.loads((clean / f).read_text()) for f in (vs.BASELINE_FILE, vs.STUDY_THRESHOLDS_FILE))
    brain_base = json.loads((brain / vs.BASELINE_FILE).read_text())
    assert study_thr["thresholds"] == brain_base["thresholds"] and study_thr["order"] == brain_base["order"]
    assert tuned["report"]["mean"]["dice"] > 0.8
    assert len(list((clean / "study_thresholds_pred").glob("*.nii.gz"))) == len(info["test"])


def test_arms_configs_and_unknown_arms():
    cfg = vs.run_config("3d", 1, {"train_steps": 2}, {"intensity_window": [0.0, 200.0]})
    assert cfg["model_type"] == "unet3d" and tuple(cfg["patch_size_3d"]) == vs.PATCH_3D and cfg["seed"] == 1
    assert cfg["train_steps"] == 2 and tuple(cfg["intensity_window"]) == (0.0, 200.0) and cfg["num_classes"] == 3
    assert vs.run_config("2.5d-k2", 0)["context_slices"] == 2
    assert vs.run_config("supervised-3d", 0)["objective"] == "supervised"
    assert vs.plan(["brain", "ct"], ["2d", "3d"], [0, 1])[:4] == [("brain", "2d", 0), ("brain", "3d", 0),
                                                                    ("ct", "2d", 0), ("ct", "3d", 0)]
    with pytest.raises(ValueError, match="unknown arm '4d'"):
        vs.plan(["brain"], ["2d", "4d"], [0])
    with pytest.raises(ValueError, match="unknown arm '4d'"):
        vs.run_config("4d", 0)
    assert vs.main(["run", "--out", "/nonexistent", "--arms", "4d"]) == 2


def test_report_without_cells_says_not_evaluated(tmp_path):
    text = vs.write_report(tmp_path / "cells", tmp_path / "page.md")
    assert "not evaluated" in text and "beat" in text and (tmp_path / "page.md").is_file()


@pytest.mark.slow
def test_smoke_run_evaluate_collect_report(study, tmp_path):
    arms = ["2d", "2.5d-k1", "3d", "supervised-2d"]
    common = ["--out", str(study), "--datasets", "brain", "--seeds", "0", "--arms", *arms]
    assert vs.main(["run", *common, "--steps", "2"]) == 0
    for arm in arms:
        cell = json.loads((study / "runs" / "brain" / arm / "seed0" / vs.CELL_FILE).read_text())
        assert cell["steps"] == 2 and cell["train_seconds"] > 0 and cell["started_at"]["commit"]
    assert vs.run(study, vs.plan(["brain"], arms, [0]), {"train_steps": 2}) == 0  # resumable: nothing to train
    with pytest.raises(ValueError, match="trained for 2 steps but this call asks for 3"):
        vs.run(study, vs.plan(["brain"], arms, [0]), {"train_steps": 3})
    assert vs.evaluate(study, log=lambda m: None) == len(arms)
    assert vs.evaluate(study, log=lambda m: None) == 0
    dest, page = tmp_path / "cells", tmp_path / "volume_study.md"
    assert vs.main(["collect", "--out", str(study), "--dest", str(dest)]) == 0
    for arm in arms:
        cell = json.loads((dest / "brain" / arm / "seed0.json").read_text())
        assert set(cell["settings"]) == ({"1x1"} if arm.startswith("supervised") else {"1x1", "5x5"})
        per_class = cell["settings"]["1x1"]["report"]["mean"]
        assert "dice" in per_class and "hd95" in per_class
    assert (dest / "brain" / vs.BASELINE_FILE).is_file()
    # every brain run is scored on the clean slabs too, at the same settings
    for arm in arms:
        cell = json.loads((dest / "brain" / arm / "seed0.json").read_text())
        assert set(cell["clean_settings"]) == set(cell["settings"]) and cell["clean_evaluated_at"]["commit"]
    assert (dest / vs.CLEAN_SET / vs.STUDY_THRESHOLDS_FILE).is_file()
    assert vs.main(["report", "--dest", str(dest), "--page", str(page)]) == 0
    text = page.read_text()
    assert "| `2d` | 5 x 5 | 1 |" in text and "| `supervised-3d` | one pass | 0 | not evaluated |" in text
    assert "n = 1, no interval" in text and "n = 1: no verdict" in text
    assert "No verdict yet" in text and "pending" in text
    assert f"## `{vs.CLEAN_SET}` (secondary" in text and "| `2.5d-k1` | 5 x 5 | 1 |" in text.split(vs.CLEAN_SET)[-1]
    assert "Against thresholds tuned on the clean slabs: no verdict yet" in text
