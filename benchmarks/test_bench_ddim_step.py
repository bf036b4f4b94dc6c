"""One DDIM update (eta = 1, explicit noise, x0 clipped to [-1, 1]): spadfast reference, torch.compile of it,
the Triton kernel (explicit noise and Philox) and diffusers' ``DDIMScheduler.step`` on the same tensors.

The deterministic (eta = 0) update is what the sampler runs; it is timed end to end in test_bench_sampling.py.
"""

from __future__ import annotations

import functools

import pytest
import torch
from benchutils import OP_CASES, nbytes, op_provider, run_timed, skip_unless_available

PROVIDERS = ["reference", "compiled", "triton", "triton-philox", "diffusers"]
ETA, CLIP, STEPS, STEP_INDEX = 1.0, 1.0, 25, 10
T, BETA_START, BETA_END = 1000, 1e-4, 0.02  # SPADConfig defaults (linear betas)


def _scheduler():
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.DDIMScheduler(
        num_train_timesteps=T, beta_start=BETA_START, beta_end=BETA_END, beta_schedule="linear",
        clip_sample=True, clip_sample_range=CLIP, set_alpha_to_one=True, prediction_type="epsilon",
        timestep_spacing="trailing",
    )
    sched.set_timesteps(STEPS)
    return sched


@pytest.mark.parametrize("case", OP_CASES)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_bench_ddim_step(benchmark, provider, case, base_info, device):
    B, H, W = case
    skip_unless_available(provider)
    sched = _scheduler()
    t = int(sched.timesteps[STEP_INDEX])
    t_prev = t - T // STEPS
    a_t = float(sched.alphas_cumprod[t])
    a_prev = float(sched.alphas_cumprod[t_prev]) if t_prev >= 0 else 1.0
    g = torch.Generator(device=device).manual_seed(1)
    sample, model_output, noise = (torch.randn((B, 1, H, W), generator=g, device=device) for _ in range(3))
    info = dict(base_info, provider=provider, shape=[B, 1, H, W], dtype="float32", eta=ETA, clip_sample_range=CLIP,
                timestep=t, alpha_prod_t=a_t, alpha_prod_t_prev=a_prev)

    args = (sample, model_output, a_t, a_prev, ETA)
    fn = op_provider("ddim_step", provider, args, dict(noise=noise, clip_sample_range=CLIP),
                     dict(clip_sample_range=CLIP, seed=0, offset=0))
    if provider == "diffusers":
        info["note"] = "DDIMScheduler.step (host-side table lookup per call, as diffusers does)"
        fn = functools.partial(sched.step, model_output, t, sample, eta=ETA, variance_noise=noise, return_dict=False)
    elif fn is None:
        raise AssertionError(provider)
    if provider == "triton-philox":
        noise = None  # drawn in-kernel: not read from memory

    # read sample, model_output, noise; write prev_sample and pred_original_sample
    run_timed(benchmark, fn, group=f"ddim_step-{B}x{H}x{W}", info=info,
              bytes_moved=nbytes(sample, model_output, noise) + 2 * nbytes(sample))
