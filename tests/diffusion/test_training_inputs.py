"""Where the SPAD perturbation goes: the loss of every perturb mode and prediction type against hand computations."""

import itertools
import math

import pytest
import torch
from torch import nn

from spadfast import SPADTrainer
from spadfast.config import PERTURB_MODES, PerturbConfig
from spadfast.diffusion.perturb import perturb_factor
from spadfast.diffusion.schedule import add_noise
from spadfast.diffusion.training_inputs import (
    noised_pair,
    perturbed_rows,
    self_condition,
    supervised_loss,
    x0_from_prediction,
)
from spadfast.ops.constants import PREDICTION_TYPES

from ..helpers import tiny_config


def _example(seed: int = 0, shape=(5, 1, 7, 9)):
    g = torch.Generator().manual_seed(seed)
    clean = (torch.rand(shape, generator=g) > 0.5).float() * 2 - 1
    perturbed = (clean + 0.6 * torch.randn(shape, generator=g)).clamp(-1, 1)
    eps = torch.randn(shape, generator=g)
    a = torch.rand(shape[0], 1, 1, 1, generator=g) * 0.98 + 0.01
    return clean, perturbed, eps, a


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_input_mode_supervises_the_clean_mask(prediction_type):
    clean, perturbed, eps, a = _example()
    x_t, target = noised_pair("input", prediction_type, clean, perturbed, None, eps, a)
    torch.testing.assert_close(x_t, a.sqrt() * perturbed + (1 - a).sqrt() * eps)  # built from the perturbed mask
    # the x0 the target stands for is the clean mask, whatever the model predicts
    torch.testing.assert_close(x0_from_prediction(prediction_type, x_t, target, a), clean, atol=1e-4, rtol=1e-4)
    if prediction_type == "sample":
        assert torch.equal(target, clean)


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_target_mode_supervises_the_perturbed_mask(prediction_type):
    clean, perturbed, eps, a = _example(1)
    x_t, target = noised_pair("target", prediction_type, clean, perturbed, None, eps, a)
    torch.testing.assert_close(x_t, a.sqrt() * perturbed + (1 - a).sqrt() * eps)
    torch.testing.assert_close(x0_from_prediction(prediction_type, x_t, target, a), perturbed, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_condition_mode_noises_the_clean_mask(prediction_type):
    clean, perturbed, eps, a = _example(2)
    x_t, target = noised_pair("condition", prediction_type, clean, perturbed, None, eps, a)
    torch.testing.assert_close(x_t, a.sqrt() * clean + (1 - a).sqrt() * eps)
    torch.testing.assert_close(x0_from_prediction(prediction_type, x_t, target, a), clean, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("mode,prediction_type", list(itertools.product(PERTURB_MODES, PREDICTION_TYPES)))
def test_ddpm_ip_perturbs_only_the_noise_that_builds_x_t(mode, prediction_type):
    clean, perturbed, eps, a = _example(3)
    xi = 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(9))
    x_t, target = noised_pair(mode, prediction_type, clean, clean, None, eps, a, xi)  # no mask perturbation
    torch.testing.assert_close(x_t, add_noise(clean, eps + xi, a))
    expected = {"epsilon": eps, "sample": clean, "v_prediction": a.sqrt() * eps - (1 - a).sqrt() * clean}
    torch.testing.assert_close(target, expected[prediction_type])


def test_a_share_of_rows_is_perturbed_and_the_rest_stays_clean():
    clean, perturbed, eps, a = _example(4, shape=(64, 1, 4, 4))
    rows = perturbed_rows(64, 0.25, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert rows.shape == (64, 1, 1, 1) and rows.dtype == torch.bool
    x_t, target = noised_pair("input", "sample", clean, perturbed, rows, eps, a)
    r = rows.flatten()
    torch.testing.assert_close(x_t[r], add_noise(perturbed, eps, a)[r])
    torch.testing.assert_close(x_t[~r], add_noise(clean, eps, a)[~r])
    assert torch.equal(target, clean)
    assert perturbed_rows(8, 1.0, torch.Generator(), torch.device("cpu")) is None
    share = perturbed_rows(100_000, 0.3, torch.Generator().manual_seed(1), torch.device("cpu")).float().mean()
    assert abs(float(share) - 0.3) < 4 * math.sqrt(0.3 * 0.7 / 100_000)


def test_self_condition_adds_the_perturbation_of_the_estimate():
    estimate = torch.tensor([[[[0.8, -0.9, 0.1]]]])
    binary = (estimate > 0).float()
    pert = torch.tensor([[[[0.6, 0.0, 1.0]]]])
    torch.testing.assert_close(self_condition(estimate, pert, binary), torch.tensor([[[[0.0, -0.9, 0.1]]]]))


class _Recorder(nn.Module):
    """Returns ``value`` everywhere and records each input it sees."""

    def __init__(self, value: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(()))
        self.value, self.inputs = value, []

    def forward(self, x, t):
        self.inputs.append(x.detach().clone())
        return torch.full_like(x[:, :1], self.value) + 0 * self.weight


def _masks(seed: int):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(4, 1, 16, 16, generator=g)
    mask = torch.zeros(4, 1, 16, 16)
    for b in range(4):
        y, x = torch.randint(2, 10, (2,), generator=g)
        mask[b, 0, y:y + 6, x:x + 5] = 1
    return image, mask


def test_input_mode_loss_equals_the_hand_computed_loss():
    image, mask = _masks(0)
    trainer = SPADTrainer(tiny_config(prediction_type="sample", perturb_mode="input", x0_loss_weight=0.0,
                                      perturb={"scd_max": 0.9, "keep_ratio": 0.1}), model=_Recorder(0.0))
    # a model that outputs 0 against the clean target (+-1 everywhere): the MSE is exactly 1 (the x0 loss off)
    assert float(trainer._loss(image, mask, 0).detach()) == 1.0
    target_mode = SPADTrainer(tiny_config(prediction_type="sample", perturb={"scd_max": 0.9, "keep_ratio": 0.1},
                                          x0_loss_weight=0.0), model=_Recorder(0.0))
    assert float(target_mode._loss(image, mask, 0).detach()) < 0.99  # against the perturbed target: values inside (-1, 1)


def test_condition_never_carries_the_ground_truth():
    conds = []
    for seed in (0, 1):
        image, mask = _masks(seed)
        model = _Recorder(0.4)  # estimate 0.4 everywhere, whatever the mask
        trainer = SPADTrainer(tiny_config(prediction_type="sample", perturb_mode="condition", condition_dropout=0.0,
                                          perturb={"enabled": False}), model=model)
        trainer._loss(torch.zeros_like(image), mask, 0)
        assert len(model.inputs) == 2  # the self-estimate pass, then the training pass
        first, second = model.inputs
        assert torch.equal(first[:, 2:], torch.zeros_like(first[:, 2:]))  # the estimate pass has no condition
        conds.append(second[:, 2:])
    # two different ground truths, the same condition: the model's own estimate, never the mask
    assert torch.equal(conds[0], conds[1])
    assert torch.equal(conds[0], torch.full_like(conds[0], 0.4))


def test_pas_floor_keeps_the_perturbation_on():
    cfg = PerturbConfig(pas_floor=0.25, pas_end=0.5)
    assert perturb_factor(0.0, cfg) == 1.0
    assert perturb_factor(0.7, cfg) == 0.25 and perturb_factor(5.0, cfg) == 0.25
    assert perturb_factor(0.7, PerturbConfig(pas_end=0.5)) == 0.0
    assert perturb_factor(0.7, PerturbConfig(pas_floor=0.25, enabled=False)) == 0.0
    with pytest.raises(ValueError, match="pas_floor"):
        PerturbConfig(pas_floor=1.5)


@pytest.mark.parametrize("key,value", [("perturb_prob", 1.5), ("perturb_prob", -0.1), ("input_gamma", -1.0)])
def test_bad_perturbation_shares_are_refused_by_name(key, value):
    with pytest.raises(ValueError, match=key):
        tiny_config(**{key: value})


def test_supervised_loss_is_bce_plus_soft_dice():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 1, 5, 6, generator=g)
    mask = (torch.rand(3, 1, 5, 6, generator=g) > 0.5).float()
    p = torch.sigmoid(logits)
    bce = -(mask * torch.log(p) + (1 - mask) * torch.log(1 - p)).mean()
    dice = torch.stack([(2 * (p[i] * mask[i]).sum() + 1) / (p[i].sum() + mask[i].sum() + 1) for i in range(3)])
    torch.testing.assert_close(supervised_loss(logits, mask), bce + 1 - dice.mean())


def test_supervised_reference_trains_and_predicts_in_one_pass():
    from spadfast.diffusion.sampler import DDIMSampler

    trainer = SPADTrainer(tiny_config(objective="supervised", prediction_type="sample"))
    trainer.fit(3)
    images = torch.randn(2, 1, 16, 16)
    calls = []
    denoise = trainer.ema.denoise  # the cached-encoder model's per-step network
    trainer.ema.denoise = lambda *a: (calls.append(1), denoise(*a))[1]
    result = trainer.segment(images, steps=3, ensemble=2)
    assert result.probs.shape == (2, 1, 16, 16) and bool(((result.probs >= 0) & (result.probs <= 1)).all())
    assert torch.equal(result.std, torch.zeros_like(result.std))  # deterministic: no member spread
    assert len(calls) == 1  # one forward pass for both members, whatever the step count
    assert isinstance(trainer.sampler, DDIMSampler) and trainer.sampler.objective == "supervised"
    with pytest.raises(ValueError, match="objective"):
        tiny_config(objective="supervised", perturb_mode="condition")
    with pytest.raises(ValueError, match="objective"):
        tiny_config(objective="nope")


def test_input_mode_with_noise_targets_is_refused_with_the_alternatives(tmp_path, capsys):
    """Issue 29.10: in ``input`` mode the epsilon target that maps x_t (from the perturbed mask) back to the clean
    mask is ~100x the noise scale at t = 0 where the perturbation changed the mask; such a run is refused before it
    trains (library, CLI, ablation), naming both keys and the alternatives; the sample target stays in [-1, 1]."""
    import json

    from spadfast.cli import main
    from spadfast.data.synthetic import write_synthetic_folder
    from spadfast.diffusion.schedule import alphas_cumprod, make_betas
    from spadfast.study.ablate import run_ablation

    _, mask = _masks(0)
    clean, perturbed = mask * 2 - 1, -(mask * 2 - 1)  # every pixel changed: the worst case
    a = alphas_cumprod(make_betas("linear", 1000))[0].view(1, 1, 1, 1)
    eps = torch.zeros_like(clean)
    _, eps_target = noised_pair("input", "epsilon", clean, perturbed, None, eps, a)
    _, x0_target = noised_pair("input", "sample", clean, perturbed, None, eps, a)
    assert eps_target.abs().max() > 100 and x0_target.abs().max() == 1

    spad = {"enabled": True}
    for prediction_type in ("epsilon", "v_prediction"):
        with pytest.raises(ValueError, match=r"`perturb_mode: input` with `prediction_type: .*prediction_type: sample"):
            SPADTrainer(tiny_config(perturb_mode="input", prediction_type=prediction_type, perturb=spad))
    SPADTrainer(tiny_config(perturb_mode="input", prediction_type="sample", perturb=spad))
    SPADTrainer(tiny_config(perturb_mode="input"))  # SPAD off (the default): x0~ is the clean mask, plain noise
    SPADTrainer(tiny_config(perturb_mode="target", perturb=spad))

    config = tmp_path / "eps_input.json"
    config.write_text(json.dumps(tiny_config(perturb_mode="input", perturb=spad).to_dict()))
    assert main(["train", "--out", str(tmp_path / "run"), "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "perturb_mode: input" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()
    data = write_synthetic_folder(tmp_path / "data", 4, 16, seed=0)
    config.write_text(json.dumps(tiny_config(perturb_mode="target", perturb=spad).to_dict()))
    with pytest.raises(ValueError, match="ablation variant 'SPAD input'.*prediction_type: sample"):
        run_ablation(data, tmp_path / "ablation", config=config, variants=["SPAD", "SPAD input"])
    assert not (tmp_path / "ablation").exists()


# ------------------------------------------------------------------ the diffusion study's options (issue 31.2)
def test_recycled_pair_noises_the_estimate_and_targets_the_truth():
    from spadfast.diffusion.training_inputs import recycled_pair

    clean, estimate, eps, a = _example(3)
    for prediction_type in PREDICTION_TYPES:
        x_t, target = recycled_pair(prediction_type, clean, estimate, eps, a)
        torch.testing.assert_close(x_t, a.sqrt() * estimate + (1 - a).sqrt() * eps)  # no ground truth in x_t
        # the x0 the target stands for is the ground truth
        torch.testing.assert_close(x0_from_prediction(prediction_type, x_t, target, a), clean, atol=2e-4, rtol=0)


def test_recycle_timesteps_are_the_next_step_clamped_at_the_last():
    from spadfast.diffusion.training_inputs import recycle_timesteps

    t = torch.tensor([0, 5, 998, 999])
    assert recycle_timesteps(t, 1000).tolist() == [1, 6, 999, 999]
    assert recycle_timesteps(t, 1000).dtype == torch.int64


def test_self_condition_rows_keep_a_share_of_rows_and_zero_the_rest():
    from spadfast.diffusion.training_inputs import self_condition_rows

    estimate = torch.rand(4000, 1, 2, 2) + 0.5  # never 0, so a zero row was dropped
    for share in (0.0, 0.3, 1.0):
        out = self_condition_rows(estimate, share, torch.Generator().manual_seed(1))
        kept = (out != 0).flatten(1).all(1)
        assert ((out == 0).flatten(1).all(1) | kept).all()  # whole rows, kept equal to the estimate
        assert torch.equal(out[kept], estimate[kept])
        assert abs(kept.float().mean().item() - share) < 0.03
    a = self_condition_rows(estimate, 0.5, torch.Generator().manual_seed(2))
    assert torch.equal(a, self_condition_rows(estimate, 0.5, torch.Generator().manual_seed(2)))  # seeded


def test_x0_mask_loss_is_bce_plus_soft_dice_of_the_estimate_per_class_channel():
    from spadfast.diffusion.training_inputs import x0_mask_loss

    g = torch.Generator().manual_seed(0)
    mask = (torch.rand(3, 2, 6, 5, generator=g) > 0.5).float()  # two class channels
    x0 = torch.randn(3, 2, 6, 5, generator=g) * 0.8
    p = ((x0 + 1) / 2).clamp(1e-3, 1 - 1e-3)
    bce = -(mask * p.log() + (1 - mask) * (1 - p).log()).mean()
    dice = [(2 * (p[b, k] * mask[b, k]).sum() + 1) / (p[b, k].sum() + mask[b, k].sum() + 1)
            for b in range(3) for k in range(2)]
    torch.testing.assert_close(x0_mask_loss(x0, mask), bce + 1 - torch.stack(dice).mean())
    assert x0_mask_loss(mask * 2 - 1, mask) < 0.02 < x0_mask_loss(1 - mask * 2, mask)  # right vs inverted masks
    # ignored pixels count in neither term
    valid = (torch.rand(3, 1, 6, 5, generator=g) > 0.3).float()
    scrambled = torch.where(valid.bool(), x0, torch.randn(3, 2, 6, 5, generator=g))
    torch.testing.assert_close(x0_mask_loss(x0, mask, valid), x0_mask_loss(scrambled, mask, valid))
    assert not torch.allclose(x0_mask_loss(x0, mask), x0_mask_loss(scrambled, mask))
    # a gradient reaches the estimate inside (0, 1)
    x0.requires_grad_(True)
    x0_mask_loss(x0, mask).backward()
    assert x0.grad.abs().sum() > 0
