"""Ensembles of models: members split across models (same denoiser rows), mean and std over all members, the CLI
and Segmenter.load take several models, mismatched models are refused by key."""

import pytest
import torch

from spadfast import SPADTrainer
from spadfast.cli import main as cli_main
from spadfast.data.synthetic import write_synthetic_folder
from spadfast.infer.ensemble import ModelEnsemble
from spadfast.infer.segmenter import Segmenter

from ..helpers import tiny_config


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


def test_the_readme_ensemble_is_a_segmenter_in_every_documented_way(runs, tmp_path):
    """Issue 29.13: the README's lines on a list of models (``Segmenter.load([a, b, c])`` then ``seg.predict``)."""
    import cv2
    import numpy as np

    from spadfast import Segmenter as TopLevel

    images = runs / "data" / "images"
    assert cli_main(["predict", "--checkpoint", str(runs / "run0"), str(runs / "run1"), "--images", str(images),
                     "--out", str(tmp_path / "p"), "--steps", "2", "--ensemble", "4"]) == 0
    seg = TopLevel.load([str(runs / "run0"), str(runs / "run1")])  # the README: Segmenter.load([a, b, c])
    assert isinstance(seg, ModelEnsemble)
    for path in sorted(images.glob("*.png")):
        out = seg.predict(str(path), steps=2, ensemble=4)  # the README: out = seg.predict("scan.png")
        out.mask, out.probs, out.std  # noqa: B018  (the README's next line)
        written = cv2.imread(str(tmp_path / "p" / path.name), cv2.IMREAD_GRAYSCALE) > 0
        assert np.array_equal(out.mask > 0, written), path.name
        array = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)  # "or an [H,W] / [H,W,C] numpy array"
        assert np.array_equal(seg.predict(array, steps=2, ensemble=4, name=path.stem).probs, out.probs)
    tta = seg.predict(str(path), steps=2, ensemble=4, tta=True)  # README: Segmenter.predict(x, tta=True)
    assert tta.probs.shape == out.probs.shape and not np.array_equal(tta.probs, out.probs)


def test_members_that_would_be_dropped_are_refused_before_work(runs, tmp_path, capsys):
    """Issue 29.7: fewer members than models, or TTA with one member per model, is one line, before any output."""
    both = Segmenter.load([runs / "run0", runs / "run1"])
    x = torch.rand(1, 1, 16, 16) * 2 - 1
    with pytest.raises(ValueError, match=r"`ensemble` 1 is below the 2 models of the ensemble: models 2..2 would "
                                         r"never run"):
        both.segment(x, steps=1, ensemble=1)
    with pytest.raises(ValueError, match="`ensemble` 3 .* pass ensemble >= 4"):
        both.predict(x[0, 0].numpy(), steps=1, ensemble=3, tta=True)
    images = str(runs / "data" / "images")
    for checkpoints, extra, message in (
        ([runs / "run0", runs / "run1"], ["--ensemble", "1"], "`--ensemble` 1 is below the 2 models"),
        ([runs / "run0"], ["--ensemble", "1", "--tta"], "test-time augmentation with `--ensemble` 1"),
    ):
        out = tmp_path / f"out{len(extra)}"
        argv = ["predict", "--checkpoint", *map(str, checkpoints), "--images", images, "--out", str(out)]
        assert cli_main([*argv, "--steps", "1", *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists()
    single = Segmenter.load(runs / "run0")
    with pytest.raises(ValueError, match="pass ensemble >= 2"):
        single.predict(x[0, 0].numpy(), steps=1, ensemble=1, tta=True)


def test_tta_over_an_ensemble_of_models_runs_every_model(runs):
    """Each model's members are spread over the views: with 4 members over 2 models and 4 views, model 1 runs."""
    from spadfast.infer.tta import segment_tta, with_tta

    a, b = Segmenter.load(runs / "run0"), Segmenter.load(runs / "run1")
    both = ModelEnsemble([a, b])
    x = torch.rand(1, 1, 16, 20) * 2 - 1  # not square: 4 views
    out = with_tta(both)(x, steps=2, ensemble=4, seed=0, return_members=True, noise_keys=[9])
    ka, kb = [(9 * 1_000_033 + 0) % 2**31], [(9 * 1_000_033 + 1) % 2**31]
    ma = segment_tta(a.segment, x, 2, 2, 0, ka).members
    mb = segment_tta(b.segment, x, 2, 2, 0, kb).members
    torch.testing.assert_close(out.members, torch.cat([ma, mb], dim=1))
