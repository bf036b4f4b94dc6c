"""Noise schedules, DDIM timestep selection and the progress-aware scheduler (PaS).

Beta schedules reproduce diffusers' ``DDIMScheduler`` (``linear``, ``scaled_linear``, ``squaredcos_cap_v2``, the
latter also reachable as ``cosine``) to float32 rounding. DDIM timesteps follow diffusers' three spacings in
integer arithmetic (exactly S distinct steps for every S), and the previous timestep of each step is read from the
selected array (never from ``t - T // S``, which is wrong for ``linspace`` and ``trailing`` when S does not divide
T). The forward process (:func:`add_noise`) and the training targets live here too.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..ops.checks import check_int, check_number
from ..ops.constants import PREDICTION_TYPES

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "cosine")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")
PROGRESS_KINDS = ("linear", "cosine", "step")


def make_betas(
    kind: str = "linear", num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02
) -> torch.Tensor:
    """Betas ``[T]`` float32 for a named schedule (diffusers' definitions)."""
    if kind not in BETA_SCHEDULES:
        raise ValueError(f"`kind` must be one of {BETA_SCHEDULES}, got {kind!r}")
    T = check_int(num_train_timesteps, "num_train_timesteps", 1)
    if kind == "linear":
        return torch.linspace(beta_start, beta_end, T, dtype=torch.float32)
    if kind == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float32) ** 2

    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), 0.999) for i in range(T)]
    return torch.tensor(betas, dtype=torch.float32)


def alphas_cumprod(betas: torch.Tensor) -> torch.Tensor:
    """``prod_{s<=t} (1 - beta_s)``, float32 ``[T]``."""
    return torch.cumprod(1.0 - betas.float(), dim=0)


def _round_ratio(num: np.ndarray, den: int) -> np.ndarray:
    """``round(num / den)`` for non-negative int64 ``num``, half to even (numpy's rule), in exact integer arithmetic."""
    q, r = np.divmod(num, den)
    up = (2 * r > den) | ((2 * r == den) & (q % 2 == 1))
    return q + up


def ddim_timesteps(
    num_train_timesteps: int, num_inference_steps: int, spacing: str = "leading", steps_offset: int = 0
) -> torch.Tensor:
    """Descending int64 timesteps ``[S]``: exactly S distinct values in ``[0, T)`` for every S in ``[1, T]``.

    The three spacings of diffusers' ``DDIMScheduler.set_timesteps``, computed in integer arithmetic:
    ``leading`` ``i * (T // S) + steps_offset``; ``trailing`` ``round(T - i T / S) - 1``; ``linspace``
    ``round(i (T - 1) / (S - 1))`` (rounding half to even, as numpy does). diffusers computes ``trailing`` with a
    float ``np.arange(T, 0, -T / S)``, which for 62 of the 1000 step counts at T = 1000 (61, 103, 121, ...) yields
    S + 1 values ending at -1; spadfast does not reproduce that: it returns the S values diffusers means, and agrees
    with diffusers exactly wherever diffusers returns S values.
    """
    T, S = num_train_timesteps, num_inference_steps
    if spacing not in TIMESTEP_SPACINGS:
        raise ValueError(f"`spacing` must be one of {TIMESTEP_SPACINGS}, got {spacing!r}")
    T = check_int(T, "num_train_timesteps", 1)
    S = check_int(S, "num_inference_steps", 1, T)
    i = np.arange(S, dtype=np.int64)
    if spacing == "leading":
        ratio = T // S
        top = T - 1 - (S - 1) * ratio
        steps_offset = check_int(steps_offset, "steps_offset", 0, top, expected=f"an int in [0, {top}] for S = {S}")
        ts = i * ratio + steps_offset
    elif spacing == "trailing":
        ts = _round_ratio(T * (S - i), S) - 1
    else:
        ts = _round_ratio(i * (T - 1), S - 1) if S > 1 else np.zeros(1, np.int64)
    if spacing != "trailing":
        ts = ts[::-1]
    return torch.from_numpy(ts.astype(np.int64, copy=True))


