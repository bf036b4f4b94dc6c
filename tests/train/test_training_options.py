"""The diffusion study's training options (issue 31.2): self-conditioning, recycling, the x0 loss; off by default."""

import pytest
import torch

from spadfast import SPADConfig, SPADTrainer
from spadfast.diffusion.training_inputs import x0_mask_loss
from spadfast.models.checkpoint import read_checkpoint

from ..helpers import tiny_config
from .test_trainer import MaskAsImage, OracleDenoiser, _states_equal


class Spy(torch.nn.Module):
    """Ignores its input except for shape: predicts x0 = 0.3 everywhere (``prediction_type: sample``), and records
    every call's input, timesteps and whether autograd was on."""

    def __init__(self, out_channels: int = 1):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(()))
        self.out_channels = out_channels
        self.calls: list[tuple[torch.Tensor, torch.Tensor, bool]] = []

    def forward(self, inp, t):
        self.calls.append((inp.detach().clone(), t.detach().clone(), torch.is_grad_enabled()))
        return torch.full_like(inp[:, : self.out_channels], 0.3) + 0 * self.p


def _spy_loss(mask_value: float = 1.0, **overrides):
    cfg = tiny_config(prediction_type="sample", channels_last=False, **overrides)
    spy = Spy()
    trainer = SPADTrainer(cfg, train_data=MaskAsImage(), model=spy)
    image = torch.rand(4, 1, 16, 16) * 2 - 1
    mask = torch.zeros(4, 1, 16, 16)
    mask[:, :, 4:12, 4:12] = mask_value
    loss = trainer._loss(image, mask, 0)
    return loss, spy.calls, trainer


def test_recycling_builds_x_t_from_the_models_estimate_never_the_truth():
    loss_a, calls_a, trainer = _spy_loss(1.0, recycle=True)
    loss_b, calls_b, _ = _spy_loss(0.0, recycle=True)  # another ground truth, same random draws
    assert len(calls_a) == 2
    (first, t_first, grad_first), (second, t_second, grad_second) = calls_a
    assert not grad_first and grad_second  # the recycling pass is stop-gradient
    assert torch.equal(t_first, (t_second + 1).clamp_max(999))  # ImgX's `next`: the step the sampler comes from
    assert torch.equal(second[:, :1], calls_b[1][0][:, :1])  # x_t does not depend on the ground truth ...
    assert not torch.equal(first[:, :1], calls_b[0][0][:, :1])  # ... which only the first pass saw
    assert loss_a != loss_b  # the loss targets the ground truth
    # x_t = 0.3 (the estimate) re-noised at t: (x_t - sqrt(a) 0.3) / sqrt(1 - a) is standard normal noise
    a = trainer.alphas_cumprod[t_second.long()].view(-1, 1, 1, 1)
    noise = (second[:, :1] - a.sqrt() * 0.3) / (1 - a).sqrt()
    assert abs(noise.mean().item()) < 0.15 and abs(noise.std().item() - 1) < 0.1
    _, plain, _ = _spy_loss(1.0)
    _, plain_b, _ = _spy_loss(0.0)
    assert len(plain) == 1 and not torch.equal(plain[0][0][:, :1], plain_b[0][0][:, :1])  # without it: the truth


@pytest.mark.parametrize("share", [0.0, 1.0, 0.5])
def test_self_conditioning_feeds_a_stop_gradient_estimate_on_a_share_of_rows(share):
    _, calls, _ = _spy_loss(1.0, self_condition=True, self_condition_prob=share, batch_size=4)
    assert len(calls) == 2
    (first, t_first, grad_first), (second, t_second, grad_second) = calls
    assert not grad_first and grad_second and torch.equal(t_first, t_second)
    assert torch.equal(first[:, :2], second[:, :2])  # same x_t and image
    assert first.shape[1] == 3 and (first[:, 2] == 0).all()  # the first pass sees an empty condition
    cond = second[:, 2]
    rows_kept = (cond == 0.3).flatten(1).all(1)
    assert (rows_kept | (cond == 0).flatten(1).all(1)).all()
    if share in (0.0, 1.0):
        assert rows_kept.all() == bool(share)


def test_self_conditioning_and_condition_mode_exclude_each_other():
    with pytest.raises(ValueError, match="`self_condition`.*perturb_mode 'condition'"):
        tiny_config(self_condition=True, perturb_mode="condition")


