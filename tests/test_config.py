import json

import pytest

from spadfast import PerturbConfig, SPADConfig


def test_defaults_are_valid_and_round_trip(tmp_path):
    cfg = SPADConfig()
    assert cfg.model_in_channels == 2
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg.to_dict()))
    assert SPADConfig.from_file(path) == cfg


def test_yaml_and_nested_perturb(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("image_size: 32\nchannel_mults: [1, 2]\nperturb:\n  scd_max: 0.2\n  pas_kind: step\n")
    cfg = SPADConfig.from_file(path)
    assert cfg.image_size == 32 and cfg.channel_mults == (1, 2)
    assert isinstance(cfg.perturb, PerturbConfig) and cfg.perturb.scd_max == 0.2 and cfg.perturb.pas_kind == "step"


def test_condition_mode_adds_a_channel():
    assert SPADConfig(perturb_mode="condition", image_channels=3).model_in_channels == 5


@pytest.mark.parametrize(
    "data, key",
    [({"imag_size": 3}, "`imag_size`"), ({"perturb": {"scd_mx": 1}}, "`perturb.scd_mx`")],
)
def test_unknown_keys_name_the_key(data, key):
    with pytest.raises(ValueError, match=key):
        SPADConfig.from_dict(data)


@pytest.mark.parametrize(
    "data, exc, name",
    [
        ({"lr": "fast"}, TypeError, "`lr`"),
        ({"image_size": 32.5}, TypeError, "`image_size`"),
        ({"compile": "yes"}, TypeError, "`compile`"),
        ({"prediction_type": "noise"}, ValueError, "`prediction_type`"),
        ({"perturb_mode": "both"}, ValueError, "`perturb_mode`"),
        ({"amp": "fp8"}, ValueError, "`amp`"),
        ({"image_size": 30}, ValueError, "`image_size`"),
        ({"ema_decay": 1.0}, ValueError, "`ema_decay`"),
        ({"perturb": {"keep_ratio": 2.0}}, ValueError, "`keep_ratio`"),
        ({"perturb": {"pas_kind": "exp"}}, ValueError, "`pas_kind`"),
        ({"sample_steps": 2000}, ValueError, "`sample_steps`"),
    ],
)
def test_bad_values_name_the_field(data, exc, name):
    with pytest.raises(exc, match=name):
        SPADConfig.from_dict(data)


def test_bad_files_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        SPADConfig.from_file(bad)
    with pytest.raises(ValueError, match="missing.yaml"):
        SPADConfig.from_file(tmp_path / "missing.yaml")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("batchsize: 3\n")
    with pytest.raises(ValueError, match=r"unknown.yaml.*`batchsize`"):
        SPADConfig.from_file(unknown)


def test_nullable_clip_and_yaml_exponent_strings(tmp_path):
    assert SPADConfig(clip_sample=None).clip_sample is None
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1e-3\nbeta_start: 1e-4\n")  # PyYAML reads these as strings
    cfg = SPADConfig.from_file(path)
    assert cfg.lr == 1e-3 and cfg.beta_start == 1e-4


@pytest.mark.parametrize(
    "data, exc, name",
    [
        ({"beta_end": 2.0}, ValueError, "`beta_end`"),
        ({"beta_start": 0.0}, ValueError, "`beta_start`"),
        ({"grad_clip": float("nan")}, TypeError, "`grad_clip`"),
        ({"eta": float("inf")}, TypeError, "`eta`"),
        ({"weight_decay": -1.0}, ValueError, "`weight_decay`"),
        ({"device": "tpu"}, ValueError, "`device`"),
        ({"perturb": "x"}, TypeError, "`perturb`"),
        ({"perturb": {"scd_max": float("nan")}}, TypeError, "`scd_max`"),
    ],
)
def test_values_that_would_fail_during_training_are_rejected_at_construction(data, exc, name):
    with pytest.raises(exc, match=name):
        SPADConfig.from_dict(data)


def test_eta_sweep_accepts_exactly_the_unit_interval():
    import math

    from spadfast import SPADConfig

    for eta in [i / 20 for i in range(21)]:
        assert SPADConfig(eta=eta).eta == eta
    for eta in (-1e-9, -1.0, 1.0 + 1e-9, 1.5, 10.0, math.inf, math.nan):
        with pytest.raises((ValueError, TypeError), match="`eta`"):
            SPADConfig(eta=eta)


def test_pas_steps_is_an_optional_positive_int():
    from spadfast import SPADConfig

    assert SPADConfig(train_steps=10).pas_horizon == 10
    assert SPADConfig(train_steps=10, pas_steps=4).pas_horizon == 4
    with pytest.raises(TypeError, match="`pas_steps`"):
        SPADConfig(pas_steps=2.5)
    with pytest.raises(ValueError, match="`pas_steps`"):
        SPADConfig(pas_steps=0)


def test_compile_mode_is_one_of_torch_compiles_modes():
    from torch._inductor import list_mode_options

    from spadfast.config import COMPILE_MODES

    torch_modes = set(list_mode_options())
    assert set(COMPILE_MODES) <= torch_modes  # the modes accepted without asking torch are torch's
    for mode in torch_modes:
        assert SPADConfig(compile_mode=mode).compile_mode == mode
    for bad in ("turbo", "DEFAULT", "max_autotune", ""):
        with pytest.raises(ValueError, match="`compile_mode`.*max-autotune") as info:
            SPADConfig(compile_mode=bad)
        assert repr(bad) in str(info.value)


def test_a_gpu_sized_config_on_the_cpu_gets_one_warning_line_with_the_fix(tmp_path, capsys, monkeypatch):
    """Issue 29.15: ``train --preset gpu-base`` on a CPU prints one line naming the cpu presets before training;
    the cpu presets, and gpu-base on CUDA, print nothing."""
    from spadfast.cli import main
    from spadfast.config import cpu_training_hint
    from spadfast.data.synthetic import write_synthetic_folder
    from spadfast.train import trainer as trainer_module

    gpu = SPADConfig.preset("gpu-base")
    assert "cpu-small" in cpu_training_hint(gpu, "cpu") and "~14x" in cpu_training_hint(gpu, "cpu")
    assert cpu_training_hint(gpu, "cuda") is None
    assert cpu_training_hint(SPADConfig.preset("cpu-small"), "cpu") is None
    assert cpu_training_hint(SPADConfig.preset("cpu-medium"), "cpu") is None

    def no_training(self, steps=None):
        raise ValueError("fit is not run in this test")

    monkeypatch.setattr(trainer_module.SPADTrainer, "fit", no_training)
    data = write_synthetic_folder(tmp_path / "data", 2, 32, seed=0)
    args = ["train", "--data", str(data), "--preset", "gpu-base", "--device", "cpu", "--out", str(tmp_path / "run")]
    assert main(args) == 2
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "--preset cpu-small" in warnings[0]
