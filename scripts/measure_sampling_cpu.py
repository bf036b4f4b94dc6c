"""CPU sampling time: naive loop vs spadfast, UNet vs cached-encoder model, bf16 / channels-last / torch.compile.

All runs segment 1 image (``--size``, default 256x256, 1 channel) with ``--members`` x ``--steps`` DDIM (default
5 x 25, eta 0, trailing spacing, linear betas, T = 1000), from the same initial noise, with untrained models of
SPADConfig's default widths (base 32, mults (1, 2, 4), attention at level 2; the cached model's denoiser is 8 wide).
Timing does not depend on the weights; the output convs get random weights so the equality checks mean something.

Paths (``--part headline``):
- ``naive``: ``benchmarks/naive_sampler.naive_sample``: members one at a time at batch 1, diffusers' DDIMScheduler,
  host-side timestep, ``model(cat[x, image], t)`` every step (the cached model re-encodes every step).
- ``spadfast`` UNet: ``spadfast.diffusion.sampler.DDIMSampler.sample`` (members batched, coefficients precomputed).
- ``spadfast`` cached: ``DDIMSampler.sample`` too, which encodes each image once and runs ``denoise`` per step
  (spadfast >= the commit that wired ``model_type="cached_unet"``); compiled runs, and older samplers, use
  ``benchmarks/naive_sampler.cached_sample``, the same loop written out (encode once, features repeated per member,
  S steps of ``torch.compile``d denoise + ``ops.ddim_step``), which matches ``DDIMSampler.sample`` (``--part check``).

``--part matrix``: spadfast's path for both models with bf16 autocast on/off x channels-last on/off x torch.compile
on/off (``--matrix-steps`` steps, default 5, to keep the runs short; compile time is reported separately and
excluded from the timed runs). Compiled runs are channels-last only unless ``--full-matrix`` (each compile takes
minutes on one thread).

Each figure is the median of ``--reps`` timed runs after one untimed warm-up run (headline: the same path with
1 step, and 1 member for naive; matrix: the same run, which includes compilation). Threads: ``--threads``
(default 1, the fair share on the shared 2-core machine). Output: one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from naive_sampler import cached_sample, diffusers_scheduler, naive_sample  # noqa: E402

from spadfast.config import SPADConfig  # noqa: E402
from spadfast.diffusion.sampler import DDIMSampler  # noqa: E402
from spadfast.diffusion.schedule import alphas_cumprod, make_betas  # noqa: E402
from spadfast.models.cached_unet import SPADCachedUNet  # noqa: E402
from spadfast.models.unet import SPADUNet  # noqa: E402
from spadfast.runtime.cpu_features import cpu_has_native_bf16  # noqa: E402


def build(name: str, channels_last: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    model = SPADUNet(in_channels=2) if name == "unet" else SPADCachedUNet(image_channels=1, mask_channels=1)
    torch.nn.init.normal_(model.out_conv.weight, std=0.02)
    model = model.eval().requires_grad_(False)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def timeit(fn, reps: int, warm_fn=None) -> tuple[float, float, list[float], list[float]]:
    """Median wall seconds of ``reps`` timed calls of ``fn`` after one untimed call of ``warm_fn`` (default
    ``fn``); also the warm-up's wall seconds, every wall time and every CPU time (``time.process_time``: this
    process's CPU seconds, which other processes on a busy machine inflate far less than wall time)."""
    t0 = time.perf_counter()
    out = (warm_fn or fn)()
    warm = time.perf_counter() - t0
    times, cpu = [], []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    del out
    return statistics.median(times), warm, times, cpu


def spadfast_fn(name: str, model, image, ac, cfg, steps: int, members: int, bf16: bool, cl: bool, compiled: bool):
    amp = torch.bfloat16 if bf16 else None
    if name == "unet":
        m = torch.compile(model) if compiled else model
        sampler = DDIMSampler(m, ac, prediction_type=cfg.prediction_type, steps=steps, spacing=cfg.timestep_spacing,
                              clip_sample=cfg.clip_sample, cuda_graph=False, amp_dtype=amp, channels_last=cl)
        # DDIMSampler reads the device from model.parameters(); a compiled wrapper exposes them too
        return lambda: sampler.sample(image, ensemble=members, seed=0).probs
    if not compiled and hasattr(DDIMSampler, "_cached_encoder"):  # the sampler runs encode once / denoise per step
        sampler = DDIMSampler(model, ac, prediction_type=cfg.prediction_type, steps=steps, spacing=cfg.timestep_spacing,
                              clip_sample=cfg.clip_sample, cuda_graph=False, amp_dtype=amp, channels_last=cl)
        return lambda: sampler.sample(image, ensemble=members, seed=0).probs
    enc = torch.compile(model.encode) if compiled else None
    den = torch.compile(model.denoise) if compiled else None
    return lambda: cached_sample(model, image, ac, steps, members, seed=0, spacing=cfg.timestep_spacing,
                                 clip_sample=cfg.clip_sample, prediction_type=cfg.prediction_type, amp_dtype=amp,
                                 channels_last=cl, encode=enc, denoise=den)[0]


