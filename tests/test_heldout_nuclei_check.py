"""scripts/heldout_nuclei_check.py: the held-out slices come from the wheel's 3-D sample (8-bit, non-empty masks),
the check waits for the pilot's choice, and a 2-step smoke run goes through prepare / run / evaluate / collect /
report (the page made from the collected cells alone)."""

from __future__ import annotations

import io
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import heldout_nuclei_check as check  # noqa: E402


def _tif(array: np.ndarray) -> bytes:
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, array)
    return buf.getvalue()


def _wheel(tmp_path: Path) -> Path:
    """A stand-in for the stardist wheel: a 64x64 2-D sample and a 5x40x40 3-D sample whose first slice is empty."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    labels2d = ((yy - 20) ** 2 + (xx - 20) ** 2 < 64).astype(np.uint16) + 2 * ((yy - 44) ** 2 + (xx - 40) ** 2 < 49)
    img2d = np.clip(labels2d.astype(np.float64) * 90 + rng.normal(30, 8, labels2d.shape), 0, 255).astype(np.uint8)
    z, y, x = np.mgrid[:5, :40, :40]
    labels3d = (((y - 20) ** 2 + (x - 18) ** 2 + (4 * (z - 3)) ** 2) < 100).astype(np.uint16)
    img3d = (200 + 150 * labels3d + rng.normal(0, 10, labels3d.shape)).astype(np.uint16)
    wheel = tmp_path / "stardist-0.9.2-cp311-cp311-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, arr in (("img2d", img2d), ("mask2d", labels2d), ("img3d", img3d), ("mask3d", labels3d)):
            zf.writestr(f"stardist/data/images/{name}.tif", _tif(arr))
    return wheel


def test_stretch_maps_percentiles_to_the_8_bit_range():
    plane = np.arange(1000, dtype=np.uint16).reshape(25, 40) + 100
    out = check.stretch_to_uint8(plane, 0, 100)
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    assert np.all(np.diff(out.ravel().astype(int)) >= 0)  # monotone


def test_heldout_slices_skip_empty_ones_and_refuse_a_foreign_wheel(tmp_path):
    images, masks = check.heldout_slices(_wheel(tmp_path))
    assert len(images) == len(masks) == 4  # slice 0 holds no nucleus
    assert all(im.dtype == np.uint8 and im.shape == (40, 40) and m.any() for im, m in zip(images, masks))
    bad = tmp_path / "other.whl"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("x.txt", "")
    with pytest.raises(ValueError, match="img3d"):
        check.heldout_slices(bad)


def test_check_waits_for_the_pilot_choice(tmp_path):
    with pytest.raises(ValueError, match="best_variant"):
        check.chosen(tmp_path / "choice.json")
    (tmp_path / "choice.json").write_text(json.dumps({"best_variant": "recycle", "settings": {
        "recycle": {"steps": 2, "members": 5, "fusion": "mean"}}}))
    assert check.chosen(tmp_path / "choice.json") == ("recycle", (2, 5, "mean"))


def test_the_check_follows_the_studys_default_once_decided(tmp_path, monkeypatch):
    import diffusion_study_report as rep

    (tmp_path / "choice.json").write_text(json.dumps({"best_variant": "recycle", "settings": {
        "recycle": {"steps": 2, "members": 5, "fusion": "mean"}}}))
    (tmp_path / "cells").mkdir()
    variant, setting, source = check.target(tmp_path / "choice.json", tmp_path / "cells")
    assert (variant, setting) == ("recycle", (2, 5, "mean")) and "pilot's choice" in source
    monkeypatch.setattr(rep, "default_decision", lambda cells, choice: {
        "status": "decided", "default": {"variant": "baseline", "setting": (1, 5, "none")}})
    variant, setting, source = check.target(tmp_path / "choice.json", tmp_path / "cells")
    assert (variant, setting) == ("baseline", (1, 5, "none")) and "study's default" in source


@pytest.mark.slow
def test_smoke_prepare_run_evaluate_report(tmp_path, monkeypatch):
    out = tmp_path / "check"
    check.prepare(out, _wheel(tmp_path))
    assert len(list((out / "train" / "images").glob("*.png"))) == 9  # 64x64 at stride 16: 3 x 3 tiles
    assert len(list((out / "test" / "masks").glob("*.png"))) == 4
    assert set(json.loads((out / "baselines.json").read_text())) == {
        "Otsu per image", "intensity threshold tuned on training images"}
    choice = tmp_path / "choice.json"
    choice.write_text(json.dumps({"best_variant": "recycle", "settings": {
        "recycle": {"steps": 2, "members": 2, "fusion": "mean"}}}))
    monkeypatch.setattr(check.study, "CHOICE_FILE", choice)
    monkeypatch.setattr(check, "CELLS_ROOT", tmp_path / "no_cells")  # the study has not decided: the pilot's choice
    monkeypatch.setattr(check, "SEEDS", 2)
    check.run(out, seeds=2, steps=2, log=lambda m: None)
    assert check.evaluate(out, log=lambda m: None) == 4
    grid = json.loads((out / "runs" / "recycle" / "seed0" / check.EVAL_FILE).read_text())["grid"]
    assert [(r["steps"], r["ensemble"], r["step_fusion"]) for r in grid] == [(1, 2, "mean"), (2, 2, "mean"),
                                                                          (10, 2, "mean")]
    cells = tmp_path / "cells"
    assert check.collect(out, cells) == 4
    cell = json.loads((cells / "recycle" / "seed1.json").read_text())
    assert cell["seed"] == 1 and cell["steps"] == 2 and cell["setting"] == [2, 2, "mean"]
    assert cell["started_at"]["commit"] and cell["evaluated_at"]["commit"]
    assert len(cell["grid"]) == 3 and len(cell["grid"][0]["dice"]) == 4  # every slice's Dice kept
    page = check.report(cells, tmp_path / "page.md")
    assert "recycle" in page and "10 steps minus 1 step: " in page and "(n=2)" in page
    assert "Otsu per image" in page and "the pilot's choice" in page and "(2 steps" in page
    assert "trained at " in page and "scored at " in page
    assert page.count("no worse (lower end >= -0.003): ") == 2  # the criterion, stated for both checks
    assert check.evaluate(out, log=lambda m: None) == 0  # scored at this setting already
    # the default decided later at another setting: the variant's runs are scored again at it, supervised is not
    choice.write_text(json.dumps({"best_variant": "recycle", "settings": {
        "recycle": {"steps": 1, "members": 1, "fusion": "none"}}}))
    assert check.evaluate(out, log=lambda m: None) == 2
    grid = json.loads((out / "runs" / "recycle" / "seed0" / check.EVAL_FILE).read_text())["grid"]
    assert [(r["steps"], r["ensemble"], r["step_fusion"]) for r in grid] == [(1, 1, "none"), (10, 1, "none")]
    # a page made from the cells alone (the run folders may be gone), at the setting they were collected at
    import shutil

    shutil.rmtree(out / "runs")
    choice.write_text(json.dumps({"best_variant": "recycle", "settings": {
        "recycle": {"steps": 2, "members": 2, "fusion": "mean"}}}))
    assert check.report(cells, tmp_path / "page2.md") == page
