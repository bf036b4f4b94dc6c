"""Conditional UNet denoiser for SPAD: ``eps_theta(concat[x_t, image, (cond)], t) -> [B, out_channels, H, W]``.

A compact DDPM-style UNet built for speed (channels-last, ``torch.compile(fullgraph=True)``, bf16 autocast):

- time: sinusoidal embedding (``base_channels`` wide) -> MLP -> ``4 * base_channels``;
- residual blocks: GroupNorm -> SiLU -> conv3x3 -> GroupNorm modulated by the time embedding (scale-shift,
  ``h * (1 + scale) + shift``) -> SiLU -> dropout -> conv3x3, plus the input (1x1 conv when channels change);
- level ``i`` has ``base_channels * channel_mults[i]`` channels; down-sampling is a stride-2 conv3x3 that also moves
  to the next level's width, up-sampling is nearest x2 + conv3x3 to the finer level's width;
- skips: the output of every down-path residual block is concatenated into the matching up-path block (so the up
  path has ``num_res_blocks`` blocks per level, like the down path, instead of DDPM's ``num_res_blocks + 1``);
- self-attention (``F.scaled_dot_product_attention``) after each residual block of the levels in
  ``attention_levels``; the bottleneck (res, attn, res) gets attention iff ``attention_levels`` is non-empty;
- the final conv is zero-initialised, so a fresh model predicts 0.

Inputs whose height or width is not a multiple of ``2 ** (len(channel_mults) - 1)`` are padded at the bottom and
right by edge replication and the output is cropped back, so any ``H, W >= 1`` works.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.checks import check_int, is_int

__all__ = ["SPADUNet", "count_parameters"]


def _num_groups(channels: int, groups: int) -> int:
    """Largest divisor of ``channels`` that is ``<= min(groups, channels)``."""
    g = max(1, min(groups, channels))
    while channels % g:
        g -= 1
    return g


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(_num_groups(channels, groups), channels)


class _TimeEmbedding(nn.Module):
    """Sinusoidal features of ``t`` (any real value, same units as training) followed by a two-layer MLP."""

    def __init__(self, dim: int, out_dim: int, max_period: float = 10000.0):
        super().__init__()
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)
        self.pad = dim - 2 * half
        self.mlp = nn.Sequential(nn.Linear(dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        args = t.float()[:, None] * self.freqs.float()[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
        if self.pad:
            emb = F.pad(emb, (0, self.pad))
        return self.mlp(emb)


class _ResBlock(nn.Module):
    """Residual block with a timestep scale/shift; ``dims`` 2 (``[B,C,H,W]``) or 3 (``[B,C,D,H,W]``, unet3d)."""

    def __init__(self, in_ch: int, out_ch: int, temb_dim: int, dropout: float, groups: int, dims: int = 2):
        super().__init__()
        conv = {2: nn.Conv2d, 3: nn.Conv3d}[dims]
        self.dims = dims
        self.norm1 = _norm(in_ch, groups)
        self.conv1 = conv(in_ch, out_ch, 3, padding=1)
        self.temb = nn.Linear(temb_dim, 2 * out_ch)
        self.norm2 = _norm(out_ch, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv(out_ch, out_ch, 3, padding=1)
        self.skip = conv(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.temb(temb)[(...,) + (None,) * self.dims].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class _Attention(nn.Module):
    """Multi-head self-attention over all pixels; works in NHWC, so channels-last inputs need no copy."""

    def __init__(self, channels: int, num_heads: int, groups: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm = _norm(channels, groups)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        nh = self.num_heads
        h = self.norm(x).permute(0, 2, 3, 1).reshape(B, H * W, C)
        q, k, v = self.qkv(h).view(B, H * W, 3, nh, C // nh).permute(2, 0, 3, 1, 4).unbind(0)
        h = F.scaled_dot_product_attention(q, k, v)  # [B, nh, HW, d]
        h = self.proj(h.transpose(1, 2).reshape(B, H * W, C))
        return x + h.view(B, H, W, C).permute(0, 3, 1, 2)


class _Level(nn.Module):
    """Residual blocks (each optionally followed by attention) of one resolution level."""

    def __init__(self, in_chs: list[int], out_ch: int, temb_dim: int, attn: bool, num_heads: int, dropout: float,
                 groups: int):
        super().__init__()
        self.blocks = nn.ModuleList(_ResBlock(c, out_ch, temb_dim, dropout, groups) for c in in_chs)
        self.attns = nn.ModuleList(
            (_Attention(out_ch, num_heads, groups) if attn else nn.Identity()) for _ in in_chs
        )


def check_unet_args(
    ints: dict[str, object], base_channels: int, channel_mults, attention_levels, num_heads: int, dropout: float
) -> tuple[tuple[int, ...], tuple[int, ...], list[int]]:
    """The UNets' constructor checks (ValueError naming the argument); returns ``(channel_mults,
    attention_levels, widths)`` normalised: tuples, attention levels sorted and unique, width per level."""
    for name, value in ints.items():
        check_int(value, name, 1)
    channel_mults = tuple(channel_mults)
    if not channel_mults or any(not is_int(m) or m < 1 for m in channel_mults):
        raise ValueError(f"`channel_mults` must be a non-empty tuple of ints >= 1, got {channel_mults!r}")
    n = len(channel_mults)
    attention_levels = tuple(sorted(set(attention_levels)))
    if any(not 0 <= lvl < n for lvl in attention_levels):
        raise ValueError(f"`attention_levels` must lie in [0, {n - 1}], got {attention_levels!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"`dropout` must be in [0, 1), got {dropout!r}")
    chs = [base_channels * mult for mult in channel_mults]
    for lvl in attention_levels + ((n - 1,) if attention_levels else ()):
        if chs[lvl] % num_heads:
            raise ValueError(f"`num_heads` must divide the width {chs[lvl]} of attended level {lvl}, got {num_heads}")
    return channel_mults, attention_levels, chs


def add_unet_levels(module: nn.Module, chs: list[int], num_res_blocks: int, temb_dim: int,
                    attention_levels: tuple[int, ...], num_heads: int, dropout: float, groups: int) -> None:
    """Give ``module`` a UNet's levels as attributes (``down``, ``downsample``, ``mid1``, ``mid_attn``, ``mid2``,
    ``up``, ``upsample``; ``up`` stored finest-first, iterated coarsest-first), level ``i`` of width ``chs[i]``.

    Shared by :class:`SPADUNet` and the cached-encoder model's trunks (both run by :func:`run_unet_levels`);
    attribute names are checkpoint keys."""
    n = len(chs)
    module.down, module.downsample = nn.ModuleList(), nn.ModuleList()
    for i, ch in enumerate(chs):
        module.down.append(_Level([ch] * num_res_blocks, ch, temb_dim, i in attention_levels, num_heads, dropout,
                                  groups))
        if i < n - 1:
            module.downsample.append(nn.Conv2d(ch, chs[i + 1], 3, stride=2, padding=1))
    mid = chs[-1]
    module.mid1 = _ResBlock(mid, mid, temb_dim, dropout, groups)
    module.mid_attn = _Attention(mid, num_heads, groups) if attention_levels else nn.Identity()
    module.mid2 = _ResBlock(mid, mid, temb_dim, dropout, groups)
    module.up, module.upsample = nn.ModuleList(), nn.ModuleList()
    for i, ch in enumerate(chs):
        module.up.append(_Level([2 * ch] * num_res_blocks, ch, temb_dim, i in attention_levels, num_heads, dropout,
                                groups))
        if i > 0:
            module.upsample.append(nn.Conv2d(ch, chs[i - 1], 3, padding=1))



def run_unet_levels(module: nn.Module, h: torch.Tensor, temb: torch.Tensor,
                    inject: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """Down path, bottleneck and up path of the levels :func:`add_unet_levels` gave ``module``.

    Args:
        module: holds ``down``, ``downsample``, ``mid1``, ``mid_attn``, ``mid2``, ``up``, ``upsample``.
        h: ``[N, chs[0], H, W]`` stem output, ``H`` and ``W`` multiples of ``2 ** (levels - 1)``.
        temb: ``[N, temb_dim]`` embedding every residual block is modulated by.
        inject: optional, one ``[N, 2 * chs[i], H / 2**i, W / 2**i]`` map per level ``i``: its first half is added
            to the input of level ``i``'s down path, its second half to the input of its up path.

    Returns:
        The up-path output of every level, finest first: ``[N, chs[i], H / 2**i, W / 2**i]``.
    """
    halves = [f.chunk(2, dim=1) for f in inject] if inject is not None else None
    skips = []
    for i, level in enumerate(module.down):
        if halves is not None:
            h = h + halves[i][0]
        for block, attn in zip(level.blocks, level.attns):
            h = attn(block(h, temb))
            skips.append(h)
        if i < len(module.downsample):
            h = module.downsample[i](h)
    h = module.mid2(module.mid_attn(module.mid1(h, temb)), temb)
    outs: list[torch.Tensor] = [h] * len(module.up)
    for i in reversed(range(len(module.up))):
        if halves is not None:
            h = h + halves[i][1]
        level = module.up[i]
        for block, attn in zip(level.blocks, level.attns):
            h = attn(block(torch.cat([h, skips.pop()], dim=1), temb))
        outs[i] = h
        if i > 0:
            h = module.upsample[i - 1](F.interpolate(h, scale_factor=2.0, mode="nearest"))
    return outs


def timestep_vector(t: torch.Tensor | float, n: int, device: torch.device) -> torch.Tensor:
    """``t`` as ``[n]`` timesteps on ``device``: a ``[n]`` tensor as is, a 0-d tensor or a number broadcast; any other
    shape is a ValueError naming ``t``."""
    if not isinstance(t, torch.Tensor):
        t = torch.full((n,), float(t), device=device)
    t = t.to(device=device)
    if t.dim() == 0:
        t = t.expand(n)
    if t.shape != (n,):
        raise ValueError(f"`t` must have shape [{n}] or be a scalar, got {tuple(t.shape)}")
    return t


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """``x`` (``[N, C, H, W]``) padded at the bottom and right by edge replication up to multiples of ``multiple``."""
    H, W = x.shape[-2:]
    pad_h, pad_w = -H % multiple, -W % multiple
    return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else x

class SPADUNet(nn.Module):
    """Conditional UNet denoiser (see the module docstring for the architecture).

    Args:
        in_channels: channels of the model input, ``M + C_image`` (``+ M`` in ``perturb_mode="condition"``), M the
            mask channels (one per foreground class, 1 for binary masks).
        out_channels: channels of the prediction, M.
        base_channels: width of level 0.
        channel_mults: width multiplier per resolution level; level ``i`` works at ``1 / 2**i`` resolution.
        num_res_blocks: residual blocks per level, in the down and in the up path.
        attention_levels: levels (0 = full resolution) with self-attention after each residual block; the
            bottleneck has attention iff this is non-empty.
        num_heads: attention heads; must divide the width of every attended level (and of the bottleneck).
        dropout: dropout probability inside residual blocks.
        groups: GroupNorm groups, reduced to the largest divisor of the width when it does not divide it.

    Raises:
        ValueError: on a non-positive size, an empty ``channel_mults``, an attention level out of range, or
            ``num_heads`` not dividing an attended width.

    Example:
        >>> model = SPADUNet(in_channels=4, base_channels=8, channel_mults=(1, 2), attention_levels=(1,))
        >>> model(torch.randn(2, 4, 37, 53), torch.tensor([10, 999])).shape
        torch.Size([2, 1, 37, 53])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int = 1,
        base_channels: int = 32,
        channel_mults: tuple[int, ...] = (1, 2, 4),
        num_res_blocks: int = 1,
        attention_levels: tuple[int, ...] = (2,),
        num_heads: int = 4,
        dropout: float = 0.0,
        groups: int = 8,
    ):
        super().__init__()
        channel_mults, attention_levels, chs = check_unet_args(
            dict(in_channels=in_channels, out_channels=out_channels, base_channels=base_channels,
                 num_res_blocks=num_res_blocks, num_heads=num_heads, groups=groups),
            base_channels, channel_mults, attention_levels, num_heads, dropout,
        )
        num_levels = len(channel_mults)

        self.in_channels, self.out_channels = in_channels, out_channels
        self.multiple = 2 ** (num_levels - 1)
        temb_dim = 4 * base_channels
        self.time_embed = _TimeEmbedding(base_channels, temb_dim)
        self.stem = nn.Conv2d(in_channels, chs[0], 3, padding=1)

        add_unet_levels(self, chs, num_res_blocks, temb_dim, attention_levels, num_heads, dropout, groups)

        self.out_norm = _norm(chs[0], groups)
        self.out_conv = nn.Conv2d(chs[0], out_channels, 3, padding=1)
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        """Predict the denoising target.

        Args:
            x: ``[B, in_channels, H, W]`` float, any memory format.
            t: ``[B]`` timesteps (a 0-d tensor or a Python number is broadcast), integer or float, in the units used
                in training (e.g. ``0..T-1``); moved to ``x``'s device.

        Returns:
            ``[B, out_channels, H, W]``.
        """
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"`x` must have shape [B, {self.in_channels}, H, W], got {tuple(x.shape)}")
        B, _, H, W = x.shape
        temb = self.time_embed(timestep_vector(t, B, x.device))
        h = self.stem(pad_to_multiple(x, self.multiple))
        h = run_unet_levels(self, h, temb)[0]
        h = self.out_conv(F.silu(self.out_norm(h)))
        return h[:, :, :H, :W] if h.shape[-2:] != (H, W) else h

def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable, by default) parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
