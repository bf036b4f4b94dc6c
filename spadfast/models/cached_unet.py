"""Cached-encoder denoiser: the image is encoded once, a light mask denoiser runs at every DDIM step.

Across the K ensemble members and S sampling steps of one image, the image never changes; only the noisy mask does.
:class:`SPADCachedUNet` splits the denoiser accordingly:

- :meth:`~SPADCachedUNet.encode` (once per image, no timestep): a UNet of the image alone, ``base_channels`` wide,
  built from :mod:`spadfast.models.unet`'s residual / attention blocks, with a learned constant in place of the time
  embedding. The up-path output of every level is projected (1x1 conv) to ``2 * d_i`` channels, ``d_i`` the
  denoiser's width at that level, giving one feature map per level, finest first:
  ``features[i]: [N, 2 * d_i, H_pad / 2**i, W_pad / 2**i]`` (``H_pad``, ``W_pad``: H, W padded up to a multiple of
  ``2 ** (levels - 1)``).
- :meth:`~SPADCachedUNet.denoise` (every step, every member): a narrow UNet of the noisy mask (``d_i =
  denoiser_channels * channel_mults[i]``, no attention by default) with the sinusoidal time embedding; at level
  ``i`` the first half of ``features[i]`` is added to the input of the down path, the second half to the input of
  the up path.

So the per-step cost is that of the narrow UNet (about ``(denoiser_channels / base_channels) ** 2`` of the UNet's
convolutions at the same resolutions, and no attention), while the image is seen through a full-width UNet.
Features of N images can be repeated per member (``[f.repeat_interleave(K, 0) for f in features]``) and fed to
``denoise`` with N*K noisy masks: the result equals ``forward`` on the repeated images.

Channel order of :meth:`~SPADCachedUNet.forward`'s input (drop-in for the trainer and sampler, which call
``model(cat[x_t, image(, cond)], t)``): the first ``M`` channels are the noisy mask (``M = out_channels``, one per
foreground class), the next ``image_channels`` the image, and in ``perturb_mode="condition"`` (``mask_channels ==
2 * M``) the last ``M`` the condition (self-conditioning x0 estimate). ``denoise`` sees ``cat[x_t(, cond)]``, i.e.
``mask_channels`` channels. Binary masks: channel 0 noisy mask, channels ``1 .. image_channels`` image, the last
channel the condition when present.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.checks import is_int
from .unet import (
    _norm,
    _TimeEmbedding,
    add_unet_levels,
    check_unet_args,
    pad_to_multiple,
    run_unet_levels,
    timestep_vector,
)

__all__ = ["SPADCachedUNet"]


class _UNetTrunk(nn.Module):
    """Down path, bottleneck and up path of a UNet (no stem, no head) as a submodule, so its parameters sit under
    one prefix (``encoder.``, ``denoiser.``); :func:`spadfast.models.unet.run_unet_levels` runs it and returns the
    up-path output of every level. ``inject`` (optional, one ``[N, 2 * ch_i, ...]`` map per level) adds its first
    half to the down-path input and its second half to the up-path input of level ``i``.
    """

    def __init__(self, chs: list[int], num_res_blocks: int, temb_dim: int, attention_levels: tuple[int, ...],
                 num_heads: int, dropout: float, groups: int):
        super().__init__()
        add_unet_levels(self, chs, num_res_blocks, temb_dim, attention_levels, num_heads, dropout, groups)

    def forward(self, h: torch.Tensor, temb: torch.Tensor,
                inject: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        return run_unet_levels(self, h, temb, inject)


class SPADCachedUNet(nn.Module):
    """Image encoder run once per image + light mask denoiser run per step (see the module docstring).

    Args:
        image_channels: channels of the image (``C_img``).
        mask_channels: channels :meth:`denoise` sees: ``out_channels`` (noisy mask) or ``2 * out_channels`` (noisy
            mask + condition channels, ``perturb_mode="condition"``); for binary masks 1 or 2.
        out_channels: channels of the prediction (= noisy-mask channels, one per foreground class).
        base_channels, channel_mults, num_res_blocks, attention_levels, num_heads, dropout, groups: the image
            encoder's UNet, as in :class:`spadfast.models.unet.SPADUNet`.
        denoiser_channels: width of the denoiser's level 0 (level ``i``: ``denoiser_channels * channel_mults[i]``);
            default ``max(1, base_channels // 4)`` (8 for the default 32: a step costs about 1/16 of the UNet's).
        denoiser_res_blocks: residual blocks per level in the denoiser's down and up paths.
        denoiser_attention: self-attention at the denoiser's coarsest level and bottleneck.

    Raises:
        ValueError: on a non-positive size, ``mask_channels`` not ``out_channels`` or ``2 * out_channels``, an
            empty ``channel_mults``, an attention
            level out of range, or ``num_heads`` not dividing an attended width.

    Example:
        >>> model = SPADCachedUNet(image_channels=3, mask_channels=1, base_channels=8, channel_mults=(1, 2),
        ...                        denoiser_channels=4, attention_levels=())
        >>> image, x_t, t = torch.randn(2, 3, 37, 53), torch.randn(2, 1, 37, 53), torch.tensor([10.0, 999.0])
        >>> features = model.encode(image)                      # once per image
        >>> model.denoise(x_t, features, t).shape               # every step
        torch.Size([2, 1, 37, 53])
        >>> torch.equal(model(torch.cat([x_t, image], 1), t), model.denoise(x_t, features, t))
        True
    """

    def __init__(
        self,
        image_channels: int,
        mask_channels: int,
        out_channels: int = 1,
        base_channels: int = 32,
        channel_mults: tuple[int, ...] = (1, 2, 4),
        num_res_blocks: int = 1,
        attention_levels: tuple[int, ...] = (2,),
        dropout: float = 0.0,
        num_heads: int = 4,
        groups: int = 8,
        denoiser_channels: int | None = None,
        denoiser_res_blocks: int = 1,
        denoiser_attention: bool = False,
    ):
        super().__init__()
        if denoiser_channels is None:
            denoiser_channels = max(1, base_channels // 4) if isinstance(base_channels, int) else base_channels
        channel_mults, attention_levels, chs = check_unet_args(
            dict(image_channels=image_channels, out_channels=out_channels, base_channels=base_channels,
                 num_res_blocks=num_res_blocks, num_heads=num_heads, groups=groups,
                 denoiser_channels=denoiser_channels, denoiser_res_blocks=denoiser_res_blocks),
            base_channels, channel_mults, attention_levels, num_heads, dropout,
        )
        if not is_int(mask_channels) or mask_channels not in (out_channels, 2 * out_channels):
            raise ValueError(f"`mask_channels` must be out_channels ({out_channels}, noisy mask) or 2 * out_channels "
                             f"(noisy mask + condition), got {mask_channels!r}")
        n = len(channel_mults)
        dchs = [denoiser_channels * m for m in channel_mults]
        d_heads = num_heads if dchs[-1] % num_heads == 0 else 1
        self.image_channels, self.mask_channels, self.out_channels = image_channels, mask_channels, out_channels
        self.in_channels = mask_channels + image_channels  # forward's input, like SPADUNet.in_channels
        self.multiple = 2 ** (n - 1)

        # Image encoder: a time-free UNet; its blocks get a learned constant embedding.
        enc_temb = 4 * base_channels
        self.enc_embed = nn.Parameter(torch.zeros(1, enc_temb))
        self.enc_stem = nn.Conv2d(image_channels, chs[0], 3, padding=1)
        self.encoder = _UNetTrunk(chs, num_res_blocks, enc_temb, attention_levels, num_heads, dropout, groups)
        self.enc_proj = nn.ModuleList(
            nn.Sequential(_norm(c, groups), nn.SiLU(), nn.Conv2d(c, 2 * d, 1)) for c, d in zip(chs, dchs)
        )

        # Mask denoiser: a narrow UNet with the time embedding.
        dec_temb = 4 * dchs[0]
        self.time_embed = _TimeEmbedding(max(base_channels, 2 * dchs[0]), dec_temb)
        self.stem = nn.Conv2d(mask_channels, dchs[0], 3, padding=1)
        self.denoiser = _UNetTrunk(dchs, denoiser_res_blocks, dec_temb, (n - 1,) if denoiser_attention else (),
                                   d_heads, dropout, groups)
        self.out_norm = _norm(dchs[0], groups)
        self.out_conv = nn.Conv2d(dchs[0], out_channels, 3, padding=1)
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)

    def encode(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Multi-scale image features (no timestep): ``[N, 2 * d_i, H_pad / 2**i, W_pad / 2**i]`` per level ``i``,
        finest first, in the autocast dtype when run under autocast. Run once per image (the sampler calls it on at
        most ``chunk`` images at a time, under its autocast); repeat per member with ``repeat_interleave(K, 0)``."""
        if image.dim() != 4 or image.shape[1] != self.image_channels:
            raise ValueError(f"`image` must have shape [N, {self.image_channels}, H, W], got {tuple(image.shape)}")
        h = self.enc_stem(pad_to_multiple(image, self.multiple))
        outs = self.encoder(h, self.enc_embed.expand(h.shape[0], -1))
        return [proj(o) for proj, o in zip(self.enc_proj, outs)]

    def denoise(self, x: torch.Tensor, features: list[torch.Tensor], t: torch.Tensor | float) -> torch.Tensor:
        """Predict the denoising target from the noisy mask ``x`` (``[N, mask_channels, H, W]``), the image
        ``features`` of :meth:`encode` (N rows, e.g. repeated per member) and timesteps ``t`` (``[N]``, a 0-d tensor
        or a number; training units, e.g. ``0..T-1``). Returns ``[N, out_channels, H, W]``."""
        if x.dim() != 4 or x.shape[1] != self.mask_channels:
            raise ValueError(f"`x` must have shape [N, {self.mask_channels}, H, W], got {tuple(x.shape)}")
        N, _, H, W = x.shape
        if len(features) != len(self.enc_proj):
            raise ValueError(f"`features` must hold {len(self.enc_proj)} maps (one per level), got {len(features)}")
        Hp, Wp = H + (-H % self.multiple), W + (-W % self.multiple)
        if features[0].shape[0] != N or tuple(features[0].shape[-2:]) != (Hp, Wp):
            raise ValueError(f"`features[0]` must have {N} rows and size {(Hp, Wp)} (x's, padded), "
                             f"got {tuple(features[0].shape)}")
        temb = self.time_embed(timestep_vector(t, N, x.device))
        h = self.stem(pad_to_multiple(x, self.multiple))
        h = self.denoiser(h, temb, features)[0]
        h = self.out_conv(F.silu(self.out_norm(h)))
        return h[:, :, :H, :W] if (Hp, Wp) != (H, W) else h

    def forward(self, x: torch.Tensor, t: torch.Tensor | float, repeats: int = 1) -> torch.Tensor:
        """``denoise(mask, encode(image), t)`` with ``x = cat[x_t, image(, cond)]`` (``[N, in_channels, H, W]``):
        the first ``out_channels`` channels are the noisy mask, the next ``image_channels`` the image, the last
        ``out_channels`` the condition when ``mask_channels == 2 * out_channels`` (the trainer's and sampler's
        order). ``repeats`` R > 1: rows come in groups of R that share one image (training at several noise levels
        per image); each group's image is encoded once and its features serve the R rows."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"`x` must have shape [N, {self.in_channels}, H, W], got {tuple(x.shape)}")
        m, c = self.out_channels, self.image_channels
        image = x[:, m : m + c]
        mask = x[:, :m] if self.mask_channels == m else torch.cat([x[:, :m], x[:, m + c :]], dim=1)
        if repeats == 1:
            return self.denoise(mask, self.encode(image), t)
        if x.shape[0] % repeats:
            raise ValueError(f"`x` has {x.shape[0]} rows, not a whole number of groups of repeats = {repeats}")
        features = [f.repeat_interleave(repeats, dim=0) for f in self.encode(image[::repeats])]
        return self.denoise(mask, features, t)
