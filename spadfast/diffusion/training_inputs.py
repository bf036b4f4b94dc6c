"""What the denoiser sees and must output in one training step, for each ``perturb_mode``.

All tensors are float32 ``[B,K,H,W]`` in diffusion units ([-1, 1] masks) unless stated; ``a`` is ``abar_t`` per row,
``[B,1,1,1]``.

- ``target``: the perturbed mask is the diffusion's x0 (input and regression target): label noise that fades.
- ``input``: x_t is built from the perturbed mask, the regression target is the clean mask. For ``epsilon`` and
  ``v_prediction`` the target noise is the one that maps x_t back to the clean mask:
  ``eps* = eps + sqrt(a / (1 - a)) (x0_in - clean)``, so the model's x0 estimate is supervised to be clean. At small t
  ``sqrt(a / (1 - a))`` is ~100 (linear betas, t = 0), so those targets are ~100x the noise scale wherever the
  perturbation changed the mask and the MSE is dominated by a few low-noise rows: the trainer refuses ``input`` with a
  perturbation unless ``prediction_type`` is ``sample``, whose target is the clean mask itself
  (:func:`check_perturb_mode`).
- ``condition``: x_t is built from the clean mask; the extra input channel is the model's own detached x0 estimate
  (self-conditioning, as the sampler feeds the previous step's estimate), with SPAD's perturbation of its
  binarisation added. The ground truth never enters the condition.

``objective="supervised"`` is not diffusion: the same network sees an empty mask at t = 0 and its output is
per-class logits, trained with :func:`supervised_loss` (the non-diffusion reference of the SPAD study).

DDPM-IP (``input_gamma`` > 0, Ning et al. 2023): x_t = add_noise(x0_in, eps + gamma * xi) with the target built
from ``eps``, a perturbation of the forward noise only.

Training options of the diffusion study (each off by default; combinations are checked by ``SPADConfig``):

- ``self_condition`` (Analog Bits, Chen et al. 2023): the condition channel of ``condition`` mode without SPAD's
  perturbation: on a ``self_condition_prob`` share of rows the model's own detached x0 estimate (a first no-grad
  pass with an empty condition), zeros on the rest (:func:`self_condition_rows`). ``condition`` mode is
  self-conditioning with the estimate's binarisation perturbed and ``condition_dropout`` zeroing rows, so the two
  are refused together.
- ``recycle`` (ImgX-DiffSeg, Fu et al. 2023, ``prev_step: next`` without ``reverse_step``): a no-grad pass on x_{t+1}
  built from the ground truth (t + 1 clamped at T - 1, the step the sampler comes from) gives x0^; x_t is x0^
  re-noised at t with fresh noise, and the regression target is the ground truth (:func:`recycled_pair`: ``input``
  mode with x0^ as the perturbed mask). ImgX draws t from [0, T - 1); spadfast keeps [0, T) so the timestep draw
  is that of a run without recycling. Only ``prediction_type: sample`` (the target of ``epsilon``/``v`` would
  carry ``sqrt(abar/(1-abar)) (x0^ - x0)``, as in ``input`` mode).
- ``x0_loss_weight`` (Diff-UNet, Xing et al. 2023): + weight * (BCE + soft Dice) of the x0 estimate against the
  regression's x0 (:func:`x0_mask_loss`).
- ``prior: supervised`` (MedSegDiff-V2, HiDiff, PGRD): the first ``prior_steps`` train a supervised network of the
  same architecture (:func:`supervised_loss`); afterwards it is frozen and its EMA's probabilities, scaled to
  [-1, 1] (:func:`spadfast.diffusion.sampler.prior_condition`), are K more image channels of every diffusion input;
  the targets above are unchanged.
"""

from __future__ import annotations

import torch

from .schedule import add_noise, training_target

__all__ = ["perturbed_rows", "noised_pair", "x0_from_prediction", "self_condition", "supervised_loss", "split_ignored",
           "masked_mse", "check_perturb_mode", "diffusion_x0", "recycled_pair", "self_condition_rows", "x0_mask_loss",
           "recycle_timesteps"]


