"""Sampling latency and throughput: ``SPADTrainer.segment`` (``DDIMSampler.sample``) against a diffusers loop.

Providers: ``eager`` (``cuda_graph=False``), ``cuda_graph`` (the whole S-step loop captured once, then replayed; CUDA
only) and ``diffusers`` (``DDIMScheduler.set_timesteps`` then, per step, ``model(cat[x, image], t)`` and
``scheduler.step``, with the same model, schedule, members, chunking and the same final mean / std). The model is
untrained (timing does not depend on the weights): SPADConfig's default UNet on GPU, a tiny one on CPU.
"""

from __future__ import annotations

import time

import pytest
import torch
from benchutils import (
    FULL_CPU,
    GPU_ONLY,
    MODEL_CONFIG,
    ON_CUDA,
    blob_masks,
    record_throughput,
    skip_unless_available,
    sync,
    synthetic_images,
    warmup,
)

from spadfast.config import SPADConfig
from spadfast.trainer import SPADTrainer

PROVIDERS = ["eager", "cuda_graph", "diffusers"]
ENSEMBLE, STEPS = 5, 25
SIZE = 256 if ON_CUDA or FULL_CPU else 64
CASES = [
    pytest.param(1, id="latency"),  # one image
    pytest.param(64, id="throughput", marks=GPU_ONLY),  # 64 images x 5 members = 320 rows, in chunks of 64
]


def _trainer(cuda_graph: bool, device: torch.device) -> SPADTrainer:
    cfg = SPADConfig(
        image_size=SIZE, device=str(device), progress_bar=False, sample_steps=STEPS, ensemble=ENSEMBLE,
        cuda_graph=cuda_graph, synthetic_train=4, synthetic_val=2, batch_size=2, **MODEL_CONFIG,
    )
    return SPADTrainer(cfg)


def _diffusers_sampler(trainer: SPADTrainer, device: torch.device):
    """A plain diffusers DDIM loop with the trainer's EMA model and schedule (the baseline users would write)."""
    diffusers = pytest.importorskip("diffusers")
    cfg = trainer.config
    if cfg.perturb_mode != "target":
        pytest.skip("the diffusers loop is written for perturb_mode='target'")
    scheduler = diffusers.DDIMScheduler(
        num_train_timesteps=cfg.num_train_timesteps, beta_start=cfg.beta_start, beta_end=cfg.beta_end,
        beta_schedule={"linear": "linear", "cosine": "squaredcos_cap_v2"}[cfg.beta_schedule],
        clip_sample=cfg.clip_sample is not None, clip_sample_range=cfg.clip_sample or 1.0, set_alpha_to_one=True,
        prediction_type=cfg.prediction_type, timestep_spacing=cfg.timestep_spacing,
    )
    model = trainer.ema.eval()

    @torch.no_grad()
    def sample(images: torch.Tensor):
        B, _, H, W = images.shape
        scheduler.set_timesteps(STEPS, device=device)
        x_T = torch.randn((B * ENSEMBLE, 1, H, W), generator=torch.Generator().manual_seed(0)).to(device)
        imgs = images.repeat_interleave(ENSEMBLE, dim=0)
        if cfg.channels_last:
            imgs = imgs.contiguous(memory_format=torch.channels_last)
        outs = []
        for start in range(0, B * ENSEMBLE, cfg.sample_chunk):
            x, img = x_T[start : start + cfg.sample_chunk], imgs[start : start + cfg.sample_chunk]
            for t in scheduler.timesteps:
                out = model(torch.cat([x, img], dim=1), t.float().expand(x.shape[0]))
                x = scheduler.step(out, t, x, eta=cfg.eta, return_dict=False)[0]
            outs.append(x)
        members = ((torch.cat(outs).clamp(-1, 1) + 1) / 2).view(B, ENSEMBLE, H, W)
        probs = members.mean(dim=1, keepdim=True)
        return probs, members.std(dim=1, keepdim=True, unbiased=False), probs > cfg.threshold

    return sample


@pytest.mark.parametrize("images_per_call", CASES)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_bench_sampling(benchmark, provider, images_per_call, base_info, device):
    skip_unless_available(provider, uses_triton=ON_CUDA)
    B = images_per_call
    trainer = _trainer(cuda_graph=provider == "cuda_graph", device=device)
    images = synthetic_images(blob_masks(B, SIZE, SIZE, device))
    if provider in ("eager", "cuda_graph"):
        def fn():
            return trainer.segment(images, steps=STEPS, ensemble=ENSEMBLE, seed=0)
    else:
        diffusers_sample = _diffusers_sampler(trainer, device)

        def fn():
            return diffusers_sample(images)

    benchmark.group = f"sampling-{B}img-x{ENSEMBLE}members-{STEPS}steps-{SIZE}x{SIZE}"
    benchmark.extra_info.update(
        base_info, provider=provider, shape=[B, 1, SIZE, SIZE], dtype="float32", ensemble=ENSEMBLE, steps=STEPS,
        rows=B * ENSEMBLE, chunk=trainer.config.sample_chunk,
        model_params=sum(p.numel() for p in trainer.ema.parameters()),
        model_config=MODEL_CONFIG or "SPADConfig defaults",
    )
    t0 = time.perf_counter()
    warmup(fn, device, n=1)  # CUDA-graph capture, cuDNN autotuning, Triton compilation
    benchmark.extra_info["warmup_s"] = round(time.perf_counter() - t0, 3)

    def timed():
        out = fn()
        sync(device)
        return out

    rounds = (10 if B == 1 else 3) if ON_CUDA else 3
    benchmark.pedantic(timed, rounds=rounds, iterations=1, warmup_rounds=0)
    record_throughput(benchmark, None, device)
    mean = benchmark.extra_info.get("mean_s")
    if mean:
        benchmark.extra_info["images_per_s"] = round(B / mean, 3)
