"""spadfast.evaluation.plots: training curves with the PaS schedule, metric distributions, ablation bars, the plot handler."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from spadfast.config import SPADConfig  # noqa: E402
from spadfast.diffusion.perturb import perturb_factor  # noqa: E402
from spadfast.evaluation.plots import (  # noqa: E402
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
    from spadfast.train.trainer import SPADTrainer

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


# ---------------------------------------------------------------------------------------------------------------
# A run with its own log file name; HD95 units; plot files that are not spadfast's


@pytest.fixture(scope="module")
def custom_log_run(tmp_path_factory) -> Path:
    """A real 2-step run whose config names its log ``train_log.jsonl``."""
    from spadfast.train.trainer import SPADTrainer

    folder = tmp_path_factory.mktemp("custom_log_run")
    trainer = SPADTrainer(SPADConfig(**TINY, log_file="train_log.jsonl"), out_dir=folder)
    trainer.fit()
    trainer.save(folder)
    return folder


def test_readers_find_the_runs_own_log_file(custom_log_run, tmp_path, capsys):
    import cv2

    from spadfast.cli import main as cli_main
    from spadfast.evaluation.evaluate import evaluate_folders
    from spadfast.evaluation.report import write_report

    assert not (custom_log_run / "log.jsonl").exists()
    assert [r["step"] for r in read_log(custom_log_run)] == [1, 2]
    assert plot_curves(custom_log_run, tmp_path / "c.png").read_bytes()[:8] == PNG
    assert cli_main(["plot", str(custom_log_run), "--out", str(tmp_path / "cli.png")]) == 0
    for folder in ("p", "g"):
        (tmp_path / folder).mkdir()
        mask = np.zeros((8, 8), np.uint8)
        mask[2:5, 2:6] = 255
        cv2.imwrite(str(tmp_path / folder / "a.png"), mask)
    report = evaluate_folders(tmp_path / "p", tmp_path / "g")
    write_report(report, tmp_path / "p", tmp_path / "g", tmp_path / "r", run_dir=custom_log_run)
    assert (tmp_path / "r" / "plots" / "curves.png").is_file()
    assert cli_main(["evaluate", "--pred", str(tmp_path / "p"), "--gt", str(tmp_path / "g"), "--report",
                     str(tmp_path / "r2"), "--run", str(custom_log_run)]) == 0
    with pytest.raises(ValueError, match="no training log log.jsonl"):
        read_log(custom_log_run, "log.jsonl")  # an explicit name still wins


def _xlabels(report, monkeypatch, tmp_path) -> list[str]:
    import spadfast.evaluation.plots as plots

    figures = []
    real_save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, out, **k: figures.append(fig) or real_save(fig, out, **k))
    plot_metric_distributions(report, tmp_path / "m.png")
    return [ax.get_xlabel() for ax in figures[-1].axes]


def test_hd95_axis_names_the_reports_unit(monkeypatch, tmp_path):
    cases = [{"name": f"c{i}", "dice": 0.5, "iou": 0.4, "hd95": 1.0 + i,
              "per_class": {"1": {"dice": 0.5, "iou": 0.4, "hd95": 1.0 + i}}} for i in range(3)]
    for unit, want in (("mm", "HD95 (mm)"), (None, "HD95 (px)"), ("spacing units", "HD95 (spacing units)")):
        report = {"cases": cases, "mean": {}, **({"hd95_unit": unit} if unit else {})}
        assert want in _xlabels(report, monkeypatch, tmp_path)


def test_plot_replaces_only_its_own_files(run, tmp_path, capsys):
    import cv2
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from spadfast.cli import main as cli_main
    from spadfast.evaluation.plots import is_spadfast_plot

    foreign_fig = Figure()
    FigureCanvasAgg(foreign_fig)
    foreign_fig.subplots().plot([0, 1])
    theirs = {"image.png": None, "drawing.svg": b"<svg xmlns='http://www.w3.org/2000/svg'/>",
              "paper.pdf": b"%PDF-1.4\n% /Creator (someone else)\n", "notes.png": b"not even a PNG"}
    cv2.imwrite(str(tmp_path / "image.png"), np.full((6, 6), 9, np.uint8))  # an input image
    for name, data in theirs.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
    foreign_fig.savefig(tmp_path / "matplotlib.png")  # a matplotlib plot that spadfast did not write
    foreign_fig.savefig(tmp_path / "matplotlib.pdf")
    for name in [*theirs, "matplotlib.png", "matplotlib.pdf"]:
        before = (tmp_path / name).read_bytes()
        assert not is_spadfast_plot(tmp_path / name), name
        assert cli_main(["plot", str(run), "--out", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and name in err and "--overwrite" in err, err
        assert (tmp_path / name).read_bytes() == before, name
    for suffix in ("png", "svg", "pdf"):  # a previous plot is replaced without --overwrite
        target = tmp_path / f"plot.{suffix}"
        assert cli_main(["plot", str(run), "--out", str(target)]) == 0 and is_spadfast_plot(target)
        assert cli_main(["plot", str(run), "--out", str(target)]) == 0
    assert cli_main(["plot", str(run), "--out", str(tmp_path / "image.png"), "--overwrite"]) == 0
    assert is_spadfast_plot(tmp_path / "image.png")
    own = run / "curves.png"  # the default output follows the same rule
    own.write_bytes(b"a file the user put there")
    assert cli_main(["plot", str(run)]) == 2 and own.read_bytes() == b"a file the user put there"
    own.unlink()
    assert cli_main(["plot", str(run)]) == 0 and is_spadfast_plot(own)
