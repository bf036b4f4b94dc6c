"""step_fusion from the config, the Segmenter, a model ensemble and ``predict --step-fusion`` to the sampler."""

import numpy as np
import pytest
import torch

from spadfast import SPADConfig, SPADTrainer
from spadfast.cli import main
from spadfast.data.synthetic import write_synthetic_folder
from spadfast.diffusion.sampler import STEP_FUSIONS
from spadfast.infer.ensemble import ModelEnsemble
from spadfast.infer.segmenter import Segmenter

from ..helpers import tiny_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("fusion")
    trainer = SPADTrainer(tiny_config(train_steps=2))
    trainer.fit()
    trainer.save(root / "run")
    write_synthetic_folder(root / "data", 2, 16, seed=3)
    return root


def test_config_field_defaults_to_mean_and_refuses_other_values():
    assert SPADConfig().step_fusion == "mean"  # the diffusion study's best measured setting fuses the steps
    assert tiny_config(step_fusion="uncertainty").step_fusion == "uncertainty"
    with pytest.raises(ValueError, match="`step_fusion`"):
        tiny_config(step_fusion="last")


def test_config_reaches_the_sampler_and_segmenter_setter_changes_predictions(run):
    seg = Segmenter.from_checkpoint(run / "run", device="cpu")
    assert seg.step_fusion == "mean" and seg.sampler.step_fusion == "mean"  # the run's config: the default
    image = (np.random.default_rng(0).random((16, 16)) * 255).astype(np.uint8)
    fused = seg.predict(image, steps=4)
    seg.step_fusion = "none"
    assert seg.config.step_fusion == "none"
    plain = seg.predict(image, steps=4)
    assert fused.probs.shape == plain.probs.shape and not np.allclose(fused.probs, plain.probs, atol=1e-4)
    images = torch.rand(2, 1, 16, 16) * 2 - 1
    per_call = Segmenter.from_checkpoint(run / "run", device="cpu").segment(images, steps=4, step_fusion="none")
    assert torch.equal(per_call.probs, seg.segment(images, steps=4).probs)
    with pytest.raises(ValueError, match="`step_fusion`"):
        seg.step_fusion = "max"
    ens = ModelEnsemble([Segmenter.from_checkpoint(run / "run", device="cpu") for _ in range(2)])
    ens.step_fusion = "uncertainty"
    assert [s.sampler.step_fusion for s in ens.segmenters] == ["uncertainty"] * 2 and ens.step_fusion == "uncertainty"


def test_predict_cli_step_fusion(run, capsys):
    outs = {}
    for fusion in ("none", "mean"):
        out = run / f"pred_{fusion}"
        assert main(["predict", "--checkpoint", str(run / "run"), "--images", str(run / "data" / "images"), "--out",
                     str(out), "--steps", "4", "--probabilities", "--step-fusion", fusion]) == 0
        outs[fusion] = sorted(p.read_bytes() for p in (out / "probabilities").iterdir())
    assert outs["none"] != outs["mean"]
    with pytest.raises(SystemExit):
        main(["predict", "--checkpoint", str(run / "run"), "--images", str(run / "data" / "images"), "--out",
              str(run / "bad"), "--step-fusion", "max"])
    assert "--step-fusion" in capsys.readouterr().err
    from spadfast.cli import build_parser

    action = next(a for a in build_parser()._subparsers._group_actions[0].choices["predict"]._actions
                  if a.dest == "step_fusion")
    assert tuple(action.choices) == STEP_FUSIONS
