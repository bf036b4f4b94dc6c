"""The SPAD study (docs/spad_study.md): DSB2018 spatial folds, clean and noisy training annotations, seeds x variants.

Steps (each resumable; rerunning skips what is done):

    python scripts/spad_study.py prepare --out STUDY      # data: folds of the DSB2018 nuclei image (stardist wheel)
    python scripts/spad_study.py run --out STUDY          # train + evaluate every cell (hours on a CPU)
    python scripts/spad_study.py evaluate --out STUDY     # every finished run at DDIM steps x ensembles
    python scripts/spad_study.py collect --out STUDY      # copy finished cells' results into docs/spad_study/cells
    python scripts/spad_study.py report                   # docs/spad_study.md from docs/spad_study/cells

Data: ``stardist/data/images/img2d.tif`` and ``mask2d.tif`` (512x512, 125 nuclei) from the stardist 0.9.2 wheel
(``pip download --no-deps stardist==0.9.2``; pass ``--wheel`` or let ``prepare`` download it). Fold k holds out the
horizontal strip k of 128 rows, tiled into 64 non-overlapping 32x32 test tiles; training tiles (32x32, stride 16)
come from the other strips, at least ``GUARD`` rows away from the held-out strip. ``noisy`` is the same folds with
seeded per-object annotation noise on the training masks (each nucleus dilated or eroded by 1-2 px, then a smooth
contour warp); test masks stay clean. Base config: the ``cpu-small`` preset (``BASE`` below).

The unit of the statistics is a training run (fold x seed); cells run seed-major, so complete pairs finish first.
Run with one thread per process and ``nice``: ``OMP_NUM_THREADS=1 nice -n 10 python scripts/spad_study.py run``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STRIP, TILE, TRAIN_STRIDE, GUARD = 128, 32, 16, 16
# the primary comparisons' variants run first (every seed), then the rest
PRIMARY_VARIANTS = ("baseline", "SPAD input", "SPAD no-fade", "SPAD input no-fade")
VARIANTS = PRIMARY_VARIANTS + ("SPAD", "DDPM-IP", "supervised", "structured")
DATASETS = ("clean", "noisy")
# SPAD on in the base, as when the study started (the default is now off): the variants are relative to it
# x0_loss_weight and step_fusion pinned to the values the study ran with (the library defaults changed after it)
BASE = {"train_steps": 1000, "checkpoint_every": 250, "val_every": 0, "num_workers": 0, "progress_bar": False,
        "perturb": {"enabled": True}, "x0_loss_weight": 0.0, "step_fusion": "none"}


def _dsb(wheel: Path | None, cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """The DSB2018 image (uint8 [512,512]) and its instance labels (int32 [512,512])."""
    cache.mkdir(parents=True, exist_ok=True)
    img_path, lab_path = cache / "img2d.tif", cache / "mask2d.tif"
    if not (img_path.is_file() and lab_path.is_file()):
        if wheel is None:
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "stardist==0.9.2", "-d",
                            str(cache)], check=True)
            wheel = next(cache.glob("stardist-0.9.2-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            for name, dst in (("img2d.tif", img_path), ("mask2d.tif", lab_path)):
                dst.write_bytes(z.read(f"stardist/data/images/{name}"))
    image = cv2.imread(str(img_path), cv2.IMREAD_UNCHANGED)
    labels = cv2.imread(str(lab_path), cv2.IMREAD_UNCHANGED).astype(np.int32)
    if image.max() > 255:
        raise ValueError(f"{img_path}: expected 8-bit values, max is {image.max()}")
    return image.astype(np.uint8), labels


def noisy_annotation(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Bool [H,W]: each object dilated or eroded by 1-2 px (seeded per object), then a smooth contour warp."""
    rng = np.random.default_rng(seed)
    out = np.zeros(labels.shape, bool)
    for obj in range(1, int(labels.max()) + 1):
        m = (labels == obj).astype(np.uint8)
        if not m.any():
            continue
        r = int(rng.integers(1, 3))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        m = cv2.dilate(m, kernel) if rng.random() < 0.5 else cv2.erode(m, kernel)
        out |= m.astype(bool)
    h, w = labels.shape
    field = [cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 6) for _ in range(2)]
    field = [f / (np.abs(f).max() + 1e-8) * 1.5 for f in field]  # up to 1.5 px, smooth over ~6 px
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    warped = cv2.remap(out.astype(np.uint8), xx + field[1], yy + field[0], cv2.INTER_NEAREST)
    return warped.astype(bool)


