"""Training a 3-D denoiser (issue 32.2): 5-D batches through the trainer, bit-exact resume, validation, refusals;
both 3-D model types (the plain 3-D UNet and its cached-encoder form)."""

from __future__ import annotations

import pytest
import torch

from spadfast.config import SPADConfig
from spadfast.data.patches3d import VolumePatches3D
from spadfast.data.synthetic_volumes import write_demo_volumes
from spadfast.diffusion.sampler import labels_from_probs
from spadfast.models.cached_unet3d import SPADCachedUNet3D
from spadfast.models.unet3d import SPADUNet3D
from spadfast.train.trainer import SPADTrainer


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return write_demo_volumes(tmp_path_factory.mktemp("vol3d"), n_cases=2, shape=(12, 16, 10), num_classes=2)


def _cfg(**kw) -> SPADConfig:
    base = dict(model_type="unet3d", patch_size_3d=(8, 8, 8), base_channels=4, channel_mults=(1, 2),
                attention_levels=(), num_classes=2, batch_size=2, train_steps=4, warmup_steps=1, sample_steps=2,
                ensemble=2, device="cpu", progress_bar=False, log_every=1, val_samples=2)
    return SPADConfig(**{**base, **kw})


MODEL_TYPES_3D = pytest.mark.parametrize("model_type", ["unet3d", "cached_unet3d"])
MODEL_CLASS = {"unet3d": SPADUNet3D, "cached_unet3d": SPADCachedUNet3D}


def _state(trainer: SPADTrainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer.state_tensors().items()}


@MODEL_TYPES_3D
def test_fit_resume_is_bit_exact_and_5d_throughout(demo, tmp_path, model_type):
    full = SPADTrainer(_cfg(model_type=model_type), train_data=demo)
    assert isinstance(full.model, MODEL_CLASS[model_type]) and isinstance(full.train_data, VolumePatches3D)
    assert full.config.spacing_3d == pytest.approx((0.8, 0.8, 2.5))  # filled from the volumes: z pooled never
    assert full.model.strides == ((2, 2, 1),)
    full.fit(4)
    half = SPADTrainer(_cfg(model_type=model_type), train_data=demo)
    half.fit(2)
    path = half.save(tmp_path / "run")
    resumed = SPADTrainer.from_checkpoint(path)
    assert resumed.step == 2 and resumed.config.spacing_3d == full.config.spacing_3d
    resumed.fit(2)
    a, b = _state(full), _state(resumed)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:3]
    assert [r["loss"] for r in full.history[2:]] == [r["loss"] for r in resumed.history[2:]]


@MODEL_TYPES_3D
def test_segment_validate_and_determinism(demo, model_type):
    trainer = SPADTrainer(_cfg(val_every=2, model_type=model_type), train_data=demo, val_data=demo)
    records = trainer.fit(2)
    assert 0.0 <= records[-1]["val_dice"] <= 1.0
    volume = trainer.val_data.case(0)[0][None]  # [1, 1, 12, 16, 10]: not a multiple of the pooling
    r1 = trainer.segment(volume, seed=3)
    r2 = trainer.segment(volume, seed=3)
    assert r1.probs.shape == (1, 1, 12, 16, 10) and r1.labels.shape == (1, 12, 16, 10)
    assert torch.equal(r1.probs, r2.probs) and r1.std.shape == r1.probs.shape
    assert not torch.equal(r1.probs, trainer.segment(volume, seed=4).probs)
    assert trainer.sample(volume, seed=3).shape == (1, 1, 12, 16, 10)
    with pytest.raises(ValueError, match=r"`images` must have shape \[B,C,D,H,W\]"):
        trainer.segment(volume[0])  # a 4-D tensor to a 3-D model


def test_labels_from_probs_of_volumes():
    two = torch.zeros(1, 2, 3, 1, 1)
    two[0, 1, 1] = 0.8
    two[0, 0, 2] = 0.7
    assert labels_from_probs(two)[0, :, 0, 0].tolist() == [0, 2, 1]
    assert labels_from_probs(two.numpy())[0, :, 0, 0].tolist() == [0, 2, 1]


