"""scripts/diffusion_study.py: MNI extraction from a wheel-like zip, the slice split's guard gap, the prepared
ambiguous and nuclei sets, the data-driven variant table, the run order, and a 4-step smoke run of one cell through
run / evaluate / collect / report (resumable: a rerun trains nothing)."""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import diffusion_study as ds  # noqa: E402


def _volumes(shape=(16, 16, 14), seed=0) -> tuple[np.ndarray, np.ndarray]:
    """A T1-like uint8 volume and a uint8 0..255 probability map: a blurred ball (smooth, ambiguous rim)."""
    zz, yy, xx = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    r = np.sqrt((zz - shape[0] / 2) ** 2 + (yy - shape[1] / 2) ** 2 + ((xx - shape[2] / 2) * 1.5) ** 2)
    gm = np.clip(1.3 - r / 6, 0, 1)
    rng = np.random.default_rng(seed)
    t1 = np.clip(gm * 200 + rng.normal(20, 5, shape), 0, 255)
    return t1.astype(np.uint8), np.round(gm * 255).astype(np.uint8)


def _wheel(tmp_path: Path, t1: np.ndarray, gm: np.ndarray, members=(ds.T1_MEMBER, ds.GM_MEMBER)) -> Path:
    wheel = tmp_path / "nilearn-0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for member, arr in zip(members, (t1, gm)):
            path = tmp_path / Path(member).name
            nib.save(nib.Nifti1Image(arr, np.eye(4)), str(path))
            z.write(path, member)
    return wheel


def test_extract_mni_reads_both_templates_from_the_zip(tmp_path):
    t1, gm = _volumes()
    got_t1, got_gm = ds.extract_mni(_wheel(tmp_path, t1, gm), tmp_path / "source")
    assert got_t1.dtype == np.uint8 and got_gm.dtype == np.float32
    np.testing.assert_allclose(got_gm, gm / 255.0, atol=1e-6)
    np.testing.assert_array_equal(got_t1, np.round(t1 * (255 / t1.max())).astype(np.uint8))
    assert (tmp_path / "source" / Path(ds.GM_MEMBER).name).is_file()
    bad = tmp_path / "bad"
    bad.mkdir()
    with pytest.raises(ValueError, match="holds no"):
        ds.extract_mni(_wheel(bad, t1, gm, members=(ds.T1_MEMBER, "other.nii.gz")), bad / "source")


def test_split_keeps_a_guard_gap_and_refuses_held_slices_outside_the_range():
    train = ds.split_slices(30, 140, ds.AMBIG_TEST, ds.AMBIG_VAL, ds.AMBIG_GUARD)
    held = [*ds.AMBIG_TEST, *ds.AMBIG_VAL]
    assert train and all(abs(z - h) > ds.AMBIG_GUARD for z in train for h in held)
    assert 67 in train and 68 not in train  # 76 - 8 is inside the guard
    with pytest.raises(ValueError, match="must lie in"):
        ds.split_slices(0, 10, [12], [], 1)


def test_prepare_ambiguous_writes_consensus_annotators_and_map(tmp_path):
    t1, gm = _volumes()
    root = tmp_path / "amb"
    info = ds.prepare_ambiguous(t1, gm.astype(np.float32) / 255, root, slices=(2, 14), test=(7,), val=(11,), guard=1)
    assert info["train"] == [2, 3, 4, 5, 9, 13]
    data = np.load(root / "slices.npz")
    assert data["image"].shape == data["prob"].shape and data["image"].shape[0] == 6
    prob = np.load(root / "test" / "prob" / "z007.npy")
    r0, r1, c0, c1 = info["crop"]
    np.testing.assert_allclose(prob, gm[r0:r1, c0:c1, 7] / 255, atol=1e-6)
    consensus = cv2.imread(str(root / "test" / "masks" / "z007.png"), cv2.IMREAD_GRAYSCALE)
    np.testing.assert_array_equal(consensus > 0, prob > 0.5)
    for tau in info["annotators"]:
        mask = cv2.imread(str(root / "test" / "annotators" / f"tau{tau:.3f}" / "z007.png"), cv2.IMREAD_GRAYSCALE)
        np.testing.assert_array_equal(mask > 0, prob > tau)
    assert len(info["annotators"]) == 8 and (root / "val" / "images" / "z011.png").is_file()
    train = ds.ambiguous_train(root, seed=3)
    assert len(train) == 6 and train.seed == 3 and train.images.min() >= -1 and train.images.max() <= 1


