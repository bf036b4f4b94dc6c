"""Triton ``ddim_step`` against ``spadfast.ops.reference.ddim_step`` and diffusers' ``DDIMScheduler.step``."""

import pytest
import torch

from spadfast import ops
from spadfast.kernels.ddim import ddim_step as triton_ddim_step
from spadfast.ops import reference
from spadfast.ops.constants import PREDICTION_TYPES
from spadfast.ops.op_table import TOLERANCES

from .layouts import LAYOUTS, column_major
from .normal_stats import assert_standard_normal, assert_uncorrelated_neighbours

BLOCK = (64, 128)  # one program per image for the shapes below under the interpreter


def _inputs(shape, device, dtype=torch.float32):
    sample = torch.randn(shape, device=device).to(dtype)
    model_output = torch.randn(shape, device=device).to(dtype)
    noise = torch.randn(shape, device=device).to(dtype)
    B = shape[0]
    # Rows at different timesteps: alpha_prev > alpha_t (one step towards the clean end), last row at the end.
    a_t = torch.linspace(0.05, 0.9, B, device=device) if B > 1 else torch.tensor([0.4], device=device)
    a_prev = torch.where(a_t > 0.85, torch.ones_like(a_t), a_t + 0.08)
    return sample, model_output, noise, a_t, a_prev


def _triton(*args, **kwargs):
    return ops.ddim_step(*args, backend="triton", **kwargs)


def _assert_pair_close(got, want, dtype):
    rtol, atol = TOLERANCES[dtype]
    for g, w in zip(got, want):
        assert g.dtype == w.dtype == dtype
        assert g.shape == w.shape
        torch.testing.assert_close(g, w, rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", list(TOLERANCES))
@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
@pytest.mark.parametrize("eta", [0.0, 0.5])
@pytest.mark.parametrize("clip", [None, 1.0])
def test_matches_reference(kernel_device, dtype, prediction_type, eta, clip):
    sample, model_output, noise, a_t, a_prev = _inputs((3, 1, 37, 53), kernel_device, dtype)
    args = (sample, model_output, a_t, a_prev, eta, noise, clip, prediction_type)
    _assert_pair_close(_triton(*args), reference.ddim_step(*args), dtype)


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(1, 1, 37, 53), (2, 3, 17, 19), (5, 33), (4, 7, 9)])
@pytest.mark.parametrize("alpha_kind", ["float", "scalar_tensor", "per_row", "b111", "per_channel", "full"])
def test_alpha_forms(kernel_device, shape, alpha_kind):
    sample, model_output, noise, a_t, a_prev = _inputs(shape, kernel_device)
    B = shape[0]
    ones = [1] * (len(shape) - 1)
    if alpha_kind == "float":
        a_t, a_prev = 0.37, 0.52
    elif alpha_kind == "scalar_tensor":  # what the sampler passes: a 0-d device tensor per step
        a_t, a_prev = a_t[0], a_prev[0]
    elif alpha_kind == "b111":
        a_t, a_prev = a_t.view(B, *ones), a_prev.view(B, *ones)
    elif alpha_kind == "per_channel":  # broadcast along every dimension but the last
        a_t = torch.rand(shape[-1], device=kernel_device) * 0.5 + 0.2
        a_prev = a_t + 0.1
    elif alpha_kind == "full":
        a_t = torch.rand(shape, device=kernel_device) * 0.5 + 0.2
        a_prev = a_t + 0.1
    args = (sample, model_output, a_t, a_prev, 0.5, noise, 1.5, "epsilon")
    _assert_pair_close(_triton(*args), reference.ddim_step(*args), torch.float32)


@pytest.mark.parametrize("sample_layout", list(LAYOUTS))
@pytest.mark.parametrize("other_layout", ["contiguous", "channels_last", "strided_view"])
def test_layouts(kernel_device, sample_layout, other_layout):
    # [B,1,H,W], what the sampler passes: every layout is read in place.
    sample, model_output, noise, a_t, a_prev = _inputs((2, 1, 17, 21), kernel_device)
    want = reference.ddim_step(sample, model_output, a_t, a_prev, 0.5, noise, None, "v_prediction")
    s = LAYOUTS[sample_layout](sample)
    mo, n = LAYOUTS[other_layout](model_output), LAYOUTS[other_layout](noise)
    got = _triton(s, mo, a_t, a_prev, 0.5, n, None, "v_prediction")
    _assert_pair_close(got, want, torch.float32)
    if sample_layout != "strided_view":  # outputs keep the sample's dense layout
        assert got[0][:, 0].stride() == got[1][:, 0].stride() == s[:, 0].stride()


