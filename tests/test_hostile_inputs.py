"""Hostile input through the console script: every case exits with status 2 and ONE line naming the path or
key, before any work, and leaves every file as it was (hashes compared). The table of hostile inputs lives here:
add a row for each new case, so that the class stays closed.

Not covered here: an unwritable folder (these tests may run as root, for whom every folder is writable; the check
is :func:`spadfast.io.paths.check_writable_dir`, exercised with a file standing in the way instead).
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from spadfast import SPADTrainer
from spadfast.data.synthetic import write_synthetic_folder

from .helpers import tiny_config

pytestmark = pytest.mark.slow

SCRIPT = Path(sys.executable).with_name("spadfast")


def _run(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    cmd = [str(SCRIPT)] if SCRIPT.is_file() else [sys.executable, "-m", "spadfast"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*cmd, *argv], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def _tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A data folder, a trained run (and damaged copies), configs and odd files, shared by every row."""
    root = tmp_path_factory.mktemp("hostile")
    data = write_synthetic_folder(root / "data", 4, 16, seed=0)
    write_synthetic_folder(root / "other_data", 4, 16, seed=1)
    moved = write_synthetic_folder(root / "moved_data", 4, 16, seed=0)
    cfg = tiny_config(train_steps=2)
    (root / "tiny.json").write_text(json.dumps(cfg.to_dict()))
    trainer = SPADTrainer(cfg, train_data=data, out_dir=root / "run")
    trainer.fit()
    trainer.save(root / "run")
    trainer = SPADTrainer(cfg, train_data=moved, out_dir=root / "run_moved")
    trainer.fit()
    trainer.save(root / "run_moved")
    shutil.rmtree(moved)  # the run's recorded data folder is gone

    ckpt = (root / "run" / "checkpoint.safetensors").read_bytes()
    flipped = bytearray(ckpt)
    flipped[-5] ^= 0x01  # one bit of the last tensor's data
    (root / "run_flipped").mkdir()
    (root / "run_flipped" / "checkpoint.safetensors").write_bytes(bytes(flipped))

    from spadfast.models.checkpoint import read_checkpoint, write_checkpoint

    tensors, meta = read_checkpoint(root / "run")
    name = next(k for k in tensors if k.startswith("ema.") and tensors[k].is_floating_point())
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    write_checkpoint(root / "run_nan", tensors, meta)

    (root / "nonempty").mkdir()
    (root / "nonempty" / "notes.txt").write_text("my notes")
    (root / "a_file.txt").write_text("not a folder")
    (root / "json_dir").mkdir()
    for key, value in [("log_file", ""), ("image_size", 65536), ("checkpoint_every", -1), ("seed", 1e20),
                       ("val_every", -5), ("bogus_key", 1), ("eta", 1.5), ("compile_mode", "turbo")]:
        (root / f"cfg_{key}.json").write_text(json.dumps({**cfg.to_dict(), key: value}))
    (root / "cfg_resume_size.json").write_text(json.dumps({"image_size": 32}))
    (root / "cfg_resume_steps.json").write_text(json.dumps({"train_steps": 1}))
    from spadfast.data.synthetic_volumes import write_demo_volumes

    write_demo_volumes(root / "vols", n_cases=1, shape=(16, 16, 3), num_classes=2, n_test=1)
    (root / "bad.yaml").write_text("image_size: [unclosed\n")

    multi = root / "multipage"
    write_synthetic_folder(multi, 2, 16, seed=2)
    pages = [np.zeros((16, 16), np.uint8), np.full((16, 16), 255, np.uint8)]
    (multi / "masks" / "0000.png").unlink()
    assert cv2.imwritemulti(str(multi / "masks" / "0000.tif"), pages)
    return root


