"""``ignore_label``: unannotated pixels (e.g. Pascal VOC's 255) take no part in the loss, validation or evaluation
when declared, and are refused by file when not."""

import cv2
import numpy as np
import pytest
import torch

from spadfast import SPADTrainer
from spadfast.data.folders import SegmentationFolder
from spadfast.data.patches import patch_corner
from spadfast.diffusion.training_inputs import supervised_loss
from spadfast.evaluation.class_scores import present_class_dice
from spadfast.evaluation.evaluate import evaluate_folders

from .helpers import tiny_config


def _folder(root, classes=3, n=4, size=20, seed=0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        labels = np.zeros((size, size), np.uint8)
        labels[3:9, 3:9] = 1
        labels[11:17, 9:18] = 2 if classes > 2 else 1
        labels[rng.random(labels.shape) < 0.1] = 255  # scattered unannotated pixels
        image = (np.where(labels == 255, 0, labels) * 90 + rng.integers(0, 30, labels.shape)).astype(np.uint8)
        for sub, arr in (("images", image), ("masks", labels)):
            (root / sub).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / sub / f"{i}.png"), arr)
    return root


@pytest.mark.parametrize("classes", [2, 3])
def test_folder_marks_ignored_pixels_minus_one_in_every_channel(tmp_path, classes):
    root = _folder(tmp_path / "d", classes)
    ds = SegmentationFolder(root, num_classes=classes, ignore_label=255)
    labels = cv2.imread(str(root / "masks" / "1.png"), cv2.IMREAD_UNCHANGED)
    mask = ds[1][1].numpy()
    assert mask.shape == (classes - 1, 20, 20)
    assert (mask[:, labels == 255] == -1).all()
    for k in range(1, classes):
        assert np.array_equal(mask[k - 1] == 1, labels == k)
    if classes > 2:  # (a binary mask reads any nonzero value as foreground)
        with pytest.raises(ValueError, match=r"0\.png holds class value 255.*ignore_label: 255"):
            SegmentationFolder(root, num_classes=classes)


def test_folder_refuses_values_that_are_neither_class_nor_ignore(tmp_path):
    root = _folder(tmp_path / "d")
    bad = cv2.imread(str(root / "masks" / "2.png"), cv2.IMREAD_UNCHANGED)
    bad[0, 0] = 7
    cv2.imwrite(str(root / "masks" / "2.png"), bad)
    with pytest.raises(ValueError, match=r"2\.png holds class value 7.*or 255"):
        SegmentationFolder(root, num_classes=3, ignore_label=255)


def test_config_refuses_an_ignore_label_that_is_a_class():
    with pytest.raises(ValueError, match="ignore_label"):
        tiny_config(num_classes=3, ignore_label=2)


def test_loss_is_the_mse_over_annotated_pixels(monkeypatch):
    """x0 prediction in input mode: the target is the clean mask; with the network's output fixed, the loss is the
    squared error averaged over annotated pixels only, so changing the mask where it is ignored changes nothing."""
    trainer = SPADTrainer(tiny_config(ignore_label=255, perturb_mode="input", prediction_type="sample",
                                      x0_loss_weight=0.0))  # the squared error alone (the x0 loss has its own test)
    out = torch.randn(3, 1, 16, 16)
    monkeypatch.setattr(trainer, "_forward", lambda *a, **k: out)
    image = torch.rand(3, 1, 16, 16) * 2 - 1
    mask = (torch.rand(3, 1, 16, 16) > 0.5).float()
    valid = (torch.rand(3, 1, 16, 16) > 0.3).float()
    other = torch.where(valid > 0, mask, 1 - mask)
    by_hand = float((((out - (mask * 2 - 1)) ** 2) * valid).sum() / valid.sum())
    for m in (mask, other):
        trainer.generator.manual_seed(5)
        assert float(trainer._loss(image, m, 0, valid)) == pytest.approx(by_hand, rel=1e-6)
    trainer.generator.manual_seed(5)
    full = float(trainer._loss(image, mask, 0, torch.ones_like(valid)))
    assert full == pytest.approx(float(((out - (mask * 2 - 1)) ** 2).mean()), rel=1e-6)


def test_supervised_loss_by_hand():
    logits = torch.randn(2, 1, 5, 6)
    mask = (torch.rand(2, 1, 5, 6) > 0.5).float()
    valid = (torch.rand(2, 1, 5, 6) > 0.4).float()
    p = torch.sigmoid(logits)
    bce = -(mask * torch.log(p) + (1 - mask) * torch.log(1 - p))
    bce = (bce * valid).sum() / valid.sum()
    pv = p * valid
    dice = (2 * (pv * mask).sum((2, 3)) + 1) / (pv.sum((2, 3)) + mask.sum((2, 3)) + 1)
    assert float(supervised_loss(logits, mask, valid=valid)) == pytest.approx(float(bce + 1 - dice.mean()), rel=1e-5)


def test_training_on_a_folder_with_ignored_pixels(tmp_path):
    root = _folder(tmp_path / "d")
    trainer = SPADTrainer(tiny_config(num_classes=3, ignore_label=255, train_steps=2, val_every=2, val_samples=2),
                          train_data=root, val_data=root)
    history = trainer.fit()
    assert np.isfinite(history[-1]["loss"]) and 0 <= trainer.validate() <= 1


def test_patches_are_not_centred_on_ignored_pixels():
    mask = torch.zeros(1, 40, 40)
    mask[0, :, :20] = -1  # the left half is ignored, one foreground pixel on the right
    mask[0, 30, 35] = 1
    rng = np.random.default_rng(0)
    for _ in range(20):
        y, x = patch_corner(mask, (8, 8), rng, 1.0)
        assert y <= 30 < y + 8 and x <= 35 < x + 8


def test_validation_dice_leaves_ignored_pixels_out():
    truth = torch.zeros(1, 8, 8)
    truth[0, :4] = 1
    truth[0, 6:] = -1
    pred = torch.zeros(1, 8, 8, dtype=torch.bool)
    pred[0, :4] = True
    pred[0, 6:] = True  # "wrong" only where ignored
    assert present_class_dice(pred & (truth >= 0), truth > 0.5) == [1.0]


def test_evaluate_ignore_scores_ignored_pixels_as_neither(tmp_path):
    root = _folder(tmp_path / "d")
    (tmp_path / "pred").mkdir()
    for p in sorted((root / "masks").glob("*.png")):
        labels = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        pred = np.where(labels == 255, 2, labels).astype(np.uint8)  # disagrees only where ignored
        cv2.imwrite(str(tmp_path / "pred" / p.name), pred)
    report = evaluate_folders(tmp_path / "pred", root / "masks", ignore=255)
    assert report["mean"]["dice"] == 1.0 and set(report["classes"]) == {"1", "2"}
    with pytest.raises(ValueError, match="255"):
        evaluate_folders(tmp_path / "pred", root / "masks")  # 255 undeclared: refused, naming a file
    with pytest.raises(ValueError, match="ignore"):
        evaluate_folders(tmp_path / "pred", root / "masks", ignore=-3)
