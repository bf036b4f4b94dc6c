"""The cached-encoder 3-D denoiser (``model_type: cached_unet3d``): forward equals denoise(encode), features repeated per
member equal re-encoding, the pooling plan is the 3-D UNet's, a step is much cheaper than the 3-D UNet's, cached
sampling equals the concatenating path, factory, memory estimate and bad input."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from spadfast.config import SPADConfig
from spadfast.diffusion.sampler import DDIMSampler
from spadfast.diffusion.schedule import alphas_cumprod, make_betas
from spadfast.models.cached_unet3d import SPADCachedUNet3D
from spadfast.models.factory import build_model, estimate_training_bytes
from spadfast.models.unet3d import SPADUNet3D


def _tiny(image_channels=1, mask_channels=1, out_channels=1, **kw) -> SPADCachedUNet3D:
    torch.manual_seed(0)
    model = SPADCachedUNet3D(image_channels, mask_channels, out_channels, base_channels=8, channel_mults=(1, 2),
                             patch_size=(8, 8, 8), **kw)
    torch.nn.init.normal_(model.out_conv.weight, std=0.3)  # a fresh model predicts 0 everywhere
    return model


@pytest.mark.parametrize("size", [(8, 8, 8), (7, 9, 10), (1, 5, 3)])
@pytest.mark.parametrize("channels", [(1, 1, 1), (2, 2, 1), (1, 4, 2), (3, 2, 2)])  # (image, mask, out)
def test_forward_equals_denoise_of_encode(size, channels):
    image_ch, mask_ch, out_ch = channels
    model = _tiny(image_ch, mask_ch, out_ch)
    g = torch.Generator().manual_seed(1)
    image, x_t = torch.randn(2, image_ch, *size, generator=g), torch.randn(2, mask_ch, *size, generator=g)
    t = torch.tensor([3.0, 900.0])
    direct = model.denoise(x_t, model.encode(image), t)
    assert direct.shape == (2, out_ch, *size) and direct.abs().sum() > 0
    # forward's channel order: noisy mask, image, then the condition channels
    inp = torch.cat([x_t[:, :out_ch], image, x_t[:, out_ch:]], dim=1)
    assert torch.equal(model(inp, t), direct)
    assert not torch.equal(model.denoise(x_t, model.encode(image), 500.0), direct)  # the timestep reaches the output


def test_features_repeated_per_member_equal_re_encoding():
    model = _tiny()
    g = torch.Generator().manual_seed(2)
    image, K = torch.randn(2, 1, 7, 9, 10, generator=g), 3
    x_t = torch.randn(2 * K, 1, 7, 9, 10, generator=g)
    repeated = [f.repeat_interleave(K, dim=0) for f in model.encode(image)]
    a = model.denoise(x_t, repeated, 40.0)
    b = model(torch.cat([x_t, image.repeat_interleave(K, dim=0)], dim=1), 40.0)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)  # other batch compositions may round convolutions apart


def test_encode_has_no_timestep_and_level_shapes_follow_the_pooling_plan():
    model = SPADCachedUNet3D(1, 1, base_channels=8, channel_mults=(1, 2, 2), patch_size=(8, 32, 32),
                             spacing=(5.0, 1.0, 1.0))
    plain = SPADUNet3D(2, 1, base_channels=8, channel_mults=(1, 2, 2), patch_size=(8, 32, 32), spacing=(5.0, 1.0, 1.0))
    assert model.strides == plain.strides == ((1, 2, 2), (1, 2, 2)) and model.multiple == plain.multiple == (1, 4, 4)
    features = model.encode(torch.randn(1, 1, 3, 8, 8))
    assert [tuple(f.shape) for f in features] == [(1, 4, 3, 8, 8), (1, 8, 3, 4, 4), (1, 8, 3, 2, 2)]  # 2 * d_i


def test_gradients_reach_every_parameter():
    """Every parameter gets a gradient, nonzero except the encoder blocks' embedding weights: they multiply the
    learned constant ``enc_embed``, zero at initialisation (its own gradient is not)."""
    model = _tiny()
    x = torch.randn(2, 2, 8, 8, 8)
    model(x, torch.tensor([1.0, 500.0])).square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    zero = [n for n, p in model.named_parameters() if p.grad.abs().sum() == 0]
    assert zero and all(n.startswith("encoder.") and n.endswith(".temb.weight") for n in zero), zero
    assert model.enc_embed.grad.abs().sum() > 0


def test_fresh_model_predicts_zero():
    model = SPADCachedUNet3D(1, 1, base_channels=8, channel_mults=(1, 2), patch_size=(8, 8, 8))
    assert torch.count_nonzero(model(torch.randn(1, 2, 5, 6, 7), 10)) == 0


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def test_a_step_costs_a_fraction_of_the_3d_unets():
    """At equal encoder width the per-step denoiser costs under 1/8 of the plain 3-D UNet's pass (about 1/16: a
    quarter of the width), so 25 passes of 5 steps x 5 members cost one encoder pass plus 25 cheap ones."""
    kw = dict(base_channels=16, channel_mults=(1, 2, 2), patch_size=(16, 32, 32))
    cached, plain = SPADCachedUNet3D(1, 1, **kw), SPADUNet3D(2, 1, **kw)
    image, x_t = torch.randn(1, 1, 16, 32, 32), torch.randn(1, 1, 16, 32, 32)
    features = cached.encode(image)
    step = _flops(lambda: cached.denoise(x_t, features, 10.0))
    full = _flops(lambda: plain(torch.cat([x_t, image], 1), 10.0))
    encode = _flops(lambda: cached.encode(image))
    assert step < full / 8
    assert encode + 25 * step < 25 * full / 4


class _EncoderHidden(torch.nn.Module):
    """The cached model without ``encode``/``denoise`` visible: the sampler concatenates and encodes at every step."""

    def __init__(self, inner: SPADCachedUNet3D):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.inner(x, t)


def _sampler(model, **kw) -> DDIMSampler:
    return DDIMSampler(model, alphas_cumprod(make_betas("linear", 1000)), steps=3, cuda_graph=False, **kw)


@pytest.mark.parametrize("chunk", [1, 4, 64])
@pytest.mark.parametrize("perturb_mode,classes", [("target", 1), ("condition", 2)])
def test_cached_sampling_equals_the_concatenating_path(chunk, perturb_mode, classes):
    """The sampler's cached path (each window encoded once, in chunks, features repeated per member) gives the
    members that running forward on cat[x_t, image(, cond)] at every step gives; 3 windows x 2 members = 6 rows, so
    chunk 4 splits a window's members across two chunks."""
    model = _tiny(1, 2 * classes if perturb_mode == "condition" else classes, classes).eval()
    kw = dict(perturb_mode=perturb_mode, mask_channels=classes)
    images = torch.rand(3, 1, 7, 9, 10, generator=torch.Generator().manual_seed(3)) * 2 - 1
    cached = _sampler(model, chunk=chunk, **kw)
    assert cached._cached_encoder()
    got = cached.sample(images, ensemble=2, seed=4, return_members=True).members
    hidden = _sampler(_EncoderHidden(model), chunk=64, **kw)
    assert not hidden._cached_encoder()
    want = hidden.sample(images, ensemble=2, seed=4, return_members=True).members
    # float32 only: one-row chunks round the 3-D convolutions differently from six-row ones, and three DDIM steps
    # with self-conditioning carry it (a misplaced feature row would differ by about 0.1)
    torch.testing.assert_close(got, want, rtol=0, atol=5e-4)
    assert (want[:, 0] != want[:, 1]).any() and (want[0] != want[1]).any()  # members and windows differ


