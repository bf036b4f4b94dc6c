import json

import numpy as np
import pytest
import torch

from spadfast import SPADConfig, SPADTrainer
from spadfast.data.synthetic import write_synthetic_folder
from spadfast.train.run_log import RunLog

from ..helpers import tiny_config


def _states_equal(a: SPADTrainer, b: SPADTrainer) -> list[str]:
    ta, tb = a.state_tensors(), b.state_tensors()
    assert ta.keys() == tb.keys()
    return [k for k in ta if not torch.equal(ta[k], tb[k])]


@pytest.mark.parametrize(
    "overrides",
    [dict(dropout=0.1), dict(grad_accum=2, perturb_mode="condition", prediction_type="v_prediction")],
)
def test_resume_is_bit_exact(tmp_path, overrides):
    cfg = tiny_config(**overrides)
    straight = SPADTrainer(cfg)
    straight.fit(6)
    first = SPADTrainer(cfg)
    first.fit(3)
    first.save(tmp_path / "run")
    resumed = SPADTrainer.from_checkpoint(tmp_path / "run")
    assert resumed.step == 3
    resumed.fit(3)
    assert resumed.step == straight.step == 6
    assert _states_equal(straight, resumed) == []
    # the EMA weights differ from the raw weights (EMA is really tracked and restored)
    ema = dict(straight.ema.named_parameters())
    assert any(not torch.equal(p, ema[n]) for n, p in straight.model.named_parameters())


def test_fit_defaults_to_remaining_steps_and_logs(tmp_path):
    trainer = SPADTrainer(tiny_config(train_steps=4, log_every=2), out_dir=tmp_path)
    records = trainer.fit(1)
    assert trainer.step == 1 and records == []
    trainer.fit()
    assert trainer.step == 4
    lines = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [2, 4]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in lines)
    assert trainer.fit() == []


def test_sample_shapes_range_and_determinism():
    trainer = SPADTrainer(tiny_config())
    trainer.fit(2)
    images = torch.rand(2, 1, 16, 16) * 2 - 1
    probs = trainer.sample(images, steps=2, ensemble=3)
    assert probs.shape == (2, 1, 16, 16) and probs.min() >= 0 and probs.max() <= 1
    assert torch.equal(probs, trainer.sample(images, steps=2, ensemble=3))
    assert trainer.sample(images[0], steps=2, ensemble=1).shape == (1, 16, 16)
    result = trainer.segment(images, steps=2, ensemble=3, return_members=True)
    assert result.members.shape == (2, 3, 16, 16)
    torch.testing.assert_close(result.members.mean(1, keepdim=True), result.probs)
    torch.testing.assert_close(result.members.std(1, keepdim=True, unbiased=False), result.std)
    assert torch.equal(result.mask, result.probs > 0.5)


def test_sample_rejects_bad_images():
    trainer = SPADTrainer(tiny_config())
    with pytest.raises(TypeError, match="`images`"):
        trainer.sample([[0.0]])
    with pytest.raises(ValueError, match="`images`"):
        trainer.sample(torch.zeros(2, 3, 16, 16))
    with pytest.raises(ValueError, match="`images`"):
        trainer.sample(torch.full((1, 1, 16, 16), float("nan")))
    with pytest.raises(ValueError, match="`ensemble`"):
        trainer.sample(torch.zeros(1, 1, 16, 16), ensemble=0)


def test_bf16_autocast_and_sample_prediction_runs():
    trainer = SPADTrainer(tiny_config(amp="bf16", prediction_type="sample"))
    trainer.fit(2)
    assert torch.isfinite(trainer.sample(torch.zeros(1, 1, 16, 16), steps=2)).all()


def test_folder_data_errors_before_training(tmp_path):
    root = write_synthetic_folder(tmp_path / "data", 4, 16, seed=0)
    (root / "masks" / "0002.png").unlink()
    with pytest.raises(ValueError, match="0002"):
        SPADTrainer(tiny_config(), train_data=root)
    with pytest.raises(TypeError, match="`config`"):
        SPADTrainer(42)
    with pytest.raises(ValueError, match="`amp`"):
        SPADTrainer(tiny_config(amp="fp16"))  # fp16 needs CUDA


def test_trains_on_a_folder(tmp_path):
    root = write_synthetic_folder(tmp_path / "data", 5, 16, seed=0)
    trainer = SPADTrainer(tiny_config(), train_data=str(root))
    trainer.fit(2)
    assert trainer.step == 2


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "checkpoint.safetensors").write_bytes(b"garbage!" * 8)
    with pytest.raises(ValueError, match="checkpoint.safetensors"):
        SPADTrainer.from_checkpoint(tmp_path)


