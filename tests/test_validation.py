"""Argument checks at the public boundary: every bad input raises ValueError/TypeError naming the argument in backticks.

Covers spadfast.ops.reference.* and spadfast.ops.* (backend="reference"; backend dispatch errors for ops only).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spadfast import ops
from spadfast.diffusion import schedule
from spadfast.ops import reference
from spadfast.ops.checks import (
    MAX_BAND_RADIUS,
    ArgumentTypeError,
    check_axis,
    check_images,
    check_int,
    check_number,
)

H, W = 6, 7


def good_mask(shape=(2, H, W)) -> torch.Tensor:
    m = torch.zeros(shape)
    m[..., 1:4, 2:5] = 1
    return m


def _bb(mod):
    return lambda mask, **kw: mod.boundary_blur(mask, kw.pop("sigma", 1.0), kw.pop("strength", 0.5), **kw)


def _tn(mod):
    return lambda mask, **kw: mod.target_noise(mask, kw.pop("strength", 0.5), **kw)


def _ref_ops(fn_ref, fn_ops):
    return {"reference": fn_ref, "ops": lambda *a, **kw: fn_ops(*a, backend="reference", **kw)}


MASK_OPS = {}
for _name, (_r, _o) in {
    "canny": (reference.canny, ops.canny),
    "boundary_blur": (_bb(reference), lambda mask, backend, **kw: _bb(ops)(mask, backend=backend, **kw)),
    "target_noise": (_tn(reference), lambda mask, backend, **kw: _tn(ops)(mask, backend=backend, **kw)),
}.items():
    for _impl, _fn in _ref_ops(_r, _o).items():
        MASK_OPS[f"{_name}-{_impl}"] = _fn
MASK_OPS["canny_magnitude"] = reference.canny_magnitude
MASK_OPS["boundary_band"] = reference.boundary_band


def raises_naming(exc, name: str):
    return pytest.raises(exc, match=f"`{name}`")


# --------------------------------------------------------------------------------------------------- masks
BAD_MASKS = {
    "1-D": (ValueError, lambda: torch.zeros(5)),
    "0-D": (ValueError, lambda: torch.tensor(1.0)),
    "5-D": (ValueError, lambda: torch.zeros(1, 1, 1, H, W)),
    "two channels": (ValueError, lambda: torch.zeros(2, 2, H, W)),
    "empty batch 3-D": (ValueError, lambda: torch.zeros(0, H, W)),
    "empty batch 4-D": (ValueError, lambda: torch.zeros(0, 1, H, W)),
    "zero H": (ValueError, lambda: torch.zeros(0, W)),
    "zero W": (ValueError, lambda: torch.zeros(2, H, 0)),
    "zero H 4-D": (ValueError, lambda: torch.zeros(2, 1, 0, W)),
    "value 0.5": (ValueError, lambda: good_mask() * 0.5),
    "value 2": (ValueError, lambda: good_mask() * 2),
    "value 2 int": (ValueError, lambda: (good_mask() * 2).long()),
    "value -1": (ValueError, lambda: -good_mask()),
    "NaN": (ValueError, lambda: torch.where(good_mask() > 0, torch.tensor(float("nan")), torch.tensor(0.0))),
    "list": (TypeError, lambda: [[0, 1], [1, 0]]),
    "numpy": (TypeError, lambda: good_mask().numpy()),
    "requires grad": (ValueError, lambda: good_mask().requires_grad_()),
    "complex": (TypeError, lambda: good_mask().to(torch.complex64)),
}


@pytest.mark.parametrize("op", list(MASK_OPS))
@pytest.mark.parametrize("case", list(BAD_MASKS))
def test_bad_mask(op, case):
    exc, make = BAD_MASKS[case]
    with raises_naming(exc, "mask"):
        MASK_OPS[op](make())


@pytest.mark.parametrize("op", list(MASK_OPS))
def test_validate_false_skips_binary_check(op):
    m = good_mask() * 0.5
    out = MASK_OPS[op](m, validate=False)
    assert out.shape == m.shape
    with raises_naming(ValueError, "mask"):
        MASK_OPS[op](m)


def test_validate_false_still_checks_shape():
    for op in MASK_OPS.values():
        with raises_naming(ValueError, "mask"):
            op(torch.zeros(5), validate=False)


# ------------------------------------------------------------------------------------- boundary_blur args
BB = _ref_ops(reference.boundary_blur, ops.boundary_blur)
TN = _ref_ops(reference.target_noise, ops.target_noise)


@pytest.mark.parametrize("impl", list(BB))
@pytest.mark.parametrize(
    "kw,exc,name",
    [
        (dict(sigma=-0.1), ValueError, "sigma"),
        (dict(sigma=float("nan")), ValueError, "sigma"),
        (dict(sigma="1"), TypeError, "sigma"),
        (dict(strength=-1.0), ValueError, "strength"),
        (dict(strength=float("inf")), ValueError, "strength"),
        (dict(radius=-1), ValueError, "radius"),
        (dict(radius=1.5), TypeError, "radius"),
        (dict(radius=MAX_BAND_RADIUS + 1), ValueError, "radius"),
        (dict(radius=100), ValueError, "radius"),
        (dict(noise=torch.zeros(2, H, W + 1)), ValueError, "noise"),
        (dict(noise=torch.zeros(1, H, W)), ValueError, "noise"),
        (dict(noise=torch.zeros(2, H, W, dtype=torch.int64)), TypeError, "noise"),
        (dict(noise=[0.0]), TypeError, "noise"),
        (dict(base=torch.zeros(2, H + 1, W)), ValueError, "base"),
        (dict(base=torch.zeros(2, H, W, dtype=torch.int32)), TypeError, "base"),
        (dict(seed=-1), ValueError, "seed"),
        (dict(offset=-1), ValueError, "offset"),
        (dict(generator=1234), TypeError, "generator"),
    ],
)
def test_boundary_blur_bad_args(impl, kw, exc, name):
    args = dict(sigma=1.0, strength=0.5) | kw
    with raises_naming(exc, name):
        BB[impl](good_mask(), args.pop("sigma"), args.pop("strength"), **args)


@pytest.mark.parametrize("impl", list(TN))
@pytest.mark.parametrize(
    "kw,exc,name",
    [
        (dict(strength=-0.5), ValueError, "strength"),
        (dict(anchor_size=0), ValueError, "anchor_size"),
        (dict(anchor_size=2.0), TypeError, "anchor_size"),
        (dict(keep_ratio=1.5), ValueError, "keep_ratio"),
        (dict(keep_ratio=-0.1), ValueError, "keep_ratio"),
        (dict(noise=torch.zeros(2, 1, H, W + 1)), ValueError, "noise"),
        (dict(noise=torch.zeros(2, H, W, dtype=torch.uint8)), TypeError, "noise"),
        (dict(anchors=torch.zeros(2, H, W - 1, dtype=torch.bool)), ValueError, "anchors"),
        (dict(anchors=torch.zeros(2, H, W)), TypeError, "anchors"),
        (dict(seed=-3), ValueError, "seed"),
        (dict(generator="g"), TypeError, "generator"),
    ],
)
def test_target_noise_bad_args(impl, kw, exc, name):
    args = dict(strength=0.5) | kw
    with raises_naming(exc, name):
        TN[impl](good_mask(), args.pop("strength"), **args)


def test_noise_shape_checked_in_other_layouts():
    m = good_mask((H, W))
    with raises_naming(ValueError, "noise"):
        reference.boundary_blur(m, 1.0, 0.5, noise=torch.zeros(1, H, W + 1))
    with raises_naming(ValueError, "noise"):
        reference.target_noise(m.view(1, 1, H, W), 0.5, noise=torch.zeros(1, 1, H + 1, W))
    with raises_naming(ValueError, "anchors"):
        reference.target_noise(m, 0.5, anchors=torch.zeros(2, 1, H, W, dtype=torch.bool))


# -------------------------------------------------------------------------------------------------- ddim
DD = _ref_ops(reference.ddim_step, ops.ddim_step)


def ddim_args(**kw):
    x = torch.randn(2, 1, 4, 4)
    args = dict(sample=x, model_output=torch.randn_like(x), alpha_prod_t=0.5, alpha_prod_t_prev=0.7)
    return args | kw


@pytest.mark.parametrize("impl", list(DD))
@pytest.mark.parametrize(
    "kw,exc,name",
    [
        (dict(prediction_type="x0"), ValueError, "prediction_type"),
        (dict(alpha_prod_t=0.0), ValueError, "alpha_prod_t"),
        (dict(alpha_prod_t=-0.1), ValueError, "alpha_prod_t"),
        (dict(alpha_prod_t=1.5), ValueError, "alpha_prod_t"),
        (dict(alpha_prod_t=float("nan")), ValueError, "alpha_prod_t"),
        (dict(alpha_prod_t=torch.tensor([0.5, 0.0])), ValueError, "alpha_prod_t"),
        (dict(alpha_prod_t=torch.tensor(1.5)), ValueError, "alpha_prod_t"),
        (dict(alpha_prod_t=torch.tensor([0.5, float("nan")])), ValueError, "alpha_prod_t"),
        (dict(alpha_prod_t=torch.full((3,), 0.5)), ValueError, "alpha_prod_t"),
        (dict(alpha_prod_t="0.5"), TypeError, "alpha_prod_t"),
        (dict(alpha_prod_t=True), TypeError, "alpha_prod_t"),
        (dict(alpha_prod_t_prev=0.0), ValueError, "alpha_prod_t_prev"),
        (dict(alpha_prod_t_prev=1.01), ValueError, "alpha_prod_t_prev"),
        (dict(alpha_prod_t_prev=torch.tensor([0.0, 0.5])), ValueError, "alpha_prod_t_prev"),
        (dict(eta=-0.5), ValueError, "eta"),
        (dict(eta=float("nan")), ValueError, "eta"),
        (dict(eta=float("inf")), ValueError, "eta"),
        (dict(clip_sample_range=0.0), ValueError, "clip_sample_range"),
        (dict(clip_sample_range=-1.0), ValueError, "clip_sample_range"),
        (dict(clip_sample_range="1"), TypeError, "clip_sample_range"),
        (dict(model_output=torch.randn(2, 1, 4, 5)), ValueError, "model_output"),
        (dict(model_output=torch.randn(3, 1, 4, 4)), ValueError, "model_output"),
        (dict(model_output=torch.randn(2, 1, 4, 4).requires_grad_()), ValueError, "model_output"),
        (dict(model_output=torch.ones(2, 1, 4, 4, dtype=torch.int64)), TypeError, "model_output"),
        (dict(model_output=[1.0]), TypeError, "model_output"),
        (dict(sample=torch.randn(2, 1, 4, 4).requires_grad_()), ValueError, "sample"),
        (dict(sample=torch.ones(2, 1, 4, 4, dtype=torch.int32)), TypeError, "sample"),
        (dict(sample=[[1.0]]), TypeError, "sample"),
        (dict(sample=torch.tensor(1.0), model_output=torch.tensor(1.0)), ValueError, "sample"),
        (dict(sample=torch.zeros(0, 1, 4, 4), model_output=torch.zeros(0, 1, 4, 4)), ValueError, "sample"),
        (dict(noise=torch.randn(2, 1, 4, 3), eta=0.5), ValueError, "noise"),
        (dict(noise=torch.ones(2, 1, 4, 4, dtype=torch.int64), eta=0.5), TypeError, "noise"),
        (dict(seed=-1, eta=0.5), ValueError, "seed"),
        (dict(generator=object(), eta=0.5), TypeError, "generator"),
    ],
)
def test_ddim_bad_args(impl, kw, exc, name):
    with raises_naming(exc, name):
        DD[impl](**ddim_args(**kw))


def test_ddim_good_args_pass():
    for impl in DD.values():
        prev, x0 = impl(**ddim_args(alpha_prod_t=torch.tensor([0.5, 1.0]), alpha_prod_t_prev=1.0, eta=0.0))
        assert prev.shape == x0.shape == (2, 1, 4, 4)


# ----------------------------------------------------------------------------------------------- backends
PUBLIC_OPS = {
    "canny": lambda backend: ops.canny(good_mask(), backend=backend),
    "boundary_blur": lambda backend: ops.boundary_blur(good_mask(), 1.0, 0.5, backend=backend),
    "target_noise": lambda backend: ops.target_noise(good_mask(), 0.5, backend=backend),
    "ddim_step": lambda backend: ops.ddim_step(**ddim_args(), backend=backend),
}


@pytest.mark.parametrize("op", list(PUBLIC_OPS))
@pytest.mark.parametrize("backend", ["cuda", "Triton", "", None, "torch"])
def test_unknown_backend(op, backend):
    with raises_naming(ValueError, "backend"):
        PUBLIC_OPS[op](backend)


@pytest.mark.parametrize("op", list(PUBLIC_OPS))
def test_triton_on_cpu_without_interpreter(op, monkeypatch):
    """backend="triton" on a CPU tensor needs TRITON_INTERPRET=1 (tests/conftest.py sets it on GPU-less machines)."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(ops, "triton_available", lambda: True)  # reach the interpreter check even without triton
    with pytest.raises(ValueError) as info:
        PUBLIC_OPS[op]("triton")
    msg = str(info.value)
    assert "TRITON_INTERPRET" in msg and "CPU" in msg
    assert "`backend`" in msg, f"message does not name the argument in backticks: {msg!r}"


