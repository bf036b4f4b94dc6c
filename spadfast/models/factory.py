"""The model a config asks for (``model_type``), and a memory estimate that refuses impossible configs early.

The one place that maps config keys to a denoiser: :class:`spadfast.models.unet.SPADUNet`,
:class:`spadfast.models.cached_unet.SPADCachedUNet` or the 3-D :class:`spadfast.models.unet3d.SPADUNet3D` and
:class:`spadfast.models.cached_unet3d.SPADCachedUNet3D`.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from .cached_unet import SPADCachedUNet
from .cached_unet3d import SPADCachedUNet3D
from .unet import SPADUNet
from .unet3d import SPADUNet3D


def build_model(config) -> nn.Module:
    """The denoiser a :class:`~spadfast.SPADConfig` describes (``model_type``): the one place that maps keys to it.

    ``"unet"``: :class:`SPADUNet` on ``cat[x_t, image(, cond)]``. ``"cached_unet"``:
    :class:`spadfast.models.cached_unet.SPADCachedUNet`, whose image encoder runs once per image when sampling.
    ``"unet3d"``: :class:`SPADUNet3D` on ``[B, C, D, H, W]`` volumes, pooling planned from ``patch_size_3d`` and
    ``spacing_3d``. ``"cached_unet3d"``: :class:`SPADCachedUNet3D`, its cached-encoder form (image encoder once
    per 3-D window when sampling).
    """
    kwargs = dict(base_channels=config.base_channels, channel_mults=config.channel_mults,
                  num_res_blocks=config.num_res_blocks, attention_levels=config.attention_levels,
                  dropout=config.dropout)
    if config.model_type == "cached_unet3d":
        kwargs.pop("attention_levels")
        return SPADCachedUNet3D(image_channels=config.model_image_channels,
                                mask_channels=config.model_in_channels - config.model_image_channels,
                                out_channels=config.mask_channels, patch_size=config.patch_size_3d,
                                spacing=config.spacing_3d or (1.0, 1.0, 1.0), **kwargs)
    if config.model_type == "unet3d":
        kwargs.pop("attention_levels")
        return SPADUNet3D(in_channels=config.model_in_channels, out_channels=config.mask_channels,
                          patch_size=config.patch_size_3d, spacing=config.spacing_3d or (1.0, 1.0, 1.0), **kwargs)
    if config.model_type == "cached_unet":
        image_channels = getattr(config, "model_image_channels", config.image_channels)  # image (+ prior channels)
        mask_channels = config.model_in_channels - image_channels
        return SPADCachedUNet(image_channels=image_channels, mask_channels=mask_channels,
                              out_channels=config.mask_channels, **kwargs)
    return SPADUNet(in_channels=config.model_in_channels, out_channels=config.mask_channels, **kwargs)


def estimate_training_bytes(config) -> int:
    """A rough upper estimate of the activation memory one training micro-batch of ``config``'s UNet keeps for
    backward (float32): about ten feature maps per residual block and level, plus attention score matrices.

    Used to refuse impossible configs (``image_size: 65536``) with a message before the kernel kills the process.
    """
    if config.is_3d:
        return _estimate_3d(config)
    total = 0
    levels = len(config.channel_mults)
    for i, mult in enumerate(config.channel_mults):
        channels = config.base_channels * mult
        pixels = (config.image_size // 2**i) ** 2
        blocks = 2 * config.num_res_blocks + (2 if i == levels - 1 else 0)
        total += blocks * 10 * 2 * channels * pixels
        if i in config.attention_levels or (config.attention_levels and i == levels - 1):
            total += blocks * 4 * pixels * pixels
    return total * 4 * config.batch_size


def _estimate_3d(config) -> int:
    """:func:`estimate_training_bytes` of a 3-D model: ten float32 feature maps per residual block, level sizes
    following the planned strides (:func:`spadfast.models.unet3d.plan_strides`); ``cached_unet3d`` adds its
    denoiser's (a quarter as wide) to its encoder's. Before ``spacing_3d`` is
    known (it is filled from the training volumes, after this check runs), the largest estimate of an isotropic
    spacing and of each axis being the coarse one."""
    if not config.spacing_3d:
        spacings = [(1.0, 1.0, 1.0)] + [tuple(8.0 if a == b else 1.0 for b in range(3)) for a in range(3)]
        return max(_estimate_3d(_with_spacing(config, sp)) for sp in spacings)
    from .unet3d import plan_strides

    strides = plan_strides(config.patch_size_3d, config.spacing_3d, len(config.channel_mults) - 1)
    widths = [config.base_channels]
    if config.model_type == "cached_unet3d":
        widths.append(max(1, config.base_channels // 4))  # SPADCachedUNet3D's default denoiser width
    total, levels = 0, len(config.channel_mults)
    for width in widths:
        size = list(config.patch_size_3d)
        for i, mult in enumerate(config.channel_mults):
            blocks = 2 * config.num_res_blocks + (2 if i == levels - 1 else 0)
            total += blocks * 10 * 2 * width * mult * size[0] * size[1] * size[2]
            if i < levels - 1:
                size = [-(-s // st) for s, st in zip(size, strides[i])]
    return total * 4 * config.batch_size


def _with_spacing(config, spacing: tuple[float, ...]):
    import dataclasses

    return dataclasses.replace(config, spacing_3d=spacing)


def check_fits_memory(config, device: torch.device) -> None:
    """ValueError naming ``image_size``/``batch_size`` when a training step cannot fit ``device``'s memory."""
    if device.type == "cuda":
        available = torch.cuda.get_device_properties(device).total_memory
    else:
        try:
            available = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return
    need = estimate_training_bytes(config)
    if need > available and config.is_3d:
        raise ValueError(
            f"`patch_size_3d` {config.patch_size_3d} with `batch_size` {config.batch_size} needs about "
            f"{need / 2**30:,.0f} GiB of activations per training step; this {device.type} device has "
            f"{available / 2**30:,.0f} GiB: lower `patch_size_3d`, `batch_size` or `base_channels`"
        )
    if need > available:
        raise ValueError(
            f"`image_size` {config.image_size} with `batch_size` {config.batch_size} needs about "
            f"{need / 2**30:,.0f} GiB of activations per training step; this {device.type} device has "
            f"{available / 2**30:,.0f} GiB: lower `image_size`, `batch_size` or `base_channels`"
        )
