"""A roofline estimate (not a measurement) of native-resolution prediction of one 512x512 image on an H100.

    .venv/bin/python scripts/estimate_sliding_h100.py

The ``gpu-base`` preset's model (128 px windows) slides over a 512x512 image with overlap 0.5 (49 windows); the
encoder runs once per window, the denoiser once per window x member x DDIM step (5 steps x 3 members, the
benchmark's setting). FLOPs come from ``torch.utils.flop_counter`` on the CPU; bytes are the HBM traffic of an
unfused execution: the weights once per call plus every leaf module's output written once and read once (bf16);
fused kernels (``compile``) keep norms and activations in registers and move less. The roofline
time of each part is ``max(FLOPs / peak, bytes / bandwidth)`` for an H100 SXM (989 dense bf16 TFLOP/s, 3.35 TB/s)
and, as a less optimistic figure, at a model FLOP utilisation of 35 %. Launch overhead is left out: the sampler
replays the whole loop as one CUDA graph.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from spadfast.config import SPADConfig
from spadfast.infer.sliding_window import window_positions
from spadfast.models.factory import build_model

PEAK_BF16 = 989e12
HBM_BPS = 3.35e12
MFU = 0.35
SIZE, STEPS, MEMBERS, OVERLAP = 512, 5, 3, 0.5


def _measure(fn, model: torch.nn.Module) -> tuple[float, float]:
    """(FLOPs, bytes): FLOPs of ``fn()``; bytes = bf16 weights + 2 x every module output (write, then read)."""
    outputs = []

    def hook(_module, _inputs, out):
        for t in out if isinstance(out, (list, tuple)) else [out]:
            if isinstance(t, torch.Tensor):
                outputs.append(t.numel())

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    with FlopCounterMode(display=False) as counter:
        fn()
    for h in handles:
        h.remove()
    weights = 2 * sum(p.numel() for p in model.parameters())
    return float(counter.get_total_flops()), float(weights + 2 * 2 * sum(outputs))


def main() -> int:
    cfg = SPADConfig.preset("gpu-base", device="cpu")
    model = build_model(cfg).eval()
    S = cfg.image_size
    windows = len(window_positions((SIZE, SIZE), (S, S), OVERLAP))
    image = torch.randn(windows, cfg.image_channels, S, S)
    enc_flops, enc_bytes = _measure(lambda: model.encode(image), model)
    with torch.no_grad():
        features = model.encode(image)
    rows = windows * MEMBERS
    feats = [f.repeat_interleave(MEMBERS, 0) for f in features]
    x = torch.randn(rows, cfg.mask_channels, S, S)
    t = torch.full((rows,), 500.0)
    den_flops, den_bytes = _measure(lambda: model.denoise(x, feats, t), model)
    total_flops = enc_flops + STEPS * den_flops
    total_bytes = enc_bytes + STEPS * den_bytes
    print(f"gpu-base model, {S} px windows: {windows} windows of a {SIZE}x{SIZE} image, {STEPS} steps x {MEMBERS} "
          f"members; encoder {enc_flops / 1e9:.1f} GFLOP, denoiser {den_flops / 1e9:.1f} GFLOP per step "
          f"({rows} rows); {total_flops / 1e12:.3f} TFLOP and {total_bytes / 1e9:.2f} GB (unfused) per image; arithmetic "
          f"intensity {total_flops / total_bytes:.0f} FLOP/byte (H100 ridge point {PEAK_BF16 / HBM_BPS:.0f})")
    compute = total_flops / PEAK_BF16
    memory = total_bytes / HBM_BPS
    bound = max(compute, memory)
    print(f"roofline: compute {compute * 1e3:.2f} ms, memory {memory * 1e3:.2f} ms -> {bound * 1e3:.2f} ms per "
          f"image ({1 / bound:,.0f} images/s, {'compute' if compute >= memory else 'memory'}-bound); at {MFU:.0%} "
          f"MFU: {max(total_flops / (PEAK_BF16 * MFU), memory) * 1e3:.2f} ms "
          f"({1 / max(total_flops / (PEAK_BF16 * MFU), memory):,.0f} images/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
