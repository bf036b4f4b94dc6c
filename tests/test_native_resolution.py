"""Native resolution (``resize: false``): training patches keyed by (seed, epoch, index) with foreground
oversampling, whole-image sliding-window prediction and validation, clear refusals, and checkpoints written before
the key existed predicting exactly as before."""

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from spadfast import SPADTrainer
from spadfast.data.batches import batch_iterator
from spadfast.data.folders import SegmentationFolder
from spadfast.data.patches import PatchDraws
from spadfast.infer.segmenter import Segmenter, predict_folder

from .helpers import tiny_config

ERA = Path(__file__).parent / "fixtures" / "resize_era"


def _folder(root: Path, sizes, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for i, (h, w) in enumerate(sizes):
        mask = np.zeros((h, w), np.uint8)
        cy, cx = rng.integers(0, h), rng.integers(0, w)
        mask[max(0, cy - 3):cy + 3, max(0, cx - 3):cx + 3] = 255
        image = np.clip(mask * 0.7 + rng.random((h, w)) * 60, 0, 255).astype(np.uint8)
        for sub, arr in (("images", image), ("masks", mask)):
            (root / sub).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / sub / f"{i:02d}.png"), arr)
    return root


def test_patches_are_a_pure_function_of_seed_epoch_and_index(tmp_path):
    folder = SegmentationFolder(_folder(tmp_path, [(40, 56), (16, 16), (12, 30), (33, 17)]), mixed_sizes=True)
    draws = PatchDraws(folder, 16, seed=3, foreground_share=0.0)
    for i in range(len(folder)):
        a, b = draws.draw(i, 5), draws.draw(i, 5)
        assert a[0].shape == (1, 16, 16) and a[1].shape == (1, 16, 16)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert any(not torch.equal(draws.draw(0, e)[0], draws.draw(0, 0)[0]) for e in range(1, 6))  # epochs differ
    small, small_mask = draws.draw(2, 0)  # 12x30 image padded to 16 rows: mask padding is background
    assert small.shape == (1, 16, 16) and not bool(small_mask[0, 12:].any())


def test_foreground_oversampling_centres_patches_on_foreground(tmp_path):
    folder = SegmentationFolder(_folder(tmp_path, [(64, 64)] * 6, seed=1), mixed_sizes=True)
    always = PatchDraws(folder, 16, seed=0, foreground_share=1.0)
    never = PatchDraws(folder, 16, seed=0, foreground_share=0.0)
    hits_always = [bool(always.draw(i, e)[1].any()) for i in range(6) for e in range(20)]
    hits_never = [bool(never.draw(i, e)[1].any()) for i in range(6) for e in range(20)]
    assert all(hits_always)
    assert sum(hits_never) < 0.6 * len(hits_never)  # a 6x6 lesion in 64x64: uniform patches often miss it


def test_patch_stream_is_the_same_with_workers(tmp_path):
    folder = SegmentationFolder(_folder(tmp_path, [(40, 56), (20, 24), (33, 17), (16, 48)]), mixed_sizes=True)
    draws = PatchDraws(folder, 16, seed=2)
    streams = []
    for workers in (0, 2):
        it = batch_iterator(draws, 2, seed=0, start_micro=3, num_workers=workers, pin_memory=False)
        streams.append([next(it) for _ in range(5)])
    for (ia, ma), (ib, mb) in zip(*streams):
        assert torch.equal(ia, ib) and torch.equal(ma, mb)


def test_native_training_validates_and_predicts_whole_images(tmp_path):
    train = _folder(tmp_path / "train", [(40, 56), (16, 16), (24, 20), (36, 36)])
    val = _folder(tmp_path / "val", [(30, 44), (20, 28)], seed=5)
    trainer = SPADTrainer(tiny_config(train_steps=2, resize=False), train, val)
    assert isinstance(trainer.train_data, PatchDraws)
    trainer.fit()
    assert 0.0 <= trainer.validate() <= 1.0
    trainer.save(tmp_path / "run")
    out = tmp_path / "pred"
    predict_folder(Segmenter.from_checkpoint(tmp_path / "run"), val / "images", out, steps=2, ensemble=2)
    for name, shape in (("00.png", (30, 44)), ("01.png", (20, 28))):
        assert cv2.imread(str(out / name), cv2.IMREAD_GRAYSCALE).shape == shape  # native size, not squashed


def test_too_small_images_are_refused_by_file_name(tmp_path):
    root = _folder(tmp_path / "d", [(20, 20), (6, 30)])
    with pytest.raises(ValueError, match="01.png.*at least 8 px"):
        SegmentationFolder(root, mixed_sizes=True)
    with pytest.raises(ValueError, match="tile_overlap"):
        tiny_config(tile_overlap=1.0)
    with pytest.raises(ValueError, match="foreground_oversample"):
        tiny_config(foreground_oversample=1.5)


def test_checkpoints_from_before_the_key_resize_and_predict_exactly_as_then(tmp_path):
    segmenter = Segmenter.from_checkpoint(ERA)
    assert segmenter.config.resize is True
    probs = segmenter.segment(torch.from_numpy(np.load(ERA / "input.npy")), steps=2, ensemble=2).probs
    # float rounding differs between CPUs' convolution kernels (see test_unet's stored-checkpoint test)
    torch.testing.assert_close(probs, torch.from_numpy(np.load(ERA / "probs.npy")), rtol=0, atol=1e-6)
    out = tmp_path / "pred"
    predict_folder(segmenter, ERA / "images", out, steps=2, ensemble=2)
    for f in sorted((ERA / "pred").glob("*.png")):
        assert (out / f.name).read_bytes() == f.read_bytes(), f.name
    assert tiny_config().resize is False  # new configs: native resolution
    shutil.rmtree(out)


def test_native_volume_training_cuts_patches_from_native_slices(tmp_path):
    from spadfast.data.synthetic_volumes import write_demo_volumes
    from spadfast.data.volumes import VolumeSlices

    root = write_demo_volumes(tmp_path / "vols", n_cases=2, shape=(40, 28, 6), num_classes=3, n_test=0)
    trainer = SPADTrainer(tiny_config(num_classes=3, train_steps=2, resize=False, image_size=16), root, root)
    assert isinstance(trainer.train_data, PatchDraws) and isinstance(trainer.train_data.dataset, VolumeSlices)
    image, mask = trainer.train_data.draw(0, 1)
    assert image.shape[-2:] == (16, 16) and mask.shape == (2, 16, 16)
    assert tuple(trainer.val_data.load_slice(0)[0].shape[-2:]) == (40, 28)  # validation: whole native slices
    trainer.fit()
    assert 0.0 <= trainer.validate(2) <= 1.0


def test_images_of_the_window_size_predict_as_with_resize(tmp_path):
    from spadfast.data.synthetic import write_synthetic_folder

    data = write_synthetic_folder(tmp_path / "data", 3, 16, seed=2)
    trainer = SPADTrainer(tiny_config(train_steps=1, resize=False))
    trainer.save(tmp_path / "run")
    native = Segmenter.from_checkpoint(tmp_path / "run")
    resized = Segmenter.from_checkpoint(tmp_path / "run")
    resized.config.resize = True
    for seg, out in ((native, tmp_path / "a"), (resized, tmp_path / "b")):
        predict_folder(seg, data / "images", out, steps=2, ensemble=2, uncertainty=True)
    for f in sorted((tmp_path / "a").rglob("*.png")):
        assert f.read_bytes() == (tmp_path / "b" / f.relative_to(tmp_path / "a")).read_bytes(), f.name
