"""The supervised prior of the diffusion study (issue 31, part 2): ``prior: supervised``, ``prior_steps``."""

import pytest
import torch

from spadfast import SPADConfig, SPADTrainer
from spadfast.infer.segmenter import Segmenter
from spadfast.models.checkpoint import read_checkpoint

from ..helpers import tiny_config
from .test_trainer import _states_equal

PRIOR = dict(prior="supervised", prior_steps=3, train_steps=6, prediction_type="sample", val_every=0)


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_defaults_are_off_and_channels_grow_by_k():
    cfg = tiny_config()
    assert cfg.prior == "none" and cfg.prior_phase_steps == 0 and cfg.model_in_channels == 2
    with_prior = tiny_config(**PRIOR, num_classes=3, image_channels=2)
    assert with_prior.model_image_channels == 2 + 2 and with_prior.model_in_channels == 2 + 2 + 2
    assert with_prior.prior_config().objective == "supervised" and with_prior.prior_config().model_in_channels == 4
    assert tiny_config(**PRIOR, self_condition=True).model_in_channels == 1 + 1 + 1 + 1


@pytest.mark.parametrize("overrides, key", [
    (dict(prior="yes"), "prior"),
    (dict(prior="supervised", prior_steps=0), "prior_steps"),
    (dict(prior="supervised", prior_steps=6, train_steps=6), "prior_steps"),
    (dict(prior="supervised", prior_steps=2, perturb_mode="condition"), "prior"),
    (dict(prior="supervised", prior_steps=2, objective="supervised"), "prior"),
    (dict(prior_steps=-1), "prior_steps"),
])
def test_bad_prior_settings_are_refused_naming_the_key(overrides, key):
    with pytest.raises(ValueError, match=f"`{key}`"):
        tiny_config(**overrides)


@pytest.mark.parametrize("model_type", ["unet", "cached_unet"])
def test_the_prior_phase_is_the_supervised_run_and_the_prior_is_frozen_after_it(model_type):
    cfg = tiny_config(**PRIOR, model_type=model_type)
    trainer = SPADTrainer(cfg)
    diffusion_start = _weights(trainer.model)
    trainer.fit(3)
    assert trainer.phase == "diffusion"
    # the prior phase trains the prior only, exactly as a supervised run of prior_steps trains its network
    supervised = SPADTrainer(cfg.prior_config())
    supervised.fit(3)
    for mine, ref in [(trainer.prior_model, supervised.model), (trainer.prior_ema, supervised.ema)]:
        assert all(torch.equal(a, b) for a, b in zip(mine.state_dict().values(), ref.state_dict().values()))
    assert all(torch.equal(v, trainer.model.state_dict()[k]) for k, v in diffusion_start.items())
    prior_after, ema_after = _weights(trainer.prior_model), _weights(trainer.prior_ema)
    trainer.fit(3)
    assert all(torch.equal(v, trainer.prior_model.state_dict()[k]) for k, v in prior_after.items())
    assert all(torch.equal(v, trainer.prior_ema.state_dict()[k]) for k, v in ema_after.items())
    assert any(not torch.equal(v, trainer.model.state_dict()[k]) for k, v in diffusion_start.items())


def test_the_diffusion_model_sees_the_priors_probabilities_after_the_image():
    trainer = SPADTrainer(tiny_config(**PRIOR, model_type="unet", channels_last=False))
    trainer.fit(3)
    seen = []
    handle = trainer.ema.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    image = torch.rand(2, 1, 16, 16) * 2 - 1
    trainer.segment(image, steps=2, ensemble=1)  # step 3 = prior_steps: still the prior alone
    assert seen == []
    trainer.step = 4
    trainer.segment(image, steps=2, ensemble=1)
    handle.remove()
    with torch.no_grad():
        logits = trainer.prior_ema(torch.cat([torch.zeros(2, 1, 16, 16), image], 1), torch.zeros(2))
    assert len(seen) == 2 and all(s.shape == (2, 3, 16, 16) for s in seen)
    for s in seen:
        assert torch.equal(s[:, 1:2], image)
        torch.testing.assert_close(s[:, 2:3], torch.sigmoid(logits) * 2 - 1)


@pytest.mark.parametrize("k", [2, 4])  # inside the prior phase, inside the diffusion phase
def test_resume_across_the_phase_boundary_is_bit_exact(tmp_path, k):
    cfg = tiny_config(**PRIOR, self_condition=True)
    straight = SPADTrainer(cfg)
    straight.fit(6)
    first = SPADTrainer(cfg)
    first.fit(k)
    first.save(tmp_path / "run")
    tensors, meta = read_checkpoint(tmp_path / "run")
    assert meta["phase"] == ("prior" if k < 3 else "diffusion") and "prior_optimizer_param_groups" in meta
    assert any(key.startswith("prior.optim.") for key in tensors)
    resumed = SPADTrainer.from_checkpoint(tmp_path / "run")
    resumed.fit(6 - k)
    assert _states_equal(straight, resumed) == []


def test_a_checkpoint_without_the_prior_is_refused_by_a_prior_trainer(tmp_path):
    plain = SPADTrainer(tiny_config(prediction_type="sample", train_steps=6))
    plain.fit(1)
    plain.save(tmp_path / "run")
    tensors, meta = read_checkpoint(tmp_path / "run")
    trainer = SPADTrainer(tiny_config(**PRIOR))
    with pytest.raises(ValueError, match="prior"):
        trainer.load_state(tensors, meta, "run")


def test_segmenter_and_export_use_both_networks_and_equal_the_trainer(tmp_path):
    from spadfast.models.export import export_model

    trainer = SPADTrainer(tiny_config(**PRIOR))
    trainer.fit()
    trainer.save(tmp_path / "run")
    images = torch.rand(3, 1, 16, 16) * 2 - 1
    expected = trainer.segment(images, steps=2, ensemble=2, seed=5)
    export_model(tmp_path / "run", tmp_path / "model.safetensors")
    for source in (tmp_path / "run", tmp_path / "model.safetensors"):
        segmenter = Segmenter.from_checkpoint(source, device="cpu")
        assert segmenter.prior is not None
        got = segmenter.segment(images, steps=2, ensemble=2, seed=5)
        assert torch.equal(got.probs, expected.probs) and torch.equal(got.std, expected.std)
    # the prior changes the prediction: the same diffusion weights without it see other inputs
    segmenter.sampler.prior = None
    with pytest.raises(ValueError, match="image"):  # the encoder expects the prior's channels after the image
        segmenter.segment(images, steps=2, ensemble=2, seed=5)
    pred = Segmenter.from_checkpoint(tmp_path / "run", device="cpu").predict(
        (images[0, 0].numpy() + 1) / 2, steps=2, ensemble=2)
    assert pred.probs.shape == (16, 16)


def test_sampler_needs_the_prior_exactly_when_the_config_has_one():
    from spadfast.diffusion.sampler import DDIMSampler
    from spadfast.diffusion.schedule import alphas_cumprod, make_betas

    ac = alphas_cumprod(make_betas("linear", 1000))
    with pytest.raises(ValueError, match="`prior`"):
        DDIMSampler.from_config(tiny_config(**PRIOR), torch.nn.Identity(), ac)
    with pytest.raises(ValueError, match="`prior`"):
        DDIMSampler.from_config(tiny_config(), torch.nn.Identity(), ac, prior=torch.nn.Identity())


def test_config_round_trips_through_a_dict():
    cfg = tiny_config(**PRIOR)
    assert SPADConfig.from_dict(cfg.to_dict()) == cfg
