import pytest
import torch

from spadfast import DDIMSampler
from spadfast.schedule import alphas_cumprod, make_betas


class ToyDenoiser(torch.nn.Module):
    """A fixed, deterministic stand-in for the UNet: smooth in x, depends on the image and on t."""

    def __init__(self, in_channels: int):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.weight = torch.nn.Parameter(torch.randn(1, in_channels, 3, 3, generator=g) * 0.2)

    def forward(self, x, t):
        out = torch.nn.functional.conv2d(x, self.weight, padding=1)
        return torch.tanh(out) * (0.5 + t.view(-1, 1, 1, 1) / 2000)


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_loop_matches_diffusers(spacing, prediction_type):
    steps, T = 20, 1000  # 20 divides 1000, so diffusers' "t - T//S" previous step is right for both spacings
    model = ToyDenoiser(2)
    sampler = DDIMSampler(model, alphas_cumprod(make_betas("linear", T)), prediction_type=prediction_type,
                          steps=steps, spacing=spacing, clip_sample=1.0)
    images = torch.rand(2, 1, 12, 10) * 2 - 1
    result = sampler.sample(images, ensemble=2, seed=3, return_members=True)

    DDIMScheduler = pytest.importorskip("diffusers").DDIMScheduler  # absent on some GPU machines
    sched = DDIMScheduler(num_train_timesteps=T, beta_schedule="linear", clip_sample=True,
                          timestep_spacing=spacing, prediction_type=prediction_type, set_alpha_to_one=True)
    sched.set_timesteps(steps)
    x = torch.randn((4, 1, 12, 10), generator=torch.Generator().manual_seed(3))
    imgs = images.repeat_interleave(2, dim=0)
    with torch.no_grad():
        for t in sched.timesteps:
            out = model(torch.cat([x, imgs], 1), torch.full((4,), float(t)))
            x = sched.step(out, t, x, eta=0.0).prev_sample
    expected = ((x.clamp(-1, 1) + 1) / 2).view(2, 2, 12, 10)
    torch.testing.assert_close(result.members, expected, rtol=1e-5, atol=1e-5)


def test_chunking_and_seed():
    model = ToyDenoiser(3)
    ac = alphas_cumprod(make_betas("linear", 1000))
    images = torch.rand(3, 1, 9, 11) * 2 - 1
    whole = DDIMSampler(model, ac, perturb_mode="condition", steps=4, chunk=64).sample(images, ensemble=3, seed=1)
    parts = DDIMSampler(model, ac, perturb_mode="condition", steps=4, chunk=2).sample(images, ensemble=3, seed=1)
    torch.testing.assert_close(whole.probs, parts.probs, rtol=0, atol=1e-6)
    other = DDIMSampler(model, ac, perturb_mode="condition", steps=4).sample(images, ensemble=3, seed=2)
    assert not torch.equal(whole.probs, other.probs)
    assert (whole.std > 0).any()


def test_eta_sampling_is_deterministic_per_seed():
    model = ToyDenoiser(2)
    sampler = DDIMSampler(model, alphas_cumprod(make_betas("linear", 1000)), steps=5, eta=1.0)
    images = torch.rand(1, 1, 8, 8)
    a = sampler.sample(images, ensemble=2, seed=0).probs
    assert torch.equal(a, sampler.sample(images, ensemble=2, seed=0).probs)
    assert not torch.equal(a, sampler.sample(images, ensemble=2, seed=1).probs)


def test_bad_arguments():
    sampler = DDIMSampler(ToyDenoiser(2), alphas_cumprod(make_betas("linear", 100)), steps=5)
    with pytest.raises(ValueError, match="`steps`"):
        sampler.sample(torch.zeros(1, 1, 8, 8), steps=101)
    with pytest.raises(ValueError, match="`images`"):
        sampler.sample(torch.zeros(1, 8, 8))
    with pytest.raises(TypeError, match="`images`"):
        sampler.sample(torch.zeros(1, 1, 8, 8, dtype=torch.int64))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graph_matches_eager():
    model = ToyDenoiser(2).cuda()
    ac = alphas_cumprod(make_betas("linear", 1000))
    images = torch.rand(2, 1, 32, 32, device="cuda")
    eager = DDIMSampler(model, ac, steps=10, cuda_graph=False).sample(images, ensemble=3, seed=4)
    graph = DDIMSampler(model, ac, steps=10, cuda_graph=True)
    first = graph.sample(images, ensemble=3, seed=4)
    second = graph.sample(images, ensemble=3, seed=4)  # replay
    torch.testing.assert_close(first.probs, eager.probs, rtol=1e-5, atol=1e-5)
    assert torch.equal(first.probs, second.probs)
    assert len(graph._graphs) == 1