@pytest.mark.parametrize("value", ["0", "true", ""])
def test_triton_on_cpu_interpret_must_be_exactly_1(value, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", value)
    monkeypatch.setattr(ops, "triton_available", lambda: True)
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        ops.resolve_backend("triton", torch.zeros(1))


def test_auto_and_reference_resolve_to_reference_on_cpu():
    assert ops.resolve_backend("auto", torch.zeros(1)) == "reference"
    assert ops.resolve_backend("reference", torch.zeros(1)) == "reference"


def test_ops_non_tensor_mask_is_type_error():
    for fn in (lambda: ops.canny([[0, 1]]), lambda: ops.boundary_blur([[0, 1]], 1.0, 0.5),
               lambda: ops.target_noise([[0, 1]], 0.5)):
        with raises_naming(TypeError, "mask"):
            fn()
    with raises_naming(TypeError, "sample"):
        ops.ddim_step([1.0], torch.zeros(1), 0.5, 0.5)


# ---------------------------------------------------------------------------------------------- schedule
@pytest.mark.parametrize(
    "call,name",
    [
        (lambda: schedule.make_betas("sigmoid"), "kind"),
        (lambda: schedule.make_betas("linear", 0), "num_train_timesteps"),
        (lambda: schedule.ddim_timesteps(1000, 50, "uniform"), "spacing"),
        (lambda: schedule.ddim_timesteps(1000, 0), "num_inference_steps"),
        (lambda: schedule.ddim_timesteps(10, 11), "num_inference_steps"),
        (lambda: schedule.progress_strength(0.5, "exp"), "kind"),
        (lambda: schedule.progress_strength(-1.0), "progress"),
        (lambda: schedule.progress_strength(0.5, end=0.0), "end"),
        (lambda: schedule.progress_strength(0.5, max=-1.0), "max"),
        (lambda: schedule.progress_strength(0.5, "step", stages=0), "stages"),
    ],
)
def test_schedule_bad_args(call, name):
    with raises_naming(ValueError, name):
        call()


# --------------------------------------------------------------------------------------------- scalar helpers
NOT_INTS = [True, False, np.True_, 2.5, np.float64(2.0), float("nan"), float("inf"), "3", None, [3], torch.tensor(3)]
NOT_NUMBERS = [True, False, np.True_, "0.5", None, [0.5], torch.tensor(0.5)]


@pytest.mark.parametrize("value", NOT_INTS, ids=repr)
def test_check_int_refuses_non_integers_as_type_and_value_error(value):
    with pytest.raises(ArgumentTypeError, match=r"`n` must be an int >= 0, got ") as info:
        check_int(value, "n", 0)
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize("value", [3, np.int8(3), np.int32(3), np.int64(3), np.uint16(3)], ids=repr)
def test_check_int_accepts_python_and_numpy_integers_as_python_int(value):
    out = check_int(value, "n", 0, 5)
    assert out == 3 and type(out) is int


@pytest.mark.parametrize("value,minimum,maximum,bound", [
    (-1, 0, None, ">= 0"), (np.int64(0), 1, None, ">= 1"), (6, None, 5, "<= 5"), (6, 1, 5, r"in \[1, 5\]"),
    (np.int64(-4), -3, 2, r"in \[-3, 2\]"),
])
def test_check_int_out_of_range_is_a_value_error_stating_the_bounds(value, minimum, maximum, bound):
    with pytest.raises(ValueError, match=f"`n` must be an int {bound}, got ") as info:
        check_int(value, "n", minimum, maximum)
    assert not isinstance(info.value, TypeError)


def test_check_int_optional_and_expected_text():
    assert check_int(None, "seed", 0, optional=True) is None
    with pytest.raises(ValueError, match=r"`seed` must be an int >= 0 or None, got -1"):
        check_int(-1, "seed", 0, optional=True)
    with pytest.raises(ValueError, match=r"`axis` must be None, 0, 1 or 2, got 3"):
        check_axis(3)
    assert [check_axis(a) for a in (None, 0, 2, -1, np.int64(-3))] == [None, 0, 2, 2, 0]


@pytest.mark.parametrize("value", NOT_NUMBERS, ids=repr)
def test_check_number_refuses_non_numbers_as_type_and_value_error(value):
    with pytest.raises(ArgumentTypeError, match=r"`x` must be a number in \[0, 1\], got "):
        check_number(value, "x", 0, 1)


@pytest.mark.parametrize("value", [0.5, np.float16(0.5), np.float32(0.5), np.float64(0.5), 1, np.int64(1)], ids=repr)
def test_check_number_accepts_python_and_numpy_numbers_as_python_float(value):
    out = check_number(value, "x", 0, 1)
    assert out == float(value) and type(out) is float


@pytest.mark.parametrize("kwargs,value,bound", [
    (dict(minimum=0), -0.5, ">= 0"), (dict(above=0), 0.0, "> 0"), (dict(maximum=1), 1.5, "<= 1"),
    (dict(below=1), 1.0, "< 1"), (dict(above=0, below=1), 1.0, r"in \(0, 1\)"),
    (dict(above=0, maximum=1), 0.0, r"in \(0, 1\]"), (dict(minimum=0, maximum=1), np.float32(-1), r"in \[0, 1\]"),
    (dict(minimum=0), float("nan"), ">= 0"), (dict(minimum=0, maximum=1), float("nan"), r"in \[0, 1\]"),
    (dict(minimum=0), float("inf"), ">= 0"), (dict(), float("-inf"), ""), (dict(), np.float32("nan"), ""),
])
def test_check_number_refuses_nan_inf_and_out_of_range_as_value_error(kwargs, value, bound):
    with pytest.raises(ValueError, match=f"`x` must be a (finite )?number{' ' + bound if bound else ''}, got ") as info:
        check_number(value, "x", **kwargs)
    assert not isinstance(info.value, TypeError)


def test_check_number_allows_inf_only_when_asked():
    assert check_number(float("inf"), "x", above=0, finite=False) == math.inf
    with pytest.raises(ValueError, match="`x`"):
        check_number(float("nan"), "x", above=0, finite=False)
    assert check_number(None, "x", optional=True) is None


# ------------------------------------------------------------------------------------- scalar call sites
def _tiny_sampler():
    from spadfast.diffusion.sampler import DDIMSampler
    from spadfast.models.factory import build_model

    from .helpers import tiny_config

    cfg = tiny_config()
    return DDIMSampler.from_config(cfg, build_model(cfg), schedule.alphas_cumprod(schedule.make_betas("linear", 10)))


def _sample(**kw):
    return _tiny_sampler().sample(torch.zeros(1, 1, 16, 16), **{"steps": 1, "ensemble": 1, **kw})


def _make_split(val_fraction=0.5, seed=0):
    from spadfast.study.split import make_split

    return make_split(["a", "b", "c", "d"], val_fraction, seed)


def _check_size(v):
    from spadfast.io.files import check_size

    return check_size(v)


def _surface(ndim):
    from spadfast.evaluation.metrics import surface

    return surface(np.zeros((3, 3, 3), bool), ndim=ndim)


def _unet(**kw):
    from spadfast.models.unet import SPADUNet

    return SPADUNet(**{"in_channels": 2, "base_channels": 8, "channel_mults": (1,), "attention_levels": (), **kw})


# name in the error, call with the value, an accepted numpy value, values refused (wrong type, NaN, out of range)
INT_SITES = {
    "make_betas": ("num_train_timesteps", lambda v: schedule.make_betas("linear", v), np.int64(10), [0]),
    "ddim_timesteps S": ("num_inference_steps", lambda v: schedule.ddim_timesteps(10, v), np.int64(5), [0, 11]),
    "ddim_timesteps offset": ("steps_offset", lambda v: schedule.ddim_timesteps(10, 5, "leading", v), np.int64(1),
                              [-1, 2]),
    "progress_strength": ("stages", lambda v: schedule.progress_strength(0.5, "step", stages=v), np.int64(2), [0]),
    "make_split": ("split_seed", lambda v: _make_split(seed=v), np.int64(1), [-1]),
    "check_size": ("image_size", _check_size, np.int64(8), [0]),
    "surface": ("ndim", _surface, np.int64(3), [1, 4]),
    "SPADUNet": ("base_channels", lambda v: _unet(base_channels=v), np.int64(8), [0]),
    "sampler steps": ("steps", lambda v: _sample(steps=v), np.int64(1), [0, 11]),
    "sampler ensemble": ("ensemble", lambda v: _sample(ensemble=v), np.int64(1), [0]),
    "sampler seed": ("seed", lambda v: _sample(seed=v), np.int64(3), [-1]),
}
NUMBER_SITES = {
    "make_split": ("val_fraction", lambda v: _make_split(val_fraction=v), np.float32(0.5), [0, 1, math.inf]),
    "check_eta": ("eta", schedule.check_eta, np.float32(0.5), [-0.1, 1.5]),
    "gaussian_weights": ("sigma", reference.gaussian_weights, np.float32(1.0), [-1.0, math.inf]),
    "ddim_step eta": ("eta", lambda v: ops.ddim_step(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 4), 0.4, 0.6, v,
                                                     backend="reference"), np.float32(0.5), [1.5]),
}