def check_perturb_mode(config) -> None:
    """ValueError (naming ``perturb_mode`` and ``prediction_type``, with the alternatives) for a config that would
    train ``perturb_mode: input`` with a perturbation on and an ``epsilon`` or ``v_prediction`` target: the noise that
    maps x_t (built from the perturbed mask) back to the clean mask holds ``sqrt(abar / (1 - abar)) (x0~ - x0)``, up
    to ~100x the noise scale at small t (see the module docstring). Checked when training starts, not when a config
    or checkpoint loads, so models trained that way still predict."""
    if config.objective != "diffusion" or config.perturb_mode != "input" or config.prediction_type == "sample":
        return
    if not config.perturb.enabled:  # x0~ is the clean mask: the targets are plain noise
        return
    raise ValueError(
        f"`perturb_mode: input` with `prediction_type: {config.prediction_type}` regresses onto noise targets up to "
        "sqrt(abar/(1-abar)) ~ 100x the noise scale at small t (x_t is built from the perturbed mask, the loss "
        "targets the clean one); set `prediction_type: sample` (the presets' choice), or use `perturb_mode: target` "
        "or `condition`"
    )


def _space(x: torch.Tensor) -> tuple[int, ...]:
    """The spatial dims of ``[B,K,H,W]`` (``(2, 3)``) or of a volume's ``[B,K,D,H,W]`` (``(2, 3, 4)``)."""
    return tuple(range(2, x.dim()))


def perturbed_rows(batch: int, share: float, generator: torch.Generator, device: torch.device) -> torch.Tensor | None:
    """Bool ``[B,1,1,1]``: rows that get the perturbation (a ``share`` of them on average); None when every row does
    (``share == 1``; nothing is drawn, so the random stream is that of an unshared perturbation)."""
    if share >= 1:
        return None
    return (torch.rand((batch, 1, 1, 1), generator=generator, device=device) < share)


