import pytest
import torch

from spadfast import PerturbConfig, spad_perturb
from spadfast.perturb import perturb_factor
from spadfast.reference import boundary_band


def _blobs(B=4, H=40, W=36, seed=0):
    g = torch.Generator().manual_seed(seed)
    low = torch.rand((B, 1, H // 6, W // 6), generator=g)
    return (torch.nn.functional.interpolate(low, size=(H, W), mode="bilinear") > 0.5).float()


def test_clean_mask_returned_at_and_after_end():
    m = _blobs()
    cfg = PerturbConfig(pas_end=0.8)
    for p in (0.8, 0.95, 1.0):
        assert torch.equal(spad_perturb(m, p, cfg, seed=1), m)
    assert perturb_factor(0.0, cfg) == 1.0


def test_early_perturbation_changes_target_and_band_only():
    m = _blobs()
    cfg = PerturbConfig(clamp=False)
    out = spad_perturb(m, 0.0, cfg, seed=3)
    changed = out != m
    assert changed.any()
    band = boundary_band(m, cfg.band_radius_max)
    # outside the band only target pixels may change (ScD); the background far from the boundary is untouched
    assert not (changed & ~band & (m == 0)).any()
    assert (changed & band).any() and (changed & ~band & (m == 1)).any()


def test_strength_decays_with_progress_and_clamp_keeps_range():
    m = _blobs(B=8, H=64, W=64)
    dev = [float((spad_perturb(m, p, PerturbConfig(), seed=5) - m).abs().mean()) for p in (0.0, 0.3, 0.6)]
    assert dev[0] > dev[1] > dev[2] > 0
    out = spad_perturb(m, 0.0, PerturbConfig(clamp=True), seed=5)
    assert out.min() >= 0 and out.max() <= 1


def test_deterministic_per_seed_and_offset():
    m = _blobs()
    a = spad_perturb(m, 0.1, seed=7, offset=0)
    assert torch.equal(a, spad_perturb(m, 0.1, seed=7, offset=0))
    assert not torch.equal(a, spad_perturb(m, 0.1, seed=7, offset=2 * m.numel()))
    assert not torch.equal(a, spad_perturb(m, 0.1, seed=8, offset=0))


def test_disabled_returns_mask_and_bad_config_errors():
    m = _blobs()
    assert torch.equal(spad_perturb(m, 0.0, PerturbConfig(enabled=False)), m)
    with pytest.raises(ValueError, match="`pas_end`"):
        PerturbConfig(pas_end=0.0)
    with pytest.raises(ValueError, match="`mask`"):
        spad_perturb(m * 0.5, 0.0, seed=0)