@pytest.mark.parametrize("layout", ["channels_last", "column_major", "strided_view"])
def test_multichannel_layouts(kernel_device, layout):
    # C > 1 in channels-last has no [B, M, N] view: the launcher copies it; the result is unchanged.
    sample, model_output, noise, a_t, a_prev = _inputs((2, 3, 17, 21), kernel_device)
    args = (a_t, a_prev, 0.5, noise, None, "epsilon")
    got = _triton(LAYOUTS[layout](sample), LAYOUTS[layout](model_output), *args)
    _assert_pair_close(got, reference.ddim_step(sample, model_output, *args), torch.float32)


def test_rank5_mixed_layouts_fall_back(kernel_device):
    # More than 4 non-mergeable dimensions: the launcher copies to row-major; the result is unchanged.
    shape = (2, 3, 4, 5, 6)
    sample, model_output, noise, a_t, a_prev = _inputs(shape, kernel_device)
    s = sample.permute(0, 4, 2, 1, 3).contiguous().permute(0, 3, 2, 4, 1)
    mo = model_output.permute(0, 2, 4, 3, 1).contiguous().permute(0, 4, 1, 3, 2)
    args = (a_t, a_prev, 0.5, noise, 1.0, "sample")
    _assert_pair_close(_triton(s, mo, *args), reference.ddim_step(sample, model_output, *args), torch.float32)


# ------------------------------------------------------------------------------------------------------- diffusers
def _diffusers_scheduler(prediction_type, clip):
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule="linear",
        clip_sample=clip is not None,
        clip_sample_range=clip if clip is not None else 1.0,
        set_alpha_to_one=True,
        prediction_type=prediction_type,
    )
    scheduler.set_timesteps(50)
    return scheduler


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
@pytest.mark.parametrize("eta", [0.0, 0.5])
@pytest.mark.parametrize("clip", [None, 1.0])
def test_matches_diffusers(kernel_device, prediction_type, eta, clip):
    scheduler = _diffusers_scheduler(prediction_type, clip)
    # One row per timestep, the last one at the final step (alpha_prev = final_alpha_cumprod = 1).
    timesteps = [int(scheduler.timesteps[i]) for i in (0, 20, 49)]
    stride = scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    a_t = torch.stack([scheduler.alphas_cumprod[t] for t in timesteps])
    a_prev = torch.stack(
        [scheduler.alphas_cumprod[t - stride] if t - stride >= 0 else scheduler.final_alpha_cumprod for t in timesteps]
    )
    sample, model_output, noise = (torch.randn(3, 1, 37, 53) for _ in range(3))
    want = [
        scheduler.step(model_output[i : i + 1], t, sample[i : i + 1], eta=eta, variance_noise=noise[i : i + 1])
        for i, t in enumerate(timesteps)
    ]
    want_prev = torch.cat([w.prev_sample for w in want]).to(kernel_device)
    want_x0 = torch.cat([w.pred_original_sample for w in want]).to(kernel_device)
    sample, model_output, noise = (t.to(kernel_device) for t in (sample, model_output, noise))
    prev, x0 = triton_ddim_step(
        sample,
        model_output,
        a_t.to(kernel_device),
        a_prev.to(kernel_device),
        eta,
        noise,
        clip,
        prediction_type,
        block_size=BLOCK,
    )
    rtol, atol = TOLERANCES[torch.float32]
    torch.testing.assert_close(x0, want_x0, rtol=rtol, atol=atol)
    torch.testing.assert_close(prev, want_prev, rtol=rtol, atol=atol)


# -------------------------------------------------------------------------------------------------- Philox noise
def _stochastic(sample, model_output, **kwargs):
    return triton_ddim_step(sample, model_output, 0.3, 0.45, 0.8, block_size=BLOCK, **kwargs)[0]


def test_philox_determinism(kernel_device):
    sample, model_output, *_ = _inputs((2, 1, 37, 53), kernel_device)
    a = _stochastic(sample, model_output, seed=7, offset=3)
    assert torch.equal(a, _stochastic(sample, model_output, seed=7, offset=3))
    assert not torch.equal(a, _stochastic(sample, model_output, seed=7, offset=4))
    assert not torch.equal(a, _stochastic(sample, model_output, seed=8, offset=3))
    # Counters are the row-major element index: the draws do not depend on the layout.
    cl = _stochastic(column_major(sample), column_major(model_output), seed=7, offset=3)
    assert torch.equal(a, cl)
    # offset shifts the counters: with offset k, element i draws what element i + k draws with offset 0.
    zero = torch.zeros_like(sample)
    det = _stochastic(sample, model_output, noise=zero)
    std = 0.8 * ((1 - 0.45) / (1 - 0.3) * (1 - 0.3 / 0.45)) ** 0.5
    z3 = ((a - det) / std).flatten()
    z0 = ((_stochastic(sample, model_output, seed=7, offset=0) - det) / std).flatten()
    torch.testing.assert_close(z3[:-3], z0[3:], rtol=0, atol=1e-5)


