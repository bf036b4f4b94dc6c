"""spadfast.ops.reference.ddim_step against diffusers' DDIMScheduler.step on the same tensors.

Tolerance: the reference evaluates diffusers' formula with the same float32 operations in the same order (alphas are
float32 0-dim tensors in both; the variance is ``(beta_prev / beta_t) * (1 - a_t / a_prev)`` in both), so in float32
the results are bit-identical; the tests assert that (``torch.equal``), which is tighter than the rtol/atol 1e-5 of
"float32 rounding". A failure here means the formula changed, not rounding noise. Half-precision samples are compared
with a per-dtype tolerance table against the float32 result.
"""

from __future__ import annotations

import math
import zlib

import pytest
import torch
from diffusers import DDIMScheduler

from spadfast import ops
from spadfast.diffusion import schedule
from spadfast.ops import reference
from spadfast.ops.constants import PREDICTION_TYPES
from spadfast.ops.op_table import TOLERANCES

T = 1000
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
CLIPS = (None, 1.0, 2.5)
ETAS = (0.0, 0.3, 1.0)

# Low-precision samples against the float32 result, with the shared (rtol, atol) table: the reference computes in
# float32 and rounds once on output.
LOW_PRECISION = (torch.float16, torch.bfloat16)


def make_scheduler(beta_schedule="linear", prediction_type="epsilon", clip=None, set_alpha_to_one=True, steps_offset=0):
    return DDIMScheduler(
        num_train_timesteps=T,
        beta_schedule=beta_schedule,
        prediction_type=prediction_type,
        clip_sample=clip is not None,
        clip_sample_range=1.0 if clip is None else clip,
        set_alpha_to_one=set_alpha_to_one,
        timestep_spacing="leading",
        steps_offset=steps_offset,
    )


def diffusers_alphas(sched: DDIMScheduler, t: int) -> tuple[torch.Tensor, torch.Tensor]:
    """alpha_prod_t and alpha_prod_t_prev exactly as DDIMScheduler.step picks them (prev = t - T // S)."""
    prev = t - sched.config.num_train_timesteps // sched.num_inference_steps
    a_t = sched.alphas_cumprod[t]
    a_prev = sched.alphas_cumprod[prev] if prev >= 0 else sched.final_alpha_cumprod
    return a_t, a_prev


def timesteps_for(sched: DDIMScheduler, S: int) -> list[int]:
    sched.set_timesteps(S)
    ts = sched.timesteps.tolist()
    return [999, 500, 1, 0] if S == T else ts