def ddim_alphas(
    alphas_cumprod_: torch.Tensor, timesteps: torch.Tensor, set_alpha_to_one: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-step ``(alpha_prod_t, alpha_prod_t_prev)``, float32 ``[S]`` each.

    The previous alpha of step i is the alpha of ``timesteps[i+1]``; after the last step it is 1 (``set_alpha_to_one``)
    or ``alphas_cumprod[0]``, as in diffusers.
    """
    ac = alphas_cumprod_.float()
    final = torch.ones((), dtype=torch.float32) if set_alpha_to_one else ac[0]
    a_t = ac[timesteps]
    a_prev = torch.cat([ac[timesteps[1:]], final.view(1).to(ac.device)])
    return a_t, a_prev


def check_eta(eta: float) -> float:
    """DDIM's eta must lie in [0, 1] (0: deterministic DDIM, 1: DDPM-like variance); above 1 the update is NaN."""
    return check_number(eta, "eta", 0, 1, expected="a number in [0, 1] (above 1, 1 - alpha_prev - sigma^2 < 0)")


def add_noise(x0: torch.Tensor, eps: torch.Tensor, alpha_prod: torch.Tensor) -> torch.Tensor:
    """The forward process ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps``; ``alpha_prod`` broadcasts per row."""
    return alpha_prod.sqrt() * x0 + (1 - alpha_prod).sqrt() * eps


def training_target(
    prediction_type: str, x0: torch.Tensor, eps: torch.Tensor, alpha_prod: torch.Tensor
) -> torch.Tensor:
    """What a model of ``prediction_type`` must output for ``x_t = add_noise(x0, eps, alpha_prod)``.

    ``epsilon``: eps; ``sample``: x0; ``v_prediction``: ``v = sqrt(abar) eps - sqrt(1 - abar) x0``.
    """
    if prediction_type == "epsilon":
        return eps
    if prediction_type == "sample":
        return x0
    if prediction_type == "v_prediction":
        return alpha_prod.sqrt() * eps - (1 - alpha_prod).sqrt() * x0
    raise ValueError(f"`prediction_type` must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


def progress_strength(
    progress: float, kind: str = "linear", max: float = 1.0, end: float = 1.0, stages: int = 4
) -> float:
    """PaS: perturbation strength at training progress ``p = step / total_steps``.

    Decays from ``max`` at p = 0 to exactly 0 at ``p >= end`` (``end`` in (0, 1]; the last ``1 - end`` of training
    sees clean masks). With ``q = min(p / end, 1)``: ``linear`` gives ``max * (1 - q)``, ``cosine``
    ``max * (1 + cos(pi q)) / 2``, ``step`` ``max * (1 - floor(q * stages) / stages)`` (``stages`` plateaus).
    """
    if kind not in PROGRESS_KINDS:
        raise ValueError(f"`kind` must be one of {PROGRESS_KINDS}, got {kind!r}")
    if not (isinstance(progress, (int, float)) and math.isfinite(progress)) or progress < 0:
        raise ValueError(f"`progress` must be a finite number >= 0, got {progress!r}")
    if not (isinstance(end, (int, float)) and 0 < end <= 1):
        raise ValueError(f"`end` must lie in (0, 1], got {end!r}")
    if not (isinstance(max, (int, float)) and math.isfinite(max)) or max < 0:
        raise ValueError(f"`max` must be a finite number >= 0, got {max!r}")
    check_int(stages, "stages", 1)
    q = min(progress / end, 1.0)
    if q >= 1.0:
        return 0.0
    if kind == "linear":
        return max * (1.0 - q)
    if kind == "cosine":
        return max * 0.5 * (1.0 + math.cos(math.pi * q))
    return max * (1.0 - math.floor(q * stages) / stages)
