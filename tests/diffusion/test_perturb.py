import math

import pytest
import torch

from spadfast import PerturbConfig, SPADConfig, SPADTrainer, ops, spad_perturb
from spadfast.diffusion.perturb import perturb_factor
from spadfast.ops.blobs import blob_masks
from spadfast.ops.reference import boundary_band
from spadfast.study.ablate import VARIANTS_CORE, _merge, variant_overrides


def _blobs(B=4, H=40, W=36, seed=0):
    return blob_masks((B, 1, H, W), seed=seed).float()


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


# --------------------------------------------------------------------------------------- ScD / BcD switches
def _masks() -> list[torch.Tensor]:
    """Binary masks ``[B,1,H,W]``: random blobs, one rectangle, a full and an empty image."""
    rect = torch.zeros((1, 1, 23, 29))
    rect[..., 5:17, 7:21] = 1
    return [_blobs(B=3, H=40, W=36, seed=1), _blobs(B=2, H=33, W=47, seed=2), rect,
            torch.ones((1, 1, 12, 12)), torch.zeros((1, 1, 12, 12))]


def _scd_alone(m, f, cfg, seed, offset, backend="auto"):
    return ops.target_noise(m, cfg.scd_max * f, cfg.anchor_size, cfg.keep_ratio, seed=seed, offset=offset,
                            backend=backend)


def _bcd_alone(m, f, cfg, seed, offset, base=None, backend="auto"):
    radius = math.ceil(cfg.band_radius_max * f)
    return ops.boundary_blur(m, cfg.blur_sigma_max * f, cfg.bcd_max * f, radius, base=base, seed=seed,
                             offset=offset + m.numel(), backend=backend)


def _variant_configs() -> dict[str, PerturbConfig]:
    base = SPADConfig().to_dict()
    return {name: SPADConfig.from_dict(_merge(base, changes)).perturb
            for name, changes in variant_overrides(base).items() if name in VARIANTS_CORE}


@pytest.mark.parametrize("progress", [0.0, 0.1, 0.35, 0.6, 0.79])
def test_each_ablation_variant_changes_exactly_what_its_name_says(progress):
    """SPAD = BcD over ScD; w/o BcD = ScD alone; w/o ScD = BcD alone; baseline = the clean mask; bit for bit."""
    seed, offset = 11, 64
    configs = _variant_configs()
    for m in _masks():
        f = perturb_factor(progress, configs["SPAD"])
        scd = _scd_alone(m, f, configs["SPAD"], seed, offset)
        want = {
            "SPAD": _bcd_alone(m, f, configs["SPAD"], seed, offset, base=scd),
            "w/o ScD": _bcd_alone(m, f, configs["w/o ScD"], seed, offset),
            "w/o BcD": scd.clone(),
            "baseline": m.clone(),
        }
        for name, cfg in configs.items():
            got = spad_perturb(m, progress, cfg, seed=seed, offset=offset)
            expected = want[name].clamp(0, 1) if cfg.clamp else want[name]
            assert torch.equal(got, expected), (name, progress, tuple(m.shape))
        # what each variant may change: ScD only target pixels, BcD only the band
        band = boundary_band(m, math.ceil(configs["SPAD"].band_radius_max * f))
        changed_scd = spad_perturb(m, progress, configs["w/o BcD"], seed=seed, offset=offset) != m
        changed_bcd = spad_perturb(m, progress, configs["w/o ScD"], seed=seed, offset=offset) != m
        assert not (changed_scd & (m == 0)).any() and not (changed_bcd & ~band).any()


def test_ablation_variants_on_the_triton_backend(kernel_device):
    m = _blobs(B=1, H=12, W=14, seed=3).to(kernel_device)
    configs, seed, offset = _variant_configs(), 2, 0
    f = perturb_factor(0.2, configs["SPAD"])
    scd = _scd_alone(m, f, configs["SPAD"], seed, offset, backend="triton")
    want = {"SPAD": _bcd_alone(m, f, configs["SPAD"], seed, offset, base=scd, backend="triton"),
            "w/o ScD": _bcd_alone(m, f, configs["SPAD"], seed, offset, backend="triton"), "w/o BcD": scd, "baseline": m}
    for name, cfg in configs.items():
        got = spad_perturb(m, 0.2, cfg, seed=seed, offset=offset, backend="triton")
        assert torch.equal(got, want[name].clamp(0, 1)), name


