"""scripts/spad_study_report.py: the study page's numbers equal a direct computation over training runs."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
report = pytest.importorskip("spad_study_report")
stats = pytest.importorskip("scipy.stats")

METRICS = ("dice", "iou", "hd95", "boundary_f1", "spurious", "brier", "ece", "brier_band", "ece_band")
TILES = [f"t{i}" for i in range(7)]


def _write_cell(root: Path, data: str, fold: str, variant: str, seed: int, dice: np.ndarray) -> None:
    study = [{"steps": s, "ensemble": e, "mean": {},
              "cases": [{"name": n, **{m: float(d) if m == "dice" else 0.0 for m in METRICS}}
                        for n, d in zip(TILES, dice)]}
             for s in report.STEPS for e in report.ENSEMBLES]
    path = root / data / fold / variant / f"seed{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"config": {}, "steps": 10, "train_seconds": 60.0, "study": study}))


def _study(tmp_path: Path, variants: dict[str, tuple[str, ...]]) -> tuple[Path, dict]:
    """Cells for 2 folds x 3 seeds with fresh random Dice; ``variants``: slug -> data sets it ran on."""
    rng = np.random.default_rng(7)
    root, dice = tmp_path / "cells", {}
    for (data, fold, seed) in [(d, f"fold{k}", s) for d in ("clean", "noisy") for k in range(2) for s in range(3)]:
        for v, sets in variants.items():
            if data in sets:
                dice[data, fold, v, seed] = rng.uniform(0.5, 0.95, len(TILES))
                _write_cell(root, data, fold, v, seed, dice[data, fold, v, seed])
    return root, dice


def _t_text(values: list[float]) -> str:
    a = np.asarray(values)
    half = stats.t.ppf(0.975, a.size - 1) * a.std(ddof=1) / math.sqrt(a.size)
    return f"{a.mean():+.4f} [{a.mean() - half:+.4f}, {a.mean() + half:+.4f}] (n={a.size})"


def test_primary_cell_is_a_t_interval_over_runs_not_tiles(tmp_path):
    both = ("clean", "noisy")
    root, dice = _study(tmp_path, {"baseline": both, "spad-input": both, "spad-no-fade": both,
                                   "spad-input-no-fade": both})
    page = report.write_report(root, tmp_path / "page.md")
    units = [(f"fold{k}", s) for k in range(2) for s in range(3)]
    run_means = [float(np.mean(dice["clean", f, "spad-input", s] - dice["clean", f, "baseline", s]))
                 for f, s in units]
    line = next(x for x in page.splitlines() if x.startswith("| SPAD input vs baseline, clean"))
    assert _t_text(run_means) in line
    # pooling tiles instead of runs gives a different (narrower) interval: the page must not show it
    tiles = np.concatenate([dice["clean", f, "spad-input", s] - dice["clean", f, "baseline", s] for f, s in units])
    assert _t_text(list(tiles)).split(" (n=")[0] not in line


def test_status_says_complete_only_when_every_planned_run_is_there(tmp_path):
    both = ("clean", "noisy")
    variants = {"baseline": both, "spad-input": both, "spad-no-fade": both, "spad-input-no-fade": both}
    root, _ = _study(tmp_path, variants)
    plan = [(d, f"fold{k}", v, s) for s in range(3) for k in range(2) for d in both for v in variants]
    assert "the study is complete" in report.write_report(root, tmp_path / "p.md", planned=len(plan), plan=plan)
    (root / "noisy" / "fold1" / "spad-input" / "seed2.json").unlink()
    page = report.write_report(root, tmp_path / "p.md", planned=len(plan), plan=plan)
    assert "the study is complete" not in page
    assert f"{len(plan) - 1} of {len(plan)} planned runs" in page
    assert "noisy/fold1/SPAD input/seed2" in page


def test_a_variant_run_on_one_data_set_gets_no_empty_rows_on_the_other(tmp_path):
    both = ("clean", "noisy")
    root, _ = _study(tmp_path, {"baseline": both, "spad-input": both, "nnu-net-augmentation": ("clean",)})
    page = report.write_report(root, tmp_path / "page.md")
    aug = report.NAMES["nnu-net-augmentation"]
    assert not any(aug in line and "no runs yet" in line for line in page.splitlines())
    assert f"Not run (extensions on one data set only): {aug} on noisy annotations." in page
    assert sum(line.startswith(f"| clean | {aug} |") for line in page.splitlines()) == 1
    assert not any(line.startswith(f"| noisy | {aug} |") for line in page.splitlines())


@pytest.mark.parametrize("gain, verdict", [(0.05, "confirmed"), (-0.05, "not confirmed")])
def test_the_confirmatory_folds_are_reported_apart_from_the_study(tmp_path, gain, verdict):
    both = ("clean", "noisy")
    root, dice = _study(tmp_path, {"baseline": both, "structured": both})
    rng = np.random.default_rng(11)
    new_units = [(f"fold{k}", s) for k in (2, 3) for s in range(3)]
    for f, s in new_units:
        for v, shift in (("baseline", 0.0), ("structured", gain)):  # a clear effect on the new folds only
            dice["clean", f, v, s] = rng.uniform(0.5, 0.9, len(TILES)) * 0.1 + 0.6 + shift
            _write_cell(root, "clean", f, v, s, dice["clean", f, v, s])
    page = report.write_report(root, tmp_path / "page.md")
    run_diff = lambda units: [float(np.mean(dice["clean", f, "structured", s] - dice["clean", f, "baseline", s]))
                              for f, s in units]
    old_units = [(f"fold{k}", s) for k in range(2) for s in range(3)]
    lines = page.splitlines()
    test_line = next(x for x in lines if x.startswith("| **test on fold2, fold3**"))
    assert _t_text(run_diff(new_units)) in test_line
    assert _t_text(run_diff(old_units)) in next(x for x in lines if x.startswith("| found on fold0, fold1"))
    assert _t_text(run_diff(old_units + new_units)) in next(x for x in lines if x.startswith("| pooled"))
    assert f"registered rule (the test interval above zero): **{verdict}**." in page
    # the study's own tables keep to folds 0-1
    name = report.NAMES["structured"]
    row = next(x for x in lines if x.startswith(f"| {name} | 1 |"))
    assert _t_text(run_diff(old_units)) in row
    assert not any(x.startswith("| clean | fold2 |") for x in lines)


def test_the_primary_extension_is_pooled_beside_the_planned_result(tmp_path):
    both = ("clean", "noisy")
    root, dice = _study(tmp_path, {"baseline": both, "spad-input": both})
    rng = np.random.default_rng(5)
    for f, s in [(f"fold{k}", s) for k in (2, 3) for s in range(3)]:
        for v in ("baseline", "spad-input"):
            dice["clean", f, v, s] = rng.uniform(0.5, 0.95, len(TILES))
            _write_cell(root, "clean", f, v, s, dice["clean", f, v, s])
    page = report.write_report(root, tmp_path / "page.md")
    diff = lambda folds: [float(np.mean(dice["clean", f"fold{k}", "spad-input", s] - dice["clean", f"fold{k}",
                                                                                       "baseline", s]))
                          for k in folds for s in range(3)]
    line = next(x for x in page.splitlines() if x.startswith("| SPAD input vs baseline, clean"))
    columns = line.strip("| ").split(" | ")
    assert columns[1] == _t_text(diff((0, 1)))  # the planned result keeps to folds 0-1
    assert columns[-1] == _t_text(diff((0, 1, 2, 3)))
    assert "fold0, fold1, fold2, fold3 (extension)" in page
