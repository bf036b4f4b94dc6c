"""The 3-D UNet denoiser (issue 32.2): shapes, pooling plan, determinism, factory and memory refusals."""

from __future__ import annotations

import pytest
import torch

from spadfast.config import SPADConfig
from spadfast.models.factory import build_model, check_fits_memory, estimate_training_bytes
from spadfast.models.unet3d import SPADUNet3D, plan_strides


def _tiny(**kw) -> SPADUNet3D:
    torch.manual_seed(0)
    return SPADUNet3D(3, 2, base_channels=4, channel_mults=(1, 2), patch_size=(8, 8, 8), **kw)


def test_forward_shape_any_size_and_zero_init():
    model = _tiny()
    x = torch.randn(2, 3, 7, 9, 10)
    out = model(x, torch.tensor([3, 900]))
    assert out.shape == (2, 2, 7, 9, 10)
    assert torch.count_nonzero(out) == 0  # zero-initialised final conv
    torch.nn.init.normal_(model.out_conv.weight)
    a, b = model(x, 5), model(x, 5)
    assert torch.equal(a, b) and a.abs().sum() > 0
    assert not torch.equal(model(x, 5), model(x, 500))  # the timestep reaches the output


def test_gradients_reach_every_parameter():
    model = _tiny()
    torch.nn.init.normal_(model.out_conv.weight)
    model(torch.randn(1, 3, 8, 8, 8), 10).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_plan_strides_anisotropic_like_nnunet():
    # 5 mm slices, 1 mm in-plane: z is pooled only once x and y have reached 4 mm (within 2x of z)
    assert plan_strides((8, 32, 32), (5.0, 1.0, 1.0), 3) == ((1, 2, 2), (1, 2, 2), (2, 2, 2))
    # isotropic: every axis until it would fall under 4 voxels
    assert plan_strides((8, 16, 16), (1.0, 1.0, 1.0), 3) == ((2, 2, 2), (1, 2, 2), (1, 1, 1))
    model = SPADUNet3D(2, 1, base_channels=4, channel_mults=(1, 1, 1), patch_size=(8, 32, 32), spacing=(5, 1, 1))
    assert model.strides == ((1, 2, 2), (1, 2, 2)) and model.multiple == (1, 4, 4)
    assert model(torch.randn(1, 2, 3, 8, 8), 1).shape == (1, 1, 3, 8, 8)


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="`patch_size`"):
        SPADUNet3D(2, patch_size=(8, 8))
    with pytest.raises(ValueError, match="`spacing`"):
        SPADUNet3D(2, patch_size=(8, 8, 8), spacing=(1, 0, 1))
    with pytest.raises(ValueError, match=r"\[B, 3, D, H, W\]"):
        _tiny()(torch.randn(1, 3, 8, 8), 1)  # a 2-D batch


def _cfg(**kw) -> SPADConfig:
    base = dict(model_type="unet3d", patch_size_3d=(8, 8, 8), base_channels=4, channel_mults=(1, 2),
                attention_levels=(), device="cpu")
    return SPADConfig(**{**base, **kw})


def test_factory_builds_unet3d_with_config_spacing():
    model = build_model(_cfg(spacing_3d=(4.0, 1.0, 1.0), patch_size_3d=(8, 16, 16)))
    assert isinstance(model, SPADUNet3D) and model.strides == ((1, 2, 2),)
    assert model.in_channels == 2 and model.out_channels == 1


@pytest.mark.parametrize("kw, key", [
    (dict(patch_size_3d=()), "patch_size_3d"),
    (dict(patch_size_3d=(8, 8)), "patch_size_3d"),
    (dict(attention_levels=(1,)), "attention_levels"),
    (dict(context_slices=1), "context_slices"),
    (dict(perturb={"enabled": True}), "perturb"),
    (dict(spacing_3d=(1.0, 1.0)), "spacing_3d"),
    (dict(target_spacing=(1.0, 1.0)), "target_spacing"),
])
def test_config_refuses_unet3d_combinations(kw, key):
    with pytest.raises(ValueError, match=f"`{key}`"):
        _cfg(**kw)
    with pytest.raises(ValueError, match="`patch_size_3d`"):
        SPADConfig(patch_size_3d=(8, 8, 8))  # a 2-D model with a 3-D patch


def test_memory_estimate_scales_and_refuses_before_work():
    small = estimate_training_bytes(_cfg(batch_size=1))
    assert estimate_training_bytes(_cfg(batch_size=4)) == 4 * small
    assert estimate_training_bytes(_cfg(batch_size=1, patch_size_3d=(16, 16, 16))) == 8 * small
    # before the volumes fill spacing_3d: the worst of an isotropic and of each axis coarse (pooled less: larger)
    coarse = estimate_training_bytes(_cfg(batch_size=1, spacing_3d=(5.0, 1.0, 1.0)))
    assert coarse > estimate_training_bytes(_cfg(batch_size=1, spacing_3d=(1.0, 1.0, 1.0)))
    assert small == max(coarse, estimate_training_bytes(_cfg(batch_size=1, spacing_3d=(1.0, 1.0, 5.0))))
    with pytest.raises(ValueError, match="`patch_size_3d`.*`batch_size`"):
        check_fits_memory(_cfg(patch_size_3d=(1024, 1024, 1024), batch_size=64), torch.device("cpu"))
    check_fits_memory(_cfg(), torch.device("cpu"))
