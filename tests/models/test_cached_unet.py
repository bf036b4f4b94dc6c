"""SPADCachedUNet: forward == denoise(encode), cached features repeated per member, gradients, cost of a step."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from spadfast.models.cached_unet import SPADCachedUNet
from spadfast.models.unet import SPADUNet, count_parameters

SMALL = {"base_channels": 8, "channel_mults": (1, 2), "attention_levels": (1,), "denoiser_channels": 4}


def _model(image_channels: int = 3, mask_channels: int = 1, **kw) -> SPADCachedUNet:
    torch.manual_seed(0)
    model = SPADCachedUNet(image_channels, mask_channels, **{**SMALL, **kw})
    # the output conv is zero-initialised (a fresh model predicts 0): give it weights so comparisons mean something
    torch.nn.init.normal_(model.out_conv.weight, std=0.1)
    return model.eval()


@pytest.mark.parametrize("mask_channels", [1, 2])
@pytest.mark.parametrize("size", [(16, 16), (13, 22)])  # 13x22: padded to a multiple of 2 and cropped back
def test_forward_equals_denoise_of_encode(mask_channels, size):
    model = _model(3, mask_channels)
    H, W = size
    x_t, image, cond = torch.randn(2, 1, H, W), torch.randn(2, 3, H, W), torch.randn(2, 1, H, W)
    t = torch.tensor([3.0, 870.0])
    # the trainer's / sampler's order: cat[x_t, image(, cond)]
    inp = torch.cat([x_t, image] + ([cond] if mask_channels == 2 else []), dim=1)
    mask_in = x_t if mask_channels == 1 else torch.cat([x_t, cond], dim=1)
    with torch.no_grad():
        out = model(inp, t)
        ref = model.denoise(mask_in, model.encode(image), t)
    assert out.shape == (2, 1, H, W)
    assert torch.equal(out, ref)


@pytest.mark.parametrize("condition", [False, True])
def test_multiclass_channel_order(condition):
    """M = 3 foreground classes: cat[x_t (M), image (C), cond (M)] -> denoise(cat[x_t, cond], encode(image))."""
    M, C = 3, 2
    model = _model(C, 2 * M if condition else M, out_channels=M)
    x_t, image, cond = torch.randn(2, M, 8, 8), torch.randn(2, C, 8, 8), torch.randn(2, M, 8, 8)
    t = torch.tensor([1.0, 700.0])
    with torch.no_grad():
        out = model(torch.cat([x_t, image] + ([cond] if condition else []), dim=1), t)
        ref = model.denoise(torch.cat([x_t, cond], 1) if condition else x_t, model.encode(image), t)
    assert out.shape == (2, M, 8, 8)
    assert torch.equal(out, ref)


def test_forward_channel_order_matters():
    """The image is channels 1..C_img and the condition the last: moving the condition changes the output."""
    model = _model(2, 2)
    x = torch.randn(1, 4, 8, 8)
    t = torch.tensor([500.0])
    with torch.no_grad():
        a = model(x, t)
        b = model(x[:, [0, 3, 1, 2]], t)
        ref = model.denoise(x[:, [0, 3]], model.encode(x[:, 1:3]), t)
    assert torch.equal(a, ref)
    assert not torch.allclose(a, b)


def test_cached_features_repeated_per_member_equal_recomputing():
    model = _model(1, 1)
    N, K, H, W = 2, 3, 16, 16
    images = torch.randn(N, 1, H, W)
    x = torch.randn(N * K, 1, H, W)
    t = torch.linspace(10, 900, N * K)
    with torch.no_grad():
        feats = model.encode(images)
        cached = model.denoise(x, [f.repeat_interleave(K, 0) for f in feats], t)
        recomputed = model(torch.cat([x, images.repeat_interleave(K, 0)], dim=1), t)
        # and over several steps: features computed once stay valid (the encoder has no timestep input)
        for step_t in (999.0, 500.0, 0.0):
            tt = torch.full((N * K,), step_t)
            again = model.denoise(x, [f.repeat_interleave(K, 0) for f in feats], tt)
            assert torch.allclose(again, model(torch.cat([x, images.repeat_interleave(K, 0)], 1), tt),
                                  atol=1e-6, rtol=1e-5)
    assert torch.allclose(cached, recomputed, atol=1e-6, rtol=1e-5)


def test_encode_has_no_timestep_and_shapes():
    model = _model(3, 1)
    with torch.no_grad():
        feats = model.encode(torch.randn(2, 3, 13, 22))
    # one map per level, finest first, 2 * denoiser width channels, padded size
    assert [tuple(f.shape) for f in feats] == [(2, 8, 14, 22), (2, 16, 7, 11)]


def test_channels_last_input():
    model = _model(3, 1)
    x = torch.randn(2, 4, 16, 16)
    t = torch.tensor([5.0, 600.0])
    with torch.no_grad():
        ref = model(x, t)
        model_cl = model.to(memory_format=torch.channels_last)
        out = model_cl(x.contiguous(memory_format=torch.channels_last), t)
        feats = model_cl.encode(x[:, 1:].contiguous(memory_format=torch.channels_last))
        out2 = model_cl.denoise(x[:, :1].contiguous(memory_format=torch.channels_last), feats, t)
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-4)
    assert torch.equal(out, out2)


def test_gradients_reach_encoder_and_denoiser():
    model = _model(1, 1).train()
    x = torch.randn(2, 2, 16, 16)
    loss = model(x, torch.tensor([1.0, 400.0])).square().mean()
    loss.backward()
    for prefix in ("enc_stem", "encoder", "enc_proj", "stem", "denoiser", "time_embed", "out_conv"):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(prefix + ".")]
        assert grads and all(g is not None for g in grads), prefix
        assert any(g.abs().sum() > 0 for g in grads), prefix
    assert model.enc_embed.grad is not None and model.enc_embed.grad.abs().sum() > 0


def test_fresh_model_predicts_zero_and_validates():
    model = SPADCachedUNet(1, 1, **SMALL)
    with torch.no_grad():
        assert torch.equal(model(torch.randn(1, 2, 8, 8), 10), torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="mask_channels"):
        SPADCachedUNet(1, 3)
    with pytest.raises(ValueError, match="x"):
        model(torch.randn(1, 3, 8, 8), 10)
    with pytest.raises(ValueError, match="features"):
        model.denoise(torch.randn(2, 1, 8, 8), model.encode(torch.randn(1, 1, 8, 8)), 10)
    with pytest.raises(ValueError, match="attention_levels"):
        SPADCachedUNet(1, 1, attention_levels=(3,))


def _macs(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() // 2


def test_per_step_denoiser_is_much_cheaper_than_the_unet():
    """Deterministic MAC counts (FlopCounterMode), default widths, 64x64: the step that runs K*S times costs a
    small fraction of a UNet forward; the encoder (run once per image) costs about one UNet forward."""
    unet = SPADUNet(in_channels=2).eval().requires_grad_(False)
    cached = SPADCachedUNet(image_channels=1, mask_channels=1).eval().requires_grad_(False)
    # parameters: same order of magnitude (the image path is as wide as the UNet)
    assert 0.5 < count_parameters(cached, trainable_only=False) / count_parameters(unet, trainable_only=False) < 2
    x, t = torch.randn(1, 2, 64, 64), torch.tensor([500.0])
    feats = cached.encode(x[:, 1:])
    unet_macs = _macs(lambda: unet(x, t))
    step_macs = _macs(lambda: cached.denoise(x[:, :1], feats, t))
    encode_macs = _macs(lambda: cached.encode(x[:, 1:]))
    assert step_macs * 10 < unet_macs, (step_macs, unet_macs)
    assert encode_macs < 1.5 * unet_macs
    # 5 members x 25 steps for one image: encode once + 125 denoiser steps vs 125 UNet forwards
    assert (encode_macs + 125 * step_macs) * 5 < 125 * unet_macs


class _EncoderHidden(torch.nn.Module):
    """The same model seen through ``forward`` only: the sampler must feed it cat[x_t, image(, cond)] every step,
    so the image is encoded again at every step for every member."""

    def __init__(self, model: SPADCachedUNet):
        super().__init__()
        self.inner = model

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.inner(x, t)


def _sampler(model, **kw):
    from spadfast.diffusion.sampler import DDIMSampler
    from spadfast.diffusion.schedule import alphas_cumprod, make_betas

    return DDIMSampler(model, alphas_cumprod(make_betas("linear", 1000)), steps=3, cuda_graph=False, **kw)


@pytest.mark.parametrize("chunk", [1, 4, 64])
@pytest.mark.parametrize("perturb_mode,classes", [("target", 1), ("condition", 1), ("condition", 2)])
def test_cached_sampling_equals_the_concat_image_path(chunk, perturb_mode, classes):
    """Features encoded once (in chunks) and repeated per member give the members that re-encoding the image at
    every step gives; 3 images x 2 members = 6 rows, so chunk 4 splits an image's members across two chunks."""
    mask_channels = 2 * classes if perturb_mode == "condition" else classes
    model = _model(1, mask_channels, out_channels=classes)
    kw = dict(perturb_mode=perturb_mode, mask_channels=classes)
    images = torch.rand(3, 1, 12, 10) * 2 - 1
    got = _sampler(model, chunk=chunk, **kw).sample(images, ensemble=2, seed=4, return_members=True).members
    hidden = _sampler(_EncoderHidden(model), chunk=64, **kw)
    assert not hidden._cached_encoder()
    want = hidden.sample(images, ensemble=2, seed=4, return_members=True).members
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
    assert (want[:, 0] != want[:, 1]).any() and (want[0] != want[1]).any()  # members and images differ


@pytest.mark.parametrize("amp_dtype", [None, torch.bfloat16])
@pytest.mark.parametrize("chunk", [1, 4, 64])
def test_encode_runs_in_chunks_under_the_samplers_autocast(monkeypatch, amp_dtype, chunk):
    model = _model(1, 1)
    calls = []
    encode = model.encode

    def spy(image):
        calls.append((image.shape[0], torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return encode(image)

    monkeypatch.setattr(model, "encode", spy)
    images = torch.rand(5, 1, 8, 8) * 2 - 1
    result = _sampler(model, chunk=chunk, amp_dtype=amp_dtype).sample(images, ensemble=3, seed=0)
    assert sum(rows for rows, _, _ in calls) == 5 and all(rows <= chunk for rows, _, _ in calls), calls
    if amp_dtype is None:
        assert not any(enabled for _, enabled, _ in calls)
    else:
        assert all(enabled and dtype == amp_dtype for _, enabled, dtype in calls), calls
    assert torch.isfinite(result.probs).all()
