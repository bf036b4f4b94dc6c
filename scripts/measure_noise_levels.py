"""Dice reached in equal training time: the plain UNet, the cached-encoder model (batch 16) and the cached-encoder
model trained at several noise levels per encoded image (``noise_levels``), on held-out DSB2018 nuclei tiles.

Every configuration has 16 denoiser rows per step; the time budget is that of the SPAD study's baseline (the
``cpu-small`` preset, cached encoder, batch 16, 1000 steps), and each configuration trains for as many steps as fit
in it by its measured seconds per step (``benchmarks/test_bench_training.py::test_bench_training_rows``, one
thread, quiet machine; passed with ``--ms``). The study's baseline runs are the cached-b16 arm (same data, config and
seeds); the others are trained here on the same folds and seeds, perturbation off, and scored like the study (10
DDIM steps, 1 member, noise keyed per tile). Differences are paired by (fold, seed) with a t-interval over runs.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python scripts/measure_noise_levels.py --study /work/study \\
        --ms unet-b16=104.5 cached-b16=135.0 cached-b4xL4=73.5
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

ARMS = {
    "unet-b16": dict(model_type="unet", batch_size=16),
    "cached-b16": dict(model_type="cached_unet", batch_size=16),
    "cached-b4xL4": dict(model_type="cached_unet", batch_size=4, noise_levels=4),
    "cached-b8xL2": dict(model_type="cached_unet", batch_size=8, noise_levels=2),
}
REFERENCE = "cached-b16"  # the study's baseline runs
STEPS_REF = 1000


def _mean_dice(records: list[dict], steps: int = 10, ensemble: int = 1) -> float:
    for r in records:
        if r["steps"] == steps and r["ensemble"] == ensemble:
            return float(r["mean"]["dice"])
    raise KeyError((steps, ensemble))


def main() -> None:
    import torch

    from spadfast.config import SPADConfig
    from spadfast.io.files import write_text_atomic
    from spadfast.study.ablate import run_ablation
    from spadfast.study.grid_eval import evaluate_checkpoint
    from spadfast.study.stats import t_interval

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", type=Path, required=True, help="the SPAD study's folder (data/, runs/)")
    p.add_argument("--out", type=Path, help="where the new runs go (default: STUDY/noise_levels)")
    p.add_argument("--ms", nargs="+", required=True, metavar="ARM=MS", help="measured milliseconds per step")
    p.add_argument("--arms", nargs="+", default=["unet-b16", "cached-b4xL4"])
    p.add_argument("--folds", type=int, default=2)
    p.add_argument("--seeds", type=int, default=3)
    args = p.parse_args()
    ms = {k: float(v) for k, v in (item.split("=") for item in args.ms)}
    out = args.out or args.study / "noise_levels"
    torch.set_num_threads(1)
    base = SPADConfig.preset("cpu-small", train_steps=STEPS_REF, checkpoint_every=250, val_every=0, num_workers=0,
                             progress_bar=False, perturb={"enabled": False}).to_dict()
    results: dict[str, dict[str, float]] = {REFERENCE: {}}
    for k in range(args.folds):
        for seed in range(args.seeds):
            ref = args.study / "runs" / "clean" / f"fold{k}" / "runs" / "baseline" / f"seed{seed}" / "study_eval.json"
            if ref.is_file():
                results[REFERENCE][f"fold{k}/seed{seed}"] = _mean_dice(json.loads(ref.read_text()))
    for arm in args.arms:
        steps = round(STEPS_REF * ms[REFERENCE] / ms[arm])
        results[arm] = {}
        for k in range(args.folds):
            data = args.study / "data" / "clean" / f"fold{k}"
            for seed in range(args.seeds):
                cfg = {**base, **ARMS[arm], "train_steps": steps, "seed": seed}
                folder = out / arm / f"fold{k}" / f"seed{seed}"
                scores = folder / "study_eval.json"
                if not scores.is_file():
                    run_ablation(data / "train", folder, val=data / "test", config=cfg, seeds=1,
                                 variants=["baseline"], log=lambda m, tag=f"[{arm} fold{k} seed{seed}]":
                                 print(tag, m, flush=True))
                    run = folder / "runs" / "baseline" / f"seed{seed}"  # ablate names a run by its config seed
                    records = evaluate_checkpoint(run, data / "test" / "images", data / "test" / "masks",
                                                  steps=(10,), ensembles=(1,))
                    write_text_atomic(scores, json.dumps(records))
                results[arm][f"fold{k}/seed{seed}"] = _mean_dice(json.loads(scores.read_text()))
                print(f"{arm} ({steps} steps) fold{k} seed{seed}: Dice {results[arm][f'fold{k}/seed{seed}']:.4f}",
                      flush=True)
    print(f"\nequal training time: {STEPS_REF} steps x {ms[REFERENCE]:.1f} ms of {REFERENCE} = "
          f"{STEPS_REF * ms[REFERENCE] / 1000:.0f} s of step time")
    for arm in args.arms:
        units = sorted(set(results[arm]) & set(results[REFERENCE]))
        diffs = [results[arm][u] - results[REFERENCE][u] for u in units]
        mean, lo, hi = t_interval(diffs) if len(diffs) > 1 else (diffs[0] if diffs else math.nan, math.nan, math.nan)
        print(f"{arm} ({round(STEPS_REF * ms[REFERENCE] / ms[arm])} steps) - {REFERENCE} ({STEPS_REF} steps): "
              f"Dice {mean:+.4f} [{lo:+.4f}, {hi:+.4f}] (95 % t-interval, n = {len(diffs)} runs); "
              f"{arm} mean {sum(results[arm][u] for u in units) / max(1, len(units)):.4f}, {REFERENCE} mean "
              f"{sum(results[REFERENCE][u] for u in units) / max(1, len(units)):.4f}")
    write_text_atomic(out / "results.json", json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
