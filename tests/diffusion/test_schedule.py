"""spadfast.diffusion.schedule: betas and timesteps against diffusers' DDIMScheduler, and the progress-aware scheduler (PaS)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from spadfast.diffusion import schedule


def ulp_equal(a: torch.Tensor, b: torch.Tensor, ulps: int = 1) -> bool:
    """float32 tensors equal to within ``ulps`` units in the last place."""
    assert a.dtype == b.dtype == torch.float32 and a.shape == b.shape
    ia = a.contiguous().view(torch.int32).long()
    ib = b.contiguous().view(torch.int32).long()
    return bool(((ia - ib).abs() <= ulps).all())


# ------------------------------------------------------------------------------------------------------ betas
@pytest.mark.parametrize("kind", ["linear", "scaled_linear", "squaredcos_cap_v2"])
@pytest.mark.parametrize("T", [1000, 100, 37, 1])
def test_betas_and_alphas_cumprod_match_diffusers(kind, T):
    kw = {} if kind == "squaredcos_cap_v2" else {"beta_start": 1e-4, "beta_end": 0.02}
    ref = DDIMScheduler(num_train_timesteps=T, beta_schedule=kind, **kw)
    betas = schedule.make_betas(kind, T)
    assert betas.dtype == torch.float32 and betas.shape == (T,)
    assert ulp_equal(betas, ref.betas)
    ac = schedule.alphas_cumprod(betas)
    assert ac.dtype == torch.float32
    assert ulp_equal(ac, ref.alphas_cumprod)
    # in practice bit-identical (same float32 operations)
    assert torch.equal(betas, ref.betas) and torch.equal(ac, ref.alphas_cumprod)


@pytest.mark.parametrize("kind", ["linear", "scaled_linear"])
def test_custom_beta_range_matches_diffusers(kind):
    ref = DDIMScheduler(num_train_timesteps=500, beta_schedule=kind, beta_start=0.00085, beta_end=0.012)
    assert torch.equal(schedule.make_betas(kind, 500, 0.00085, 0.012), ref.betas)


def test_cosine_alias():
    for T in (1000, 50):
        assert torch.equal(schedule.make_betas("cosine", T), schedule.make_betas("squaredcos_cap_v2", T))
        ref = DDIMScheduler(num_train_timesteps=T, beta_schedule="squaredcos_cap_v2")
        assert torch.equal(schedule.alphas_cumprod(schedule.make_betas("cosine", T)), ref.alphas_cumprod)


def test_alphas_cumprod_properties():
    for kind in ("linear", "scaled_linear", "cosine"):
        ac = schedule.alphas_cumprod(schedule.make_betas(kind))
        assert (ac > 0).all() and (ac < 1).all()
        assert (ac[1:] <= ac[:-1]).all()  # decreasing noise level
    betas = schedule.make_betas("cosine")
    assert betas.max() <= 0.999 + 1e-7


@pytest.mark.parametrize("bad", [dict(kind="sigmoid"), dict(num_train_timesteps=0), dict(num_train_timesteps=1.5),
                                 dict(num_train_timesteps=True)])
def test_make_betas_bad_args(bad):
    with pytest.raises(ValueError, match="`"):
        schedule.make_betas(**bad)


# -------------------------------------------------------------------------------------------------- timesteps
CASES = [(1000, 50), (1000, 10), (1000, 30), (1000, 7), (1000, 1), (1000, 1000), (1000, 999), (100, 33), (37, 5),
         (10, 3), (1, 1)]


def _exact_ties(T: int, S: int, spacing: str) -> set[int]:
    """Positions (in descending order) whose exact, unrounded timestep ends in .5: float rounding decides them."""
    from fractions import Fraction

    if spacing == "trailing":
        exact = [Fraction(T * (S - i), S) - 1 for i in range(S)]
    elif spacing == "linspace":
        exact = [Fraction(i * (T - 1), S - 1) if S > 1 else Fraction(0) for i in range(S)][::-1]
    else:
        return set()
    return {k for k, v in enumerate(exact) if v.denominator == 2}


@pytest.mark.slow
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("T", [1000, *range(1, 41)])
def test_ddim_timesteps_every_step_count(spacing, T):
    """Every S in [1, T]: exactly S distinct descending steps in [0, T); equal to diffusers wherever diffusers
    returns S steps, except at exact .5 ties (float noise rounds those either way; spadfast rounds half to even)."""
    ref = DDIMScheduler(num_train_timesteps=T, timestep_spacing=spacing)
    broken = []
    for S in range(1, T + 1):
        got = schedule.ddim_timesteps(T, S, spacing)
        assert got.dtype == torch.int64 and got.shape == (S,), (spacing, T, S)
        assert (got >= 0).all() and (got < T).all(), (spacing, T, S)
        assert (got[:-1] > got[1:]).all(), (spacing, T, S)  # strictly descending, hence distinct
        ref.set_timesteps(S)
        theirs = ref.timesteps
        if theirs.shape != (S,):
            broken.append(S)
            continue
        differ = set(torch.nonzero(got != theirs).flatten().tolist())
        assert differ <= _exact_ties(T, S, spacing), (spacing, T, S, sorted(differ))
        assert ((got - theirs).abs() <= 1).all()
    if spacing == "trailing" and T == 1000:
        assert broken[:5] == [61, 103, 121, 122, 201] and len(broken) == 62  # diffusers' float arange: not S steps
    elif spacing != "trailing":
        assert broken == []


@pytest.mark.parametrize("T,S", CASES)
def test_ddim_timesteps_leading_offset_matches_diffusers(T, S):
    ref = DDIMScheduler(num_train_timesteps=T, timestep_spacing="leading", steps_offset=1)
    ref.set_timesteps(S)
    if (S - 1) * (T // S) + 1 > T - 1:  # diffusers would return timestep T, past the schedule: refused here
        with pytest.raises(ValueError, match="`steps_offset`"):
            schedule.ddim_timesteps(T, S, "leading", 1)
        return
    assert torch.equal(schedule.ddim_timesteps(T, S, "leading", 1), ref.timesteps)


@pytest.mark.parametrize("bad", [dict(spacing="uniform"), dict(num_inference_steps=0), dict(num_inference_steps=1001),
                                 dict(num_inference_steps=2.0)])
def test_ddim_timesteps_bad_args(bad):
    kw = dict(num_train_timesteps=1000, num_inference_steps=50, spacing="leading") | bad
    with pytest.raises(ValueError, match="`"):
        schedule.ddim_timesteps(**kw)


@pytest.mark.parametrize("set_alpha_to_one", [True, False])
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_ddim_alphas(set_alpha_to_one, spacing):
    ac = schedule.alphas_cumprod(schedule.make_betas("linear"))
    for S in (50, 30, 7, 1):
        ts = schedule.ddim_timesteps(1000, S, spacing)
        a_t, a_prev = schedule.ddim_alphas(ac, ts, set_alpha_to_one)
        assert a_t.dtype == a_prev.dtype == torch.float32 and a_t.shape == a_prev.shape == (S,)
        assert torch.equal(a_t, ac[ts])
        assert torch.equal(a_prev[:-1], a_t[1:])  # prev alpha of step i == alpha of timesteps[i+1]
        assert torch.equal(a_prev[:-1], ac[ts[1:]])
        assert a_prev[-1].item() == (1.0 if set_alpha_to_one else ac[0].item())
        assert (a_prev[:-1] > a_t[:-1]).all()
        assert a_prev[-1] >= a_t[-1]  # equal when the last timestep is 0 and set_alpha_to_one=False


def test_ddim_alphas_leading_equals_diffusers_prev_formula():
    """With leading spacing the array-based prev equals diffusers' ``t - T // S`` (including S not dividing T)."""
    for S in (50, 30, 7):
        sched = DDIMScheduler(num_train_timesteps=1000, set_alpha_to_one=False)
        sched.set_timesteps(S)
        ts = schedule.ddim_timesteps(1000, S, "leading")
        _, a_prev = schedule.ddim_alphas(sched.alphas_cumprod, ts, set_alpha_to_one=False)
        for i, t in enumerate(ts.tolist()):
            prev = t - 1000 // S
            want = sched.alphas_cumprod[prev] if prev >= 0 else sched.final_alpha_cumprod
            assert a_prev[i].item() == want.item()