def test_custom_model_and_config_dict():
    cfg = tiny_config().to_dict()
    trainer = SPADTrainer(cfg)
    assert isinstance(trainer.config, SPADConfig)
    with pytest.raises(TypeError, match="`model`"):
        SPADTrainer(tiny_config(), model="unet")


def test_checkpoint_from_another_device_type_reseeds_with_a_warning(tmp_path):
    from spadfast.models.checkpoint import read_checkpoint, write_checkpoint

    trainer = SPADTrainer(tiny_config())
    trainer.fit(2)
    trainer.save(tmp_path)
    tensors, meta = read_checkpoint(tmp_path)
    meta["device_type"] = "cuda"  # as if trained on a GPU: its generator state does not fit a CPU generator
    tensors["rng.rank0.generator"] = torch.zeros(16, dtype=torch.uint8)
    write_checkpoint(tmp_path, tensors, meta)
    with pytest.warns(UserWarning, match="reseeds"):
        resumed = SPADTrainer.from_checkpoint(tmp_path)
    assert resumed.step == 2
    resumed.fit(1)
    assert torch.isfinite(resumed.sample(torch.zeros(1, 1, 16, 16), steps=2)).all()


def test_bad_dataset_items_fail_before_training():
    good = [(torch.rand(1, 16, 16) * 2 - 1, torch.ones(1, 16, 16))]
    with pytest.raises(ValueError, match="`train_data` masks"):
        SPADTrainer(tiny_config(), train_data=[(good[0][0], torch.full((1, 16, 16), 255.0))])
    with pytest.raises(ValueError, match="`train_data` images"):
        SPADTrainer(tiny_config(), train_data=[(torch.full((1, 16, 16), float("nan")), good[0][1])])
    with pytest.raises(TypeError, match="`train_data`"):
        SPADTrainer(tiny_config(), train_data=[(good[0][0].numpy(), good[0][1].numpy())])
    assert SPADTrainer(tiny_config(), train_data=good).train_data is good


def test_sample_rejects_infinite_images_and_bad_seed():
    trainer = SPADTrainer(tiny_config())
    with pytest.raises(ValueError, match="`images`"):
        trainer.sample(torch.full((1, 1, 16, 16), float("inf")))
    with pytest.raises(TypeError, match="`seed`"):
        trainer.sample(torch.zeros(1, 1, 16, 16), seed=1.5)


def test_periodic_validation_and_checkpoints(tmp_path):
    trainer = SPADTrainer(tiny_config(train_steps=4, log_every=2, val_every=2, val_samples=2, checkpoint_every=3),
                          out_dir=tmp_path)
    trainer.fit()
    logs = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs if "val_dice" in r] == [2, 4]
    assert logs[-1]["step"] == 4 and logs[-1]["val_dice"] == trainer.validate(2)  # logged = recomputed at the end
    resumed = SPADTrainer.from_checkpoint(tmp_path)  # the checkpoint written at step 3, mid-fit
    assert resumed.step == 3 and [r["step"] for r in resumed.history] == [2]


# ----------------------------------------------------------------------------------- learning, RNG, resume
class OracleDenoiser(torch.nn.Module):
    """Knows x0 (the image channel holds the clean mask in [-1, 1]) and the schedule, so it returns the exact target
    of every prediction type: the training loss of a correct pipeline is then 0."""

    def __init__(self, alphas_cumprod: torch.Tensor, prediction_type: str):
        super().__init__()
        self.register_buffer("ac", alphas_cumprod.clone())
        self.prediction_type = prediction_type
        self.unused = torch.nn.Parameter(torch.zeros(()))  # the optimizer needs a parameter

    def forward(self, inp, t):
        x_t, x0 = inp[:, :1], inp[:, 1:2]
        a = self.ac[t.long()].view(-1, 1, 1, 1)
        eps = (x_t - a.sqrt() * x0) / (1 - a).sqrt()
        target = {"epsilon": eps, "sample": x0, "v_prediction": a.sqrt() * eps - (1 - a).sqrt() * x0}
        return target[self.prediction_type] + 0 * self.unused


class MaskAsImage(torch.utils.data.Dataset):
    def __init__(self, n=6, size=16):
        self.items = SyntheticMasks(n, size)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        mask = self.items[i]
        return mask * 2 - 1, mask


