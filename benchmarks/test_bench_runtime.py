"""CPU runtimes for one trained model: PyTorch eager (float32), PyTorch with ``--compile``, PyTorch bf16 autocast,
and onnxruntime running the ONNX export (``spadfast export --format onnx``) inside the same DDIM loop.

Group ``runtime``: 8 images at the model's size (SPADConfig's default cached-encoder model at 64 px; on CPU without
SPADFAST_BENCH_FULL the CPU benchmark model), 5 DDIM steps x 3 members, the sampler's default chunk. Each row records
``ratio_to_eager`` and ``mask_agreement`` (share of mask pixels equal to eager float32's), so a faster runtime is
only a better default when its masks agree.
"""

from __future__ import annotations

import pytest
import torch
from benchutils import MODEL_CONFIG, mask_batch, sync, synthetic_images

from spadfast.config import SPADConfig
from spadfast.infer.segmenter import Segmenter
from spadfast.train.trainer import SPADTrainer

SIZE, BATCH, STEPS, MEMBERS = 64, 8, 5, 3
_STATE: dict[str, object] = {}


def _run_folder(tmp_path_factory) -> object:
    """One saved run (EMA weights jittered so that the zero-initialised output layer does not make every mask
    empty) and its ONNX export, shared by the providers."""
    if "run" not in _STATE:
        tmp = tmp_path_factory.mktemp("runtime")
        cfg = SPADConfig(image_size=SIZE, device="cpu", progress_bar=False, synthetic_train=2, synthetic_val=1,
                         batch_size=2, cuda_graph=False, **MODEL_CONFIG)
        trainer = SPADTrainer(cfg)
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in trainer.ema.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
        trainer.save(tmp / "run")
        _STATE["run"] = tmp / "run"
    return _STATE["run"]


def _segmenter(provider: str, run) -> Segmenter:
    if provider == "onnxruntime":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnxscript")
        from spadfast.infer.onnx_export import export_onnx

        folder = run.parent / "onnx"
        if not folder.exists():
            export_onnx(run, folder)
        return Segmenter.from_onnx(folder)
    amp = "bf16" if provider == "torch-bf16" else "none"
    return Segmenter.from_checkpoint(run, device="cpu", amp=amp, compile=provider == "torch-compiled")


@pytest.mark.parametrize("provider", ["torch-eager", "torch-compiled", "torch-bf16", "onnxruntime"])
def test_bench_runtime(benchmark, provider, base_info, device, tmp_path_factory):
    if device.type != "cpu":
        pytest.skip("CPU runtimes: onnxruntime runs on the CPU provider here")
    run = _run_folder(tmp_path_factory)
    segmenter = _segmenter(provider, run)
    images = synthetic_images(mask_batch(BATCH, SIZE, SIZE, device))
    benchmark.group = f"runtime-{BATCH}x{SIZE}px-{STEPS}steps-x{MEMBERS}members"
    benchmark.extra_info.update(base_info, provider=provider, model_config=MODEL_CONFIG or "SPADConfig defaults")

    def timed():
        out = segmenter.segment(images, steps=STEPS, ensemble=MEMBERS, seed=0)
        sync(device)
        return out

    result = benchmark.pedantic(timed, rounds=3, iterations=1, warmup_rounds=1)
    if provider == "torch-eager":
        _STATE["eager_mask"] = result.mask.clone()
    eager = _STATE.get("eager_mask")
    if eager is not None:
        benchmark.extra_info["mask_agreement"] = round(float((result.mask == eager).float().mean()), 5)
    mean = benchmark.stats.stats.mean
    benchmark.extra_info["images_per_s"] = round(BATCH / mean, 3)
    if provider == "torch-eager":
        _STATE["eager_mean"] = mean
    if "eager_mean" in _STATE:
        benchmark.extra_info["ratio_to_eager"] = round(_STATE["eager_mean"] / mean, 2)
    print(f"\n{benchmark.group} {provider}: {mean:.3f} s per batch, {BATCH / mean:.2f} images/s, "
          f"ratio_to_eager {benchmark.extra_info.get('ratio_to_eager')}, "
          f"mask_agreement {benchmark.extra_info.get('mask_agreement')}")