# (id, argv with {root} placeholders, text the single error line must contain)
CASES = [
    ("predict-out-is-images", "predict --checkpoint {root}/run --images {root}/data/images --out {root}/data/images",
     "overlap the input"),
    ("predict-out-inside-images", "predict --checkpoint {root}/run --images {root}/data/images "
     "--out {root}/data/images/pred", "overlap the input"),
    ("predict-out-holds-images", "predict --checkpoint {root}/run --images {root}/data/images --out {root}/data",
     "overlap the input"),
    ("predict-out-holds-checkpoint", "predict --checkpoint {root}/run --images {root}/data/images --out {root}/run",
     "overlap the input"),
    ("predict-out-not-empty", "predict --checkpoint {root}/run --images {root}/data/images --out {root}/nonempty",
     "not empty"),
    ("predict-out-is-a-file", "predict --checkpoint {root}/run --images {root}/data/images --out {root}/a_file.txt",
     "is an existing file"),
    ("predict-no-checkpoint", "predict --checkpoint {root}/nope --images {root}/data/images --out {root}/p",
     "no checkpoint"),
    ("predict-flipped-bit", "predict --checkpoint {root}/run_flipped --images {root}/data/images --out {root}/p",
     "SHA-256"),
    ("predict-nan-weights", "predict --checkpoint {root}/run_nan --images {root}/data/images --out {root}/p",
     "NaN"),
    ("predict-images-missing", "predict --checkpoint {root}/run --images {root}/nope --out {root}/p", "--images"),
    ("train-existing-run", "train --data {root}/data --out {root}/run --config {root}/tiny.json", "already holds"),
    ("train-resume-and-overwrite", "train --out {root}/run --resume --overwrite", "exclude each other"),
    ("train-resume-nothing", "train --out {root}/empty_run --resume", "no checkpoint"),
    ("train-resume-data-gone", "train --out {root}/run_moved --resume --steps 3", "no longer exists"),
    ("train-resume-other-data", "train --out {root}/run --resume --data {root}/other_data --steps 3", "differs"),
    ("train-resume-config-key", "train --out {root}/run --resume --config {root}/cfg_resume_size.json",
     "`image_size` cannot change"),
    ("train-resume-preset", "train --out {root}/run --resume --preset cpu-small", "--preset"),
    ("train-log-file-empty", "train --out {root}/r1 --config {root}/cfg_log_file.json", "`log_file`"),
    ("train-image-size-huge", "train --out {root}/r2 --config {root}/cfg_image_size.json", "`image_size`"),
    ("train-checkpoint-every", "train --out {root}/r3 --config {root}/cfg_checkpoint_every.json",
     "`checkpoint_every`"),
    ("train-seed-huge", "train --out {root}/r4 --config {root}/cfg_seed.json", "`seed`"),
    ("train-val-every", "train --out {root}/r5 --config {root}/cfg_val_every.json", "`val_every`"),
    ("train-unknown-key", "train --out {root}/r6 --config {root}/cfg_bogus_key.json", "`bogus_key`"),
    ("train-eta", "train --out {root}/r7 --config {root}/cfg_eta.json", "`eta`"),
    ("train-bad-yaml", "train --out {root}/r8 --config {root}/bad.yaml", "bad.yaml"),
    ("train-out-is-a-file", "train --out {root}/a_file.txt --config {root}/tiny.json", "is an existing file"),
    ("train-data-not-a-folder", "train --data {root}/a_file.txt --out {root}/r9 --config {root}/tiny.json",
     "--data"),
    ("train-out-inside-data", "train --data {root}/data --out {root}/data/run --config {root}/tiny.json",
     "overlap the input"),
    ("train-multipage-tiff", "train --data {root}/multipage --out {root}/r10 --config {root}/tiny.json",
     "multipage"),
    ("train-unknown-preset", "train --out {root}/r11 --preset laptop", "unknown preset"),
    ("evaluate-json-is-dir", "evaluate --pred {root}/data/masks --gt {root}/data/masks --json {root}/json_dir",
     "is a folder"),
    ("evaluate-json-inside-pred", "evaluate --pred {root}/data/masks --gt {root}/data/masks "
     "--json {root}/data/masks/m.json", "inside the input"),
    ("evaluate-pred-missing", "evaluate --pred {root}/nope --gt {root}/data/masks", "--pred"),
    ("demo-out-not-empty", "demo --out {root}/nonempty --steps 1", "not empty"),
    ("predict-threads-huge", "predict --checkpoint {root}/run --images {root}/data/images --out {root}/p "
     "--threads 100000", "`--threads`"),
    ("predict-threads-zero", "predict --checkpoint {root}/run --images {root}/data/images --out {root}/p "
     "--threads 0", "`--threads`"),
    ("train-compile-mode", "train --out {root}/r12 --config {root}/cfg_compile_mode.json", "`compile_mode`"),
    ("train-resume-steps-below", "train --out {root}/run --resume --steps 1", "below the run's step 2"),
    ("train-resume-config-steps-below", "train --out {root}/run --resume --config {root}/cfg_resume_steps.json",
     "below the run's step 2"),
    # outputs into a data set's ground truth: refused whatever the flags
    ("predict-out-is-masks", "predict --checkpoint {root}/run --images {root}/other_data/images "
     "--out {root}/data/masks", "ground-truth masks"),
    ("predict-out-is-masks-overwrite", "predict --checkpoint {root}/run --images {root}/other_data/images "
     "--out {root}/data/masks --overwrite", "ground-truth masks"),
    ("predict-out-is-labelsTr-overwrite", "predict --checkpoint {root}/run --images {root}/vols/imagesTs "
     "--out {root}/vols/labelsTr --overwrite", "ground-truth masks"),
    ("predict-out-is-labelsTs-overwrite", "predict --checkpoint {root}/run --images {root}/vols/imagesTr "
     "--out {root}/vols/labelsTs --overwrite", "ground-truth masks"),
    ("train-out-is-masks", "train --out {root}/data/masks --overwrite --config {root}/tiny.json",
     "ground-truth masks"),
    ("demo-out-is-masks", "demo --out {root}/data/masks --overwrite --steps 1", "ground-truth masks"),
]


