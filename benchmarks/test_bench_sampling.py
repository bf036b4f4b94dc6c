"""Sampling latency and throughput: ``SPADTrainer.segment`` (``DDIMSampler.sample``) against the loops people write.

Providers, one group per (images, members, steps, size, model), all with the same model, schedule and members:

- ``naive``: the peer (``naive_sampler.naive_sample``): members one after another at batch 1, diffusers'
  ``DDIMScheduler``, the timestep read on the host each step, ``model(cat[x, image], t)`` every step, as MedSegDiff's
  sampling script does. It runs first in each group; every other row records ``ratio_to_naive`` (naive's mean time
  / this row's mean time: > 1 is faster than naive) in ``extra_info`` and prints it.
- ``eager`` (``cuda_graph=False``), ``cuda_graph`` (the whole S-step loop captured once, then replayed; CUDA only):
  ``SPADTrainer.segment`` (for the cached model the sampler encodes each image once and runs ``denoise`` per step).
- ``diffusers``: ``DDIMScheduler.set_timesteps`` then, per step, ``model(cat[x, image], t)`` and ``scheduler.step``
  on all members at once, same chunking and the same final mean / std.
- ``encode_once`` (cached model only): ``naive_sampler.cached_sample``, a minimal batched loop for a model with
  ``encode`` / ``denoise`` (image encoded once, features repeated per member, S steps of the light denoiser +
  ``ops.ddim_step``): what the sampler's cached path does, without its chunking, CUDA graph and checks.

Models (``model`` parameter): ``unet`` (``model_type="unet"``, ``SPADUNet``) and ``cached``
(``model_type="cached_unet"``, ``SPADCachedUNet`` with the same encoder widths; its denoiser is a quarter as
wide). Both are untrained (timing does not depend on the weights): SPADConfig's default widths on GPU (and with
``SPADFAST_BENCH_FULL=1``), a tiny model on CPU.
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
    mask_batch,
    record_throughput,
    skip_unless_available,
    sync,
    synthetic_images,
    warmup,
)
from naive_sampler import cached_sample, diffusers_scheduler, naive_sample

from spadfast.config import SPADConfig
from spadfast.models.cached_unet import SPADCachedUNet
from spadfast.train.trainer import SPADTrainer

PROVIDERS = ["naive", "eager", "cuda_graph", "diffusers", "encode_once"]
MODELS = ["unet", "cached"]
ENSEMBLE, STEPS = 5, 25
SIZE = 256 if ON_CUDA or FULL_CPU else 64
CASES = [
    pytest.param(1, id="latency"),  # one image
    pytest.param(64, id="throughput", marks=GPU_ONLY),  # 64 images x 5 members = 320 rows, in chunks of 64
]
_NAIVE_MEAN: dict[tuple, float] = {}  # (images, model) -> naive's mean seconds, for ratio_to_naive


def _trainer(cuda_graph: bool, device: torch.device, model_name: str) -> SPADTrainer:
    cfg = SPADConfig(
        image_size=SIZE, device=str(device), progress_bar=False, sample_steps=STEPS, ensemble=ENSEMBLE,
        cuda_graph=cuda_graph, synthetic_train=4, synthetic_val=2, batch_size=2,
        model_type="cached_unet" if model_name == "cached" else "unet", **MODEL_CONFIG,
    )
    trainer = SPADTrainer(cfg)
    assert isinstance(trainer.model, SPADCachedUNet) == (model_name == "cached")
    return trainer


def _diffusers_sampler(trainer: SPADTrainer, device: torch.device):
    """A plain diffusers DDIM loop with the trainer's EMA model and schedule, members batched."""
    pytest.importorskip("diffusers")
    cfg = trainer.config
    if cfg.perturb_mode != "target":
        pytest.skip("the diffusers loop is written for perturb_mode='target'")
    scheduler = diffusers_scheduler(cfg)
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


def _provider_fn(provider: str, trainer: SPADTrainer, images: torch.Tensor, device: torch.device):
    cfg = trainer.config
    if provider in ("eager", "cuda_graph"):
        return lambda: trainer.segment(images, steps=STEPS, ensemble=ENSEMBLE, seed=0)
    if provider == "diffusers":
        diffusers_sample = _diffusers_sampler(trainer, device)
        return lambda: diffusers_sample(images)
    if provider == "naive":
        pytest.importorskip("diffusers")
        scheduler = diffusers_scheduler(cfg)
        return lambda: naive_sample(trainer.ema, scheduler, images, STEPS, ENSEMBLE, seed=0, eta=cfg.eta,
                                    threshold=cfg.threshold)
    # encode_once
    if not hasattr(trainer.ema, "encode"):
        pytest.skip("encode_once needs a model with encode/denoise (the cached model)")
    imgs = images.float()
    return lambda: cached_sample(
        trainer.ema, imgs, trainer.alphas_cumprod, STEPS, ENSEMBLE, seed=0, spacing=cfg.timestep_spacing,
        clip_sample=cfg.clip_sample, prediction_type=cfg.prediction_type, threshold=cfg.threshold,
        amp_dtype=trainer.amp_dtype, channels_last=cfg.channels_last,
    )


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("images_per_call", CASES)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_bench_sampling(benchmark, provider, images_per_call, model_name, base_info, device):
    skip_unless_available(provider, uses_triton=ON_CUDA)
    B = images_per_call
    trainer = _trainer(cuda_graph=provider == "cuda_graph", device=device, model_name=model_name)
    images = synthetic_images(mask_batch(B, SIZE, SIZE, device))
    fn = _provider_fn(provider, trainer, images, device)

    benchmark.group = f"sampling-{B}img-x{ENSEMBLE}members-{STEPS}steps-{SIZE}x{SIZE}-{model_name}"
    benchmark.extra_info.update(
        base_info, provider=provider, model=model_name, shape=[B, 1, SIZE, SIZE], dtype="float32",
        ensemble=ENSEMBLE, steps=STEPS, rows=B * ENSEMBLE, chunk=trainer.config.sample_chunk,
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
    if provider == "naive" and (B > 1 or not ON_CUDA):
        rounds = 2  # batch-1 loops are long: 2 rounds suffice
    benchmark.pedantic(timed, rounds=rounds, iterations=1, warmup_rounds=0)
    record_throughput(benchmark, None, device)
    mean = benchmark.extra_info.get("mean_s")
    if mean:
        benchmark.extra_info["images_per_s"] = round(B / mean, 3)
        key = (B, model_name)
        if provider == "naive":
            _NAIVE_MEAN[key] = mean
        naive = _NAIVE_MEAN.get(key)
        benchmark.extra_info["ratio_to_naive"] = round(naive / mean, 2) if naive else None
        print(f"\n{benchmark.group} {provider}: {mean * 1e3:.1f} ms, ratio_to_naive "
              f"{benchmark.extra_info['ratio_to_naive'] or 'n/a (naive not run first)'}")