def test_prepare_nuclei_keeps_each_held_out_strip_whole(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (256, 64), dtype=np.uint8)
    labels = np.zeros((256, 64), np.int32)
    for i, (y, x) in enumerate(rng.integers(8, 56, (12, 2)) * [4, 1]):
        cv2.circle(labels, (int(x), int(y) % 248), 4, i + 1, -1)
    ds.prepare_nuclei(image, labels, tmp_path, folds=2)
    for name in ds.NUCLEI:
        test = tmp_path / "data" / name / "fold1" / "test"
        strip = cv2.imread(str(test / "images" / "strip1.png"), cv2.IMREAD_GRAYSCALE)
        np.testing.assert_array_equal(strip, image[128:256])
        assert cv2.imread(str(test / "masks" / "strip1.png"), cv2.IMREAD_GRAYSCALE).shape == (128, 64)
        rows = {int(p.stem[1:4]) for p in (tmp_path / "data" / name / "fold1" / "train" / "images").glob("*.png")}
        assert rows and max(rows) + ds.TILE <= 128 - 16  # tiles end at least GUARD rows before the strip


def test_variant_table_is_data_driven_and_refuses_missing_keys(tmp_path, monkeypatch):
    table = {"a": {"lr": 1e-3}, "b": {"batch_size": 4}, "m": {"objective": "supervised", "seed_offset": 100},
             "combo": "{choice:best_combination}", "w": {"x0": "{choice:weight}"}, "bad": {"no_such_key": 1}}
    cfg = ds.run_config("a", 2, table)
    assert cfg["lr"] == 1e-3 and cfg["seed"] == 2 and cfg["train_steps"] == 3000 and cfg["val_every"] == 250
    assert ds.run_config("m", 2, table)["seed"] == 102
    with pytest.raises(ValueError, match="'no_such_key'"):
        ds.run_config("bad", 0, table)
    with pytest.raises(ValueError, match="unknown variant"):
        ds.run_config("zzz", 0, table)
    monkeypatch.setattr(ds, "CHOICE_FILE", tmp_path / "choice.json")
    with pytest.raises(ValueError, match="does not record 'best_combination'"):
        ds.run_config("combo", 0, table)
    # every row of the study's own table either builds a config or names the key this spadfast lacks
    for name in ds.VARIANTS:
        try:
            ds.run_config(name, 0)
        except ValueError as e:
            assert "lacks" in str(e) or "does not record" in str(e)
    (tmp_path / "choice.json").write_text(json.dumps({"best_combination": ["a", "b"]}))
    combo = ds.run_config("combo", 0, table)
    assert combo["lr"] == 1e-3 and combo["batch_size"] == 4


def test_only_pilot_runs_are_pilot_runs():
    assert ds.is_pilot_run({"data": "nuclei-noisy", "fold": 0}) and ds.is_pilot_run({"data": "nuclei-clean", "fold": 0})
    assert not ds.is_pilot_run({"data": "nuclei-noisy", "fold": 1})
    assert not ds.is_pilot_run({"data": "ambiguous", "fold": 0})


def test_plan_is_seed_major_and_the_ambiguous_set_has_one_split():
    cells = ds.plan(("nuclei-noisy", "ambiguous"), (1, 2), 2, ("baseline", "supervised"))
    assert cells[:6] == [("nuclei-noisy", 1, "baseline", 0), ("nuclei-noisy", 1, "supervised", 0),
                         ("nuclei-noisy", 2, "baseline", 0), ("nuclei-noisy", 2, "supervised", 0),
                         ("ambiguous", 0, "baseline", 0), ("ambiguous", 0, "supervised", 0)]
    assert len(cells) == 12 and all(s == 1 for *_, s in cells[6:])
    assert max(s for d, _, _, s in ds.plan(("ambiguous",), (1,), None, ("baseline",))) == ds.SEEDS["ambiguous"] - 1


