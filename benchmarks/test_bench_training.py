"""One optimizer step, ``SPADTrainer.train_step``: eager vs ``config.compile=True``, and on GPU the compiled step with
the SPAD perturbation on the Triton kernels vs on the PyTorch reference.

The batch is fixed and already on the device (data loading is not timed); the step includes augmentation, the SPAD
perturbation, forward, backward, gradient clipping, AdamW and the EMA update. Peak memory goes to extra_info.
"""

from __future__ import annotations

import itertools
import time

import pytest
from benchutils import (
    CPU_ONLY,
    FULL_CPU,
    FULL_ONLY,
    MODEL_CONFIG,
    ON_CUDA,
    mask_batch,
    peak_memory_info,
    record_throughput,
    reset_peak_memory,
    skip_unless_available,
    sync,
    synthetic_images,
)

from spadfast.config import SPADConfig
from spadfast.train.trainer import SPADTrainer

PROVIDERS = ["eager", "compiled", "compiled+kernels", "compiled+reference"]
CASES = [
    pytest.param((8, 64), id="8x64x64"),
    pytest.param((8, 256), id="8x256x256", marks=FULL_ONLY),
    pytest.param((2, 256), id="2x256x256", marks=CPU_ONLY),
]
CPU_STEP_LIMIT_S = 5.0  # a CPU case whose warm step is slower than this is skipped (keeps the CPU suite short)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_bench_training(benchmark, provider, case, base_info, device):
    skip_unless_available(provider, uses_triton=ON_CUDA)
    B, S = case
    compiled = provider != "eager"
    if compiled and not ON_CUDA and S > 64:
        pytest.skip("torch.compile of the UNet's forward+backward takes minutes on CPU: compiled 256x256 is GPU only")
    # SPADConfig.ops_backend pins the perturbation (and DDIM) backend of the two GPU variants.
    backend = {"compiled+kernels": "triton", "compiled+reference": "reference"}.get(provider)

    masks = mask_batch(B, S, S, device)
    images = synthetic_images(masks)
    train_data = [(images[i].cpu(), masks[i].cpu()) for i in range(B)]
    cfg = SPADConfig(
        image_size=S, batch_size=B, device=str(device), compile=compiled, progress_bar=False, train_steps=1000,
        ops_backend=backend or "auto",
        **MODEL_CONFIG,
    )
    trainer = SPADTrainer(cfg, train_data=train_data)
    batches = itertools.repeat((images, masks))

    def step():
        loss = trainer.train_step(batches)
        sync(device)
        return loss

    t0 = time.perf_counter()
    for _ in range(3 if compiled else 1):  # compilation (forward + backward) happens here, before any timing
        step()
    warmup_s = time.perf_counter() - t0
    if not ON_CUDA:
        t0 = time.perf_counter()
        step()
        step_s = time.perf_counter() - t0
        if step_s > CPU_STEP_LIMIT_S and not FULL_CPU:
            pytest.skip(f"one CPU step took {step_s:.1f} s > {CPU_STEP_LIMIT_S} s: too slow for the CPU suite")

    benchmark.group = f"train_step-{B}x{S}x{S}"
    benchmark.extra_info.update(
        base_info, provider=provider, shape=[B, 1, S, S], dtype="float32", amp=cfg.amp, compile=cfg.compile,
        perturb_backend=backend or "auto", warmup_s=round(warmup_s, 3),
        model_params=sum(p.numel() for p in trainer.model.parameters()),
        model_config=MODEL_CONFIG or "SPADConfig defaults",
    )
    reset_peak_memory(device)
    benchmark.pedantic(step, rounds=10 if ON_CUDA else 3, iterations=1, warmup_rounds=0)
    record_throughput(benchmark, None, device)
    benchmark.extra_info.update(peak_memory_info(device))


# Denoiser rows per step are equal across providers (16); what differs is how many images the encoder sees.
ROWS_PROVIDERS = {
    "unet-b16": dict(model_type="unet", batch_size=16),
    "cached-b16": dict(model_type="cached_unet", batch_size=16),
    "cached-b4xL4": dict(model_type="cached_unet", batch_size=4, noise_levels=4),
    "cached-b8xL2": dict(model_type="cached_unet", batch_size=8, noise_levels=2),
}


@pytest.mark.parametrize("provider", list(ROWS_PROVIDERS))
def test_bench_training_rows(benchmark, provider, base_info, device):
    """One eager step of the ``cpu-small`` preset's model (32 px) with 16 denoiser rows: the plain UNet, the cached
    encoder at batch 16, and the cached encoder with 4 (2) images at 4 (2) noise levels each
    (``config.noise_levels``). ``scripts/measure_noise_levels.py`` turns these into Dice per minute of training."""
    overrides = ROWS_PROVIDERS[provider]
    B = overrides["batch_size"]
    masks = mask_batch(B, 32, 32, device)
    images = synthetic_images(masks)
    cfg = SPADConfig.preset("cpu-small", device=str(device), progress_bar=False, **overrides)
    trainer = SPADTrainer(cfg, train_data=[(images[i].cpu(), masks[i].cpu()) for i in range(B)])
    batches = itertools.repeat((images, masks))

    def step():
        loss = trainer.train_step(batches)
        sync(device)
        return loss

    step()
    benchmark.group = "train_step-16rows-cpu-small-32px"
    benchmark.extra_info.update(base_info, provider=provider, rows=16, **{k: v for k, v in overrides.items()})
    benchmark.pedantic(step, rounds=20, iterations=1, warmup_rounds=2)
    record_throughput(benchmark, None, device)
