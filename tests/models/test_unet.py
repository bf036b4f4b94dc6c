"""Tests for spadfast.models.unet.SPADUNet: shapes, time conditioning, gradients, layouts, autocast and torch.compile."""

import json
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from spadfast.models.cached_unet import SPADCachedUNet
from spadfast.models.unet import SPADUNet, _Attention, count_parameters

TINY = dict(base_channels=8, channel_mults=(1, 2), attention_levels=(1,), num_heads=2)


def _randomise_output(model: SPADUNet) -> SPADUNet:
    """The final conv is zero-initialised (the output would be identically 0); give it weights for the tests."""
    with torch.no_grad():
        torch.nn.init.normal_(model.out_conv.weight, std=0.05)
        torch.nn.init.normal_(model.out_conv.bias, std=0.05)
    return model


def test_zero_init_output():
    model = SPADUNet(in_channels=4, **TINY)
    out = model(torch.randn(2, 4, 16, 16), torch.tensor([0, 500]))
    assert torch.count_nonzero(out) == 0


@pytest.mark.parametrize(
    "in_ch, out_ch, mults, size",
    [
        (2, 1, (1, 2, 4), (32, 32)),
        (4, 1, (1, 2, 4), (37, 53)),
        (5, 2, (1, 2), (17, 8)),
        (3, 1, (1, 2, 2, 4), (1, 7)),
        (4, 3, (1,), (9, 11)),
    ],
)
def test_output_shape(in_ch, out_ch, mults, size):
    levels = tuple(range(1, len(mults)))
    model = _randomise_output(SPADUNet(in_ch, out_ch, base_channels=8, channel_mults=mults, attention_levels=levels,
                                       num_heads=2))
    out = model(torch.randn(3, in_ch, *size), torch.randint(0, 1000, (3,)))
    assert out.shape == (3, out_ch, *size)
    assert torch.isfinite(out).all()


def test_odd_size_batch_independent():
    # An odd size is padded internally and cropped back; each image's output must depend on that image only.
    model = _randomise_output(SPADUNet(4, **TINY)).eval()
    x = torch.randn(2, 4, 13, 19)
    t = torch.tensor([3, 3])
    out = model(x, t)
    out0 = model(x[:1], t[:1])
    torch.testing.assert_close(out[:1], out0, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("t_dtype", [torch.int64, torch.float32])
def test_time_dependence(t_dtype):
    model = _randomise_output(SPADUNet(4, **TINY)).eval()
    x = torch.randn(1, 4, 16, 16).expand(2, -1, -1, -1)
    out = model(x, torch.tensor([10, 900], dtype=t_dtype))
    assert not torch.allclose(out[0], out[1], atol=1e-4)


def test_scalar_and_continuous_t():
    model = _randomise_output(SPADUNet(4, **TINY)).eval()
    x = torch.randn(2, 4, 16, 16)
    torch.testing.assert_close(model(x, torch.tensor(7)), model(x, torch.tensor([7.0, 7.0])))
    torch.testing.assert_close(model(x, 7), model(x, torch.tensor([7, 7])))
    out = model(x, torch.tensor([0.25, 412.7]))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("attention_levels", [(), (0, 1)])
def test_every_parameter_gets_gradient(attention_levels):
    model = _randomise_output(SPADUNet(4, base_channels=8, channel_mults=(1, 2), num_res_blocks=2,
                                       attention_levels=attention_levels, num_heads=2, dropout=0.1))
    model(torch.randn(2, 4, 12, 12), torch.tensor([1, 999])).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    nonzero = [n for n, p in model.named_parameters() if p.grad.abs().sum() > 0]
    assert "time_embed.mlp.0.weight" in nonzero


def test_fresh_model_gradients_reach_zero_init_conv():
    # With the final conv at zero only it (and its input) receive gradient at first; it must not stay stuck.
    model = SPADUNet(4, **TINY)
    model(torch.randn(2, 4, 16, 16), torch.tensor([1, 2])).sub(1.0).square().mean().backward()
    assert model.out_conv.weight.grad.abs().sum() > 0
    assert model.out_conv.bias.grad.abs().sum() > 0


def test_attention_on_off():
    def n_attn(model):
        return sum(isinstance(m, _Attention) for m in model.modules())

    with_attn = SPADUNet(4, **TINY)
    without = SPADUNet(4, **{**TINY, "attention_levels": ()})
    assert n_attn(with_attn) == 3  # level 1: one in the down path, one in the up path; plus the bottleneck
    assert n_attn(without) == 0
    assert count_parameters(with_attn) > count_parameters(without)
    for model in (with_attn, without):
        out = _randomise_output(model)(torch.randn(2, 4, 20, 12), torch.tensor([5, 50]))
        assert out.shape == (2, 1, 20, 12)


def test_full_resolution_attention_multihead():
    model = _randomise_output(SPADUNet(3, base_channels=8, channel_mults=(1, 2), attention_levels=(0,), num_heads=4))
    out = model(torch.randn(2, 3, 9, 10), torch.tensor([0, 1]))
    assert out.shape == (2, 1, 9, 10)


def test_determinism_with_seed():
    def make():
        torch.manual_seed(123)
        model = _randomise_output(SPADUNet(4, **TINY))
        return model, torch.randn(2, 4, 16, 16)

    (m1, x1), (m2, x2) = make(), make()
    t = torch.tensor([3, 300])
    torch.testing.assert_close(m1(x1, t), m2(x2, t), rtol=0, atol=0)


def test_channels_last_matches_contiguous():
    model = _randomise_output(SPADUNet(4, base_channels=8, channel_mults=(1, 2, 4), attention_levels=(1, 2),
                                       num_heads=2)).eval()
    x = torch.randn(2, 4, 24, 36)
    t = torch.tensor([17, 640])
    ref = model(x, t)
    model_cl = model.to(memory_format=torch.channels_last)
    out = model_cl(x.to(memory_format=torch.channels_last), t)
    assert out.shape == ref.shape == (2, 1, 24, 36)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_channels_last_odd_size():
    model = _randomise_output(SPADUNet(4, **TINY)).eval()
    x = torch.randn(2, 4, 37, 53)
    t = torch.tensor([17, 640])
    ref = model(x, t)
    out = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last), t)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_bf16_autocast_finite():
    model = _randomise_output(SPADUNet(4, **TINY))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(2, 4, 21, 16), torch.tensor([0, 999]))
    assert out.shape == (2, 1, 21, 16)
    assert torch.isfinite(out.float()).all()
    out.float().square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())