@pytest.mark.parametrize("site", list(INT_SITES))
def test_int_arguments_refuse_bools_floats_nan_and_out_of_range_and_accept_numpy_ints(site):
    name, call, good, out_of_range = INT_SITES[site]
    call(good)
    for bad in [True, np.True_, 2.5, float("nan"), *out_of_range]:
        with raises_naming((TypeError, ValueError), name):
            call(bad)


@pytest.mark.parametrize("site", list(NUMBER_SITES))
def test_number_arguments_refuse_bools_nan_and_out_of_range_and_accept_numpy_floats(site):
    name, call, good, out_of_range = NUMBER_SITES[site]
    call(good)
    for bad in [True, np.True_, "0.5", float("nan"), *out_of_range]:
        with raises_naming((TypeError, ValueError), name):
            call(bad)


def test_config_fields_store_numpy_scalars_as_python_scalars():
    from .helpers import tiny_config

    cfg = tiny_config(batch_size=np.int64(3), lr=np.float32(0.5), ema_decay=np.float64(0.9))
    assert type(cfg.batch_size) is int and type(cfg.lr) is float and type(cfg.ema_decay) is float
    for bad in (True, np.True_, 2.5):
        with raises_naming(TypeError, "batch_size"):
            tiny_config(batch_size=bad)


