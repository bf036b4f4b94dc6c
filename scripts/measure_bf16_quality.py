"""Does bf16 autocast (and channels-last) change sampling quality? Demo held-out Dice / HD95, fp32 vs bf16.

Models: the demo UNet checkpoint and a cached-encoder EMA state dict written by
``scripts/measure_cached_quality.py`` (``--checkpoint``, ``--state``); split: the demo's held-out PNGs (``--test``).
Sampling: ``DDIMSampler`` with 10 steps x 3 members, seeds 0, 8, 16, 24 per batch of 8 (as ``predict_folder`` at the
time of writing), fp32 or bf16 autocast, contiguous or channels-last. Threads: 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure_cached_quality import make_model  # noqa: E402
from measure_fewstep import load_split  # noqa: E402

from spadfast.demo import demo_config  # noqa: E402
from spadfast.diffusion.sampler import DDIMSampler  # noqa: E402
from spadfast.diffusion.schedule import alphas_cumprod, make_betas  # noqa: E402
from spadfast.evaluation import metrics  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="/tmp/spad_quality/demo_unet_run")
    p.add_argument("--state", default="/tmp/spad_quality/demo_cached4_ema.pt", help="cached4 EMA state dict")
    p.add_argument("--test", default="/tmp/spad_quality/demo_test")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from spadfast.train.trainer import SPADTrainer

    cfg = demo_config("cpu")
    images, masks = load_split(Path(args.test), cfg.image_size)
    ac = alphas_cumprod(make_betas(cfg.beta_schedule, cfg.num_train_timesteps))
    models = [("unet", SPADTrainer.from_checkpoint(args.checkpoint).ema)]
    if args.state and Path(args.state).is_file():
        cached = make_model("cached4", cfg)
        cached.load_state_dict(torch.load(args.state, map_location="cpu"))
        models.append(("cached4", cached.eval()))
    for name, model in models:
        for amp in (None, torch.bfloat16):
            for cl in (False, True):
                sampler = DDIMSampler(model, ac, prediction_type=cfg.prediction_type, steps=10, cuda_graph=False,
                                      amp_dtype=amp, channels_last=cl)
                pred = torch.cat([sampler.sample(images[i : i + 8], ensemble=3, seed=i).mask
                                  for i in range(0, len(images), 8)])
                h = metrics.hd95(pred, masks)
                fin = np.isfinite(h)
                print(name, "bf16" if amp else "fp32", "channels_last" if cl else "contiguous",
                      f"dice {float(metrics.dice(pred, masks).mean()):.4f}",
                      f"hd95 {float(h[fin].mean()):.3f} (inf: {int((~fin).sum())})", flush=True)


if __name__ == "__main__":
    main()
