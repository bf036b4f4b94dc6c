"""The two cost tables the docs state: what each preset costs to train and sample, and the MACs of one sampling call.

``--part presets``: for each preset (``--presets``, default ``cpu-small cpu-medium``; ``gpu-base`` needs CUDA), in
its own subprocess so peak memory is the preset's own: build ``SPADTrainer(SPADConfig.preset(name))`` on its
synthetic lesions, run ``--warmup`` steps, time ``--steps`` more (steps/s, and minutes for the preset's
``train_steps`` at that rate), then time ``segment`` of one ``image_size`` image with the preset's DDIM steps x
members (median of ``--reps`` after one warm-up call). Peak memory: the process's ``ru_maxrss`` (Linux, KiB).

``--part gmac``: multiply-accumulates of one image (``--size``, 1 channel) sampled with ``--members`` x
``--ddim-steps`` by ``SPADConfig()``'s default widths, counted by ``torch.utils.flop_counter.FlopCounterMode`` on the
``meta`` device (no weights, no device time; MACs = FLOPs / 2): the plain UNet runs every step and member in full,
the cached-encoder model encodes the image once and runs its light denoiser per step and member.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/preset_costs.py --part presets --threads 1
    .venv/bin/python scripts/preset_costs.py --part gmac

Prints a markdown table (as in benchmarks/RESULTS.md) and one JSON line per row.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from spadfast.config import SPADConfig  # noqa: E402


def measure_preset(name: str, warmup: int, steps: int, reps: int, threads: int) -> dict:
    """One preset's training rate, one-image sampling time and peak RSS, in this process."""
    from spadfast.train.trainer import SPADTrainer

    torch.set_num_threads(threads)
    cfg = SPADConfig.preset(name, progress_bar=False, val_every=0, synthetic_train=64, synthetic_val=4)
    if cfg.device == "auto" and not torch.cuda.is_available() and cfg.amp == "fp16":
        raise ValueError(f"preset {name!r} needs CUDA")
    trainer = SPADTrainer(cfg)
    trainer.fit(warmup)
    start = time.perf_counter()
    trainer.fit(steps)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    rate = steps / (time.perf_counter() - start)
    image = torch.zeros(1, cfg.image_channels, cfg.image_size, cfg.image_size)
    trainer.segment(image)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        trainer.segment(image)
        times.append(time.perf_counter() - start)
    return {
        "preset": name, "device": str(trainer.device), "threads": torch.get_num_threads(),
        "image_size": cfg.image_size, "batch_size": cfg.batch_size, "train_steps": cfg.train_steps,
        "steps_per_s": round(rate, 2), "train_minutes": round(cfg.train_steps / rate / 60, 1),
        "sample_steps": cfg.sample_steps, "ensemble": cfg.ensemble,
        "segment_s": round(statistics.median(times), 4),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2),
        "loadavg_1m": round(os.getloadavg()[0], 2),  # other processes on the machine slow CPU timings
    }


def count_gmac(size: int, members: int, steps: int) -> list[dict]:
    """MACs (G) of the UNet forward, the cached encoder and the cached denoiser at batch 1, and per sampled image."""
    from torch.utils.flop_counter import FlopCounterMode

    from spadfast.models.cached_unet import SPADCachedUNet
    from spadfast.models.unet import SPADUNet

    def gmac(fn) -> float:
        with FlopCounterMode(display=False) as counter:
            fn()
        return counter.get_total_flops() / 2 / 1e9

    with torch.device("meta"):
        unet = SPADUNet(in_channels=2).eval().requires_grad_(False)
        cached = SPADCachedUNet(image_channels=1, mask_channels=1).eval().requires_grad_(False)
        image = torch.zeros(1, 1, size, size)
        mask = torch.zeros(1, 1, size, size)
        t = torch.zeros(1)
        with torch.no_grad():
            unet_fwd = gmac(lambda: unet(torch.cat([mask, image], 1), t))
            features = cached.encode(image)
            enc = gmac(lambda: cached.encode(image))
            den = gmac(lambda: cached.denoise(mask, features, t))
    calls = members * steps
    return [
        {"model": "unet", "size": size, "per_call_gmac": round(unet_fwd, 2), "encode_gmac": 0.0,
         "per_image_gmac": round(calls * unet_fwd, 1), "members": members, "steps": steps},
        {"model": "cached_unet", "size": size, "per_call_gmac": round(den, 2), "encode_gmac": round(enc, 2),
         "per_image_gmac": round(enc + calls * den, 1), "members": members, "steps": steps},
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("presets", "gmac"), required=True)
    parser.add_argument("--presets", nargs="+", default=["cpu-small", "cpu-medium"])
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--ddim-steps", type=int, default=25)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one preset in this process
    args = parser.parse_args(argv)
    for name in ("warmup", "steps", "reps", "threads", "size", "members", "ddim_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.one:
        print(json.dumps(measure_preset(args.one, args.warmup, args.steps, args.reps, args.threads)))
        return 0
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"commit {_commit()}", file=sys.stderr)
    if args.part == "gmac":
        rows = count_gmac(args.size, args.members, args.ddim_steps)
        print(f"| model | GMAC per denoiser call | GMAC image encoder (once) | GMAC per image "
              f"({args.members} members x {args.ddim_steps} steps, {args.size}x{args.size}) |")
        print("|---|---:|---:|---:|")
        for r in rows:
            print(f"| {r['model']} | {r['per_call_gmac']} | {r['encode_gmac']} | {r['per_image_gmac']} |")
    else:
        rows = []
        for name in args.presets:
            cmd = [sys.executable, __file__, "--part", "presets", "--one", name, "--warmup", str(args.warmup),
                   "--steps", str(args.steps), "--reps", str(args.reps), "--threads", str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode:
                print(f"{name}: failed: {proc.stderr.strip().splitlines()[-1]}", file=sys.stderr)
                continue
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print("| preset | device, threads | training steps/s (minutes for its train_steps) | "
              "s to sample one image | peak memory (GB, RSS) | load (1 min) |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            print(f"| `{r['preset']}` | {r['device']}, {r['threads']} | {r['steps_per_s']} ({r['train_minutes']} min "
                  f"for {r['train_steps']}) | {r['segment_s']} ({r['sample_steps']} steps x {r['ensemble']}) | "
                  f"{r['peak_rss_gb']} | {r['loadavg_1m']} |")
    for r in rows:
        print(json.dumps(r))
    return 0


def _commit() -> str:
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return proc.stdout.strip() or "unknown"


if __name__ == "__main__":
    raise SystemExit(main())
