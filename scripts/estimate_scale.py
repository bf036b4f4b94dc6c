"""An estimate (not a measurement) of data-parallel training time per step on 8 and 64 GPUs.

    .venv/bin/python scripts/estimate_scale.py

Counts the training step's FLOPs for the ``gpu-base`` preset's model (forward + backward, one micro-batch of
``batch_size`` per GPU) with ``torch.utils.flop_counter`` on the CPU, and the gradient bytes DDP all-reduces
(float32, every parameter). Assumptions, stated in the output: H100 SXM at 989 dense bf16 TFLOP/s and a model
FLOP utilisation of 35 % for this small convolutional model; ring all-reduce moving ``2 (n - 1) / n`` of the
gradient bytes over NVLink 4 (450 GB/s per GPU, one node of 8) or 200 Gb/s InfiniBand per GPU (across nodes);
no overlap of communication with the backward pass (an upper bound on the communication share).
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from spadfast.config import SPADConfig
from spadfast.models.factory import build_model

PEAK_BF16 = 989e12
MFU = 0.35
NVLINK_BPS = 450e9
IB_BPS = 200e9 / 8


def main() -> int:
    cfg = SPADConfig.preset("gpu-base", device="cpu")
    model = build_model(cfg)
    B, S = cfg.batch_size, cfg.image_size
    x = torch.randn(B, cfg.model_in_channels, S, S)
    t = torch.randint(0, cfg.num_train_timesteps, (B,)).float()
    with FlopCounterMode(display=False) as counter:
        model(x, t).float().pow(2).mean().backward()
    flops = counter.get_total_flops()
    params = sum(p.numel() for p in model.parameters())
    grad_bytes = 4 * params
    compute_s = flops / (PEAK_BF16 * MFU)
    print(f"gpu-base: image_size {S}, batch {B} per GPU, {params / 1e6:.2f} M parameters, "
          f"{flops / 1e12:.3f} TFLOP per training step per GPU, {grad_bytes / 1e6:.1f} MB of gradients")
    print("| GPUs | compute per step | all-reduce per step | communication share (no overlap) | images/s |")
    print("|---|---|---|---|---|")
    for n, bandwidth, link in ((8, NVLINK_BPS, "NVLink"), (64, IB_BPS, "InfiniBand 200 Gb/s")):
        comm_s = 2 * (n - 1) / n * grad_bytes / bandwidth
        step = compute_s + comm_s
        print(f"| {n} ({link}) | {compute_s * 1e3:.2f} ms | {comm_s * 1e3:.2f} ms | {comm_s / step:.0%} | "
              f"{n * B / step:,.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
