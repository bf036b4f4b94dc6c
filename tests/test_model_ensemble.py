"""Ensembles of models: members split across models (same denoiser rows), mean and std over all members, the CLI
and Segmenter.load take several models, mismatched models are refused by key."""

import pytest
import torch

from spadfast import SPADTrainer
from spadfast.cli import main as cli_main
from spadfast.model_ensemble import ModelEnsemble
from spadfast.predict import Segmenter
from spadfast.synthetic import write_synthetic_folder

from .helpers import tiny_config


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ens")
    for seed in (0, 1):
        t = SPADTrainer(tiny_config(train_steps=2, seed=seed))
        t.fit()
        t.save(root / f"run{seed}")
    write_synthetic_folder(root / "data", 3, 16, seed=5)
    return root


def test_members_are_split_across_models_and_pooled(runs):
    a, b = Segmenter.load(runs / "run0"), Segmenter.load(runs / "run1")
    both = Segmenter.load([runs / "run0", runs / "run1"])
    assert isinstance(both, ModelEnsemble)
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    out = both.segment(x, steps=2, ensemble=5, seed=0, return_members=True, noise_keys=[3, 4])
    assert out.members.shape == (2, 5, 16, 16)
    ka = [(k * 1_000_033 + 0) % 2**31 for k in (3, 4)]
    kb = [(k * 1_000_033 + 1) % 2**31 for k in (3, 4)]
    ma = a.segment(x, steps=2, ensemble=3, seed=0, return_members=True, noise_keys=ka).members
    mb = b.segment(x, steps=2, ensemble=2, seed=0, return_members=True, noise_keys=kb).members
    members = torch.cat([ma, mb], dim=1)
    torch.testing.assert_close(out.members, members)
    torch.testing.assert_close(out.probs[:, 0], members.mean(1))
    torch.testing.assert_close(out.std[:, 0], members.std(1, unbiased=False))


def test_cli_predicts_with_several_checkpoints(runs, tmp_path):
    assert cli_main(["predict", "--checkpoint", str(runs / "run0"), str(runs / "run1"), "--images",
                     str(runs / "data" / "images"), "--out", str(tmp_path / "p"), "--steps", "2",
                     "--ensemble", "4"]) == 0
    assert len(list((tmp_path / "p").glob("*.png"))) == 3


def test_models_that_read_other_images_are_refused_by_key(runs, tmp_path):
    t = SPADTrainer(tiny_config(train_steps=1, image_size=32))
    t.save(tmp_path / "big")
    with pytest.raises(ValueError, match="image_size"):
        Segmenter.load([runs / "run0", tmp_path / "big"])
