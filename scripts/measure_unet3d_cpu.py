"""CPU seconds and peak memory per volume of 3-D sliding-window prediction (``model_type: unet3d`` or
``cached_unet3d``), and the FLOPs behind a GPU estimate.

    .venv/bin/python scripts/measure_unet3d_cpu.py [--shapes 32x32x12 64x64x24] [--threads 2] [--model-type T]

Each volume size runs in a fresh process (so the peak resident memory, ``ru_maxrss``, is that volume's): synthetic
Decathlon volumes (``write_demo_volumes``, spacing 0.8 x 0.8 x 2.5 mm), an untrained tiny unet3d (the time does not
depend on the weights), ``predict_volume`` with the config's sampling settings, best of ``--repeats``. FLOPs of one
denoiser call on one window come from ``torch.utils.flop_counter``; a volume costs windows x members x steps of them
(``cached_unet3d``: windows x (one encoder pass + members x steps light denoiser calls)). Prints one Markdown row per
volume.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = dict(model_type="unet3d", patch_size_3d=(32, 32, 8), base_channels=8, channel_mults=(1, 2, 2),
              attention_levels=(), num_classes=2, sample_steps=5, ensemble=3, tile_overlap=0.5, device="cpu",
              progress_bar=False, modalities=("MR",), ct_normalization="volume")


def _one(shape: tuple[int, int, int], threads: int, repeats: int, model_type: str = "unet3d") -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from spadfast.config import SPADConfig
    from spadfast.data.synthetic_volumes import write_demo_volumes
    from spadfast.diffusion.schedule import alphas_cumprod, make_betas
    from spadfast.infer.segmenter import Segmenter
    from spadfast.infer.sliding_window3d import window_positions_3d
    from spadfast.infer.volumes import predict_volume
    from spadfast.models.factory import build_model

    torch.set_num_threads(threads)
    cfg = SPADConfig(**{**CONFIG, "model_type": model_type}, spacing_3d=(0.8, 0.8, 2.5))
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    seg = Segmenter(cfg, model, alphas_cumprod(make_betas(cfg.beta_schedule, cfg.num_train_timesteps,
                                                          cfg.beta_start, cfg.beta_end)))
    with tempfile.TemporaryDirectory() as tmp:
        root = write_demo_volumes(Path(tmp) / "data", n_cases=1, shape=shape, num_classes=2, n_test=1)
        image = sorted((root / "imagesTs").glob("*.nii.gz"))[0]
        times = []
        for r in range(repeats):
            t0 = time.perf_counter()
            predict_volume(seg, [image], Path(tmp) / f"out{r}.nii.gz", batch_size=4)
            times.append(time.perf_counter() - t0)
    windows = len(window_positions_3d(shape, cfg.patch_size_3d, cfg.tile_overlap))
    x = torch.zeros(1, cfg.model_in_channels, *cfg.patch_size_3d)
    encode_flops = 0
    with torch.no_grad():
        if model_type == "cached_unet3d":
            image = x[:, cfg.mask_channels : cfg.mask_channels + model.image_channels]
            with FlopCounterMode(display=False) as counter:
                features = model.encode(image)
            encode_flops = counter.get_total_flops()
            with FlopCounterMode(display=False) as counter:
                model.denoise(x[:, : cfg.mask_channels], features, torch.zeros(1))
        else:
            with FlopCounterMode(display=False) as counter:
                model(x, torch.zeros(1))
    per_call = counter.get_total_flops()
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    return {"shape": shape, "seconds": min(times), "peak_mib": peak_mib,
            "windows": windows, "flops_per_window_call": per_call,
            "flops_per_volume": windows * (encode_flops + per_call * cfg.ensemble * cfg.sample_steps),
            "encode_flops": encode_flops, "model_type": model_type,
            "params": sum(p.numel() for p in model.parameters()), "threads": threads}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["32x32x12", "64x64x24"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--model-type", default="unet3d", choices=["unet3d", "cached_unet3d"])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        shape = tuple(int(v) for v in args.child.split("x"))
        print(json.dumps(_one(shape, args.threads, args.repeats, args.model_type)))
        return 0
    print("| volume (voxels) | windows | CPU s / volume | peak RSS MiB | GFLOP / volume |")
    print("|---|---|---|---|---|")
    for s in args.shapes:
        out = subprocess.run([sys.executable, __file__, "--child", s, "--threads", str(args.threads),
                              "--repeats", str(args.repeats), "--model-type", args.model_type],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {s} | {r['windows']} | {r['seconds']:.2f} | {r['peak_mib']:.0f} | "
              f"{r['flops_per_volume'] / 1e9:.1f} |  (per window call {r['flops_per_window_call'] / 1e9:.3f} GFLOP, "
              f"encoder once per window {r['encode_flops'] / 1e9:.3f} GFLOP, {r['params']} params, "
              f"{r['threads']} threads, {r['model_type']})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
