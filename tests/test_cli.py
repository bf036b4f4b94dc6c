import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from spadfast import __version__
from spadfast.cli import main
from spadfast.data.synthetic import write_synthetic_folder

from .helpers import tiny_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_version_and_help(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert __version__ in capsys.readouterr().out
    out = subprocess.run([sys.executable, "-m", "spadfast", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0
    for cmd in ("demo", "train", "predict", "evaluate", "verify"):
        assert cmd in out.stdout


def _config_file(tmp_path, **overrides) -> Path:
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(tiny_config(**overrides).to_dict()))
    return path


def test_train_predict_evaluate(tmp_path, capsys):
    data = write_synthetic_folder(tmp_path / "data", 6, 16, seed=0)
    cfg = _config_file(tmp_path)
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), "--steps", "3", "--config", str(cfg)]) == 0
    assert (run / "checkpoint.safetensors").is_file()
    assert main(["train", "--data", str(data), "--out", str(run), "--resume", "--steps", "4"]) == 0
    assert "step 4" in capsys.readouterr().out
    pred = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(run), "--images", str(data / "images"), "--out", str(pred),
                 "--steps", "2", "--ensemble", "2", "--overlay", "--uncertainty"]) == 0
    names = sorted(p.name for p in pred.glob("*.png"))
    assert names == sorted(p.name for p in (data / "masks").glob("*.png"))
    mask = cv2.imread(str(pred / names[0]), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (16, 16) and set(np.unique(mask)) <= {0, 255}
    assert (pred / "overlays" / names[0]).is_file() and (pred / "uncertainty" / names[0]).is_file()
    report_path = tmp_path / "m.json"
    assert main(["evaluate", "--pred", str(pred), "--gt", str(data / "masks"), "--json", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert [c["name"] for c in report["cases"]] == names
    assert set(report["mean"]) == {"dice", "iou", "hd95"}
    assert "mean" in capsys.readouterr().out


def test_evaluate_perfect_and_mismatched(tmp_path, capsys):
    data = write_synthetic_folder(tmp_path / "data", 3, 16, seed=1)
    report_path = tmp_path / "r.json"
    assert main(["evaluate", "--pred", str(data / "masks"), "--gt", str(data / "masks"), "--json",
                 str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert report["mean"] == {"dice": 1.0, "iou": 1.0, "hd95": 0.0}
    other = tmp_path / "other"
    other.mkdir()
    cv2.imwrite(str(other / "0000.png"), np.zeros((16, 16), np.uint8))
    assert main(["evaluate", "--pred", str(other), "--gt", str(data / "masks")]) == 2
    assert "0001.png" in capsys.readouterr().err


def test_bad_data_fails_before_training_naming_the_file(tmp_path, capsys):
    data = write_synthetic_folder(tmp_path / "data", 3, 16, seed=0)
    (data / "images" / "0001.png").write_bytes(b"not a png")
    code = main(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--config",
                 str(_config_file(tmp_path))])
    assert code == 2
    assert "0001.png" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_unknown_config_key_is_reported(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("learning_rate: 0.1\n")
    assert main(["train", "--out", str(tmp_path / "run"), "--config", str(cfg)]) == 2
    assert "`learning_rate`" in capsys.readouterr().err


def test_demo_small(tmp_path, capsys):
    cfg = _config_file(tmp_path, train_steps=2)
    assert main(["demo", "--out", str(tmp_path / "demo"), "--config", str(cfg), "--test-size", "3"]) == 0
    report = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    assert set(report) == {"cases", "mean"}  # exactly the evaluate format
    assert len(report["cases"]) == 3 and {"dice", "iou", "hd95"} <= set(report["mean"])
    baselines = json.loads((tmp_path / "demo" / "baselines.json").read_text())
    assert set(baselines) == {"Otsu per image", "intensity threshold tuned on training images"}
    assert all(0 <= v <= 1 for v in baselines.values())
    assert "trivial baselines on them, Dice: Otsu per image" in capsys.readouterr().out
    assert len(list((tmp_path / "demo" / "overlays").glob("*.png"))) == 3
    assert (tmp_path / "demo" / "run" / "checkpoint.safetensors").is_file()


def test_resume_with_more_steps_keeps_the_pas_horizon(tmp_path):
    """``train --resume --steps 2N`` after N steps: PaS keeps its N-step horizon, so the extra steps see clean
    masks (progress >= 1) instead of re-opening the perturbation."""
    from spadfast.diffusion.perturb import perturb_factor
    from spadfast.models.checkpoint import read_checkpoint

    data = write_synthetic_folder(tmp_path / "data", 6, 16, seed=0)
    cfg = _config_file(tmp_path)
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), "--steps", "4", "--config", str(cfg)]) == 0
    assert main(["train", "--data", str(data), "--out", str(run), "--resume", "--steps", "8"]) == 0
    _, meta = read_checkpoint(run)
    config = meta["config"]
    assert meta["step"] == 8 and config["train_steps"] == 8 and config["pas_steps"] == 4
    from spadfast import SPADConfig

    resumed = SPADConfig.from_dict(config)
    for step in range(4, 9):
        assert perturb_factor(step / resumed.pas_horizon, resumed.perturb) == 0.0


def test_demo_rerun_replaces_its_own_outputs(tmp_path):
    cfg = _config_file(tmp_path, train_steps=2, log_every=1)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--config", str(cfg), "--test-size", "3"]) == 0
    assert main(["demo", "--out", str(out), "--config", str(cfg), "--test-size", "2"]) == 0
    steps = [json.loads(line)["step"] for line in (out / "run" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2]  # one run's log, not two appended
    assert len(json.loads((out / "metrics.json").read_text())["cases"]) == 2


def test_full_disk_at_the_checkpoint_is_one_line_and_keeps_the_previous_one(tmp_path, capsys, monkeypatch):
    import spadfast.models.checkpoint as ckpt
    from tests.models.test_checkpoint import _full_disk

    data = write_synthetic_folder(tmp_path / "data", 6, 16, seed=0)
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), "--steps", "2", "--config",
                 str(_config_file(tmp_path))]) == 0
    before = (run / "checkpoint.safetensors").read_bytes()
    capsys.readouterr()
    monkeypatch.setattr(ckpt, "save_file", _full_disk)
    assert main(["train", "--out", str(run), "--resume", "--steps", "4"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "No space left on device" in err, err
    assert str((run / "checkpoint.safetensors").resolve()) in err or str(run / "checkpoint.safetensors") in err
    assert (run / "checkpoint.safetensors").read_bytes() == before
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.safetensors", "log.jsonl"]