def test_x0_loss_adds_the_weighted_bce_dice_of_the_estimate():
    from spadfast.diffusion.schedule import alphas_cumprod, make_betas

    image, mask = next(iter(torch.utils.data.DataLoader(MaskAsImage(), batch_size=6)))
    ac = alphas_cumprod(make_betas("linear", 1000))
    for prediction_type in ("epsilon", "sample"):
        oracle = SPADTrainer(tiny_config(prediction_type=prediction_type, x0_loss_weight=2.0),
                             train_data=MaskAsImage(), model=OracleDenoiser(ac, prediction_type))
        # an exact model: MSE 0, and the x0 loss only the clip's BCE floor and Dice's smoothing
        assert oracle._loss(image, mask, 0).item() < 2 * 0.02
    _, _, trainer = _spy_loss(1.0, x0_loss_weight=0.5)
    plain = SPADTrainer(tiny_config(prediction_type="sample", channels_last=False, x0_loss_weight=0.0),
                        train_data=MaskAsImage(), model=Spy())
    g = trainer.generator.get_state()
    plain.generator.set_state(g)
    trainer.generator.set_state(g)
    mask = torch.zeros(4, 1, 16, 16)
    mask[:, :, 4:12, 4:12] = 1
    image = torch.zeros(4, 1, 16, 16)
    with_x0, without = trainer._loss(image, mask, 0), plain._loss(image, mask, 0)
    expected = 0.5 * x0_mask_loss(torch.full_like(mask, 0.3), mask)  # the spy's estimate is 0.3 everywhere
    torch.testing.assert_close(with_x0 - without, expected)


def _multiclass_items(n=5, size=16):
    g = torch.Generator().manual_seed(0)
    items = []
    for _ in range(n):
        label = torch.zeros(1, size, size, dtype=torch.int64)
        label[:, 2:8, 2:8] = 1
        label[:, 9:14, 9:14] = 2
        items.append({"image": torch.rand(1, size, size, generator=g) * 2 - 1, "label": label})
    return items


OPTIONS = [
    dict(self_condition=True),
    dict(recycle=True, prediction_type="sample", x0_loss_weight=0.5),
    dict(self_condition=True, recycle=True, prediction_type="sample", x0_loss_weight=1.0, model_type="unet",
         grad_accum=2, dropout=0.1),
]


@pytest.mark.parametrize("overrides", OPTIONS)
def test_resume_with_the_options_is_bit_exact(tmp_path, overrides):
    cfg = tiny_config(**overrides)
    straight = SPADTrainer(cfg)
    straight.fit(4)
    first = SPADTrainer(cfg)
    first.fit(2)
    first.save(tmp_path / "run")
    _, meta = read_checkpoint(tmp_path / "run")
    assert all(meta["config"][k] == v for k, v in overrides.items())  # the run records which options were on
    resumed = SPADTrainer.from_checkpoint(tmp_path / "run")
    resumed.fit(2)
    assert _states_equal(straight, resumed) == []
    default = SPADTrainer(tiny_config(**{k: v for k, v in overrides.items()
                                         if k not in ("self_condition", "recycle", "x0_loss_weight")}))
    default.fit(4)
    assert any(not torch.equal(a, b) for a, b in zip(default.model.parameters(), straight.model.parameters()))


def test_multiclass_self_conditioning_and_x0_loss_train_and_sample():
    cfg = tiny_config(num_classes=3, self_condition=True, x0_loss_weight=0.5, noise_levels=2)
    assert cfg.model_in_channels == 2 + 1 + 2
    trainer = SPADTrainer(cfg, train_data=_multiclass_items(), val_data=_multiclass_items(2))
    records = trainer.fit(2)
    assert torch.isfinite(torch.tensor(records[-1]["loss"]))
    probs = trainer.sample(torch.zeros(2, 1, 16, 16), steps=2, ensemble=2)
    assert probs.shape == (2, 2, 16, 16)
    assert torch.equal(probs, trainer.sample(torch.zeros(2, 1, 16, 16), steps=2, ensemble=2))


def test_segmenter_loads_a_self_conditioned_checkpoint_and_feeds_the_estimate(tmp_path):
    from spadfast import Segmenter

    trainer = SPADTrainer(tiny_config(self_condition=True, cuda_graph=False))
    trainer.fit(1)
    trainer.save(tmp_path / "run")
    seg = Segmenter.load(tmp_path / "run")
    assert seg.sampler.self_condition and seg.config.self_condition
    image = torch.rand(1, 1, 16, 16) * 2 - 1
    torch.testing.assert_close(seg.segment(image, steps=2, ensemble=2).probs,
                               trainer.segment(image, steps=2, ensemble=2).probs)


def test_sampler_feeds_the_previous_steps_estimate_when_self_conditioned():
    from spadfast import DDIMSampler
    from spadfast.diffusion.schedule import alphas_cumprod, make_betas

    spy = Spy()
    sampler = DDIMSampler(spy, alphas_cumprod(make_betas("linear", 1000)), prediction_type="sample", steps=3,
                          self_condition=True, cuda_graph=False)
    sampler.sample(torch.zeros(2, 1, 8, 8), ensemble=1)
    conds = [inp[:, 2] for inp, _, _ in spy.calls]
    assert len(conds) == 3 and (conds[0] == 0).all() and (conds[1] == 0.3).all() and (conds[2] == 0.3).all()
    plain = Spy()
    DDIMSampler(plain, alphas_cumprod(make_betas("linear", 1000)), prediction_type="sample", steps=2,
                cuda_graph=False).sample(torch.zeros(2, 1, 8, 8))
    assert plain.calls[0][0].shape[1] == 2  # no condition channel by default


