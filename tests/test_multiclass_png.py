"""Multi-class 2-D label maps: PNG folders with class values train, predict writes label PNGs, evaluate reports per
class; values outside the classes (255 "ignore" included) are refused by file."""

import cv2
import numpy as np
import pytest

from spadfast import SPADTrainer
from spadfast.data.folders import SegmentationFolder
from spadfast.evaluation.evaluate import evaluate_folders
from spadfast.infer.segmenter import Segmenter, predict_folder

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
                   uncertainty=True, probabilities=True)
    labels = cv2.imread(str(out / "0.png"), cv2.IMREAD_UNCHANGED)
    assert labels.shape == (16, 16) and labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1, 2}
    maps = [cv2.imread(str(out / "probabilities" / f"0_{k}.png"), cv2.IMREAD_UNCHANGED) for k in (1, 2)]
    assert all(m.dtype == np.uint16 and m.shape == (16, 16) for m in maps)
    probs = np.stack(maps).astype(np.float64) / 65535
    clear = (np.abs(probs - 0.5) > 1e-3).all(0)  # the 16-bit rounding cannot move these across the threshold
    expected = np.where(probs.max(0) > 0.5, probs.argmax(0) + 1, 0)
    assert np.array_equal(labels[clear], expected[clear]) and clear.sum() >= 16  # (ensemble 2: many ties at 0.5)
    report = evaluate_folders(out, root / "masks")
    assert set(report["mean"]["per_class"]) <= {"1", "2"} and len(report["cases"]) == 4


def _as_palette_png(path, labels, colours):
    from PIL import Image

    image = Image.fromarray(labels, mode="P")
    image.putpalette([c for rgb in colours for c in rgb])
    image.save(path)


def test_palette_pngs_are_read_by_index_for_training_and_evaluation(tmp_path):
    """Indexed-colour masks (Pascal VOC style): the palette index is the class, whatever its colour."""
    root = _folder(tmp_path / "d")
    colours = [(0, 0, 0), (128, 0, 0), (0, 128, 0)]
    gray = SegmentationFolder(root, num_classes=3)
    for p in sorted((root / "masks").glob("*.png")):
        _as_palette_png(p, cv2.imread(str(p), cv2.IMREAD_UNCHANGED), colours)
    assert cv2.imread(str(root / "masks" / "0.png"), cv2.IMREAD_UNCHANGED).ndim == 3  # OpenCV expands the palette
    palette = SegmentationFolder(root, num_classes=3)
    for i in range(len(gray)):
        assert np.array_equal(gray[i][1].numpy(), palette[i][1].numpy())
    report = evaluate_folders(root / "masks", root / "masks")
    assert set(report["classes"]) == {"1", "2"} and report["mean"]["dice"] == 1.0


def test_binary_palette_mask_is_foreground_by_index(tmp_path):
    from spadfast.io.files import read_mask

    labels = (np.random.default_rng(5).random((9, 13)) > 0.5).astype(np.uint8)
    _as_palette_png(tmp_path / "m.png", labels, [(255, 255, 255), (200, 30, 30)])  # background drawn white
    assert np.array_equal(read_mask(tmp_path / "m.png"), labels != 0)