def _write_pair(folder: Path, stem: str, image: np.ndarray, mask: np.ndarray) -> None:
    for sub, arr in (("images", image), ("masks", mask.astype(np.uint8) * 255)):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / sub / f"{stem}.png"), arr)


def prepare(out: Path, folds: int, wheel: Path | None) -> None:
    image, labels = _dsb(wheel, out / "source")
    clean = labels > 0
    masks = {"clean": clean, "noisy": noisy_annotation(labels, seed=0)}
    n_strips = image.shape[0] // STRIP
    for k in range(folds):
        lo, hi = k * STRIP, (k + 1) * STRIP
        for name, train_mask in masks.items():
            root = out / "data" / name / f"fold{k}"
            if (root / "done").is_file():
                continue
            if root.exists():
                shutil.rmtree(root)
            for y in range(lo, hi, TILE):
                for x in range(0, image.shape[1], TILE):
                    _write_pair(root / "test", f"y{y:03d}_x{x:03d}", image[y:y + TILE, x:x + TILE],
                                clean[y:y + TILE, x:x + TILE])
            for y in range(0, image.shape[0] - TILE + 1, TRAIN_STRIDE):
                if y + TILE > lo - GUARD and y < hi + GUARD:
                    continue
                for x in range(0, image.shape[1] - TILE + 1, TRAIN_STRIDE):
                    _write_pair(root / "train", f"y{y:03d}_x{x:03d}", image[y:y + TILE, x:x + TILE],
                                train_mask[y:y + TILE, x:x + TILE])
            (root / "done").write_text("")
    disagreement = float((masks["clean"] ^ masks["noisy"]).sum() / masks["clean"].sum())
    print(f"prepared {folds} of {n_strips} folds in {out / 'data'}; noisy annotations change "
          f"{disagreement:.1%} of the foreground's area")


def run(out: Path, folds: int, seeds: int, variants: tuple[str, ...], datasets: tuple[str, ...]) -> None:
    import torch

    from spadfast.config import SPADConfig
    from spadfast.study.ablate import run_ablation

    torch.set_num_threads(1)
    base = SPADConfig.preset("cpu-small", **BASE).to_dict()
    phases = [p for p in ([v for v in variants if v in PRIMARY_VARIANTS], list(variants)) if p]
    for phase in phases:
        for n_seeds in range(1, seeds + 1):  # seed-major: every (fold, data set) gets seed k before any gets k + 1
            for k in range(folds):
                for name in datasets:
                    data = out / "data" / name / f"fold{k}"
                    run_ablation(data / "train", out / "runs" / name / f"fold{k}", val=data / "test", config=base,
                                 seeds=n_seeds, variants=phase,
                                 log=lambda m, tag=f"[{name} fold{k}]": print(tag, m, flush=True))


EVAL_FILE = "study_eval.json"
CONFIRMATORY_FOLDS = (2, 3)  # docs/spad_study/confirmatory.md; spad_study_report.EXTENSION_FOLDS
CONFIRMATORY_BASELINES = "baselines_confirmatory.json"  # the trivial baselines on those folds' test tiles
KEPT_METRICS = ("dice", "iou", "hd95", "boundary_f1", "spurious", "brier", "ece", "brier_band", "ece_band")


