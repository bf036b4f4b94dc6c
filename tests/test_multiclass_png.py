"""Multi-class 2-D label maps: PNG folders with class values train, predict writes label PNGs, evaluate reports per
class; values outside the classes (255 "ignore" included) are refused by file."""

import cv2
import numpy as np
import pytest

from spadfast import SPADTrainer
from spadfast.evaluate import evaluate_folders
from spadfast.folders import SegmentationFolder
from spadfast.predict import Segmenter, predict_folder

from .helpers import tiny_config


def _folder(root, n=4, size=16, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        labels = np.zeros((size, size), np.uint8)
        labels[2:8, 2:8] = 1
        labels[9:14, 8:15] = 2 if classes > 2 else 1
        labels = np.roll(labels, int(rng.integers(0, 3)), axis=0)
        image = (labels * 90 + rng.integers(0, 30, labels.shape)).astype(np.uint8)
        for sub, arr in (("images", image), ("masks", labels)):
            (root / sub).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / sub / f"{i}.png"), arr)
    return root


def test_class_maps_become_one_channel_per_class(tmp_path):
    root = _folder(tmp_path / "d")
    ds = SegmentationFolder(root, num_classes=3)
    image, mask = ds[0]
    labels = cv2.imread(str(root / "masks" / "0.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (2, 16, 16)
    assert np.array_equal(mask[0].numpy() > 0, labels == 1) and np.array_equal(mask[1].numpy() > 0, labels == 2)
    resized = SegmentationFolder(root, num_classes=3, image_size=8)[0][1]
    assert resized.shape == (2, 8, 8) and set(resized.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("value", [3, 255])
def test_values_outside_the_classes_are_refused_by_file(tmp_path, value):
    root = _folder(tmp_path / "d")
    bad = cv2.imread(str(root / "masks" / "2.png"), cv2.IMREAD_UNCHANGED)
    bad[0, 0] = value
    cv2.imwrite(str(root / "masks" / "2.png"), bad)
    with pytest.raises(ValueError, match=rf"2\.png holds class value {value}"):
        SegmentationFolder(root, num_classes=3)


@pytest.mark.parametrize("resize", [True, False])
def test_train_predict_and_evaluate_label_pngs(tmp_path, resize):
    root = _folder(tmp_path / "d")
    trainer = SPADTrainer(tiny_config(num_classes=3, train_steps=2, resize=resize), root)
    trainer.fit()
    trainer.save(tmp_path / "run")
    out = tmp_path / "pred"
    predict_folder(Segmenter.from_checkpoint(tmp_path / "run"), root / "images", out, steps=2, ensemble=2,
                   uncertainty=True)
    labels = cv2.imread(str(out / "0.png"), cv2.IMREAD_UNCHANGED)
    assert labels.shape == (16, 16) and labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1, 2}
    report = evaluate_folders(out, root / "masks")
    assert set(report["mean"]["per_class"]) <= {"1", "2"} and len(report["cases"]) == 4
