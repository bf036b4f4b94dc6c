"""Training and validating on volumes: the batch stream draws fresh slices every epoch (with or without loader
workers, and the same after a resume), the 2-D stream is the plain DistributedSampler permutation stream, and
validation scores a fixed, seeded, foreground-stratified slice set with classes absent from both maps left out."""

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from spadfast import SampleResult, SPADTrainer
from spadfast.data.batches import batch_iterator, validation_pairs
from spadfast.data.synthetic_volumes import write_demo_volumes
from spadfast.data.volumes import VolumeSlices

from .helpers import tiny_config

EPOCHS = 50
BATCH = 8


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """4 cases of 16 slices along axis 2: 64 slices, 23 of them with foreground."""
    return write_demo_volumes(tmp_path_factory.mktemp("vol") / "Task", n_cases=4, shape=(16, 16, 16),
                              num_classes=2, n_test=0)


def slice_numbers_by_content(root) -> dict[bytes, int]:
    """Every slice's image bytes -> its number in file order (the demo noise makes every slice unique)."""
    in_order = VolumeSlices(root, image_size=16, foreground_fraction=None)
    ids = {in_order[j][0].numpy().tobytes(): j for j in range(len(in_order))}
    assert len(ids) == len(in_order)
    return ids


def take(stream, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [next(stream) for _ in range(n)]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_training_stream_serves_every_slice_over_epochs(demo, num_workers):
    ids = slice_numbers_by_content(demo)
    ds = VolumeSlices(demo, image_size=16, seed=0)
    stream = batch_iterator(ds, BATCH, seed=0, start_micro=0, num_workers=num_workers, pin_memory=False)
    served, has_foreground = [], []
    for images, masks in take(stream, EPOCHS * len(ds) // BATCH):
        served += [ids[image.numpy().tobytes()] for image in images]
        has_foreground += [bool(mask.any()) for mask in masks]
    del stream
    assert set(served) == set(range(len(ds))), f"never served: {sorted(set(range(len(ds))) - set(served))}"
    assert abs(np.mean(has_foreground) - ds.foreground_fraction) < 0.05  # the foreground bias holds across epochs


def test_volume_stream_is_the_same_with_workers_and_after_a_resume(demo):
    ds = VolumeSlices(demo, image_size=16, seed=3)
    reference = take(batch_iterator(ds, BATCH, seed=1, start_micro=0, num_workers=0, pin_memory=False), 20)
    resumed = take(batch_iterator(ds, BATCH, seed=1, start_micro=7, num_workers=2, pin_memory=False), 13)
    for (a_img, a_mask), (b_img, b_mask) in zip(reference[7:], resumed):
        assert torch.equal(a_img, b_img) and torch.equal(a_mask, b_mask)
    # consecutive epochs serve different multisets of slices (frozen draws would serve the same one reordered)
    ids = slice_numbers_by_content(demo)
    per_epoch = len(ds) // BATCH
    epochs = [sorted(ids[image.numpy().tobytes()] for images, _ in reference[e * per_epoch : (e + 1) * per_epoch]
                     for image in images) for e in range(2)]
    assert epochs[0] != epochs[1]


class IndexImages(Dataset):
    """Item i: image filled with i, mask of zeros (the stream's order can be read back from the batches)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        return torch.full((1, 2, 2), float(i)), torch.zeros(1, 2, 2)


@pytest.mark.parametrize("start", [0, 5])
def test_2d_stream_is_the_seeded_permutation_stream(start):
    """A 2-D dataset's batches are epoch after epoch of ``randperm(n)`` seeded by ``seed + epoch`` (one process),
    cut into batches from micro-batch ``start`` on."""
    n, batch, seed = 7, 3, 11
    expected: list[int] = []
    for epoch in range(6):
        expected += torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
    expected = expected[start * batch :]
    stream = batch_iterator(IndexImages(n), batch, seed, start, num_workers=0, pin_memory=False)
    got = [int(v) for images, _ in take(stream, 8) for v in images[:, 0, 0, 0]]
    assert got == expected[: len(got)]


# ---------------------------------------------------------------------------------------------------- validation


def stub_segment(trainer, predict):
    """Replace the trainer's sampler by ``predict(images) -> mask [B,K,H,W]`` (bool)."""

    def segment(images, steps=None, ensemble=None, seed=0, **_):
        mask = predict(images)
        probs = mask.float()
        return SampleResult(probs, torch.zeros_like(probs), mask)

    trainer.segment = segment


def volume_trainer(demo, **overrides):
    cfg = tiny_config(val_samples=16, **overrides)
    ds = VolumeSlices(demo, image_size=16, seed=cfg.seed)
    return SPADTrainer(cfg, train_data=ds, val_data=demo)


def test_an_all_background_model_scores_zero_on_volume_validation(demo):
    trainer = volume_trainer(demo)
    stub_segment(trainer, lambda images: torch.zeros(images.shape[0], 1, *images.shape[2:], dtype=torch.bool))
    assert trainer.validate() == 0.0
    assert trainer.validate(64) == 0.0  # every slice: the 41 empty ones do not count as hits


def test_an_untrained_model_does_not_score_high_on_volume_validation(demo):
    trainer = volume_trainer(demo, sample_steps=2)
    assert trainer.validate() < 0.3


def test_the_volume_validation_set_is_fixed_seeded_and_half_foreground(demo):
    val = VolumeSlices(demo, image_size=16, foreground_fraction=None)
    a = validation_pairs(val, 16, seed=0)
    b = validation_pairs(val, 16, seed=0)
    other = validation_pairs(val, 16, seed=1)
    assert len(a) == 16 and all(torch.equal(x[0], y[0]) for x, y in zip(a, b))
    assert not all(torch.equal(x[0], y[0]) for x, y in zip(a, other))
    assert sum(bool(mask.any()) for _, mask in a) == 8
    assert sum(bool(mask.any()) for _, mask in validation_pairs(val, 30, seed=0)) == 15
    assert len(validation_pairs(val, 100, seed=0)) == len(val)
    # the trainer scores that set, the same one at every call
    trainer = volume_trainer(demo)
    seen = []
    stub_segment(trainer, lambda images: seen.append(images.clone()) or torch.zeros(
        images.shape[0], 1, *images.shape[2:], dtype=torch.bool))
    trainer.validate()
    trainer.validate()
    assert torch.equal(seen[0], seen[1]) and torch.equal(seen[0], torch.stack([p[0] for p in a]))


class FixedPairs(Dataset):
    """A multi-class validation dataset of given masks (images are zeros)."""

    def __init__(self, masks: torch.Tensor) -> None:
        self.masks = masks

    def __len__(self) -> int:
        return self.masks.shape[0]

    def __getitem__(self, i):
        return torch.zeros(1, *self.masks.shape[2:]), self.masks[i].float()


def blob(present: bool, shift: int = 0) -> torch.Tensor:
    mask = torch.zeros(8, 8, dtype=torch.bool)
    if present:
        mask[2 + shift : 5 + shift, 2:6] = True
    return mask


# (truth, prediction) per image and class: "-" absent, "T" present, "S" present and shifted by one row
CASES = {
    "all empty": (["--", "--"], ["--", "--"]),
    "perfect, one class absent": (["T-", "T-"], ["T-", "T-"]),
    "missed class": (["TT", "T-"], ["T-", "T-"]),
    "hallucinated class": (["T-", "--"], ["TT", "-T"]),
    "shifted": (["TS", "-T"], ["ST", "-S"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_validation_dice_leaves_out_classes_absent_from_both_maps(name):
    truth_codes, pred_codes = CASES[name]

    def masks(codes):
        return torch.stack([torch.stack([blob(c != "-", shift=int(c == "S")) for c in code]) for code in codes])

    truth, pred = masks(truth_codes), masks(pred_codes)
    scores = []
    for t, p in zip(truth.reshape(-1, 8, 8), pred.reshape(-1, 8, 8)):
        if t.any() or p.any():
            scores.append(2 * (t & p).sum().item() / (t.sum().item() + p.sum().item()))
    expected = float(np.mean(scores)) if scores else 1.0
    trainer = SPADTrainer(tiny_config(num_classes=3, image_size=8), train_data=FixedPairs(truth),
                          val_data=FixedPairs(truth))
    stub_segment(trainer, lambda images: pred)
    assert trainer.validate(len(truth)) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("resize", [True, False])
def test_volume_slice_draws_follow_the_config_seed_on_every_path(demo, resize):
    """Issue 29.2: the library path (a folder given to the trainer, as ``--resume`` and ``ablate`` pass it) draws
    with ``config.seed``, as the CLI's fresh run does; two seeds draw different slices."""
    from spadfast.cli import _volume_data
    from spadfast.data.batches import volume_dataset

    def draws(dataset) -> list:
        """Epoch 0's slice of every item, and the seed of the patch draws on top of them (resize: false)."""
        slices = getattr(dataset, "dataset", dataset)
        return [slices.slice_of(i, epoch=0) for i in range(len(slices))] + [dataset.seed]

    configs = {seed: tiny_config(seed=seed, num_classes=2, resize=resize) for seed in (0, 7)}
    library = {seed: SPADTrainer(cfg, demo).train_data for seed, cfg in configs.items()}
    from_cli = _volume_data(configs[7], demo, None)[1]
    assert draws(library[7]) == draws(from_cli) == draws(volume_dataset(demo, configs[7]))
    assert draws(library[7])[:-1] != draws(library[0])[:-1]


def test_cli_volume_resume_with_a_seed_is_bit_identical(demo, tmp_path):
    """Issue 29.2: ``spadfast train`` on volumes with seed 7, stopped after 2 steps and resumed to 4, ends on the
    same tensors (weights, EMA, optimizer, random streams) as an uninterrupted 4-step run."""
    import json

    from spadfast.cli import main
    from spadfast.models.checkpoint import read_checkpoint

    config = tmp_path / "seed7.json"
    config.write_text(json.dumps({**tiny_config(seed=7, num_classes=2, pas_steps=4, log_every=1,
                                                batch_size=4).to_dict(), "device": "cpu"}))
    whole, split = tmp_path / "whole", tmp_path / "split"
    base = ["train", "--data", str(demo), "--config", str(config)]
    assert main([*base, "--out", str(whole), "--steps", "4"]) == 0
    assert main([*base, "--out", str(split), "--steps", "2"]) == 0
    assert main(["train", "--data", str(demo), "--out", str(split), "--resume", "--steps", "4"]) == 0
    expected, _ = read_checkpoint(whole)
    resumed, meta = read_checkpoint(split)
    assert meta["step"] == 4 and expected.keys() == resumed.keys()
    differing = [name for name in expected if not torch.equal(expected[name], resumed[name])]
    assert not differing, f"resumed run differs from the uninterrupted one in {differing[:5]}"


@pytest.mark.parametrize("resize", [True, False])
def test_validation_scores_the_labels_predict_writes(resize, monkeypatch):
    """Issue 29.8: where two class probabilities exceed the threshold, the pixel belongs to the likelier class only
    (``labels_from_probs``, what ``predict`` writes), on the resized and the native-resolution (sliding window)
    path alike. Class 1 is right; class 2 at 0.6 under it would count as a wrong class-2 pixel (Dice 0.5)."""
    from spadfast.infer import sliding_window

    truth = torch.zeros(2, 2, 12, 12)
    truth[:, 0, 3:8, 3:9] = 1
    probs = torch.full((2, 12, 12), 0.1)
    probs[0, 3:8, 3:9], probs[1, 3:8, 3:9] = 0.9, 0.6
    cfg = tiny_config(num_classes=3, image_size=12 if resize else 8, resize=resize)
    trainer = SPADTrainer(cfg, train_data=FixedPairs(truth), val_data=FixedPairs(truth))
    trainer.segment = lambda images, **_: SampleResult.from_members(
        probs.expand(images.shape[0], 1, 2, 12, 12), trainer.config.threshold)
    monkeypatch.setattr(sliding_window, "segment_image", lambda *_, **__: (probs, torch.zeros_like(probs)))
    assert trainer.validate(2) == 1.0


def test_a_large_label_value_without_dataset_json_is_refused_naming_the_file(tmp_path):
    """Issue 29.14: labels {0, 255} in a volume set without dataset.json would make a 256-class model; the set is
    refused naming the file, the value and the fix. Dense class numbers pass however many there are."""
    import nibabel as nib

    root = write_demo_volumes(tmp_path / "Task", n_cases=2, shape=(12, 12, 4), num_classes=2, n_test=0)
    (root / "dataset.json").unlink()
    assert VolumeSlices(root, image_size=8).num_classes == 2
    path = root / "labelsTr" / "case_001.nii.gz"
    img = nib.load(path)
    labels = np.asarray(img.dataobj).astype(np.uint8)
    nib.save(nib.Nifti1Image(labels * 255, img.affine, img.header), path)
    with pytest.raises(ValueError, match=r"case_001\.nii\.gz holds label 255.*256-class.*\[0, 1, 255\].*0/1.*dataset"):
        VolumeSlices(root, image_size=8)
    many = np.zeros_like(labels)
    many.flat[:120] = np.arange(120)  # 0..119: dense class numbers, a large label set
    nib.save(nib.Nifti1Image(many, img.affine, img.header), path)
    assert VolumeSlices(root, image_size=8).num_classes == 120


def test_a_multi_class_volume_set_in_a_binary_run_is_refused_naming_the_classes(tmp_path):
    """Issue 29.14: three classes in the volumes, ``num_classes: 2`` in the config: refused with the folder, the
    classes found and the fix, never merged."""
    root = write_demo_volumes(tmp_path / "Task", n_cases=2, shape=(12, 12, 4), num_classes=3, n_test=0)
    with pytest.raises(ValueError, match=r"`train_data` .*Task' holds 3 classes .* `num_classes` is 2: set "
                                         r"`num_classes: 3`"):
        SPADTrainer(tiny_config(), root)
    assert SPADTrainer(tiny_config(num_classes=3), root).train_data.dataset.num_classes == 3  # patches of slices
