"""Sliding-window prediction of one large image at native resolution (``resize: false``).

Group ``sliding``: a 512x512 image, windows of 128 px with overlap 0.5 (49 windows), 5 DDIM steps x 3 members, the
cached-encoder model. Providers:

- ``naive``: what a user writes around a single-window sampler: windows one at a time, members one at a time at
  batch 1, diffusers' ``DDIMScheduler``, ``model(cat[x, window], t)`` every step (the window is re-encoded every
  step), Gaussian-blended the same way.
- ``spadfast``: :func:`spadfast.infer.sliding_window.segment_image`: windows x members through the sampler in chunks, each
  window encoded once, noise keyed per window.

Each row records ``ratio_to_naive`` and the process's peak memory in ``extra_info``.
"""

from __future__ import annotations

import pytest
import torch
from benchutils import MODEL_CONFIG, mask_batch, peak_memory_info, record_throughput, sync, synthetic_images
from naive_sampler import diffusers_scheduler, naive_sample

from spadfast.config import SPADConfig
from spadfast.infer.sliding_window import gaussian_importance, segment_image, window_positions
from spadfast.train.trainer import SPADTrainer

SIZE, WINDOW, STEPS, MEMBERS, OVERLAP = 512, 128, 5, 3, 0.5
_NAIVE: dict[str, float] = {}


def _trainer(device: torch.device) -> SPADTrainer:
    cfg = SPADConfig(image_size=WINDOW, device=str(device), progress_bar=False, sample_steps=STEPS, ensemble=MEMBERS,
                     synthetic_train=2, synthetic_val=1, batch_size=2, tile_overlap=OVERLAP, cuda_graph=False,
                     **MODEL_CONFIG)
    return SPADTrainer(cfg)


def _naive(trainer: SPADTrainer, image: torch.Tensor):
    pytest.importorskip("diffusers")
    scheduler = diffusers_scheduler(trainer.config)
    weight = gaussian_importance((WINDOW, WINDOW))

    def run():
        acc = torch.zeros(SIZE, SIZE)
        wsum = torch.zeros(SIZE, SIZE)
        for y, x in window_positions((SIZE, SIZE), (WINDOW, WINDOW), OVERLAP):
            tile = image[None, :, y:y + WINDOW, x:x + WINDOW]
            probs, _, _ = naive_sample(trainer.ema, scheduler, tile, STEPS, MEMBERS, seed=0)
            acc[y:y + WINDOW, x:x + WINDOW] += probs[0, 0].cpu() * weight
            wsum[y:y + WINDOW, x:x + WINDOW] += weight
        return acc / wsum

    return run


@pytest.mark.parametrize("provider", ["naive", "spadfast"])
def test_bench_sliding(benchmark, provider, base_info, device):
    trainer = _trainer(device)
    image = synthetic_images(mask_batch(1, SIZE, SIZE, device))[0]
    fn = _naive(trainer, image) if provider == "naive" else (
        lambda: segment_image(trainer, image, "bench", steps=STEPS, ensemble=MEMBERS))
    benchmark.group = f"sliding-{SIZE}x{SIZE}-window{WINDOW}-{STEPS}steps-x{MEMBERS}members"
    benchmark.extra_info.update(base_info, provider=provider, windows=len(window_positions(
        (SIZE, SIZE), (WINDOW, WINDOW), OVERLAP)), model_config=MODEL_CONFIG or "SPADConfig defaults")

    def timed():
        out = fn()
        sync(device)
        return out

    benchmark.pedantic(timed, rounds=2, iterations=1, warmup_rounds=1)
    record_throughput(benchmark, None, device)
    benchmark.extra_info.update(peak_memory_info(device))
    mean = benchmark.extra_info.get("mean_s")
    if mean:
        benchmark.extra_info["images_per_s"] = round(1 / mean, 4)
        if provider == "naive":
            _NAIVE["mean"] = mean
        naive = _NAIVE.get("mean")
        benchmark.extra_info["ratio_to_naive"] = round(naive / mean, 2) if naive else None
        print(f"\n{benchmark.group} {provider}: {mean:.2f} s/image, ratio_to_naive "
              f"{benchmark.extra_info['ratio_to_naive'] or 'n/a'}")


# ---------------------------------------------------------------------------------------------------------------------
# Group ``volume-slices``: the slices of one volume at native resolution, each a few windows. ``per_slice`` is the
# volume path before windows were batched across slices (one :func:`segment_tiled` call per slice); ``batched`` is
# today's :func:`segment_tiled_many` over ``batch_size`` slices (the windows of 8 slices in one sampler call).
SLICES, SLICE_SIZE, SLICE_WINDOW, SLICE_BATCH = 16, 96, 64, 8


@pytest.mark.parametrize("provider", ["per_slice", "batched"])
def test_bench_volume_slices(benchmark, provider, base_info, device):
    from spadfast.infer.sliding_window import segment_tiled, segment_tiled_many

    cfg = SPADConfig(image_size=SLICE_WINDOW, device=str(device), progress_bar=False, sample_steps=STEPS,
                     ensemble=MEMBERS, synthetic_train=2, synthetic_val=1, batch_size=2, tile_overlap=OVERLAP,
                     cuda_graph=False, **MODEL_CONFIG)
    trainer = SPADTrainer(cfg)
    slices = list(synthetic_images(mask_batch(SLICES, SLICE_SIZE, SLICE_SIZE, device)))
    window = (SLICE_WINDOW, SLICE_WINDOW)
    names = [f"vol/2/{k}" for k in range(SLICES)]

    def run():
        if provider == "per_slice":
            return [segment_tiled(trainer.segment, s, window, OVERLAP, n, steps=STEPS, ensemble=MEMBERS)
                    for s, n in zip(slices, names)]
        return [r for k in range(0, SLICES, SLICE_BATCH) for r in segment_tiled_many(
            trainer.segment, slices[k:k + SLICE_BATCH], window, OVERLAP, names[k:k + SLICE_BATCH], chunk=None,
            steps=STEPS, ensemble=MEMBERS)]

    benchmark.group = (f"volume-slices-{SLICES}x{SLICE_SIZE}x{SLICE_SIZE}-window{SLICE_WINDOW}-{STEPS}steps-"
                       f"x{MEMBERS}members")
    benchmark.extra_info.update(base_info, provider=provider, windows_per_slice=len(window_positions(
        (SLICE_SIZE, SLICE_SIZE), window, OVERLAP)), slice_batch=SLICE_BATCH)

    def timed():
        out = run()
        sync(device)
        return out

    benchmark.pedantic(timed, rounds=3, iterations=1, warmup_rounds=1)
    record_throughput(benchmark, None, device)
    mean = benchmark.extra_info.get("mean_s")
    if mean:
        benchmark.extra_info["slices_per_s"] = round(SLICES / mean, 3)