def SyntheticMasks(n, size):
    from spadfast.data.synthetic import SyntheticLesions

    return [SyntheticLesions(n, image_size=size, seed=3)[i][1] for i in range(n)]


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_a_model_predicting_the_true_target_has_zero_loss(prediction_type):
    from spadfast.diffusion.schedule import alphas_cumprod, make_betas

    # the x0 loss off: its BCE has a floor at the clip, so an exact model scores zero on the squared error alone
    cfg = tiny_config(prediction_type=prediction_type, perturb={"enabled": False}, augment=True, beta_schedule="cosine",
                      x0_loss_weight=0.0)
    ac = alphas_cumprod(make_betas("cosine", cfg.num_train_timesteps))
    # t near T - 1 divides by sqrt(1 - abar) ~ 1 and t near 0 by ~0.01: float32 error stays far below 1e-6
    trainer = SPADTrainer(cfg, train_data=MaskAsImage(), model=OracleDenoiser(ac, prediction_type))
    image, mask = next(iter(torch.utils.data.DataLoader(MaskAsImage(), batch_size=6)))
    for micro in range(3):  # fresh timesteps and noise each call
        assert trainer._loss(image, mask, micro).item() < 1e-6
    wrong = SPADTrainer(tiny_config(prediction_type=prediction_type, perturb={"enabled": False}, x0_loss_weight=0.0),
                        train_data=MaskAsImage(), model=OracleDenoiser(ac, {"epsilon": "sample", "sample":
                                                                            "v_prediction", "v_prediction":
                                                                            "epsilon"}[prediction_type]))
    assert wrong._loss(image, mask, 0).item() > 1e-2  # the test can fail: another target is not accepted


@pytest.mark.slow
def test_short_cpu_training_learns_to_segment():
    """A short CPU run on 16 px synthetic lesions: validation Dice must clearly beat the empty mask (Dice 0)."""
    from spadfast import SPADConfig

    cfg = SPADConfig.preset("cpu-small", image_size=16, base_channels=8, channel_mults=(1, 2), train_steps=200,
                            synthetic_train=512, synthetic_val=16, val_every=0, progress_bar=False, sample_steps=5,
                            ensemble=1)
    trainer = SPADTrainer(cfg)
    trainer.fit()
    assert trainer.validate(16) > 0.6


def test_ddp_ranks_draw_different_dropout_but_share_the_initial_weights(monkeypatch):
    from spadfast.runtime import distributed

    states, weights = [], []
    for rank in (0, 1):
        monkeypatch.setattr(distributed, "rank", lambda r=rank: r)
        trainer = SPADTrainer(tiny_config(dropout=0.5))
        states.append(torch.get_rng_state())
        weights.append(trainer.state_tensors())
        assert trainer.rank == rank
    assert not torch.equal(states[0], states[1])
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0] if k.startswith("model."))


@pytest.mark.parametrize("saved_device,saved_world,warns", [
    ("cpu", 1, False), ("cpu", 2, True), ("cpu", 4, True), ("cuda", 1, True), ("cuda", 2, True),
])
@pytest.mark.slow
def test_resume_compares_device_type_and_world_size(tmp_path, saved_device, saved_world, warns):
    from spadfast.models.checkpoint import read_checkpoint, write_checkpoint

    trainer = SPADTrainer(tiny_config())
    trainer.fit(2)
    trainer.save(tmp_path)
    tensors, meta = read_checkpoint(tmp_path)
    meta["device_type"], meta["world_size"] = saved_device, saved_world
    for r in range(saved_world):
        for k in ("generator", "torch_cpu"):
            tensors[f"rng.rank{r}.{k}"] = tensors[f"rng.rank0.{k}"]
    write_checkpoint(tmp_path, tensors, meta)
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = SPADTrainer.from_checkpoint(tmp_path)
    reseeded = any("reseeds" in str(w.message) for w in caught)
    assert reseeded == warns
    if not warns:
        assert torch.equal(resumed.generator.get_state(), trainer.generator.get_state())


def test_pas_horizon_sets_progress_for_every_step(monkeypatch):
    """The perturbation at step s is f(s / pas_steps) for every s, whatever train_steps says."""
    import spadfast.train.trainer as trainer_mod

    seen = []
    monkeypatch.setattr(trainer_mod, "spad_perturb", lambda mask, p, *a, **k: (seen.append(p), mask)[1])
    trainer = SPADTrainer(tiny_config(train_steps=12, pas_steps=4, log_every=100))
    trainer.fit()
    assert seen == [s / 4 for s in range(12)]


def test_tensorboard_gets_the_log_scalars_pas_and_overlays(tmp_path):
    pytest.importorskip("tensorboard")  # installed by scripts/bootstrap.sh; optional for users
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer = SPADTrainer(tiny_config(train_steps=4, log_every=2, val_every=2, val_samples=2,
                                      log_tensorboard=True), out_dir=tmp_path)
    trainer.fit()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    tags = events.Tags()
    assert {"train/loss", "train/lr", "train/pas_strength", "val/dice"} <= set(tags["scalars"])
    logged = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx([r["loss"] for r in logged])
    assert [e.step for e in events.Scalars("train/pas_strength")] == [2, 4]
    assert "val/overlay_0" in tags["images"]


