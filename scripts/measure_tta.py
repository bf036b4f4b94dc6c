"""Test-time augmentation measured: Dice and HD95 with and without ``tta`` on held-out DSB2018 nuclei tiles, the
training run as the unit.

Uses the SPAD study's runs (``scripts/spad_study.py``; ``--out`` its folder): for every finished baseline run (spatial
fold x seed, clean annotations), the test tiles of its fold are predicted twice with the same seed, members and
steps, once plain and once with TTA (the 8 dihedral views spread over the members), and scored with
``evaluate_folders``. Prints the per-run table and the mean paired difference with a 95 % t-interval over runs,
beside the trivial baselines the study computed.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/measure_tta.py --out /work/study --steps 10 --ensemble 8
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import numpy as np

from spadfast.evaluation.evaluate import evaluate_folders
from spadfast.infer.segmenter import Segmenter, predict_folder
from spadfast.study.stats import t_interval


def _score(segmenter, images: Path, gt: Path, tta: bool, steps: int, ensemble: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        predict_folder(segmenter, images, tmp, steps=steps, ensemble=ensemble, seed=0, tta=tta)
        report = evaluate_folders(tmp, gt)
    hd = [c["hd95"] for c in report["cases"]]
    finite = [h for h in hd if math.isfinite(h)]
    return {"dice": report["mean"]["dice"], "hd95_median": float(np.median(finite)) if finite else math.inf,
            "hd95_inf": sum(not math.isfinite(h) for h in hd)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="the study's folder (runs/ and data/)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--ensemble", type=int, default=8)
    p.add_argument("--json", type=Path, help="also write the per-run records here")
    args = p.parse_args()
    rows = []
    for run in sorted((args.out / "runs" / "clean").glob("fold*/runs/baseline/seed*")):
        if not (run / "checkpoint.safetensors").is_file():
            continue
        fold = run.parts[-4]
        test = args.out / "data" / "clean" / fold / "test"
        segmenter = Segmenter.from_checkpoint(run, device="cpu", amp="none")
        plain = _score(segmenter, test / "images", test / "masks", False, args.steps, args.ensemble)
        tta = _score(segmenter, test / "images", test / "masks", True, args.steps, args.ensemble)
        rows.append({"run": f"{fold}/{run.name}", "plain": plain, "tta": tta})
        print(f"{fold}/{run.name}: Dice {plain['dice']:.4f} -> {tta['dice']:.4f} with TTA; median HD95 "
              f"{plain['hd95_median']:.2f} -> {tta['hd95_median']:.2f} px", flush=True)
    if not rows:
        raise SystemExit(f"no finished baseline runs under {args.out / 'runs' / 'clean'}")
    for key in ("dice", "hd95_median"):
        diffs = [r["tta"][key] - r["plain"][key] for r in rows]
        mean, lo, hi = t_interval(diffs) if len(diffs) > 1 else (diffs[0], math.nan, math.nan)
        print(f"TTA - plain, {key}: {mean:+.4f} [{lo:+.4f}, {hi:+.4f}] (95 % t-interval, n = {len(diffs)} runs)")
    baselines = args.out / "baselines.json"
    if baselines.is_file():
        print(f"trivial baselines on the same tiles: {json.loads(baselines.read_text())}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