# Largest |autocast - fp32| of a denoiser's output relative to the fp32 output's largest magnitude, per dtype. Measured
# over weight seeds on the tiny random-weight models below: bf16 (8-bit mantissa) 0.011-0.028, fp16 (11-bit)
# 0.0015-0.0026; the bounds leave ~1.5-2x margin and stay far below the output's own scale.
AUTOCAST_TOLERANCE = {torch.bfloat16: 0.04, torch.float16: 0.005}


@pytest.mark.parametrize("dtype", list(AUTOCAST_TOLERANCE), ids=str)
@pytest.mark.parametrize("kind", ["unet", "cached_unet"])
def test_autocast_logits_match_fp32_within_the_dtype_tolerance(kind, dtype):
    """Issue 29.11: fixed random weights (output layer included) and inputs, timesteps over the whole range: the
    autocast output is in ``dtype`` (low precision really ran) and within ``AUTOCAST_TOLERANCE[dtype]`` of fp32."""
    torch.manual_seed(0)
    if kind == "unet":
        model = _randomise_output(SPADUNet(in_channels=4, **TINY))
    else:
        model = _randomise_output(SPADCachedUNet(image_channels=3, mask_channels=1, **TINY))
    model.eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 4, 24, 20, generator=g)
    t = torch.tensor([0, 17, 640, 999])
    with torch.no_grad():
        reference = model(x, t)
        with torch.autocast("cpu", dtype=dtype):
            low = model(x, t)
    assert low.dtype == dtype
    error = float((low.float() - reference).abs().max() / reference.abs().max())
    assert error <= AUTOCAST_TOLERANCE[dtype], f"{dtype}: relative error {error:.4f}"


def test_invalid_arguments():
    with pytest.raises(ValueError, match="attention_levels"):
        SPADUNet(4, channel_mults=(1, 2), attention_levels=(2,))
    with pytest.raises(ValueError, match="num_heads"):
        SPADUNet(4, base_channels=6, channel_mults=(1,), attention_levels=(0,), num_heads=4)
    with pytest.raises(ValueError, match="channel_mults"):
        SPADUNet(4, channel_mults=())
    with pytest.raises(ValueError, match="in_channels"):
        SPADUNet(0)
    with pytest.raises(ValueError, match="`t`"):
        SPADUNet(4, **TINY)(torch.randn(2, 4, 8, 8), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="`x`"):
        SPADUNet(4, **TINY)(torch.randn(1, 3, 8, 8), torch.tensor([0]))


