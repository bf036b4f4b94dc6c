"""The trainer and sampler run end to end on the Triton kernels (interpreted on CPU) and agree with the reference."""

import pytest
import torch

from spadfast import SPADTrainer, spad_perturb
from spadfast.ops.blobs import blob_masks

from ..helpers import tiny_config


def _masks(B=3, H=16, W=16):
    return blob_masks((B, 1, H, W), cell=max(1, H // 4)).float()


@pytest.mark.slow
def test_perturbation_on_kernels_matches_statistics_and_passthrough(kernel_device):
    """In-kernel Philox (Triton) and the torch generator (reference) draw other bits but the same distribution:
    inside the target and around its boundary the perturbation residuals agree in mean, spread and in the share of
    untouched pixels (anchors, and noise clamped at 1); far from the target both return the mask bit for bit."""
    m = _masks(B=4, H=40, W=40).to(kernel_device)
    progress = 0.1
    ref = spad_perturb(m, progress, seed=1, backend="reference")
    tri = spad_perturb(m, progress, seed=1, backend="triton")
    assert tri.shape == ref.shape and tri.dtype == ref.dtype
    assert torch.equal(tri, spad_perturb(m, progress, seed=1, backend="triton"))  # deterministic per seed
    assert not torch.equal(tri, spad_perturb(m, progress, seed=2, backend="triton"))
    background = (m == 0) & ~torch.nn.functional.max_pool2d(m, 9, 1, 4).bool()
    assert (ref == m)[background].all() and (tri == m)[background].all()
    assert torch.equal(spad_perturb(m, 0.9, seed=1, backend="triton"), m)  # past pas_end: the clean mask

    edge = torch.nn.functional.max_pool2d(m, 3, 1, 1) != -torch.nn.functional.max_pool2d(-m, 3, 1, 1)
    regions = {"target interior": (m == 1) & ~edge, "boundary": edge}
    for name, region in regions.items():
        r, t = (ref - m)[region].double(), (tri - m)[region].double()
        assert r.numel() > 500, name
        assert (r != 0).any() and (t != 0).any(), name  # the test can fail: there is noise to compare
        se = ((r.var() + t.var()) / r.numel()).sqrt()
        assert abs(float(r.mean() - t.mean())) < 5 * float(se) + 5e-3, (name, float(r.mean()), float(t.mean()))
        assert abs(float(r.std() / t.std()) - 1) < 0.15, (name, float(r.std()), float(t.std()))
        untouched_r, untouched_t = float((r == 0).double().mean()), float((t == 0).double().mean())
        assert abs(untouched_r - untouched_t) < 0.06, (name, untouched_r, untouched_t)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["target", "condition"])
def test_trainer_and_sampler_on_kernels(kernel_device, mode):
    cfg = tiny_config(ops_backend="triton", device=kernel_device, perturb_mode=mode, synthetic_train=4)
    trainer = SPADTrainer(cfg)
    trainer.fit(2)
    images = torch.rand(1, 1, 16, 16) * 2 - 1
    tri = trainer.segment(images, steps=3, ensemble=2, seed=0)
    graphs_before = len(trainer.sampler._graphs)
    trainer.sampler.backend = "reference"
    ref = trainer.segment(images, steps=3, ensemble=2, seed=0)
    torch.testing.assert_close(tri.probs, ref.probs, rtol=1e-5, atol=1e-5)
    if graphs_before:  # on a GPU: the reference run is a capture of its own, never a replay of the Triton graph
        assert len(trainer.sampler._graphs) == graphs_before + 1


def test_eta_noise_does_not_depend_on_chunking_on_kernels(kernel_device):
    """In-kernel Philox counters are (step, row, pixel): any chunking draws the same eta noise for a row."""
    from spadfast import DDIMSampler
    from spadfast.diffusion.schedule import alphas_cumprod, make_betas

    from ..diffusion.test_sampler import ToyDenoiser

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