@pytest.mark.slow
def test_compiled_training_step_runs_on_cpu_and_matches_eager():
    """``compile: true`` (the GPU configs' path) exercised on the CPU: a typo on that branch fails here."""
    eager = SPADTrainer(tiny_config(train_steps=2))
    compiled = SPADTrainer(tiny_config(train_steps=2, compile=True))
    eager.fit()
    compiled.fit()
    a, b = eager.state_tensors(), compiled.state_tensors()
    for k in a:
        if k.startswith(("model.", "ema.")):
            torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("how", ["recorded folder", "given folder", "synthetic", "volumes"])
def test_resume_says_in_one_line_which_data_it_uses(tmp_path, capsys, how):
    from spadfast.data.synthetic_volumes import write_demo_volumes

    val = None
    if how == "volumes":
        train = write_demo_volumes(tmp_path / "vol", n_cases=2, shape=(16, 16, 4), num_classes=2, n_test=0)
        expected = f"train_data {train.resolve()} (as recorded), val_data none"
    elif how == "synthetic":
        train = None
        expected = "train_data synthetic lesions (n=7, seed=0) (as recorded), val_data synthetic lesions (n=3, "
    else:
        train = write_synthetic_folder(tmp_path / "data", 4, 16, seed=0)
        val = write_synthetic_folder(tmp_path / "val", 2, 16, seed=1)
        origin = "(given)" if how == "given folder" else "(as recorded)"
        expected = f"train_data {train.resolve()} {origin}, val_data {val.resolve()} {origin}"
    first = SPADTrainer(tiny_config(), train_data=train, val_data=val)
    first.fit(1)
    first.save(tmp_path / "run")
    capsys.readouterr()
    given = (train, val) if how == "given folder" else (None, None)
    resumed = SPADTrainer.from_checkpoint(tmp_path / "run", *given)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("spadfast: resuming ") and "at step 1 on " in lines[0]
    assert expected in lines[0], lines[0]
    assert str(tmp_path / "run" / "checkpoint.safetensors") in lines[0] and resumed.step == 1


def test_cli_resume_prints_the_recorded_data(tmp_path, capsys):
    from spadfast.cli import main

    data = write_synthetic_folder(tmp_path / "data", 4, 16, seed=0)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(tiny_config(train_steps=1).to_dict()))
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), "--config", str(cfg)]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(run), "--steps", "2"]) == 0
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if "resuming" in line] == [
        f"spadfast: resuming {(run / 'checkpoint.safetensors').resolve()} at step 1 on train_data {data.resolve()} "
        "(as recorded), val_data none"
    ]


def test_run_log_lines_hold_the_expected_keys_and_values_in_order(tmp_path):
    cfg = tiny_config(train_steps=6, log_every=2, val_every=3, val_samples=2)
    trainer = SPADTrainer(cfg, out_dir=tmp_path)
    records = trainer.fit()
    lines = (tmp_path / "log.jsonl").read_text().splitlines(keepends=True)
    timing = [json.loads(line).get("steps_per_s") for line in lines]
    reference = SPADTrainer(cfg)  # the same run without a folder: its step-3 validation is the logged one
    reference.fit(3)
    val3 = reference.validate()
    lr = [cfg.lr * min(1.0, step / cfg.warmup_steps) for step in range(7)]  # the rate of the record's last step
    loss = {r["step"]: r["loss"] for r in records}
    expected = [
        {"step": 2, "loss": loss[2], "lr": lr[2], "steps_per_s": timing[0]},
        {"step": 3, "val_dice": val3},
        {"step": 4, "loss": loss[4], "lr": lr[4], "steps_per_s": timing[2]},
        {"step": 6, "loss": loss[6], "lr": lr[6], "steps_per_s": timing[3], "val_dice": records[-1]["val_dice"]},
    ]
    assert lines == [json.dumps(record) + "\n" for record in expected]
    assert all(isinstance(t, float) and t > 0 for i, t in enumerate(timing) if i != 1)
    assert records == [expected[0], expected[2], expected[3]] == trainer.history
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.jsonl"]


@pytest.mark.parametrize("out_dir, enabled", [(None, True), ("run", False)])
def test_run_log_without_a_folder_or_off_rank_zero_writes_nothing(tmp_path, out_dir, enabled):
    log = RunLog(tmp_path / out_dir if out_dir else None, "log.jsonl", tensorboard=True, enabled=enabled,
                 pas_strength=lambda step: 0.0)
    log.write({"step": 1, "loss": 0.5})
    log.image("val/overlay_0", np.zeros((4, 4, 3), np.uint8), 1)
    assert log.tensorboard() is None and list(tmp_path.iterdir()) == []
