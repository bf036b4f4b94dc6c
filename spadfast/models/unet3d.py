"""Conditional 3-D UNet denoiser: ``eps_theta(concat[x_t, image, (cond)], t) -> [B, out_channels, D, H, W]``.

The 2-D :class:`spadfast.models.unet.SPADUNet` with ``Conv3d`` everywhere and per-axis pooling planned as nnU-Net's
planner does it (:func:`plan_strides`): an axis is pooled (stride 2) only while its current spacing is at most twice
the finest current spacing and it keeps at least :data:`MIN_POOLED_SIZE` voxels after pooling, so a coarse slice axis
is left alone until the in-plane axes have caught up. Residual blocks are modulated by the same sinusoidal time
embedding (scale-shift); the final conv is zero-initialised, so a fresh model predicts 0. There is no
self-attention (attention over every voxel of a 3-D patch does not fit memory at useful patch sizes).

Inputs whose size along an axis is not a multiple of that axis's total stride are padded at the end by edge
replication and the output is cropped back, so any ``D, H, W >= 1`` works.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.checks import check_int, is_int
from .unet import _norm, _ResBlock, _TimeEmbedding, timestep_vector

__all__ = ["SPADUNet3D", "plan_strides", "MIN_POOLED_SIZE", "add_unet3d_levels", "run_unet3d_levels",
           "pad_to_multiples", "check_unet3d_args"]

MIN_POOLED_SIZE = 4  # an axis stops being pooled when pooling would leave fewer voxels than this (nnU-Net: 4)


def plan_strides(patch_size: Sequence[int], spacing: Sequence[float], downsamples: int) -> tuple[tuple[int, ...], ...]:
    """Per-axis strides ``(sd, sh, sw)`` (each 1 or 2) of each of ``downsamples`` down-sampling steps.

    nnU-Net's rule: at every step an axis is pooled iff its current spacing is ``<= 2 x`` the finest current spacing
    and its current size halves to ``>= MIN_POOLED_SIZE``; a pooled axis's spacing doubles and its size halves. A
    step where no axis qualifies gets stride 1 on every axis (the level still adds width, not resolution).

    Example:
        >>> plan_strides((8, 32, 32), (5.0, 1.0, 1.0), 3)  # 5 mm slices: z joins once x, y reach 4 mm
        ((1, 2, 2), (1, 2, 2), (2, 2, 2))
    """
    size = [int(s) for s in patch_size]
    space = [float(s) for s in spacing]
    plan = []
    for _ in range(downsamples):
        finest = min(space)
        stride = tuple(2 if space[a] <= 2 * finest and size[a] // 2 >= MIN_POOLED_SIZE else 1 for a in range(3))
        for a in range(3):
            if stride[a] == 2:
                size[a] //= 2
                space[a] *= 2
        plan.append(stride)
    return tuple(plan)


def check_unet3d_args(channel_mults: Sequence[int], patch_size: Sequence[int], spacing: Sequence[float],
                      dropout: float) -> tuple[tuple[int, ...], tuple[tuple[int, ...], ...], tuple[int, ...]]:
    """The arguments every 3-D model shares, checked: returns ``(channel_mults, strides, multiple)``, the pooling
    plan of :func:`plan_strides` and each axis's total stride (inputs are padded up to a multiple of it).

    Raises:
        ValueError: naming ``channel_mults``, ``patch_size``, ``spacing`` or ``dropout``.
    """
    channel_mults = tuple(channel_mults)
    if not channel_mults or any(not is_int(m) or m < 1 for m in channel_mults):
        raise ValueError(f"`channel_mults` must be a non-empty tuple of ints >= 1, got {channel_mults!r}")
    if len(patch_size) != 3 or any(not is_int(s) or s < 1 for s in patch_size):
        raise ValueError(f"`patch_size` must be 3 ints >= 1 (d, h, w), got {tuple(patch_size)!r}")
    if len(spacing) != 3 or not all(float(s) > 0 for s in spacing):
        raise ValueError(f"`spacing` must be 3 numbers > 0 (d, h, w mm), got {tuple(spacing)!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"`dropout` must be in [0, 1), got {dropout!r}")
    strides = plan_strides(patch_size, spacing, len(channel_mults) - 1)
    multiple = tuple(int(torch.tensor([s[a] for s in strides] or [1]).prod()) for a in range(3))
    return channel_mults, strides, multiple


def add_unet3d_levels(module: nn.Module, chs: list[int], num_res_blocks: int, temb_dim: int, dropout: float,
                      groups: int, strides: Sequence[Sequence[int]]) -> None:
    """Give ``module`` a 3-D UNet's levels as attributes (``down``, ``downsample``, ``mid1``, ``mid2``, ``up``,
    ``upsample``), level ``i`` of width ``chs[i]``, down-sampling step ``i`` with per-axis ``strides[i]``.

    Shared by :class:`SPADUNet3D` and the cached-encoder model's trunks (both run by :func:`run_unet3d_levels`);
    attribute names are checkpoint keys."""
    module.down = nn.ModuleList(
        nn.ModuleList(_ResBlock(ch, ch, temb_dim, dropout, groups, dims=3) for _ in range(num_res_blocks)) for ch in chs
    )
    module.downsample = nn.ModuleList(
        nn.Conv3d(chs[i], chs[i + 1], 3, stride=tuple(strides[i]), padding=1) for i in range(len(chs) - 1)
    )
    module.mid1 = _ResBlock(chs[-1], chs[-1], temb_dim, dropout, groups, dims=3)
    module.mid2 = _ResBlock(chs[-1], chs[-1], temb_dim, dropout, groups, dims=3)
    module.up = nn.ModuleList(
        nn.ModuleList(_ResBlock(2 * ch, ch, temb_dim, dropout, groups, dims=3) for _ in range(num_res_blocks))
        for ch in chs
    )
    module.upsample = nn.ModuleList(nn.Conv3d(chs[i], chs[i - 1], 3, padding=1) for i in range(1, len(chs)))


def run_unet3d_levels(module: nn.Module, h: torch.Tensor, temb: torch.Tensor, strides: Sequence[Sequence[int]],
                      inject: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """Down path, bottleneck and up path of the levels :func:`add_unet3d_levels` gave ``module``.

    Args:
        h: ``[N, chs[0], D, H, W]`` stem output, each size a multiple of its axis's total stride.
        temb: ``[N, temb_dim]`` embedding every residual block is modulated by.
        strides: the per-axis strides the levels were built with.
        inject: optional, one ``[N, 2 * chs[i], ...]`` map per level ``i`` (level ``i``'s size): its first half is
            added to the input of level ``i``'s down path, its second half to the input of its up path.

    Returns:
        The up-path output of every level, finest first: ``[N, chs[i], ...]`` at level ``i``'s size.
    """
    halves = [f.chunk(2, dim=1) for f in inject] if inject is not None else None
    skips = []
    for i, blocks in enumerate(module.down):
        if halves is not None:
            h = h + halves[i][0]
        for block in blocks:
            h = block(h, temb)
            skips.append(h)
        if i < len(module.downsample):
            h = module.downsample[i](h)
    h = module.mid2(module.mid1(h, temb), temb)
    outs: list[torch.Tensor] = [h] * len(module.up)
    for i in reversed(range(len(module.up))):
        if halves is not None:
            h = h + halves[i][1]
        for block in module.up[i]:
            h = block(torch.cat([h, skips.pop()], dim=1), temb)
        outs[i] = h
        if i > 0:
            h = module.upsample[i - 1](F.interpolate(h, scale_factor=tuple(float(s) for s in strides[i - 1]),
                                                     mode="nearest"))
    return outs


def pad_to_multiples(x: torch.Tensor, multiple: Sequence[int]) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """``x`` (``[N, C, D, H, W]``) padded at the end of each spatial axis by edge replication up to a multiple of
    ``multiple`` along it, and the original ``(D, H, W)`` to crop back to."""
    size = tuple(x.shape[2:])
    pad = [-s % m for s, m in zip(size, multiple)]
    if any(pad):
        x = F.pad(x, (0, pad[2], 0, pad[1], 0, pad[0]), mode="replicate")
    return x, size


class SPADUNet3D(nn.Module):
    """Conditional 3-D UNet denoiser (see the module docstring).

    Args:
        in_channels: channels of the model input, ``M + C_image`` (``+ M`` with a condition channel).
        out_channels: channels of the prediction, M (one per foreground class).
        base_channels: width of level 0; level ``i`` has ``base_channels * channel_mults[i]`` channels.
        channel_mults: width multiplier per level (``len - 1`` down-sampling steps).
        num_res_blocks: residual blocks per level, in the down and in the up path.
        dropout: dropout probability inside residual blocks.
        groups: GroupNorm groups (reduced to a divisor of the width).
        patch_size: ``(d, h, w)`` training patch the pooling is planned for (:func:`plan_strides`).
        spacing: ``(d, h, w)`` voxel spacing in mm the pooling is planned for (isotropic by default).

    Raises:
        ValueError: naming the argument, on a non-positive size, bad ``channel_mults``, ``patch_size`` or
            ``spacing``.

    Example:
        >>> model = SPADUNet3D(2, 1, base_channels=4, channel_mults=(1, 2), patch_size=(8, 8, 8))
        >>> model(torch.randn(1, 2, 7, 9, 10), torch.tensor([5])).shape
        torch.Size([1, 1, 7, 9, 10])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int = 1,
        base_channels: int = 16,
        channel_mults: tuple[int, ...] = (1, 2, 4),
        num_res_blocks: int = 1,
        dropout: float = 0.0,
        groups: int = 8,
        patch_size: Sequence[int] = (32, 32, 32),
        spacing: Sequence[float] = (1.0, 1.0, 1.0),
    ):
        super().__init__()
        for name, value in dict(in_channels=in_channels, out_channels=out_channels, base_channels=base_channels,
                                num_res_blocks=num_res_blocks, groups=groups).items():
            check_int(value, name, 1)
        channel_mults, self.strides, self.multiple = check_unet3d_args(channel_mults, patch_size, spacing, dropout)
        self.in_channels, self.out_channels = in_channels, out_channels
        chs = [base_channels * m for m in channel_mults]
        temb_dim = 4 * base_channels
        self.time_embed = _TimeEmbedding(base_channels, temb_dim)
        self.stem = nn.Conv3d(in_channels, chs[0], 3, padding=1)
        add_unet3d_levels(self, chs, num_res_blocks, temb_dim, dropout, groups, self.strides)
        self.out_norm = _norm(chs[0], groups)
        self.out_conv = nn.Conv3d(chs[0], out_channels, 3, padding=1)
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        """Predict the denoising target.

        Args:
            x: ``[B, in_channels, D, H, W]`` float.
            t: ``[B]`` timesteps (a 0-d tensor or a number is broadcast), in training units.

        Returns:
            ``[B, out_channels, D, H, W]``, ``x``'s dtype (autocast's under autocast).
        """
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"`x` must have shape [B, {self.in_channels}, D, H, W], got {tuple(x.shape)}")
        x, size = pad_to_multiples(x, self.multiple)
        temb = self.time_embed(timestep_vector(t, x.shape[0], x.device))
        h = run_unet3d_levels(self, self.stem(x), temb, self.strides)[0]
        h = self.out_conv(F.silu(self.out_norm(h)))
        return h[:, :, :size[0], :size[1], :size[2]]