@pytest.mark.slow
def test_smoke_one_cell_runs_evaluates_collects_and_resumes(tmp_path, monkeypatch):
    t1, gm = _volumes()
    out = tmp_path / "study"
    ds.prepare_ambiguous(t1, gm.astype(np.float32) / 255, out / "data" / "ambiguous", slices=(2, 14), test=(7,),
                         val=(9,), guard=1)
    tiny = dict(train_steps=4, image_size=16, base_channels=8, channel_mults=(1, 2), batch_size=2, val_every=2,
                checkpoint_every=2, log_every=2, warmup_steps=1, val_samples=1, sample_steps=2, ensemble=1)
    cells = ds.plan(("ambiguous",), (0,), 1, ("baseline",))
    messages: list[str] = []
    assert ds.run(out, cells, extra=tiny, log=messages.append) == 1
    run_dir = out / "runs" / "ambiguous" / "fold0" / "baseline" / "seed0"
    cell = json.loads((run_dir / ds.CELL_FILE).read_text())
    assert cell["variant"] == "baseline" and cell["started_at"]["commit"] not in ("", "unknown")
    assert ds.run(out, cells, extra=tiny, log=messages.append) == 0  # done: skipped
    monkeypatch.setattr(ds, "EVAL_STEPS", (1, 2))
    monkeypatch.setattr(ds, "EVAL_MEMBERS", (1, 2))
    # the ambiguous set is primary data: it waits for the pilot's whole choice (registration.md)
    choice = tmp_path / "choice.json"
    monkeypatch.setattr(ds, "CHOICE_FILE", choice)
    assert ds.evaluate(out, log=messages.append) == 0 and "wait for the pilot's committed choice" in messages[-1]
    choice.write_text(json.dumps({"x0_loss_weight": 0.3, "best_combination": ["recycle", "prior"]}))
    assert ds.evaluate(out, log=messages.append) == 0 and not (run_dir / ds.EVAL_FILE).is_file()
    choice.write_text(json.dumps({"x0_loss_weight": 0.3, "best_combination": ["recycle", "prior"],
                                  "best_variant": "recycle", "settings": {"recycle": {
                                      "steps": 2, "members": 1, "fusion": "none", "dice": 0.9, "passes": 2}}}))
    assert ds.evaluate(out, log=messages.append) == 1
    study = json.loads((run_dir / ds.EVAL_FILE).read_text())
    unfused = [(r["steps"], r["ensemble"]) for r in study["grid"] if r.get("step_fusion", "none") == "none"]
    assert unfused == [(1, 1), (1, 2), (2, 1), (2, 2)]
    # GED / HM-IoU are either scored or their absence is recorded with the reason
    if any("annotator" in why or "GED" in why for why in study["left_out"]):
        assert "ged" not in study["grid"][0]["cases"][0]
    else:
        assert "ged" in study["grid"][0]["cases"][0]
    assert len(study["grid"][0]["cases"]) == 1 and study["grid"][0]["cases"][0]["name"] == "z007"
    dest = tmp_path / "cells"
    assert ds.collect(out, dest) == 1
    collected = json.loads((dest / "ambiguous" / "fold0" / "baseline" / "seed0.json").read_text())
    assert [s for s, _ in collected["curve"]] == [2, 4] and collected["config"]["train_steps"] == 4
    # the trivial baselines of the run's data set and fold, on the same held-out slices (against the consensus)
    baselines = json.loads((dest / "ambiguous" / "fold0" / ds.BASELINES_FILE).read_text())
    assert baselines == pytest.approx(ds.trivial_baselines(out / "data" / "ambiguous", 0), abs=1e-6)
    assert set(baselines) == {"Otsu per image", "intensity threshold tuned on training images"}
    assert all(0 < v <= 1 for v in baselines.values())
    with pytest.raises(ValueError, match="trained 4 of 4 steps where the registration gives 3000"):
        ds.write_report(dest, tmp_path / "page.md")  # a smoke run's cell is not the registered protocol
    monkeypatch.setitem(ds.BASE, "train_steps", 4)
    page = ds.write_report(dest, tmp_path / "page.md")
    assert "Runs collected: **1**" in page and "| ambiguous | baseline | 1 |" in page