def evaluate(out: Path) -> int:
    """Score every finished run (``metrics.json`` present, no ``study_eval.json`` yet) at the study's DDIM step
    counts x ensemble sizes, on its fold's clean test tiles."""
    import torch

    from spadfast.io.files import write_text_atomic
    from spadfast.study.grid_eval import evaluate_checkpoint

    torch.set_num_threads(1)
    n = 0
    for done in sorted((out / "runs").glob("*/fold*/runs/*/seed*/metrics.json")):
        run = done.parent
        if (run / EVAL_FILE).is_file():
            continue
        data, fold = done.relative_to(out / "runs").parts[:2]
        test = out / "data" / data / fold / "test"
        records = evaluate_checkpoint(run, test / "images", test / "masks")
        write_text_atomic(run / EVAL_FILE, json.dumps(records))
        print(f"evaluated {run}", flush=True)
        n += 1
    return n


def trivial_baselines(out: Path, folds: Sequence[int]) -> dict[str, float]:
    """Dice of two thresholds without training, on the same test tiles (:mod:`spadfast.evaluation.baselines`): Otsu per tile,
    and one intensity threshold tuned on each fold's training tiles; the mean over every fold's test tiles."""
    from spadfast.evaluation.baselines import trivial_baselines as fold_baselines
    from spadfast.io.files import index_folder, read_mask

    def tiles(folder: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
        files = index_folder(folder / "images")
        return ([cv2.imread(str(files[s]), cv2.IMREAD_GRAYSCALE) for s in sorted(files)],
                [read_mask(folder / "masks" / f"{s}.png") for s in sorted(files)])

    sums: dict[str, float] = {}
    count = 0
    for k in folds:
        root = out / "data" / "clean" / f"fold{k}"
        test = tiles(root / "test")
        for name, value in fold_baselines(*tiles(root / "train"), *test).items():
            sums[name] = sums.get(name, 0.0) + value * len(test[0])
        count += len(test[0])
    return {name: total / count for name, total in sums.items()}


def _slim_case(case: dict) -> dict:
    return {"name": case["name"], **{k: round(float(case[k]), 4) for k in KEPT_METRICS}}


# Until these times (UTC, 2026-12-04) a data set's runs were trained by the frozen worktree /work/study-wt, after
# them by the main checkout (its commit when the run finished is recorded; the process may have started earlier)
_MAIN_FROM = {"clean": "2026-12-04T06:25:00", "noisy": "2026-12-04T06:58:00"}


def _git_commit(repo: Path, before: float) -> str:
    stamp = datetime.fromtimestamp(before, timezone.utc).isoformat()
    found = subprocess.run(["git", "-C", str(repo), "log", "-1", f"--before={stamp}", "--format=%h"],
                           capture_output=True, text=True)
    return found.stdout.strip() or "unknown"


def _trained_by(data: str, variant: str, finished: float) -> str:
    """Which spadfast trained a run that finished at ``finished`` (epoch seconds): worktree and commit."""
    start = datetime.fromisoformat(_MAIN_FROM[data]).replace(tzinfo=timezone.utc).timestamp()
    if finished >= start or variant == "nnu-net-augmentation":
        return f"main at {_git_commit(ROOT, finished)} or earlier"
    return f"/work/study-wt at {_git_commit(Path('/work/study-wt'), finished)}"


def collect(out: Path, dest: Path) -> int:
    """Copy each evaluated run (the cell's result) to ``dest/<data>/fold<k>/<variant>/seed<s>.json``: its config,
    training time, the ablation's held-out scores and the study evaluation, per image."""
    n = 0
    for done in sorted((out / "runs").glob("*/fold*/runs/*/seed*/metrics.json")):
        if not (done.parent / EVAL_FILE).is_file():
            continue
        data, fold, _, variant, seed = done.relative_to(out / "runs").parts[:5]
        record = json.loads(done.read_text())
        study = json.loads((done.parent / EVAL_FILE).read_text())
        slim = {k: record[k] for k in ("config", "steps", "train_seconds")}
        slim["finished"] = datetime.fromtimestamp(done.stat().st_mtime, timezone.utc).isoformat(timespec="seconds")
        slim["code"] = _trained_by(data, variant, done.stat().st_mtime)
        slim["study"] = [{"steps": r["steps"], "ensemble": r["ensemble"], "mean": r["mean"],
                          "cases": [_slim_case(c) for c in r["cases"]]} for r in study]
        target = dest / data / fold / variant / f"{seed}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(slim, separators=(",", ":")))
        n += 1
    print(f"collected {n} evaluated runs into {dest}")
    return n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("step", choices=["prepare", "run", "evaluate", "collect", "report"])
    p.add_argument("--out", type=Path, default=Path("spad_study"))
    p.add_argument("--folds", type=int, default=2)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS))
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    p.add_argument("--wheel", type=Path, help="stardist-0.9.2 wheel (default: pip download it)")
    p.add_argument("--dest", type=Path, default=ROOT / "docs" / "spad_study" / "cells")
    p.add_argument("--code", default="runs trained by a frozen worktree (`/work/study-wt`) that moved from "
                   "5d8f22e to d3dd02b on 2026-12-04 as variants were added (the variants that ran train identically "
                   "at each), except the clean runs started after 06:25 that day (the nnU-Net augmentation extension "
                   "and the secondary variants from then on), trained by main from f770dd5 / 7627446 on (the baseline "
                   "trains bit-identically at d3dd02b and 7627446: checked over 15 steps; the structured variant's "
                   "contour-warp blur changed in between); the runs that finished after 08:30 on 2026-12-04 (the "
                   "last 7 planned runs, most of the object-BcD extension, the confirmatory test, the primary "
                   "comparisons on folds 2-3) by main with the spadfast package of d9f8020 (unchanged while they "
                   "ran); evaluated with main at 2b4b85e and later (study_eval unchanged since)",
                   help="report: which spadfast code made the runs")
    args = p.parse_args(argv)
    if args.step == "prepare":
        prepare(args.out, args.folds, args.wheel)
    elif args.step == "run":
        from spadfast.runtime.preemption import EXIT_STOPPED, Stopped

        prepare(args.out, args.folds, args.wheel)
        try:
            run(args.out, args.folds, args.seeds, tuple(args.variants), tuple(args.datasets))
        except Stopped as e:  # a signal: the run's checkpoint is saved and it resumes on the next call
            print(f"spad_study: {e}", flush=True)
            return EXIT_STOPPED
    elif args.step == "evaluate":
        evaluate(args.out)
        baselines = trivial_baselines(args.out, range(args.folds))
        (args.out / "baselines.json").write_text(json.dumps(baselines, indent=1))
        if all((args.out / "data" / "clean" / f"fold{k}" / "done").is_file() for k in CONFIRMATORY_FOLDS):
            (args.out / CONFIRMATORY_BASELINES).write_text(
                json.dumps(trivial_baselines(args.out, CONFIRMATORY_FOLDS), indent=1))
    elif args.step == "collect":
        collect(args.out, args.dest)
        for name in ("baselines.json", CONFIRMATORY_BASELINES):
            if (args.out / name).is_file():
                shutil.copyfile(args.out / name, args.dest / name)
    else:
        from spad_study_report import write_report

        page = ROOT / "docs" / "spad_study.md"
        baselines_file = args.dest / "baselines.json"
        baselines = json.loads(baselines_file.read_text()) if baselines_file.is_file() else None
        confirm_file = args.dest / CONFIRMATORY_BASELINES
        confirm_baselines = json.loads(confirm_file.read_text()) if confirm_file.is_file() else None
        from spadfast.study.ablate import slug

        plan = [(d, f"fold{k}", slug(v), s) for s in range(args.seeds) for k in range(args.folds)
                for d in args.datasets for v in args.variants]
        page.write_text(write_report(args.dest, page, baselines, len(plan), plan, args.code,
                                    confirm_baselines))
        print(f"wrote {page}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