def assert_same(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape, what
    if not torch.equal(got, want):
        err = (got - want).abs().max().item()
        raise AssertionError(f"{what}: not bit-identical to diffusers (max abs diff {err:.3g})")


@pytest.mark.slow
@pytest.mark.parametrize("set_alpha_to_one", [True, False])
@pytest.mark.parametrize("beta_schedule", BETA_SCHEDULES)
@pytest.mark.parametrize("clip", CLIPS)
@pytest.mark.parametrize("eta", ETAS)
@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_step_matches_diffusers(prediction_type, eta, clip, beta_schedule, set_alpha_to_one):
    case = repr((prediction_type, eta, clip, beta_schedule, set_alpha_to_one)).encode()
    g = torch.Generator().manual_seed(zlib.crc32(case))
    sched = make_scheduler(beta_schedule, prediction_type, clip, set_alpha_to_one)
    for S in (10, 7, T):  # T // S = 100, 142 (S does not divide T), 1
        for t in timesteps_for(sched, S):
            x = 2 * torch.randn(2, 3, 5, 4, generator=g)
            out = 2 * torch.randn(2, 3, 5, 4, generator=g)
            noise = torch.randn(2, 3, 5, 4, generator=g)
            want = sched.step(out, t, x, eta=eta, variance_noise=noise if eta > 0 else None, return_dict=False)
            a_t, a_prev = diffusers_alphas(sched, t)
            for form, (at, ap) in {"tensor": (a_t, a_prev), "float": (float(a_t), float(a_prev))}.items():
                got = reference.ddim_step(
                    x, out, at, ap, eta=eta, noise=noise, clip_sample_range=clip, prediction_type=prediction_type
                )
                assert_same(got[0], want[0], f"prev_sample S={S} t={t} {form}")
                assert_same(got[1], want[1], f"pred_original_sample S={S} t={t} {form}")
            got = ops.ddim_step(
                x, out, a_t, a_prev, eta, noise, clip, prediction_type, backend="reference"
            )
            assert_same(got[0], want[0], f"ops prev_sample S={S} t={t}")


def test_clipping_is_active():
    """Sanity of the sweep above: clipping actually changes pred_original_sample on these inputs."""
    g = torch.Generator().manual_seed(0)
    x, out = torch.randn(4, 1, 6, 6, generator=g), torch.randn(4, 1, 6, 6, generator=g)
    _, x0 = reference.ddim_step(x, out, 0.05, 0.1)
    _, x0c = reference.ddim_step(x, out, 0.05, 0.1, clip_sample_range=1.0)
    assert x0.abs().max() > 1 and x0c.abs().max() <= 1
    assert not torch.equal(x0, x0c)


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
@pytest.mark.parametrize("eta", [0.0, 0.7])
@pytest.mark.parametrize("beta_schedule", ["linear", "squaredcos_cap_v2"])
def test_per_sample_alphas_match_row_by_row(prediction_type, eta, beta_schedule):
    sched = make_scheduler(beta_schedule, prediction_type, clip=1.5, set_alpha_to_one=False)
    sched.set_timesteps(20)  # T // S = 50
    ts = [950, 500, 0, 50, 300, 999]  # rows at different timesteps, one with prev < 0
    B = len(ts)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, 2, 7, 5, generator=g)
    out = torch.randn(B, 2, 7, 5, generator=g)
    noise = torch.randn(B, 2, 7, 5, generator=g)
    alphas = [diffusers_alphas(sched, t) for t in ts]
    a_t = torch.stack([a for a, _ in alphas])
    a_prev = torch.stack([torch.as_tensor(p, dtype=torch.float32) for _, p in alphas])
    got_prev, got_x0 = reference.ddim_step(
        x, out, a_t, a_prev, eta=eta, noise=noise, clip_sample_range=1.5, prediction_type=prediction_type
    )
    # broadcastable [B,1,1,1] alphas give the same result as [B]
    alt = reference.ddim_step(
        x, out, a_t.view(B, 1, 1, 1), a_prev.view(B, 1, 1, 1), eta=eta, noise=noise, clip_sample_range=1.5,
        prediction_type=prediction_type,
    )
    assert torch.equal(alt[0], got_prev) and torch.equal(alt[1], got_x0)
    for i, t in enumerate(ts):
        want = sched.step(out[i : i + 1], t, x[i : i + 1], eta=eta, variance_noise=noise[i : i + 1] if eta else None)
        assert_same(got_prev[i : i + 1], want.prev_sample, f"row {i} t={t} prev")
        assert_same(got_x0[i : i + 1], want.pred_original_sample, f"row {i} t={t} x0")


@pytest.mark.parametrize("dtype", LOW_PRECISION)
@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_low_precision_samples(dtype, prediction_type, eta):
    rtol, atol = TOLERANCES[dtype]
    sched = make_scheduler("scaled_linear", prediction_type, clip=None)
    sched.set_timesteps(25)
    g = torch.Generator().manual_seed(2)
    for t in [960, 600, 240, 0]:
        x = torch.randn(3, 1, 9, 9, generator=g).to(dtype)
        out = torch.randn(3, 1, 9, 9, generator=g).to(dtype)
        noise = torch.randn(3, 1, 9, 9, generator=g).to(dtype)
        a_t, a_prev = diffusers_alphas(sched, t)
        got = reference.ddim_step(x, out, a_t, a_prev, eta=eta, noise=noise, prediction_type=prediction_type)
        want = sched.step(out.float(), t, x.float(), eta=eta, variance_noise=noise.float() if eta else None)
        for g_, w_ in zip(got, (want.prev_sample, want.pred_original_sample)):
            assert g_.dtype == dtype and g_.shape == x.shape
            torch.testing.assert_close(g_.float(), w_, atol=atol * max(1.0, w_.abs().max().item()), rtol=rtol)
            # computed in float32 and rounded once: exactly the float32 result cast to the dtype
            assert torch.equal(g_, w_.to(dtype))


