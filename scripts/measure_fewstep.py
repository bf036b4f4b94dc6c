"""Few-step quality curve: held-out Dice and HD95 vs DDIM steps and ensemble size, demo-trained model.

Model: the demo's UNet (``spadfast.demo.demo_config("cpu")``, 1000 steps, x0 prediction), trained by
``scripts/measure_cached_quality.py --data demo --models unet`` and saved to ``OUT/demo_unet_run`` (``--checkpoint``);
``--state NAME=PATH`` adds a cached-encoder model (``SPADCachedUNet`` state dict saved by the same script).
Held-out split: the demo's (32 synthetic 32x32 images, ``write_synthetic_folder`` with ``spadfast.demo.TEST_SEED``,
read back from PNG as the demo does).

For each S in ``--steps`` one 10-member ensemble is drawn per image (``DDIMSampler.sample(..., ensemble=10, seed=s,
return_members=True)`` for the batch of 8 images starting at s, eta 0, trailing spacing, x0 clipped); an ensemble
of K is its first K members (K in
``--ensembles``), averaged and thresholded at 0.5. Dice and HD95 (``spadfast.evaluation.metrics``, MONAI conventions) per image;
HD95 is averaged over the images where it is finite, and the number of infinite ones (empty prediction, non-empty
mask) is given. Writes ``fewstep.json`` and, with matplotlib, ``--plot`` (default docs/fewstep_curve.png).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from spadfast.demo import TEST_SEED, demo_config
from spadfast.diffusion.sampler import DDIMSampler
from spadfast.diffusion.schedule import alphas_cumprod, make_betas
from spadfast.evaluation import metrics

sys.path.insert(0, str(Path(__file__).resolve().parent))


def load_split(folder: Path, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    from spadfast.data.synthetic import write_synthetic_folder

    if not (folder / "images").is_dir():
        write_synthetic_folder(folder, 32, size, TEST_SEED)
    names = sorted(p.name for p in (folder / "images").glob("*.png"))
    imgs, masks = [], []
    for n in names:
        im = cv2.imread(str(folder / "images" / n), cv2.IMREAD_UNCHANGED)
        scale = 65535.0 if im.dtype == np.uint16 else 255.0
        imgs.append(im.astype(np.float32) / scale * 2 - 1)
        masks.append(cv2.imread(str(folder / "masks" / n), cv2.IMREAD_UNCHANGED) > 0)
    if imgs[0].ndim != 2:
        raise ValueError("expected gray demo images")
    return torch.from_numpy(np.stack(imgs))[:, None], torch.from_numpy(np.stack(masks))[:, None]


def curve(model, ac, cfg, images, masks, steps_list, ensembles) -> list[dict]:
    sampler = DDIMSampler(model, ac, prediction_type=cfg.prediction_type, spacing=cfg.timestep_spacing,
                          clip_sample=cfg.clip_sample, cuda_graph=False)
    rows = []
    kmax = max(ensembles)
    for S in steps_list:
        t0 = time.perf_counter()
        members = torch.cat([
            sampler.sample(images[s : s + 8], steps=S, ensemble=kmax, seed=s, return_members=True).members
            for s in range(0, len(images), 8)
        ])
        sample_s = time.perf_counter() - t0
        for K in ensembles:
            pred = members[:, :K].mean(dim=1, keepdim=True) > cfg.threshold
            d = metrics.dice(pred, masks)
            h = metrics.hd95(pred, masks)
            fin = np.isfinite(h)
            rows.append({"steps": S, "ensemble": K, "dice": float(d.mean()),
                         "hd95": float(h[fin].mean()) if fin.any() else float("inf"), "hd95_inf": int((~fin).sum()),
                         "n": len(images), "sample_s_for_10_members": round(sample_s, 2)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def plot(results: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    styles = ["-", "--", ":", "-."]
    for mi, (label, rows) in enumerate(results.items()):
        for K in sorted({r["ensemble"] for r in rows}):
            rs = sorted((r for r in rows if r["ensemble"] == K), key=lambda r: r["steps"])
            xs = [r["steps"] for r in rs]
            axes[0].plot(xs, [r["dice"] for r in rs], styles[mi % 4], marker="o", label=f"{label} K={K}")
            axes[1].plot(xs, [r["hd95"] for r in rs], styles[mi % 4], marker="o", label=f"{label} K={K}")
    for ax, name in zip(axes, ("mean Dice", "mean HD95 (px, finite)")):
        ax.set_xscale("log")
        ax.set_xticks([1, 2, 5, 10, 25, 50], labels=["1", "2", "5", "10", "25", "50"])
        ax.set_xlabel("DDIM steps")
        ax.set_ylabel(name)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("Demo held-out split (32 synthetic 32x32 images): quality vs DDIM steps and ensemble size K")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="/tmp/spad_quality/demo_unet_run")
    p.add_argument("--state", action="append", default=[], help="NAME=PATH of a cached-model state dict")
    p.add_argument("--test", default="/tmp/spad_quality/demo_test")
    p.add_argument("--steps", type=int, nargs="+", default=[1, 2, 5, 10, 25, 50])
    p.add_argument("--ensembles", type=int, nargs="+", default=[1, 3, 5, 10])
    p.add_argument("--out", default="/tmp/spad_quality/fewstep.json")
    p.add_argument("--plot", default="docs/fewstep_curve.png")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"# threads {torch.get_num_threads()} load {os.getloadavg()[0]:.2f} "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", flush=True)
    from spadfast.train.trainer import SPADTrainer

    results = {}
    trainer = SPADTrainer.from_checkpoint(args.checkpoint)
    cfg = trainer.config
    images, masks = load_split(Path(args.test), cfg.image_size)
    results["unet"] = curve(trainer.ema, trainer.alphas_cumprod, cfg, images, masks, args.steps, args.ensembles)
    for spec in args.state:
        from measure_cached_quality import make_model

        name, path = spec.split("=", 1)
        dcfg = demo_config("cpu")
        model = make_model(name, dcfg)
        model.load_state_dict(torch.load(path, map_location="cpu"))
        ac = alphas_cumprod(make_betas(dcfg.beta_schedule, dcfg.num_train_timesteps))
        results[name] = curve(model.eval(), ac, dcfg, images, masks, args.steps, args.ensembles)
    Path(args.out).write_text(json.dumps(results, indent=2))
    if args.plot:
        plot(results, Path(args.plot))


if __name__ == "__main__":
    main()