def test_refusals_before_work(demo, tmp_path):
    with pytest.raises(ValueError, match="`train_data`: model_type unet3d .* the synthetic lesions are 2-D"):
        SPADTrainer(_cfg())
    folder = tmp_path / "flat"
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    with pytest.raises(ValueError, match="`train_data`: model_type unet3d .* is 2-D"):
        SPADTrainer(_cfg(), train_data=folder)
    with pytest.raises(ValueError, match=r"`patch_size_3d` \(16, 8, 8\) is larger than case"):
        SPADTrainer(_cfg(patch_size_3d=(16, 8, 8)), train_data=demo)
    flat = [(torch.zeros(1, 8, 8), torch.zeros(1, 8, 8))]
    with pytest.raises(ValueError, match=r"`train_data` items must be 3-D"):
        SPADTrainer(_cfg(), train_data=flat)
    with pytest.raises(ValueError, match="`patch_size_3d` .* `batch_size` 64 needs about"):  # before any file is read
        SPADTrainer(_cfg(patch_size_3d=(512, 512, 512), batch_size=64), train_data=tmp_path / "absent")
    with pytest.raises(ValueError, match="`augment`"):
        _cfg(augment={"gamma_prob": 0.5})


@MODEL_TYPES_3D
def test_cli_train_resume_predict(demo, tmp_path, model_type):
    """``spadfast train`` / ``--resume`` / ``predict`` with a unet3d config: the run records the volume folder (so
    the resume finds it), ends on the tensors of an uninterrupted run, and predict writes label maps on the input's
    grid."""
    import json

    import nibabel as nib

    from spadfast.cli import main
    from spadfast.models.checkpoint import read_checkpoint

    config = tmp_path / "c.json"
    config.write_text(json.dumps({**_cfg(seed=7, model_type=model_type).to_dict(), "spacing_3d": []}))
    base = ["train", "--data", str(demo), "--config", str(config)]
    assert main([*base, "--out", str(tmp_path / "whole"), "--steps", "3"]) == 0
    assert main([*base, "--out", str(tmp_path / "split"), "--steps", "1"]) == 0
    assert main(["train", "--out", str(tmp_path / "split"), "--resume", "--steps", "3"]) == 0
    expected, _ = read_checkpoint(tmp_path / "whole")
    resumed, meta = read_checkpoint(tmp_path / "split")
    assert meta["step"] == 3 and meta["data"]["train"]["kind"] == "folder"
    assert [k for k in expected if not torch.equal(expected[k], resumed[k])] == []
    assert main(["predict", "--checkpoint", str(tmp_path / "whole"), "--images", str(demo / "imagesTs"),
                 "--out", str(tmp_path / "pred")]) == 0
    written = sorted((tmp_path / "pred").glob("*.nii.gz"))
    source = sorted((demo / "imagesTs").glob("*.nii.gz"))
    assert len(written) == len(source) >= 1
    assert nib.load(str(written[0])).shape == nib.load(str(source[0])).shape


def test_training_inputs_reduce_over_every_spatial_axis_of_volumes():
    """The x0 and supervised losses' Dice sums over D, H and W of a 5-D batch (not per W column): equal to the same
    voxels laid out as a 4-D batch; self-conditioning keeps or zeroes whole rows."""
    from spadfast.diffusion.training_inputs import self_condition_rows, supervised_loss, x0_mask_loss

    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(2, 2, 3, 4, 5, generator=g) * 2 - 1
    mask = (torch.rand(2, 2, 3, 4, 5, generator=g) > 0.5).float()
    flat = dict(x0=x0.reshape(2, 2, 12, 5), mask=mask.reshape(2, 2, 12, 5))
    torch.testing.assert_close(x0_mask_loss(x0, mask), x0_mask_loss(flat["x0"], flat["mask"]))
    torch.testing.assert_close(supervised_loss(x0, mask), supervised_loss(flat["x0"], flat["mask"]))
    kept = self_condition_rows(x0, 0.5, torch.Generator().manual_seed(1))
    assert all(torch.equal(kept[b], x0[b]) or not kept[b].any() for b in range(2))


@pytest.mark.parametrize("kw", [dict(objective="supervised"), dict(self_condition=True),
                                dict(x0_loss_weight=0.5, perturb_prob=0.5)])
@MODEL_TYPES_3D
def test_training_options_run_on_volumes(demo, kw, model_type):
    trainer = SPADTrainer(_cfg(**kw, model_type=model_type), train_data=demo)
    assert torch.isfinite(torch.tensor(trainer.fit(1)[-1]["loss"]))
    result = trainer.segment(trainer.train_data.case(0)[0][None], seed=0)
    assert result.probs.shape == (1, 1, 12, 16, 10)