def test_groupnorm_groups_divide_width():
    model = SPADUNet(3, base_channels=12, channel_mults=(1, 2), attention_levels=(), groups=8)
    for m in model.modules():
        if isinstance(m, torch.nn.GroupNorm):
            assert m.num_channels % m.num_groups == 0 and m.num_groups <= 8
    assert model(torch.randn(1, 3, 8, 8), torch.tensor([1])).shape == (1, 1, 8, 8)


def test_count_parameters():
    model = SPADUNet(4, **TINY)
    assert count_parameters(model) == sum(p.numel() for p in model.parameters())
    model.stem.weight.requires_grad_(False)
    assert count_parameters(model) == sum(p.numel() for p in model.parameters()) - model.stem.weight.numel()
    assert count_parameters(model, trainable_only=False) == sum(p.numel() for p in model.parameters())


@pytest.mark.slow
def test_compile_fullgraph_matches_eager():
    model = _randomise_output(SPADUNet(4, **TINY)).eval()
    x = torch.randn(2, 4, 13, 18)  # odd size: exercises the pad/crop path under compile
    t = torch.tensor([4, 321])
    ref = model(x, t)
    compiled = torch.compile(model, fullgraph=True)
    torch.testing.assert_close(compiled(x, t), ref, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------ stored checkpoints, both models
FIXTURE_DIR = Path(__file__).parents[1] / "fixtures"
FIXTURE_MODELS = {
    "unet": (SPADUNet, dict(in_channels=2, out_channels=1, base_channels=4, channel_mults=(1, 1),
                            attention_levels=(1,), num_heads=2, groups=2), (2, 2, 5, 7)),
    "cached_unet": (SPADCachedUNet, dict(image_channels=1, mask_channels=2, out_channels=1, base_channels=4,
                                         channel_mults=(1, 1), attention_levels=(1,), num_heads=2, groups=2,
                                         denoiser_channels=2, denoiser_attention=True), (2, 3, 5, 7)),
}


@contextmanager
def _one_thread():
    """CPU convolutions sum in an order that depends on the thread count: one thread makes outputs reproducible."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def write_model_fixture(kind: str, path: Path) -> None:
    """A tiny model of ``kind`` with random weights (out_conv too), a fixed odd-size input and its output, as a
    safetensors file: ``model.<param>`` keys as in a checkpoint, plus ``input``, ``t`` and ``output``."""
    cls, kwargs, shape = FIXTURE_MODELS[kind]
    torch.manual_seed(0)
    model = cls(**kwargs).eval()
    with torch.no_grad(), _one_thread():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        x, t = torch.randn(shape), torch.tensor([3.0, 700.0])
        out = model(x, t)
    tensors = {f"model.{k}": v.contiguous() for k, v in model.state_dict().items()}
    tensors.update(input=x, t=t, output=out.contiguous())
    save_file(tensors, str(path), metadata={"kind": kind, "kwargs": json.dumps(kwargs)})


@pytest.mark.parametrize("kind", sorted(FIXTURE_MODELS))
def test_stored_checkpoint_loads_and_reproduces_its_output(kind):
    # the file was written by an earlier version of the code: parameter names (loaded strictly) and the forward pass
    # are a contract. CPU convolution kernels differ by instruction set (oneDNN's AVX2 and AVX-512 paths sum in other
    # orders), so another machine reproduces the output to float rounding (measured up to 5.4e-7 on outputs of
    # magnitude 0.77), not bit for bit; a renamed parameter or a changed layer moves it by orders of magnitude more.
    path = FIXTURE_DIR / f"{kind}_tiny.safetensors"
    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as f:
        kwargs = json.loads(f.metadata()["kwargs"])
    cls, _, _ = FIXTURE_MODELS[kind]
    model = cls(**kwargs).eval()
    weights = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    model.load_state_dict(weights, strict=True)
    with torch.no_grad(), _one_thread():
        out = model(tensors["input"], tensors["t"])
    torch.testing.assert_close(out, tensors["output"], rtol=0, atol=5e-6)
    assert bool(tensors["output"].abs().amax() > 0.1)
