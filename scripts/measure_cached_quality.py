"""Held-out Dice of the concat UNet (SPADUNet) vs the cached-encoder model (SPADCachedUNet), same training settings.

Two data sets, each model trained from the same seed with the same config (``spadfast.demo.demo_config("cpu")``:
1000 steps of batch 16 at 32x32, x0 prediction, sampled with 10 DDIM steps x 3 members):

- ``demo``: the demo's synthetic lesions, evaluated exactly as ``spadfast demo`` does (``write_synthetic_folder`` of
  32 held-out images with the demo's test seed, ``predict_folder``, ``evaluate_folders``).
- ``coins``: a real photograph, ``skimage/data/coins.png`` (303x384, 8-bit gray, shipped in the scikit-image wheel:
  ``pip install scikit-image`` into the venv for this script only; not a spadfast dependency). Mask protocol:
  Gaussian blur sigma 1, Otsu threshold, holes filled (``scipy.ndimage.binary_fill_holes``), connected components
  under 64 px removed. Columns 0..255 are the training region (every 32x32 window at stride 4, 3,876 tiles; the
  trainer adds flips / 90-degree rotations), columns 256..383 are held out (non-overlapping 32x32 tiles, 36 tiles:
  rows 0..287); Dice / HD95 per tile with ``spadfast.evaluation.metrics`` (empty vs empty Dice 1, HD95 0; empty vs non-empty
  HD95 inf is reported as a count, and the HD95 mean is over finite tiles).

Usage: ``OMP_NUM_THREADS=1 python scripts/measure_cached_quality.py [--data demo coins] [--models unet cached8]
[--out /tmp/spad_quality]``; writes one JSON per (data, model) and prints a summary. Threads: 1 (``--threads``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from spadfast.demo import TEST_SEED, demo_config
from spadfast.models.cached_unet import SPADCachedUNet
from spadfast.models.unet import count_parameters
from spadfast.train.trainer import SPADTrainer

MODELS = {
    "unet": None,  # the trainer's default SPADUNet from the config
    "cached4": {"denoiser_channels": 4},
    "cached8": {"denoiser_channels": 8},
    "cached16": {"denoiser_channels": 16},
}


def make_model(name: str, cfg) -> torch.nn.Module | None:
    extra = MODELS[name]
    if extra is None:
        return None
    torch.manual_seed(cfg.seed)
    return SPADCachedUNet(
        image_channels=cfg.image_channels, mask_channels=1 + (cfg.perturb_mode == "condition"),
        base_channels=cfg.base_channels, channel_mults=cfg.channel_mults, num_res_blocks=cfg.num_res_blocks,
        attention_levels=cfg.attention_levels, dropout=cfg.dropout, **extra,
    )


def coins_tiles(size: int = 32) -> tuple[torch.utils.data.Dataset, torch.Tensor, torch.Tensor]:
    import cv2
    import skimage
    from scipy import ndimage

    path = Path(skimage.__file__).parent / "data" / "coins.png"
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise FileNotFoundError(path)
    blur = cv2.GaussianBlur(img, (0, 0), 1.0)
    _, th = cv2.threshold(blur, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    mask = ndimage.binary_fill_holes(th.astype(bool))
    lab, n = ndimage.label(mask)
    sizes = ndimage.sum(mask, lab, range(1, n + 1))
    mask = np.isin(lab, 1 + np.flatnonzero(sizes >= 64))
    image = img.astype(np.float32) / 127.5 - 1.0
    H = img.shape[0]

    def tiles(x0: int, x1: int, stride: int):
        ims, ms = [], []
        for y in range(0, H - size + 1, stride):
            for x in range(x0, x1 - size + 1, stride):
                ims.append(image[y : y + size, x : x + size])
                ms.append(mask[y : y + size, x : x + size])
        return (torch.from_numpy(np.stack(ims))[:, None].float(),
                torch.from_numpy(np.stack(ms))[:, None].float())

    tr_i, tr_m = tiles(0, 256, 4)
    te_i, te_m = tiles(256, 384, size)
    return torch.utils.data.TensorDataset(tr_i, tr_m), te_i, te_m


def evaluate_tensors(trainer: SPADTrainer, images: torch.Tensor, masks: torch.Tensor) -> dict:
    from spadfast.evaluation import metrics

    preds = []
    for s in range(0, len(images), 8):
        preds.append(trainer.segment(images[s : s + 8], seed=s).mask.cpu())
    pred = torch.cat(preds)
    d = metrics.dice(pred, masks.bool())
    h = metrics.hd95(pred, masks.bool())
    finite = np.isfinite(h)
    return {"dice": float(np.mean(d)), "hd95_finite_mean": float(np.mean(h[finite])) if finite.any() else math.inf,
            "hd95_inf": int((~finite).sum()), "n": len(images)}


def run(data: str, model_name: str, out: Path, steps: int | None) -> dict:
    cfg = demo_config("cpu")
    if steps is not None:
        cfg.train_steps = steps
    cfg.progress_bar = False
    t0 = time.perf_counter()
    if data == "demo":
        from spadfast.data.synthetic import write_synthetic_folder
        from spadfast.evaluation.evaluate import evaluate_folders
        from spadfast.infer.segmenter import predict_folder

        trainer = SPADTrainer(cfg, model=make_model(model_name, cfg))
        trainer.fit()
        train_s = time.perf_counter() - t0
        run_dir = out / f"{data}_{model_name}"
        test_dir = out / "demo_test"
        if not (test_dir / "images").is_dir():
            write_synthetic_folder(test_dir, 32, cfg.image_size, TEST_SEED)
        predict_folder(trainer, test_dir / "images", run_dir / "pred")
        report = evaluate_folders(run_dir / "pred", test_dir / "masks")
        result = {k: report["mean"][k] for k in ("dice", "iou", "hd95")}
    else:
        train, te_i, te_m = coins_tiles(cfg.image_size)
        cfg.val_every = 0
        trainer = SPADTrainer(cfg, train_data=train, model=make_model(model_name, cfg))
        trainer.fit()
        train_s = time.perf_counter() - t0
        result = evaluate_tensors(trainer, te_i, te_m)
    result.update(data=data, model=model_name, params=count_parameters(trainer.model), train_steps=cfg.train_steps,
                  train_s=round(train_s, 1), total_s=round(time.perf_counter() - t0, 1),
                  sample_steps=cfg.sample_steps, ensemble=cfg.ensemble, threads=torch.get_num_threads(),
                  val_log=[r.get("val_dice") for r in trainer.history if "val_dice" in r])
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{data}_{model_name}.json").write_text(json.dumps(result, indent=2))
    if model_name == "unet" and data == "demo":
        trainer.save(out / "demo_unet_run")  # reused by scripts/measure_fewstep.py
    elif data == "demo":
        torch.save(trainer.ema.state_dict(), out / f"demo_{model_name}_ema.pt")  # measure_fewstep.py --state
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", nargs="+", default=["demo", "coins"], choices=["demo", "coins"])
    p.add_argument("--models", nargs="+", default=["unet", "cached8"], choices=sorted(MODELS))
    p.add_argument("--out", default="/tmp/spad_quality")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the demo's 1000)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    commit = os.environ.get("SPADFAST_COMMIT") or subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"# {platform.processor() or platform.machine()} torch {torch.__version__} threads {args.threads} "
          f"commit {commit} load {os.getloadavg()[0]:.2f} {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    for data in args.data:
        for name in args.models:
            r = run(data, name, Path(args.out), args.steps)
            print(json.dumps(r), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
