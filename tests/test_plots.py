"""spadfast.plots: training curves with the PaS schedule, metric distributions, ablation bars, the plot handler."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from spadfast.config import SPADConfig  # noqa: E402
from spadfast.perturb import perturb_factor  # noqa: E402
from spadfast.plots import (  # noqa: E402
    add_arguments,
    main,
    pas_curve,
    plot_ablation,
    plot_curves,
    plot_metric_distributions,
    read_log,
    run_config,
)

PNG = b"\x89PNG\r\n\x1a\n"
TINY = dict(image_size=16, base_channels=8, channel_mults=(1, 2), attention_levels=(), train_steps=2, batch_size=2,
            synthetic_train=4, synthetic_val=2, progress_bar=False, sample_steps=2, ensemble=1, device="cpu",
            log_every=1, val_every=2, val_samples=2, pas_steps=3, perturb={"pas_kind": "step", "pas_stages": 2})


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A real 2-step run folder: log.jsonl (with val_dice) and checkpoint.safetensors."""
    from spadfast.trainer import SPADTrainer

    folder = tmp_path_factory.mktemp("run")
    trainer = SPADTrainer(SPADConfig(**TINY), out_dir=folder)
    trainer.fit()
    trainer.save(folder)
    return folder


@pytest.mark.slow
def test_curves_from_a_real_run(run):
    records = read_log(run)
    assert [r["step"] for r in records] == [1, 2] and "val_dice" in records[-1]
    cfg = run_config(run)
    assert cfg.pas_horizon == 3 and cfg.perturb.pas_kind == "step"
    path = plot_curves(run)
    assert path == run / "curves.png" and path.read_bytes()[:8] == PNG
    svg = plot_curves(run, run / "sub" / "c.svg")
    assert svg.read_text().lstrip().startswith(("<?xml", "<svg"))


def test_pas_curve_follows_perturb_factor():
    cfg = SPADConfig(train_steps=100, pas_steps=50, perturb={"pas_kind": "cosine", "scd_max": 0.4, "bcd_max": 0.2})
    steps = np.arange(0, 101, 5)
    curve = pas_curve(cfg, steps)
    want = [perturb_factor(s / 50, cfg.perturb) for s in steps]
    assert curve["factor"].tolist() == want
    assert np.allclose(curve["scd"], 0.4 * np.array(want)) and np.allclose(curve["bcd"], 0.2 * np.array(want))
    assert curve["factor"][0] == 1.0 and (curve["factor"][steps >= 40] == 0).all()  # pas_end 0.8 of 50 steps
    off = SPADConfig(perturb={"enabled": False})
    assert (pas_curve(off, steps)["factor"] == 0).all()


def test_log_errors_name_the_path(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        read_log(tmp_path / "nope")
    with pytest.raises(ValueError, match="no training log"):
        plot_curves(tmp_path)
    (tmp_path / "log.jsonl").write_text('{"step": 1, "loss": 0.5}\nnot json\n')
    with pytest.raises(ValueError, match=r"log\.jsonl:2"):
        read_log(tmp_path)
    (tmp_path / "log.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        read_log(tmp_path)


def test_curves_without_checkpoint_and_resumed_duplicates(tmp_path):
    records = [{"step": 1, "loss": 0.9}, {"step": 2, "loss": 0.8}, {"step": 2, "loss": 0.7}, {"step": 3, "loss": 0.6}]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert run_config(tmp_path) is None
    assert plot_curves(tmp_path).read_bytes()[:8] == PNG


def test_metric_distributions_with_inf_and_classes(tmp_path):
    cases = [{"name": f"{i}.png", "dice": 0.1 * i, "iou": 0.05 * i, "hd95": float("inf") if i == 0 else 1.0 + i,
              "per_class": {"1": {"dice": 0.5, "iou": 0.3, "hd95": 2.0}, "2": {"dice": 0.1 * i, "iou": 0.1,
                                                                           "hd95": 3.0}}}
             for i in range(6)]
    report = {"cases": cases, "mean": {"dice": 0.25, "iou": 0.125, "hd95": float("inf")}}
    assert plot_metric_distributions(report, tmp_path / "m.png").read_bytes()[:8] == PNG
    with pytest.raises(ValueError, match=r"\.png, \.svg or \.pdf"):
        plot_metric_distributions(report, tmp_path / "m.jpg")


def test_ablation_plot(tmp_path):
    rows = [{"variant": n, "dice": d, "dice_std": s, "iou": d - 0.1, "iou_std": s, "hd95": h, "hd95_std": s}
            for n, d, s, h in (("SPAD", 0.9, 0.01, 1.2), ("baseline", 0.85, float("nan"), float("inf")))]
    path = plot_ablation({"rows": rows, "train_steps": 10, "seeds": 2, "n_heldout": 4}, tmp_path / "a.png")
    assert path.read_bytes()[:8] == PNG


def test_plot_handler(run, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([str(run), "--out", str(tmp_path / "curves.pdf")])
    assert main(args) == 0 and (tmp_path / "curves.pdf").read_bytes()[:4] == b"%PDF"
    assert "curves.pdf" in capsys.readouterr().out