def test_philox_generator_and_global_rng(kernel_device):
    sample, model_output, *_ = _inputs((1, 1, 37, 53), kernel_device)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a = _stochastic(sample, model_output, generator=g1)
    assert torch.equal(a, _stochastic(sample, model_output, generator=g2))
    assert not torch.equal(a, _stochastic(sample, model_output, generator=g1))  # the generator advanced
    torch.manual_seed(11)
    b = _stochastic(sample, model_output)
    torch.manual_seed(11)
    assert torch.equal(b, _stochastic(sample, model_output))
    # eta == 0 draws nothing: the global generator is untouched.
    state = torch.get_rng_state()
    triton_ddim_step(sample, model_output, 0.3, 0.45, 0.0, block_size=BLOCK)
    assert torch.equal(state, torch.get_rng_state())


def test_philox_statistics(kernel_device):
    shape = (2, 1, 64, 64)
    sample, model_output, *_ = _inputs(shape, kernel_device)
    # The noise is recovered exactly as (prev(seed) - prev(noise=0)) / std; the zero tensor is a probe, not data.
    prev = _stochastic(sample, model_output, seed=1234)
    det = _stochastic(sample, model_output, noise=torch.zeros(shape, device=kernel_device))
    std = 0.8 * ((1 - 0.45) / (1 - 0.3) * (1 - 0.3 / 0.45)) ** 0.5
    z = (prev - det) / std
    assert_standard_normal(z)
    assert_uncorrelated_neighbours(z)


# ----------------------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "change, error, match",
    [
        ({"prediction_type": "x0"}, ValueError, "prediction_type"),
        ({"eta": -0.1}, ValueError, "eta"),
        ({"alpha_prod_t": 1.5}, ValueError, "alpha_prod_t"),
        ({"alpha_prod_t_prev": 0.0}, ValueError, "alpha_prod_t_prev"),
        ({"alpha_prod_t": torch.full((3,), 1.2)}, ValueError, "alpha_prod_t"),
        ({"alpha_prod_t": torch.full((2,), 0.5)}, ValueError, "alpha_prod_t"),
        ({"alpha_prod_t": "0.5"}, TypeError, "alpha_prod_t"),
        ({"clip_sample_range": 0.0}, ValueError, "clip_sample_range"),
        ({"noise": torch.randn(3, 1, 5, 6)}, ValueError, "noise"),
        ({"model_output": torch.randn(3, 1, 5, 7).int()}, TypeError, "model_output"),
        ({"seed": -1}, ValueError, "seed"),
        ({"sample": torch.randn(3, 1, 5, 7, requires_grad=True)}, ValueError, "sample"),
    ],
)
def test_invalid_arguments_like_reference(kernel_device, change, error, match):
    kwargs = {
        "sample": torch.randn(3, 1, 5, 7),
        "model_output": torch.randn(3, 1, 5, 7),
        "alpha_prod_t": 0.5,
        "alpha_prod_t_prev": 0.6,
        "eta": 0.5,
        "noise": None,
        "clip_sample_range": None,
        "prediction_type": "epsilon",
    }
    kwargs.update(change)
    kwargs = {k: v.to(kernel_device) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    for fn in (reference.ddim_step, triton_ddim_step):
        with pytest.raises(error, match=match):
            fn(**kwargs)


@pytest.mark.parametrize("name", ["noise", "alpha_prod_t", "alpha_prod_t_prev"])
def test_requires_grad_raises(kernel_device, name):
    sample, model_output, noise, a_t, a_prev = _inputs((3, 1, 5, 7), kernel_device)
    kwargs = {"noise": noise, "alpha_prod_t": a_t, "alpha_prod_t_prev": a_prev}
    kwargs[name] = kwargs[name].clone().requires_grad_(True)
    with pytest.raises(ValueError, match=f"`{name}` must not require grad"):
        triton_ddim_step(sample, model_output, eta=0.5, **kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graph_capture(kernel_device):
    sample, model_output, _noise, a_t, a_prev = _inputs((3, 1, 37, 53), "cuda")
    args = (sample, model_output, a_t, a_prev, 0.5, None, 1.0, "epsilon")
    want = triton_ddim_step(*args, seed=3, validate=False)  # also compiles before capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        got = triton_ddim_step(*args, seed=3, validate=False)
    a_t.mul_(0.9)  # the graph reads the alphas from device memory at replay
    graph.replay()
    torch.testing.assert_close(got[0], triton_ddim_step(*args, seed=3, validate=False)[0], rtol=0, atol=0)
    assert not torch.equal(got[0], want[0])


def test_noise_on_another_device_raises(kernel_device):
    sample, model_output, *_ = _inputs((3, 1, 5, 7), kernel_device)
    noise = torch.empty(sample.shape, device="meta")
    with pytest.raises(ValueError, match="`noise` must be on"):
        triton_ddim_step(sample, model_output, 0.5, 0.6, 0.5, noise)
