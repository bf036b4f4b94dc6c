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
    from spadfast.data.synthetic_volumes import write_demo_volumes

    return write_demo_volumes(tmp_path_factory.mktemp("vol") / "Task01", n_cases=3, shape=(20, 18, 6),
                              num_classes=3, n_test=2)


def test_trainer_and_sampler_carry_one_channel_per_class(volumes):
    from spadfast.data.volumes import VolumeSlices

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


def test_binary_is_the_c2_case_against_diffusers():
    """num_classes=2 is the binary model: one mask channel, probabilities from a DDIM loop run independently by
    diffusers over the same EMA model and noise, mask = probs > threshold, labels = mask."""
    DDIMScheduler = pytest.importorskip("diffusers").DDIMScheduler  # absent on some GPU machines
    from spadfast.diffusion.schedule import make_betas

    # diffusers keeps the last step: step fusion off (the default fuses; tests/infer/test_step_fusion.py)
    trainer = SPADTrainer(tiny_config(num_classes=2, threshold=0.3, step_fusion="none"))
    assert trainer.config.mask_channels == 1
    trainer.fit(2)
    B, K, S, H, W = 2, 2, 4, 16, 16  # S divides T, so diffusers' "t - T//S" previous step is right
    images = torch.rand(B, 1, H, W) * 2 - 1
    result = trainer.segment(images, steps=S, ensemble=K, seed=0, return_members=True)
    cfg = trainer.config
    betas = make_betas(cfg.beta_schedule, cfg.num_train_timesteps, cfg.beta_start, cfg.beta_end)
    sched = DDIMScheduler(num_train_timesteps=cfg.num_train_timesteps, trained_betas=betas.numpy(),
                          clip_sample=True, clip_sample_range=cfg.clip_sample, set_alpha_to_one=True,
                          timestep_spacing=cfg.timestep_spacing, prediction_type=cfg.prediction_type)
    sched.set_timesteps(S)
    x = torch.randn((B * K, 1, H, W), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for t in sched.timesteps:
            out = trainer.ema(torch.cat([x, images.repeat_interleave(K, 0)], 1), torch.full((B * K,), float(t)))
            x = sched.step(out, t, x, eta=0.0).prev_sample
    members = ((x.clamp(-1, 1) + 1) / 2).view(B, K, 1, H, W)
    torch.testing.assert_close(result.probs, members.mean(1), rtol=0, atol=1e-5)
    torch.testing.assert_close(result.members, members[:, :, 0], rtol=0, atol=1e-5)
    assert result.probs.shape == result.mask.shape == (B, 1, H, W)
    assert torch.equal(result.mask, result.probs > 0.3) and torch.equal(result.labels, result.mask[:, 0].long())
    assert ((result.probs > 0.3) != (result.probs > 0.5)).any()  # the threshold in use is the configured one


class _LabelMapOracle(torch.nn.Module):
    """A ``prediction_type="sample"`` model that predicts the label map written into its image channel: the image
    holds ``-1 + 2 * label / M`` (label in ``0..M``), the prediction is +1 on class m's pixels, -1 elsewhere."""

    def __init__(self, M: int):
        super().__init__()
        self.M = M
        self.unused = torch.nn.Parameter(torch.zeros(1))  # the trainer's optimiser needs a parameter

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        label = torch.round((x[:, self.M] + 1) * self.M / 2)  # the image follows the M noisy-mask channels
        classes = torch.arange(1, self.M + 1, dtype=x.dtype).view(1, self.M, 1, 1)
        return torch.where(label.unsqueeze(1) == classes, 1.0, -1.0)


# per class: (ground-truth rectangle, predicted rectangle, Dice by hand); rectangles are (row0, row1, col0, col1)
_CLASS_CASES = [
    ((1, 5, 1, 5), (1, 5, 2, 6), 2 * 12 / (16 + 16)),  # shifted one column: 12 of 16 pixels overlap
    ((8, 12, 8, 12), (8, 12, 8, 14), 2 * 16 / (16 + 24)),  # GT inside a wider prediction
    ((1, 4, 10, 14), (1, 4, 10, 14), 1.0),  # exact
]


def _oracle_val_pairs(M: int, predict: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Three 16x16 pairs (each shifted down by its index): the image encodes the prediction, the mask the truth."""
    pairs = []
    for shift in range(3):
        label_map, mask = torch.zeros(16, 16), torch.zeros(M, 16, 16)
        for m, (gt, pred, _) in enumerate(_CLASS_CASES[:M]):
            mask[m, gt[0] + shift : gt[1] + shift, gt[2] : gt[3]] = 1
            if predict:
                label_map[pred[0] + shift : pred[1] + shift, pred[2] : pred[3]] = m + 1
        pairs.append((-1 + 2 * label_map.unsqueeze(0) / M, mask))
    return pairs


@pytest.mark.parametrize("M", [1, 2, 3])
@pytest.mark.parametrize("predict", [True, False])
def test_validate_scores_a_known_prediction(M, predict):
    """validate() equals the mean of hand-computed Dice values; a model that predicts nothing scores 0."""
    pairs = _oracle_val_pairs(M, predict)
    cfg = tiny_config(num_classes=M + 1, prediction_type="sample", val_samples=len(pairs))
    trainer = SPADTrainer(cfg, train_data=pairs, val_data=pairs, model=_LabelMapOracle(M))
    expected = sum(d for _, _, d in _CLASS_CASES[:M]) / M if predict else 0.0
    assert trainer.validate() == pytest.approx(expected, abs=1e-4)


def test_synthetic_data_refuses_and_binary_png_masks_name_their_255_under_more_classes(tmp_path):
    from spadfast.data.synthetic import write_synthetic_folder

    with pytest.raises(ValueError, match="synthetic"):
        SPADTrainer(tiny_config(num_classes=3))
    root = write_synthetic_folder(tmp_path / "d", 2, 16)  # 0/255 binary masks: 255 is no class of 3
    with pytest.raises(ValueError, match=r"0000\.png holds class value 255 but num_classes is 3"):
        SPADTrainer(tiny_config(num_classes=3), train_data=root)


def test_decathlon_train_predict_evaluate_through_the_cli(volumes, tmp_path, capsys):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({k: v for k, v in tiny_config(train_steps=2).to_dict().items()
                               if k not in ("num_classes", "image_channels", "slice_axis")}))
    run = tmp_path / "run"
    assert main(["train", "--data", str(volumes), "--out", str(run), "--config", str(cfg)]) == 0
    from spadfast.models.checkpoint import read_checkpoint

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
