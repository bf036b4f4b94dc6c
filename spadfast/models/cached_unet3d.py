"""Cached-encoder 3-D denoiser (``model_type: cached_unet3d``): the image window is encoded once, a light 3-D mask
denoiser runs at every DDIM step.

The 3-D counterpart of :class:`spadfast.models.cached_unet.SPADCachedUNet`, built from the levels of
:class:`spadfast.models.unet3d.SPADUNet3D` (the same nnU-Net pooling plan, :func:`~spadfast.models.unet3d.plan_strides`,
for both trunks):

- :meth:`~SPADCachedUNet3D.encode` (once per window, no timestep): a 3-D UNet of the image alone, ``base_channels``
  wide, with a learned constant in place of the time embedding; the up-path output of every level is projected
  (1x1x1 conv) to ``2 * d_i`` channels, ``d_i`` the denoiser's width at that level: ``features[i]: [N, 2 * d_i,
  D_i, H_i, W_i]`` (level ``i``'s size of the padded window), finest first.
- :meth:`~SPADCachedUNet3D.denoise` (every step, every member): a narrow 3-D UNet of the noisy mask (``d_i =
  denoiser_channels * channel_mults[i]``) with the sinusoidal time embedding; at level ``i`` the first half of
  ``features[i]`` is added to the input of its down path, the second half to the input of its up path.

A sampling step then costs about ``(denoiser_channels / base_channels) ** 2`` of the plain 3-D UNet's convolutions
(1/16 at the default quarter width), the encoder once per window; the sampler
(:class:`spadfast.diffusion.sampler.DDIMSampler`) finds ``encode``/``denoise`` and repeats the features per member.
:meth:`~SPADCachedUNet3D.forward` takes the trainer's and sampler's ``cat[x_t, image(, cond)]`` (channel order as in
the 2-D cached model) and equals ``denoise(mask, encode(image), t)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.checks import check_int, is_int
from .unet import _norm, _TimeEmbedding, timestep_vector
from .unet3d import add_unet3d_levels, check_unet3d_args, pad_to_multiples, run_unet3d_levels

__all__ = ["SPADCachedUNet3D"]


class _Trunk3D(nn.Module):
    """The levels of a 3-D UNet (no stem, no head) under one prefix (``encoder.``, ``denoiser.``)."""

    def __init__(self, chs: list[int], num_res_blocks: int, temb_dim: int, dropout: float, groups: int,
                 strides: Sequence[Sequence[int]]):
        super().__init__()
        self.strides = tuple(tuple(s) for s in strides)
        add_unet3d_levels(self, chs, num_res_blocks, temb_dim, dropout, groups, self.strides)

    def forward(self, h: torch.Tensor, temb: torch.Tensor,
                inject: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        return run_unet3d_levels(self, h, temb, self.strides, inject)


class SPADCachedUNet3D(nn.Module):
    """Image encoder run once per 3-D window + light 3-D mask denoiser run per step (see the module docstring).

    Args:
        image_channels: channels of the image (``C_img``).
        mask_channels: channels :meth:`denoise` sees: ``out_channels`` (noisy mask) or ``2 * out_channels`` (noisy
            mask + condition channels).
        out_channels: channels of the prediction (one per foreground class).
        base_channels, channel_mults, num_res_blocks, dropout, groups, patch_size, spacing: the image encoder's
            3-D UNet, as in :class:`spadfast.models.unet3d.SPADUNet3D` (the pooling plan serves both trunks).
        denoiser_channels: width of the denoiser's level 0 (level ``i``: ``denoiser_channels * channel_mults[i]``);
            default ``max(1, base_channels // 4)``.
        denoiser_res_blocks: residual blocks per level in the denoiser's down and up paths.

    Raises:
        ValueError: naming the argument, on a non-positive size, ``mask_channels`` not ``out_channels`` or
            ``2 * out_channels``, bad ``channel_mults``, ``patch_size`` or ``spacing``.

    Example:
        >>> model = SPADCachedUNet3D(image_channels=1, mask_channels=2, out_channels=2, base_channels=8,
        ...                          channel_mults=(1, 2), patch_size=(8, 8, 8))
        >>> image, x_t = torch.randn(2, 1, 7, 9, 10), torch.randn(2, 2, 7, 9, 10)
        >>> features = model.encode(image)                      # once per window
        >>> model.denoise(x_t, features, torch.tensor([10.0, 999.0])).shape   # every step
        torch.Size([2, 2, 7, 9, 10])
    """

    def __init__(
        self,
        image_channels: int,
        mask_channels: int,
        out_channels: int = 1,
        base_channels: int = 16,
        channel_mults: tuple[int, ...] = (1, 2, 4),
        num_res_blocks: int = 1,
        dropout: float = 0.0,
        groups: int = 8,
        patch_size: Sequence[int] = (32, 32, 32),
        spacing: Sequence[float] = (1.0, 1.0, 1.0),
        denoiser_channels: int | None = None,
        denoiser_res_blocks: int = 1,
    ):
        super().__init__()
        if denoiser_channels is None:
            denoiser_channels = max(1, base_channels // 4) if is_int(base_channels) else base_channels
        for name, value in dict(image_channels=image_channels, out_channels=out_channels, base_channels=base_channels,
                                num_res_blocks=num_res_blocks, groups=groups, denoiser_channels=denoiser_channels,
                                denoiser_res_blocks=denoiser_res_blocks).items():
            check_int(value, name, 1)
        if not is_int(mask_channels) or mask_channels not in (out_channels, 2 * out_channels):
            raise ValueError(f"`mask_channels` must be out_channels ({out_channels}, noisy mask) or 2 * out_channels "
                             f"(noisy mask + condition), got {mask_channels!r}")
        channel_mults, self.strides, self.multiple = check_unet3d_args(channel_mults, patch_size, spacing, dropout)
        self.image_channels, self.mask_channels, self.out_channels = image_channels, mask_channels, out_channels
        self.in_channels = mask_channels + image_channels  # forward's input, like SPADUNet3D.in_channels
        chs = [base_channels * m for m in channel_mults]
        dchs = [denoiser_channels * m for m in channel_mults]

        # Image encoder: a time-free 3-D UNet; its blocks get a learned constant embedding.
        enc_temb = 4 * base_channels
        self.enc_embed = nn.Parameter(torch.zeros(1, enc_temb))
        self.enc_stem = nn.Conv3d(image_channels, chs[0], 3, padding=1)
        self.encoder = _Trunk3D(chs, num_res_blocks, enc_temb, dropout, groups, self.strides)
        self.enc_proj = nn.ModuleList(
            nn.Sequential(_norm(c, groups), nn.SiLU(), nn.Conv3d(c, 2 * d, 1)) for c, d in zip(chs, dchs)
        )

        # Mask denoiser: a narrow 3-D UNet with the time embedding.
        dec_temb = 4 * dchs[0]
        self.time_embed = _TimeEmbedding(max(base_channels, 2 * dchs[0]), dec_temb)
        self.stem = nn.Conv3d(mask_channels, dchs[0], 3, padding=1)
        self.denoiser = _Trunk3D(dchs, denoiser_res_blocks, dec_temb, dropout, groups, self.strides)
        self.out_norm = _norm(dchs[0], groups)
        self.out_conv = nn.Conv3d(dchs[0], out_channels, 3, padding=1)
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)

    def encode(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Multi-scale image features (no timestep) of ``image`` (``[N, image_channels, D, H, W]``): one ``[N, 2 *
        d_i, ...]`` map per level ``i`` at that level's size of the padded window, finest first."""
        if image.dim() != 5 or image.shape[1] != self.image_channels:
            raise ValueError(f"`image` must have shape [N, {self.image_channels}, D, H, W], got {tuple(image.shape)}")
        h = self.enc_stem(pad_to_multiples(image, self.multiple)[0])
        outs = self.encoder(h, self.enc_embed.expand(h.shape[0], -1))
        return [proj(o) for proj, o in zip(self.enc_proj, outs)]

    def denoise(self, x: torch.Tensor, features: list[torch.Tensor], t: torch.Tensor | float) -> torch.Tensor:
        """Predict the denoising target from the noisy mask ``x`` (``[N, mask_channels, D, H, W]``), the ``features``
        of :meth:`encode` (N rows, e.g. repeated per member) and timesteps ``t`` (``[N]``, a 0-d tensor or a number).
        Returns ``[N, out_channels, D, H, W]``."""
        if x.dim() != 5 or x.shape[1] != self.mask_channels:
            raise ValueError(f"`x` must have shape [N, {self.mask_channels}, D, H, W], got {tuple(x.shape)}")
        if len(features) != len(self.enc_proj):
            raise ValueError(f"`features` must hold {len(self.enc_proj)} maps (one per level), got {len(features)}")
        x, size = pad_to_multiples(x, self.multiple)
        if features[0].shape[0] != x.shape[0] or tuple(features[0].shape[2:]) != tuple(x.shape[2:]):
            raise ValueError(f"`features[0]` must have {x.shape[0]} rows and size {tuple(x.shape[2:])} (x's, padded), "
                             f"got {tuple(features[0].shape)}")
        temb = self.time_embed(timestep_vector(t, x.shape[0], x.device))
        h = self.denoiser(self.stem(x), temb, features)[0]
        h = self.out_conv(F.silu(self.out_norm(h)))
        return h[:, :, :size[0], :size[1], :size[2]]

    def forward(self, x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        """``denoise(mask, encode(image), t)`` with ``x = cat[x_t, image(, cond)]`` (``[N, in_channels, D, H, W]``):
        the first ``out_channels`` channels are the noisy mask, the next ``image_channels`` the image, the last
        ``out_channels`` the condition when ``mask_channels == 2 * out_channels``."""
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"`x` must have shape [N, {self.in_channels}, D, H, W], got {tuple(x.shape)}")
        m, c = self.out_channels, self.image_channels
        image = x[:, m : m + c]
        mask = x[:, :m] if self.mask_channels == m else torch.cat([x[:, :m], x[:, m + c :]], dim=1)
        return self.denoise(mask, self.encode(image), t)