# ------------------------------------------------------------------------------------------------ images
BAD_IMAGES = {
    "list": (TypeError, lambda: [[0.0]]),
    "2-D": (ValueError, lambda: torch.zeros(16, 16)),
    "empty batch": (ValueError, lambda: torch.zeros(0, 1, 16, 16)),
    "channels": (ValueError, lambda: torch.zeros(1, 3, 16, 16)),
    "integer": (TypeError, lambda: torch.zeros(1, 1, 16, 16, dtype=torch.int64)),
    "NaN": (ValueError, lambda: torch.full((1, 1, 16, 16), float("nan"))),
    "inf": (ValueError, lambda: torch.full((1, 1, 16, 16), float("inf"))),
}


@pytest.mark.parametrize("case", list(BAD_IMAGES))
def test_check_images_names_images(case):
    exc, make = BAD_IMAGES[case]
    with raises_naming(exc, "images"):
        check_images(make(), channels=1)


def test_check_images_returns_a_batch_and_whether_the_input_was_one_image():
    one = torch.zeros(1, 16, 16)
    batch, single = check_images(one, 1, unbatched=True)
    assert batch.shape == (1, 1, 16, 16) and single
    with raises_naming(ValueError, "images"):
        check_images(one, 1)


@pytest.fixture(scope="module")
def sampling_entry_points():
    import copy

    from spadfast import SPADTrainer
    from spadfast.infer.segmenter import Segmenter

    from .helpers import tiny_config

    trainer = SPADTrainer(tiny_config())
    segmenter = Segmenter(trainer.config, copy.deepcopy(trainer.model), trainer.sampler.alphas_cumprod)
    kw = dict(steps=1, ensemble=1)
    return {
        "SPADTrainer.sample": lambda x: trainer.sample(x, **kw),
        "SPADTrainer.sample [C,H,W]": lambda x: trainer.sample(x[0], **kw),
        "SPADTrainer.segment": lambda x: trainer.segment(x, **kw),
        "Segmenter.segment": lambda x: segmenter.segment(x, **kw),
        "DDIMSampler.sample": lambda x: trainer.sampler.sample(x, **kw),
    }


@pytest.mark.parametrize("entry", ["SPADTrainer.sample", "SPADTrainer.sample [C,H,W]", "SPADTrainer.segment",
                                   "Segmenter.segment", "DDIMSampler.sample"])
def test_images_are_checked_exactly_once_per_public_sampling_call(entry, sampling_entry_points, monkeypatch):
    import spadfast.diffusion.sampler
    import spadfast.infer.segmenter
    import spadfast.train.trainer

    calls = []

    def spy(*args, **kwargs):
        calls.append(args)
        return check_images(*args, **kwargs)

    for module in (spadfast.train.trainer, spadfast.diffusion.sampler, spadfast.infer.segmenter):
        monkeypatch.setattr(module, "check_images", spy)
    sampling_entry_points[entry](torch.zeros(2, 1, 16, 16))
    assert len(calls) == 1
    with raises_naming(ValueError, "images"):
        sampling_entry_points[entry](torch.full((2, 1, 16, 16), float("nan")))
