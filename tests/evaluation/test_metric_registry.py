"""A metric registered once (function, label, direction, unit) reaches evaluate's JSON, the report, the plots and the
ablation table, with no other change."""

import math

import numpy as np
import pytest

from spadfast.evaluation import metrics
from spadfast.evaluation.evaluate import evaluate_folders
from spadfast.evaluation.metric_spec import Metric
from spadfast.io.files import write_mask_png
from spadfast.study.ablation_stats import aggregate, format_markdown


def false_positives(pred, target, spacing=None):
    p, t = np.asarray(pred, bool), np.asarray(target, bool)
    return float(np.logical_and(p, ~t).sum())


@pytest.fixture
def registered():
    spec = metrics.register_metric("false_pos", false_positives, "False positives", higher_is_better=False)
    yield spec
    del metrics.METRICS["false_pos"]


@pytest.fixture
def folders(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(4):
        gt = np.zeros((12, 14), bool)
        gt[2:8, 3:9] = True
        pred = gt.copy()
        pred[rng.integers(0, 12, 3 + i), rng.integers(0, 14, 3 + i)] = True
        write_mask_png(tmp_path / "gt" / f"c{i}.png", gt)
        write_mask_png(tmp_path / "pred" / f"c{i}.png", pred)
    return tmp_path


def test_registered_metric_reaches_evaluate_report_plots_and_ablation(registered, folders, tmp_path):
    report = evaluate_folders(folders / "pred", folders / "gt")
    for case in report["cases"]:
        assert case["false_pos"] == false_positives(*_read(folders, case["name"]))
    assert report["mean"]["false_pos"] == pytest.approx(np.mean([c["false_pos"] for c in report["cases"]]))

    from spadfast.evaluation.report import write_report

    page = write_report(report, folders / "pred", folders / "gt", tmp_path / "report")
    html = (page if page.is_file() else page / "index.html").read_text()
    assert "False positives ↓" in html

    from spadfast.evaluation.plots import plot_metric_distributions

    assert plot_metric_distributions(report, tmp_path / "dist.png").is_file()

    records = {name: [{"seed": s, "mean": {**report["mean"], "false_pos": fp + s}, "case_dice": {}}
                      for s in range(2)] for name, fp in (("SPAD", 5.0), ("baseline", 2.0))}
    result = aggregate(records)
    assert result["best"]["false_pos"] == ["baseline"]  # lower is better, read from the entry
    table = format_markdown(result)
    assert "| False positives ↓ |" in table and "**2.5000 ± 0.7071**" in table


def _read(folders, name):
    from spadfast.io.files import read_mask

    return read_mask(folders / "pred" / name), read_mask(folders / "gt" / name)


def test_registry_entries_carry_label_direction_and_unit():
    assert [(k, m.label, m.arrow, m.distance) for k, m in metrics.METRICS.items()][:3] == [
        ("dice", "Dice", "↑", False), ("iou", "IoU", "↑", False), ("hd95", "HD95", "↓", True)]
    assert metrics.METRICS["hd95"].axis_label("mm") == "HD95 (mm)" and metrics.METRICS["dice"].axis_label() == "Dice"
    assert metrics.METRICS["hd95"].best([3.0, 1.0, math.inf]) == 1.0 and metrics.METRICS["dice"].best([0.2, 0.9]) == 0.9
    assert isinstance(metrics.METRICS["dice"], Metric)
    with pytest.raises(ValueError, match="name"):
        metrics.register_metric("dice", false_positives, "again", True)
    with pytest.raises(ValueError, match="name"):
        metrics.register_metric("per_class", false_positives, "reserved", True)