@pytest.mark.parametrize("spacing,T,S", [("linspace", 1000, 30), ("linspace", 1000, 7), ("trailing", 1000, 30),
                                         ("trailing", 1000, 7)])
def test_diffusers_prev_formula_is_wrong_when_s_does_not_divide_t(spacing, T, S):
    """Why spadfast reads the previous timestep from the array: ``t - T // S`` is not the next selected timestep.

    For linspace with T=1000, S=30 the timesteps are round(linspace(0, 999, 30)) (spacing ~34.4) while T // S = 33,
    so diffusers' step would jump to timesteps that the sampler never visits and end on a t - 33 >= 0 instead of the
    final alpha.
    """
    ts = schedule.ddim_timesteps(T, S, spacing).tolist()
    next_in_array = ts[1:] + [-1]
    formula = [t - T // S for t in ts]
    mismatches = [(t, n, f) for t, n, f in zip(ts, next_in_array, formula) if (f if f >= 0 else -1) != n]
    assert mismatches, "expected the t - T//S formula to disagree with the array"
    # and spadfast follows the array
    ac = schedule.alphas_cumprod(schedule.make_betas("linear", T))
    _, a_prev = schedule.ddim_alphas(ac, torch.tensor(ts), set_alpha_to_one=True)
    for i, n in enumerate(next_in_array):
        assert a_prev[i].item() == (1.0 if n < 0 else ac[n].item())
    if spacing == "linspace":
        assert ts[-1] == 0 and T - 1 in ts


# -------------------------------------------------------------------------------------------------------- PaS
KINDS = ("linear", "cosine", "step")
GRID = np.linspace(0.0, 1.2, 4801).tolist()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("max_", [1.0, 0.35, 0.0])
@pytest.mark.parametrize("end", [1.0, 0.8, 0.25])
def test_progress_strength_shape(kind, max_, end):
    s = [schedule.progress_strength(p, kind, max=max_, end=end) for p in GRID]
    assert schedule.progress_strength(0.0, kind, max=max_, end=end) == max_
    assert all(0.0 <= v <= max_ for v in s)
    assert all(b <= a for a, b in zip(s, s[1:])), "not monotone non-increasing"
    for p in (end, end + 1e-9, 1.0, 1.5, 10.0):
        v = schedule.progress_strength(p, kind, max=max_, end=end)
        assert v == 0.0 and type(v) is float
    for p, v in zip(GRID, s):
        if p >= end:
            assert v == 0.0
    if max_ > 0:  # strictly positive before the end
        assert all(v > 0 for p, v in zip(GRID, s) if p < end * (1 - 1e-6))


def test_progress_strength_formulas():
    for p in (0.0, 0.1, 0.37, 0.5, 0.99):
        assert schedule.progress_strength(p, "linear", max=2.0) == pytest.approx(2.0 * (1 - p))
        assert schedule.progress_strength(p, "cosine", max=2.0) == pytest.approx(1.0 + math.cos(math.pi * p))
        assert schedule.progress_strength(p / 2, "linear", end=0.5) == pytest.approx(1 - p)
    assert schedule.progress_strength(0.5, "cosine") == pytest.approx(0.5)


@pytest.mark.parametrize("stages", [1, 2, 4, 7])
@pytest.mark.parametrize("end", [1.0, 0.6])
def test_step_kind_has_stages_plateaus(stages, end):
    grid = [p for p in GRID if p < end]
    vals = [schedule.progress_strength(p, "step", max=1.0, end=end, stages=stages) for p in grid]
    distinct = sorted(set(vals), reverse=True)
    assert len(distinct) == stages
    assert distinct == pytest.approx([1 - k / stages for k in range(stages)])
    # plateau k covers [k/stages, (k+1)/stages) of q = p / end
    for p, v in zip(grid, vals):
        k = math.floor(p / end * stages + 1e-12)
        if abs(p / end * stages - round(p / end * stages)) > 1e-9:  # away from the stage edges
            assert v == pytest.approx(1 - k / stages)


@pytest.mark.parametrize(
    "args",
    [
        dict(progress=0.5, kind="exponential"),
        dict(progress=-0.1),
        dict(progress=float("nan")),
        dict(progress=float("inf")),
        dict(progress=0.5, end=0.0),
        dict(progress=0.5, end=1.5),
        dict(progress=0.5, end=-0.2),
        dict(progress=0.5, max=-1.0),
        dict(progress=0.5, max=float("nan")),
        dict(progress=0.5, kind="step", stages=0),
        dict(progress=0.5, kind="step", stages=2.5),
    ],
)
def test_progress_strength_bad_args(args):
    with pytest.raises(ValueError, match="`"):
        schedule.progress_strength(**args)


@pytest.mark.parametrize("progress", [0.0, 1.0, 2.0])
def test_progress_strength_bad_stages_rejected_at_any_progress(progress):
    """A bad ``stages`` is an error whatever the progress (also once the strength has reached 0)."""
    with pytest.raises(ValueError, match="`stages`"):
        schedule.progress_strength(progress, "step", stages=0)