def noised_pair(
    mode: str, prediction_type: str, clean: torch.Tensor, perturbed: torch.Tensor, rows: torch.Tensor | None,
    eps: torch.Tensor, a: torch.Tensor, input_noise: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x_t, target)`` of one micro-batch.

    Args:
        mode: ``"target"``, ``"input"`` or ``"condition"`` (condition mode builds x_t from ``clean``).
        clean, perturbed: the ground-truth mask and its SPAD perturbation, [-1, 1].
        rows: :func:`perturbed_rows` (None: every row uses ``perturbed``).
        eps: the forward noise, standard normal.
        a: ``abar_t`` per row, ``[B,1,1,1]``.
        input_noise: ``gamma * xi`` of DDPM-IP, added to the noise that builds x_t only (None: off).
    """
    x0_in = diffusion_x0(mode, clean, perturbed, rows)
    x_t = add_noise(x0_in, eps if input_noise is None else eps + input_noise, a)
    if mode == "target":
        return x_t, training_target(prediction_type, x0_in, eps, a)
    eps_clean = eps if mode == "condition" else eps + (a / (1 - a)).sqrt() * (x0_in - clean)
    return x_t, training_target(prediction_type, clean, eps_clean, a)


def diffusion_x0(mode: str, clean: torch.Tensor, perturbed: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    """The mask x_t is built from (:func:`noised_pair`'s ``x0_in``): ``clean`` in ``condition`` mode, else
    ``perturbed`` on ``rows`` (every row when None) and ``clean`` elsewhere; float ``[B,K,H,W]`` in [-1, 1]."""
    return clean if mode == "condition" else perturbed if rows is None else torch.where(rows, perturbed, clean)


def recycle_timesteps(t: torch.Tensor, num_train_timesteps: int) -> torch.Tensor:
    """Timesteps of recycling's first pass: ``t + 1`` clamped at ``T - 1`` (int64 ``[B]``, as ``t``)."""
    return (t + 1).clamp_max(num_train_timesteps - 1)


def recycled_pair(prediction_type: str, clean: torch.Tensor, estimate: torch.Tensor, eps: torch.Tensor,
                  a: torch.Tensor, input_noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x_t, target)`` of recycling: x_t = ``add_noise(estimate, eps (+ input_noise), a)``, the target that of the
    ground truth ``clean`` (``input`` mode of :func:`noised_pair` with the detached x0 estimate as the perturbed
    mask). All float ``[B,K,H,W]`` in [-1, 1] but ``eps`` (standard normal) and ``a`` (``[B,1,1,1]``)."""
    return noised_pair("input", prediction_type, clean, estimate, None, eps, a, input_noise)


def self_condition_rows(estimate: torch.Tensor, share: float, generator: torch.Generator) -> torch.Tensor:
    """Self-conditioning's channel: ``estimate`` (float ``[B,K,H,W]``, detached) on a ``share`` of rows drawn from
    ``generator`` (one uniform per row), zeros on the others."""
    ones = (1,) * (estimate.dim() - 1)  # [B,1,1,1], or [B,1,1,1,1] for volumes
    keep = torch.rand((estimate.shape[0], *ones), generator=generator, device=estimate.device) < share
    return estimate * keep


def x0_mask_loss(x0: torch.Tensor, mask: torch.Tensor, valid: torch.Tensor | None = None,
                 smooth: float = 1.0, eps: float = 1e-3) -> torch.Tensor:
    """Binary cross-entropy plus soft Dice (1 - mean over rows and class channels) of the x0 estimate as a mask.

    Args:
        x0: float ``[B,K,H,W]``, the model's x0 estimate in diffusion units (about [-1, 1]).
        mask: float ``[B,K,H,W]`` in [0, 1], the x0 the regression targets in mask units.
        valid: optional 0/1 ``[B,1,H,W]``: only annotated pixels count, in both terms.

    The probability is ``p = (x0 + 1) / 2`` clipped to ``[eps, 1 - eps]``, as the sampler reads a member (there
    clipped to [0, 1]); outside that range the clip passes no gradient and the MSE alone pulls the estimate back.
    Returns a float32 scalar.
    """
    p = ((x0.float() + 1) / 2).clamp(eps, 1 - eps)
    bce = torch.nn.functional.binary_cross_entropy(p, mask, reduction="none")
    if valid is None:
        bce = bce.mean()
    else:
        bce = (bce * valid).sum() / (valid.sum() * mask.shape[1]).clamp_min(1)
        p, mask = p * valid, mask * valid
    inter = (p * mask).sum(dim=_space(p))
    dice = (2 * inter + smooth) / (p.sum(dim=_space(p)) + mask.sum(dim=_space(p)) + smooth)
    return bce + (1 - dice.mean())


def x0_from_prediction(prediction_type: str, x_t: torch.Tensor, output: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """The model's x0 estimate from its output (the inversions the DDIM step uses)."""
    if prediction_type == "sample":
        return output
    if prediction_type == "epsilon":
        return (x_t - (1 - a).sqrt() * output) / a.sqrt()
    return a.sqrt() * x_t - (1 - a).sqrt() * output


def self_condition(estimate: torch.Tensor, perturbed_binary: torch.Tensor, binary: torch.Tensor) -> torch.Tensor:
    """Condition channel of ``condition`` mode: the detached estimate plus SPAD's change of its binarisation.

    ``estimate`` is in [-1, 1]; ``binary`` its binarisation and ``perturbed_binary`` that perturbed, both in mask
    units [0, 1]. Returns ``estimate + 2 (perturbed_binary - binary)``.
    """
    return estimate + 2 * (perturbed_binary - binary)


def supervised_loss(logits: torch.Tensor, mask: torch.Tensor, smooth: float = 1.0,
                    valid: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy plus soft Dice (1 - mean over rows and classes), ``logits`` and ``mask`` (0/1)
    float ``[B,K,H,W]``; ``valid`` (0/1 ``[B,1,H,W]``, optional) keeps only annotated pixels in both terms."""
    if valid is None:
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, mask)
    else:
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, mask, reduction="none")
        bce = (bce * valid).sum() / (valid.sum() * mask.shape[1]).clamp_min(1)
    p = torch.sigmoid(logits) if valid is None else torch.sigmoid(logits) * valid
    inter = (p * mask).sum(dim=_space(p))
    dice = (2 * inter + smooth) / (p.sum(dim=_space(p)) + mask.sum(dim=_space(p)) + smooth)
    return bce + (1 - dice.mean())


def split_ignored(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``mask`` ``[B,K,H,W]`` holding -1 at ignored pixels -> (mask with those pixels 0, ``valid`` 0/1
    ``[B,1,H,W]``: 1 where every channel is annotated)."""
    return mask.clamp_min(0), (mask >= 0).all(1, keepdim=True).to(mask.dtype)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Mean squared error of ``[B,K,H,W]`` tensors over the pixels where ``valid`` (``[B,1,H,W]``, 0/1) is 1 (all
    pixels when None; 0 when none is)."""
    if valid is None:
        return torch.nn.functional.mse_loss(pred, target)
    return ((pred - target) ** 2 * valid).sum() / (valid.sum() * pred.shape[1]).clamp_min(1)
