"""Multi-class segmentation end to end: Decathlon-style volumes -> train -> predict .nii.gz -> per-class evaluate."""

import json

import numpy as np
import pytest
import torch

from spadfast import SPADTrainer
from spadfast.cli import main

from .helpers import tiny_config

nib = pytest.importorskip("nibabel")


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    from spadfast.volumes import write_demo_volumes

    return write_demo_volumes(tmp_path_factory.mktemp("vol") / "Task01", n_cases=3, shape=(20, 18, 6),
                              num_classes=3, n_test=2)


def test_trainer_and_sampler_carry_one_channel_per_class(volumes):
    from spadfast.volumes import VolumeSlices

    ds = VolumeSlices(volumes, image_size=16)
    val = VolumeSlices(volumes, image_size=16, foreground_fraction=None)
    trainer = SPADTrainer(tiny_config(num_classes=3, perturb_mode="condition"), train_data=ds, val_data=val)
    trainer.fit(2)
    images = torch.stack([ds[i][0] for i in range(3)])
    result = trainer.segment(images, steps=2, ensemble=2, return_members=True)
    assert result.probs.shape == result.std.shape == result.mask.shape == (3, 2, 16, 16)
    assert result.labels.shape == (3, 16, 16) and int(result.labels.max()) <= 2
    assert result.members.shape == (3, 2, 2, 16, 16)
    # mask is the one-hot of labels: at most one class per pixel, and background where no class wins
    assert int(result.mask.sum(1).max()) <= 1
    assert torch.equal(result.mask.any(1), result.labels > 0)
    assert 0.0 <= trainer.validate(2) <= 1.0


def test_binary_is_the_c2_case_bit_for_bit():
    a = SPADTrainer(tiny_config())
    b = SPADTrainer(tiny_config(num_classes=2))
    a.fit(2)
    b.fit(2)
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    ra, rb = a.segment(x, steps=2), b.segment(x, steps=2)
    assert torch.equal(ra.probs, rb.probs) and ra.probs.shape == (2, 1, 16, 16)
    assert torch.equal(ra.labels, ra.mask[:, 0].long())


def test_png_folders_and_synthetic_data_refuse_more_than_two_classes(tmp_path):
    from spadfast.data import write_synthetic_folder

    with pytest.raises(ValueError, match="synthetic"):
        SPADTrainer(tiny_config(num_classes=3))
    root = write_synthetic_folder(tmp_path / "d", 2, 16)
    with pytest.raises(ValueError, match="Decathlon"):
        SPADTrainer(tiny_config(num_classes=3), train_data=root)


def test_decathlon_train_predict_evaluate_through_the_cli(volumes, tmp_path, capsys):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({k: v for k, v in tiny_config(train_steps=2).to_dict().items()
                               if k not in ("num_classes", "image_channels", "slice_axis")}))
    run = tmp_path / "run"
    assert main(["train", "--data", str(volumes), "--out", str(run), "--config", str(cfg)]) == 0
    from spadfast.checkpoint import read_checkpoint

    config = read_checkpoint(run)[1]["config"]
    assert config["num_classes"] == 3 and config["image_channels"] == 1 and config["slice_axis"] == 2
    assert config["modalities"] == ["MR"]  # predict normalises as training did, with or without dataset.json
    pred = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(run), "--images", str(volumes / "imagesTs"), "--out", str(pred),
                 "--steps", "2", "--ensemble", "1", "--uncertainty", "--probabilities"]) == 0
    for src in sorted((volumes / "labelsTs").glob("*.nii.gz")):
        got, ref = nib.load(str(pred / src.name)), nib.load(str(src))
        assert got.shape == ref.shape and np.allclose(got.affine, ref.affine)
        assert set(np.unique(np.asarray(got.dataobj))) <= {0, 1, 2}
    report_path = tmp_path / "m.json"
    assert main(["evaluate", "--pred", str(pred), "--gt", str(volumes / "labelsTs"), "--json", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert len(report["cases"]) == 2 and set(report["mean"]["per_class"]) == {"1", "2"}
    assert "per_class" in report["cases"][0]