def emit(record: dict) -> None:
    record.setdefault("load_1m", round(os.getloadavg()[0], 2))  # other processes skew CPU timings: say how busy
    print(json.dumps(record), flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", nargs="+", default=["check", "headline", "matrix"],
                   choices=["check", "headline", "matrix"])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--members", type=int, default=5)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--matrix-steps", type=int, default=5)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--models", nargs="+", default=["unet", "cached"])
    p.add_argument("--layouts", nargs="+", default=["contiguous", "channels_last"],
                   choices=["contiguous", "channels_last"], help="headline: memory formats of spadfast's path")
    p.add_argument("--full-matrix", action="store_true",
                   help="also compile the channels-first variants (each compile takes minutes on 1 CPU thread)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    commit = os.environ.get("SPADFAST_COMMIT") or subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    emit({"machine": cpu, "logical_cpus": os.cpu_count(), "threads": torch.get_num_threads(),
          "torch": torch.__version__, "native_bf16": cpu_has_native_bf16(),
          "cpu_capability": torch.backends.cpu.get_cpu_capability(), "commit": commit,
          "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_1m": round(os.getloadavg()[0], 2)})
    cfg = SPADConfig()
    ac = alphas_cumprod(make_betas(cfg.beta_schedule, cfg.num_train_timesteps))
    gen = torch.Generator().manual_seed(1)
    image = torch.rand((1, 1, args.size, args.size), generator=gen) * 2 - 1
    K, S = args.members, args.steps

    if "check" in args.part:  # equality of the loops on a small case (64x64, 3 members x 4 steps)
        small = image[:, :, :64, :64].contiguous()
        for name in args.models:
            model = build(name)
            ref = DDIMSampler(model, ac, prediction_type=cfg.prediction_type, steps=4, cuda_graph=False).sample(
                small, ensemble=3, seed=0).probs
            nv = naive_sample(model, diffusers_scheduler(cfg), small, 4, 3, seed=0)[0]
            rec = {"check": name, "naive_vs_sampler_max_abs": float((nv - ref).abs().max())}
            if name == "cached":
                cs = cached_sample(model, small, ac, 4, 3, seed=0, prediction_type=cfg.prediction_type)[0]
                rec["cached_loop_vs_sampler_max_abs"] = float((cs - ref).abs().max())
            emit(rec)

    if "headline" in args.part:
        for name in args.models:
            model = build(name)
            scheduler = diffusers_scheduler(cfg)
            med, warm, times, cpu = timeit(lambda m=model, s=scheduler: naive_sample(m, s, image, S, K, seed=0)[0],
                                      args.reps, lambda m=model, s=scheduler: naive_sample(m, s, image, 1, 1)[0])
            emit({"part": "headline", "model": name, "path": "naive", "members": K, "steps": S, "size": args.size,
                  "median_s": round(med, 3), "times_s": [round(t, 3) for t in times],
                  "cpu_s": [round(t, 3) for t in cpu], "warmup_s": round(warm, 3)})
            for cl in [layout == "channels_last" for layout in args.layouts]:
                m = build(name, channels_last=cl)
                med, warm, times, cpu = timeit(spadfast_fn(name, m, image, ac, cfg, S, K, False, cl, False), args.reps,
                                          spadfast_fn(name, m, image, ac, cfg, 1, K, False, cl, False))
                emit({"part": "headline", "model": name, "path": "spadfast", "channels_last": cl, "bf16": False,
                      "compile": False, "members": K, "steps": S, "size": args.size, "median_s": round(med, 3),
                      "times_s": [round(t, 3) for t in times], "cpu_s": [round(t, 3) for t in cpu],
                      "warmup_s": round(warm, 3)})

    if "matrix" in args.part:
        Sm = args.matrix_steps
        for name in args.models:
            for compiled in (False, True):
                for bf16 in (False, True):
                    for cl in (False, True) if (args.full_matrix or not compiled) else (True,):
                        torch._dynamo.reset()
                        m = build(name, channels_last=cl)
                        med, warm, times, cpu = timeit(spadfast_fn(name, m, image, ac, cfg, Sm, K, bf16, cl, compiled),
                                                  args.reps)
                        emit({"part": "matrix", "model": name, "bf16": bf16, "channels_last": cl,
                              "compile": compiled, "members": K, "steps": Sm, "size": args.size,
                              "median_s": round(med, 3), "times_s": [round(t, 3) for t in times],
                              "cpu_s": [round(t, 3) for t in cpu],
                              "first_run_s (incl. compile)": round(warm, 3)})


if __name__ == "__main__":
    main()
