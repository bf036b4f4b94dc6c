"""The trainer and sampler run end to end on the Triton kernels (interpreted on CPU) and agree with the reference."""

import pytest
import torch

from spadfast import SPADTrainer, spad_perturb

from ..helpers import tiny_config


def _masks(B=3, H=16, W=16):
    g = torch.Generator().manual_seed(0)
    low = torch.rand((B, 1, 4, 4), generator=g)
    return (torch.nn.functional.interpolate(low, size=(H, W), mode="bilinear") > 0.5).float()


def test_perturbation_on_kernels_matches_statistics_and_passthrough(kernel_device):
    m = _masks().to(kernel_device)
    ref = spad_perturb(m, 0.1, seed=1, backend="reference")
    tri = spad_perturb(m, 0.1, seed=1, backend="triton")
    assert tri.shape == ref.shape and tri.dtype == ref.dtype
    # both leave the same pixels untouched far from the target (bits differ only where noise is drawn)
    untouched_ref, untouched_tri = ref == m, tri == m
    background = (m == 0) & ~torch.nn.functional.max_pool2d(m, 9, 1, 4).bool()
    assert untouched_ref[background].all() and untouched_tri[background].all()
    assert torch.equal(spad_perturb(m, 0.9, seed=1, backend="triton"), m)  # past pas_end: the clean mask


@pytest.mark.parametrize("mode", ["target", "condition"])
def test_trainer_and_sampler_on_kernels(kernel_device, mode):
    cfg = tiny_config(ops_backend="triton", device=kernel_device, perturb_mode=mode, synthetic_train=4)
    trainer = SPADTrainer(cfg)
    trainer.fit(2)
    images = torch.rand(1, 1, 16, 16) * 2 - 1
    tri = trainer.segment(images, steps=3, ensemble=2, seed=0)
    trainer.sampler.backend = "reference"
    ref = trainer.segment(images, steps=3, ensemble=2, seed=0)
    torch.testing.assert_close(tri.probs, ref.probs, rtol=1e-5, atol=1e-5)


def test_eta_noise_does_not_depend_on_chunking_on_kernels(kernel_device):
    """In-kernel Philox counters are (step, row, pixel): any chunking draws the same eta noise for a row."""
    from spadfast import DDIMSampler
    from spadfast.schedule import alphas_cumprod, make_betas

    from ..test_sampler import ToyDenoiser

    model = ToyDenoiser(2).to(kernel_device)
    ac = alphas_cumprod(make_betas("linear", 1000))
    images = torch.rand(2, 1, 8, 8)
    runs = [
        DDIMSampler(model, ac, steps=3, eta=1.0, chunk=c, backend="triton").sample(
            images, ensemble=2, seed=5, return_members=True
        )
        for c in (1, 3, 64)
    ]
    for other in runs[1:]:
        torch.testing.assert_close(other.members, runs[0].members, rtol=0, atol=1e-6)
    assert not torch.equal(runs[0].members[0, 0], runs[0].members[0, 1])  # members get different noise