@pytest.mark.parametrize("data, name", [
    (dict(self_condition_prob=1.5), "`self_condition_prob`"),
    (dict(x0_loss_weight=-0.1), "`x0_loss_weight`"),
    (dict(recycle=True), "`recycle`.*prediction_type"),  # epsilon, the default
    (dict(recycle=True, prediction_type="v_prediction"), "`recycle`.*prediction_type"),
    (dict(recycle=True, prediction_type="sample", perturb_mode="condition"), "`recycle`"),
    (dict(recycle=True, prediction_type="sample", perturb={"enabled": True}), "`recycle`"),
    (dict(objective="supervised", self_condition=True), "`objective`"),
    (dict(objective="supervised", recycle=True, prediction_type="sample"), "`objective`"),
    (dict(objective="supervised", x0_loss_weight=1.0), "`objective`"),
])
def test_bad_values_and_contradictory_combinations_are_refused_by_name(data, name):
    with pytest.raises(ValueError, match=name):
        SPADConfig.from_dict(data)


def test_option_types_are_checked():
    with pytest.raises(TypeError, match="`self_condition`"):
        SPADConfig.from_dict({"self_condition": "yes"})
    for bad in ("heavy", float("nan"), float("inf")):
        with pytest.raises(TypeError, match="`x0_loss_weight` must be a finite number"):
            SPADConfig.from_dict({"x0_loss_weight": bad})


def test_defaults_follow_the_study_and_checkpoints_without_the_keys_load_as_they_were_trained():
    from spadfast.config import DEFAULT_X0_LOSS_WEIGHT

    cfg = SPADConfig()
    assert (cfg.self_condition, cfg.recycle, cfg.condition_channel) == (False, False, False)
    # the diffusion study's best measured setting: x0-loss 0.3, 5 steps x 16 members, step fusion mean
    assert (cfg.x0_loss_weight, cfg.sample_steps, cfg.ensemble, cfg.step_fusion) == (0.3, 5, 16, "mean")
    assert DEFAULT_X0_LOSS_WEIGHT == 0.3
    for preset in ("cpu-small", "cpu-medium", "gpu-base"):  # the presets sample at the default too
        p = SPADConfig.preset(preset)
        assert (p.x0_loss_weight, p.sample_steps, p.ensemble, p.step_fusion) == (0.3, 5, 16, "mean"), preset
    # the x0 loss is a diffusion term: left unset, a supervised model gets 0 (set explicitly, it is refused)
    assert SPADConfig(objective="supervised").x0_loss_weight == 0.0
    assert SPADConfig.from_dict({"objective": "supervised", "x0_loss_weight": None}).x0_loss_weight == 0.0
    assert SPADConfig.from_dict({"x0_loss_weight": 0}).x0_loss_weight == 0.0  # an explicit 0 stays off
    assert SPADConfig(**SPADConfig().to_dict()) == SPADConfig()  # the resolved weight round-trips
    meta = {"config": {k: v for k, v in tiny_config().to_dict().items()
                       if k not in ("self_condition", "self_condition_prob", "recycle", "x0_loss_weight",
                                    "step_fusion")},
            "step": 0, "optimizer_param_groups": []}
    old = SPADConfig.from_checkpoint_meta(meta, "old.safetensors")
    assert not old.self_condition and not old.recycle and old.model_in_channels == 2
    assert old.x0_loss_weight == 0 and old.step_fusion == "none"  # what a checkpoint from before the keys did


DDP_SCRIPT = """
import sys
sys.path.insert(0, {root!r})
import torch, torch.distributed as dist
from tests.helpers import tiny_config
from spadfast import SPADTrainer
trainer = SPADTrainer(tiny_config(self_condition=True, recycle=True, prediction_type="sample", x0_loss_weight=0.5))
before = torch.cat([p.detach().flatten().clone() for p in trainer.model.parameters()])
trainer.fit(2)
flat = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
gathered = [None, None]
dist.all_gather_object(gathered, flat)
if trainer.rank == 0:
    torch.save({{"equal": torch.equal(*gathered), "moved": not torch.equal(flat, before)}}, {out!r})
from spadfast.runtime.distributed import exit_process, shutdown
shutdown()
exit_process(0)
"""


@pytest.mark.slow
def test_ddp_with_every_option_keeps_ranks_in_sync(tmp_path):
    """The no-grad passes run on the unwrapped module: the DDP gradient all-reduce still keeps the ranks equal."""
    import os
    import subprocess
    import sys

    from ..runtime.test_distributed import ROOT, _free_port

    out = tmp_path / "result.pt"
    script = tmp_path / "ddp_options.py"
    script.write_text(DDP_SCRIPT.format(root=str(ROOT), out=str(out)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", str(script)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert torch.load(out) == {"equal": True, "moved": True}