def test_without_bcd_keeps_scd_noise_on_the_boundary():
    m = _blobs(B=4, H=48, W=48, seed=4)
    cfg = _variant_configs()["w/o BcD"]
    out = spad_perturb(m, 0.0, cfg, seed=3)
    edge = boundary_band(m, 0)
    changed = out != m
    on_edge, inside = changed[edge & (m == 1)].float().mean(), changed[~edge & (m == 1)].float().mean()
    # ScD changes about (1 - keep_ratio) / 2 of target pixels (the other half clamps back to 1), edge or not
    assert on_edge > 0.25 and abs(on_edge - inside) < 0.1


@pytest.mark.parametrize("progress", [0.0, 0.4])
def test_components_switched_off_or_all_zero_are_skipped(progress):
    seed, offset = 5, 0
    for m in _masks():
        full = PerturbConfig(clamp=False)
        f = perturb_factor(progress, full)
        scd = _scd_alone(m, f, full, seed, offset)
        bcd = _bcd_alone(m, f, full, seed, offset)
        cases = [
            (PerturbConfig(clamp=False, bcd=False), scd),
            (PerturbConfig(clamp=False, bcd_max=0.0, blur_sigma_max=0.0, band_radius_max=0), scd),
            (PerturbConfig(clamp=False, scd=False), bcd),
            (PerturbConfig(clamp=False, scd_max=0.0), bcd),
            (PerturbConfig(clamp=False, scd=False, bcd=False), m),
        ]
        for cfg, want in cases:
            assert torch.equal(spad_perturb(m, progress, cfg, seed=seed, offset=offset), want), cfg


def test_default_config_is_bcd_over_scd_with_a_generator():
    """The default path draws ScD then BcD from one generator, as it always has (checkpoints stay reproducible)."""
    m = _blobs(B=2, H=30, W=30, seed=6)
    cfg = PerturbConfig()
    f = perturb_factor(0.2, cfg)
    got = spad_perturb(m, 0.2, cfg, generator=torch.Generator().manual_seed(9))
    g = torch.Generator().manual_seed(9)
    scd = ops.target_noise(m, cfg.scd_max * f, cfg.anchor_size, cfg.keep_ratio, generator=g)
    want = ops.boundary_blur(m, cfg.blur_sigma_max * f, cfg.bcd_max * f, math.ceil(cfg.band_radius_max * f),
                             base=scd, generator=g, offset=m.numel())
    assert torch.equal(got, want.clamp(0, 1))


def _spad_both_ops_always(mask, progress, cfg=None, seed=None, offset=0, generator=None, validate=True,
                          backend="auto"):
    """SPAD without the ScD / BcD switches: both ops whenever f > 0."""
    cfg = cfg or PerturbConfig()
    f = perturb_factor(progress, cfg)
    if f == 0.0:
        return mask.to(mask.dtype if mask.is_floating_point() else torch.float32, copy=True)
    scd = ops.target_noise(mask, cfg.scd_max * f, cfg.anchor_size, cfg.keep_ratio, generator=generator, seed=seed,
                           offset=offset, validate=validate, backend=backend)
    out = ops.boundary_blur(mask, cfg.blur_sigma_max * f, cfg.bcd_max * f, math.ceil(cfg.band_radius_max * f),
                            base=scd, generator=generator, seed=seed, offset=offset + mask.numel(), validate=False,
                            backend=backend)
    return out.clamp_(0.0, 1.0) if cfg.clamp else out


def test_default_training_applies_both_ops_and_checkpoints_without_the_switches_load(tmp_path, monkeypatch):
    from spadfast.infer.segmenter import Segmenter
    from spadfast.models.checkpoint import read_checkpoint, write_checkpoint
    from spadfast.train import trainer as trainer_module

    from ..helpers import tiny_config

    cfg = tiny_config(train_steps=3)
    switched = SPADTrainer(cfg)
    switched.fit()
    monkeypatch.setattr(trainer_module, "spad_perturb", _spad_both_ops_always)
    both = SPADTrainer(cfg)
    both.fit()
    monkeypatch.undo()
    a, b = switched.state_tensors(), both.state_tensors()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    # a checkpoint whose config lacks `perturb.scd` / `perturb.bcd` loads with both on
    path = both.save(tmp_path / "run")
    tensors, meta = read_checkpoint(path)
    for key in ("scd", "bcd"):
        del meta["config"]["perturb"][key]
    write_checkpoint(path, tensors, meta)
    resumed = SPADTrainer.from_checkpoint(tmp_path / "run")
    assert resumed.config.perturb.scd is True and resumed.config.perturb.bcd is True and resumed.step == 3
    assert Segmenter.from_checkpoint(tmp_path / "run").config.perturb.bcd is True
