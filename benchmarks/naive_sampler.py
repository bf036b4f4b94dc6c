"""Reference sampling loops for the sampling benchmark and the ``scripts/measure_*.py`` scripts.

- :func:`naive_sample`: the peer, the loop people write (MedSegDiff's ``sample`` script does this): ensemble
  members sampled one after another at batch 1 with diffusers' ``DDIMScheduler``, the timestep read on the host at
  every step (``int(t)``, i.e. ``t.item()``) and turned back into a tensor for the model, ``model(cat[x, image], t)``
  at every step (so a cached-encoder model re-encodes the image every step), members averaged at the end.
- :func:`cached_sample`: spadfast's batched loop for a model with ``encode`` / ``denoise``
  (:class:`spadfast.models.cached_unet.SPADCachedUNet`): the images are encoded once, the features repeated per member,
  then S steps of ``denoise`` + :func:`spadfast.ops.ddim_step` on all B*K rows at once, every coefficient
  precomputed (no host sync). Same initial noise as :class:`spadfast.diffusion.sampler.DDIMSampler` (``randn((B*K, 1, H, W))``
  from a CPU generator seeded with ``seed``), so with ``eta == 0`` it returns what ``DDIMSampler.sample`` returns
  for the same model (up to float rounding: the features are computed at batch B instead of B*K). Written here so
  the cached model can be timed before the sampler calls ``encode`` / ``denoise`` itself.

Both return ``(probs [B,1,H,W], std [B,1,H,W], mask [B,1,H,W])`` like ``SPADTrainer.segment``.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

from spadfast import ops
from spadfast.diffusion.schedule import ddim_alphas, ddim_timesteps


def diffusers_scheduler(cfg):
    """diffusers' ``DDIMScheduler`` with ``cfg``'s (``SPADConfig``) schedule, spacing, clipping and prediction."""
    import diffusers

    return diffusers.DDIMScheduler(
        num_train_timesteps=cfg.num_train_timesteps, beta_start=cfg.beta_start, beta_end=cfg.beta_end,
        beta_schedule={"linear": "linear", "cosine": "squaredcos_cap_v2"}[cfg.beta_schedule],
        clip_sample=cfg.clip_sample is not None, clip_sample_range=cfg.clip_sample or 1.0, set_alpha_to_one=True,
        prediction_type=cfg.prediction_type, timestep_spacing=cfg.timestep_spacing,
    )


def _summarize(x: torch.Tensor, B: int, K: int, threshold: float):
    H, W = x.shape[-2:]
    members = ((x.float().clamp(-1, 1) + 1) / 2).view(B, K, H, W)
    probs = members.mean(dim=1, keepdim=True)
    return probs, members.std(dim=1, keepdim=True, unbiased=False), probs > threshold


@torch.no_grad()
def naive_sample(model: nn.Module, scheduler, images: torch.Tensor, steps: int, ensemble: int, seed: int = 0,
                 eta: float = 0.0, threshold: float = 0.5):
    """Members one at a time at batch 1, diffusers' scheduler, host-side timestep (see the module docstring).

    The initial noise of member ``k`` of image ``b`` is row ``b * K + k`` of the same draw the spadfast sampler
    makes, so with ``eta == 0`` the result equals ``DDIMSampler.sample`` for the same model up to float rounding.
    """
    model.eval()
    B, _, H, W = images.shape
    K = ensemble
    device = images.device
    x_T = torch.randn((B * K, 1, H, W), generator=torch.Generator().manual_seed(seed))
    scheduler.set_timesteps(steps)
    outs = []
    for b in range(B):
        img = images[b : b + 1]
        for k in range(K):
            x = x_T[b * K + k : b * K + k + 1].to(device)
            for t in scheduler.timesteps:
                step_t = int(t.item())  # host-side timestep, as MedSegDiff's loop
                t_model = torch.tensor([step_t], device=device, dtype=torch.float32)
                out = model(torch.cat([x, img], dim=1), t_model)
                x = scheduler.step(out, step_t, x, eta=eta, return_dict=False)[0]
            outs.append(x)
    return _summarize(torch.cat(outs), B, K, threshold)


@torch.no_grad()
def cached_sample(model: nn.Module, images: torch.Tensor, alphas_cumprod: torch.Tensor, steps: int, ensemble: int,
                  seed: int = 0, spacing: str = "trailing", clip_sample: float | None = 1.0,
                  prediction_type: str = "epsilon", threshold: float = 0.5, amp_dtype: torch.dtype | None = None,
                  channels_last: bool = False, encode=None, denoise=None, return_members: bool = False):
    """Encode once, repeat features per member, S batched steps of ``denoise`` + ``ops.ddim_step`` (eta 0).

    ``encode`` / ``denoise``: callables to use instead of ``model.encode`` / ``model.denoise`` (e.g. their
    ``torch.compile`` d versions). ``perturb_mode="target"`` only (the mask input is the noisy mask alone).
    """
    model.eval()
    encode = encode or model.encode
    denoise = denoise or model.denoise
    device = images.device
    B, _, H, W = images.shape
    K = ensemble
    ts = ddim_timesteps(alphas_cumprod.numel(), steps, spacing)
    a_t, a_prev = ddim_alphas(alphas_cumprod.float().cpu(), ts)
    t_model, a_t, a_prev = ts.float().to(device), a_t.to(device), a_prev.to(device)
    x = torch.randn((B * K, 1, H, W), generator=torch.Generator().manual_seed(seed)).to(device)
    mf = torch.channels_last if channels_last else torch.contiguous_format
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
    with autocast:
        feats = [f.repeat_interleave(K, dim=0) for f in encode(images.contiguous(memory_format=mf))]
    n = x.shape[0]
    for i in range(steps):
        with autocast:
            out = denoise(x.contiguous(memory_format=mf), feats, t_model[i].expand(n))
        x, _ = ops.ddim_step(x, out.float(), a_t[i], a_prev[i], 0.0, None, clip_sample, prediction_type)
    probs, std, mask = _summarize(x, B, K, threshold)
    return (probs, std, mask, x) if return_members else (probs, std, mask)