@pytest.mark.parametrize("argv,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_case_fails_cleanly_and_changes_nothing(world, argv, expected):
    before = _tree_hashes(world)
    proc = _run(*argv.format(root=world).split(), cwd=world)
    lines = [line for line in proc.stderr.splitlines() if line.strip() and "Warning" not in line
             and not line.startswith("  ")]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("spadfast ") and expected in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert _tree_hashes(world) == before


def test_resume_without_data_uses_the_recorded_folder(world, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(world / "run", run)
    proc = _run("train", "--out", str(run), "--resume", "--steps", "3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from spadfast.models.checkpoint import read_checkpoint

    _, meta = read_checkpoint(run)
    assert meta["step"] == 3 and meta["data"]["train"]["path"] == str((world / "data").resolve())


def test_overwrite_starts_a_clean_log_and_stale_temps_are_removed(world, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(world / "run", run)
    (run / "log.jsonl").write_text('{"step": 999, "loss": 1.0}\n')
    stale = run / ".checkpoint.safetensors.spadfast-tmp-abc123"
    stale.write_bytes(b"\0" * 1024)  # what a kill mid-save leaves behind
    proc = _run("train", "--data", str(world / "data"), "--out", str(run), "--overwrite", "--config",
                str(world / "tiny.json"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not stale.exists()
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert 999 not in steps and steps == [2]


def test_predict_overwrite_replaces_only_its_own_files(world, tmp_path):
    out = tmp_path / "pred"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    proc = _run("predict", "--checkpoint", str(world / "run"), "--images", str(world / "data" / "images"),
                "--out", str(out), "--overwrite", "--steps", "2", "--ensemble", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "notes.txt").read_text() == "keep me" and len(list(out.glob("*.png"))) == 4