def _cfg(**kw) -> SPADConfig:
    base = dict(model_type="cached_unet3d", patch_size_3d=(8, 8, 8), base_channels=8, channel_mults=(1, 2),
                attention_levels=(), device="cpu")
    return SPADConfig(**{**base, **kw})


def test_factory_config_and_memory_estimate():
    model = build_model(_cfg(spacing_3d=(4.0, 1.0, 1.0), patch_size_3d=(8, 16, 16), num_classes=3))
    assert isinstance(model, SPADCachedUNet3D) and model.strides == ((1, 2, 2),)
    assert (model.image_channels, model.mask_channels, model.out_channels) == (1, 2, 2)
    assert _cfg().is_3d and not SPADConfig().is_3d
    plain = SPADConfig(model_type="unet3d", patch_size_3d=(8, 8, 8), base_channels=8, channel_mults=(1, 2),
                       attention_levels=(), spacing_3d=(1.0, 1.0, 1.0))
    # the encoder's activations plus the quarter-width denoiser's
    assert estimate_training_bytes(_cfg(spacing_3d=(1.0, 1.0, 1.0))) == pytest.approx(
        1.25 * estimate_training_bytes(plain))
    for key, value in [("patch_size_3d", ()), ("attention_levels", (1,)), ("context_slices", 1),
                       ("perturb", {"enabled": True}), ("resize", True)]:
        with pytest.raises(ValueError, match=f"`{key}`"):
            _cfg(**{key: value})
    with pytest.raises(ValueError, match="`patch_size_3d`"):
        SPADConfig(patch_size_3d=(8, 8, 8))  # a 2-D model_type


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="`mask_channels`"):
        SPADCachedUNet3D(1, 3, 2)
    with pytest.raises(ValueError, match="`patch_size`"):
        SPADCachedUNet3D(1, 1, patch_size=(8, 8))
    with pytest.raises(ValueError, match="`spacing`"):
        SPADCachedUNet3D(1, 1, spacing=(1, 0, 1))
    with pytest.raises(ValueError, match="`denoiser_channels`"):
        SPADCachedUNet3D(1, 1, denoiser_channels=0)
    model = _tiny()
    with pytest.raises(ValueError, match=r"`image` must have shape \[N, 1, D, H, W\]"):
        model.encode(torch.randn(1, 1, 8, 8))
    with pytest.raises(ValueError, match=r"`x` must have shape \[N, 2, D, H, W\]"):
        model(torch.randn(1, 3, 8, 8, 8), 1)
    features = model.encode(torch.randn(1, 1, 8, 8, 8))
    with pytest.raises(ValueError, match="`features`"):
        model.denoise(torch.randn(1, 1, 8, 8, 8), features[:1], 1)
    with pytest.raises(ValueError, match=r"`features\[0\]`"):
        model.denoise(torch.randn(2, 1, 8, 8, 8), features, 1)