def test_alpha_one_is_identity_for_epsilon():
    """alpha_prod_t == alpha_prod_t_prev == 1: diffusers divides 0 by 0 in its variance; spadfast uses 0."""
    x, out = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    for eta in (0.0, 1.0):
        prev, x0 = reference.ddim_step(x, out, 1.0, 1.0, eta=eta, noise=torch.randn(2, 1, 4, 4))
        assert torch.isfinite(prev).all()
        assert torch.equal(x0, x) and torch.equal(prev, x)


# ---------------------------------------------------------------------------------------------- golden loop
def toy_model(sample: torch.Tensor, t: int) -> torch.Tensor:
    return 0.1 * sample + math.sin(t)


@pytest.mark.parametrize(
    "prediction_type,eta,clip,beta_schedule,set_alpha_to_one,steps_offset",
    [
        ("epsilon", 0.0, None, "linear", True, 0),
        ("epsilon", 0.0, 1.0, "linear", True, 1),
        ("epsilon", 0.5, 1.0, "squaredcos_cap_v2", False, 0),
        ("sample", 0.0, 1.0, "scaled_linear", True, 0),
        ("v_prediction", 1.0, 2.5, "squaredcos_cap_v2", True, 1),
        ("v_prediction", 0.0, None, "linear", False, 0),
    ],
)
def test_full_50_step_loop_matches_diffusers(prediction_type, eta, clip, beta_schedule, set_alpha_to_one, steps_offset):
    S = 50
    sched = make_scheduler(beta_schedule, prediction_type, clip, set_alpha_to_one, steps_offset)
    sched.set_timesteps(S)
    g = torch.Generator().manual_seed(3)
    x_init = torch.randn(2, 1, 16, 16, generator=g)
    noises = [torch.randn(2, 1, 16, 16, generator=g) for _ in range(S)]

    x = x_init.clone()
    for i, t in enumerate(sched.timesteps.tolist()):
        x = sched.step(toy_model(x, t), t, x, eta=eta, variance_noise=noises[i] if eta else None).prev_sample
    want = x

    ts = schedule.ddim_timesteps(T, S, "leading", steps_offset)
    assert torch.equal(ts, sched.timesteps)
    ac = schedule.alphas_cumprod(schedule.make_betas(beta_schedule, T))
    a_t, a_prev = schedule.ddim_alphas(ac, ts, set_alpha_to_one)
    x = x_init.clone()
    for i, t in enumerate(ts.tolist()):
        x, _ = reference.ddim_step(
            x, toy_model(x, t), a_t[i], a_prev[i], eta=eta, noise=noises[i], clip_sample_range=clip,
            prediction_type=prediction_type,
        )
    assert torch.isfinite(want).all()
    torch.testing.assert_close(x, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_reversed_alphas_are_refused_by_name(backend):
    """``alpha_prod_t_prev < alpha_prod_t`` would step towards more noise; floats always, tensors when
    validating. Equal alphas (the last step of a 1-step schedule at alpha 1) stay allowed."""
    from spadfast import ops

    x = torch.randn(2, 1, 4, 4)
    for a_t, a_prev in [(0.9, 0.5), (torch.tensor([0.5, 0.9]), torch.tensor([0.6, 0.8])), (0.7, torch.tensor(0.6))]:
        with pytest.raises(ValueError, match="`alpha_prod_t_prev`"):
            ops.ddim_step(x, x, a_t, a_prev, backend=backend)
    ops.ddim_step(x, x, 0.5, 0.5, backend=backend)
    ops.ddim_step(x, x, torch.tensor([0.5, 0.9]), torch.tensor([0.6, 0.8]), validate=False, backend=backend)


def test_canny_on_inf_names_the_value_not_nan():
    from spadfast import ops

    m = torch.zeros(8, 8)
    m[0, 0] = float("inf")
    with pytest.raises(ValueError, match="inf"):
        ops.canny(m)
