"""spadfast.data.ambiguous: one annotator (the probability map thresholded at a seeded tau) per item and epoch,
exact masks, batches a pure function of (seed, step) through the trainer's stream, bit-exact resume, bad input."""

import numpy as np
import pytest
import torch

from spadfast import SPADTrainer
from spadfast.data.ambiguous import AmbiguousSlices, annotator_tau, fixed_taus
from spadfast.data.batches import batch_iterator
from spadfast.data.patches import PatchDraws

from ..helpers import tiny_config


def _maps(n: int = 5, size: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images in [-1, 1] and smooth probability maps (radial ramps of random centres) [n,size,size]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    probs = []
    for _ in range(n):
        cy, cx = rng.uniform(4, size - 4, 2)
        r = np.hypot(yy - cy, xx - cx)
        probs.append(np.clip(1.2 - r / 6, 0, 1))
    probs = np.stack(probs).astype(np.float32)
    images = (2 * probs - 1 + rng.normal(0, 0.05, probs.shape)).clip(-1, 1).astype(np.float32)
    return images, probs


def test_items_are_thresholded_maps_with_shapes_and_dtypes():
    images, probs = _maps()
    ds = AmbiguousSlices(images, probs, seed=1)
    assert len(ds) == 5
    for epoch in range(3):
        for i in range(len(ds)):
            image, mask = ds.draw(i, epoch)
            assert image.shape == mask.shape == (1, 16, 16)
            assert image.dtype == mask.dtype == torch.float32
            tau = ds.tau_of(i, epoch)
            assert 0.3 <= tau < 0.7
            np.testing.assert_array_equal(mask[0].numpy(), (probs[i] > tau).astype(np.float32))
            np.testing.assert_array_equal(image[0].numpy(), images[i])
    np.testing.assert_array_equal(ds.probability(2)[0].numpy(), probs[2])


def test_draws_are_a_pure_function_of_seed_epoch_index_and_change_per_epoch():
    images, probs = _maps()
    a, b = AmbiguousSlices(images, probs, seed=4), AmbiguousSlices(images, probs, seed=4)
    assert [a.tau_of(i, e) for e in range(4) for i in range(5)] == [b.tau_of(i, e) for e in range(4) for i in range(5)]
    taus_over_epochs = {a.tau_of(0, e) for e in range(6)}
    assert len(taus_over_epochs) == 6  # a new annotator every epoch
    other = AmbiguousSlices(images, probs, seed=5)
    assert [a.tau_of(0, e) for e in range(6)] != [other.tau_of(0, e) for e in range(6)]
    a.set_epoch(3)
    assert a.tau_of(2) == a.tau_of(2, 3) == annotator_tau(4, 3, 2, 0.3, 0.7)
    assert torch.equal(a[2][1], b.draw(2, 3)[1])


def test_taus_are_uniform_over_the_range():
    taus = np.array([annotator_tau(0, e, i, 0.3, 0.7) for e in range(40) for i in range(50)])
    assert taus.min() >= 0.3 and taus.max() < 0.7
    counts = np.histogram(taus, bins=4, range=(0.3, 0.7))[0]
    assert np.all(np.abs(counts - 500) < 80)  # 2000 draws: each quarter ~500 (sd ~19)


def test_fixed_tau_is_the_consensus_in_every_epoch():
    images, probs = _maps()
    ds = AmbiguousSlices(images, probs, tau=0.5)
    masks = [ds.draw(1, e)[1] for e in range(3)]
    assert all(torch.equal(m, masks[0]) for m in masks)
    np.testing.assert_array_equal(masks[0][0].numpy(), (probs[1] > 0.5).astype(np.float32))
    assert fixed_taus(8) == [0.325, 0.375, 0.425, 0.475, 0.525, 0.575, 0.625, 0.675]
    # annotators at a higher threshold mark a subset
    assert bool((ds.annotation(1, 0.675) <= ds.annotation(1, 0.325)).all())


def _batches(ds, seed: int, start: int, n: int) -> list[torch.Tensor]:
    it = batch_iterator(ds, batch_size=3, seed=seed, start_micro=start, num_workers=0, pin_memory=False)
    return [next(it)[1] for _ in range(n)]


def test_trainer_batches_are_a_pure_function_of_seed_and_step_and_draw_new_annotators():
    images, probs = _maps(n=4)
    ds = PatchDraws(AmbiguousSlices(images, probs, seed=2), 16, seed=2)  # whole slices: the stream passes epochs
    straight = _batches(ds, seed=2, start=0, n=8)
    resumed = _batches(ds, seed=2, start=5, n=3)
    assert all(torch.equal(x, y) for x, y in zip(straight[5:], resumed))
    # 8 batches of 3 over 4 slices span 6 epochs: each slice is seen under several annotators
    masks = torch.cat(straight)
    sums = {float(m.sum()) for m in masks}
    assert len(sums) > 4


def test_training_on_annotator_draws_resumes_bit_exactly(tmp_path):
    images, probs = _maps(n=4)

    def data():
        return PatchDraws(AmbiguousSlices(images, probs, seed=0), 16, seed=0)

    cfg = tiny_config(train_steps=4)
    straight = SPADTrainer(cfg, train_data=data())
    straight.fit(4)
    first = SPADTrainer(cfg, train_data=data())
    first.fit(2)
    first.save(tmp_path / "run")
    resumed = SPADTrainer.from_checkpoint(tmp_path / "run", train_data=data())
    resumed.fit(2)
    a, b = straight.state_tensors(), resumed.state_tensors()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(images=np.zeros((2, 8, 8)), probs=np.zeros((2, 8, 9))), ValueError, "one shape"),
        (dict(images=np.zeros((8, 8)), probs=np.zeros((8, 8))), ValueError, "`images`"),
        (dict(images=[[0.0]], probs=np.zeros((1, 1, 1))), TypeError, "`images`"),
        (dict(images=np.full((1, 4, 4), 2.0)), ValueError, r"`images` must lie in \[-1, 1\]"),
        (dict(probs=np.full((1, 4, 4), 1.5)), ValueError, r"`probs` must lie in \[0, 1\]"),
        (dict(probs=np.full((1, 4, 4), np.nan)), ValueError, "`probs` holds NaN"),
        (dict(tau=1.0), ValueError, "tau"),
        (dict(tau_range=(0.7, 0.3)), ValueError, "tau_range"),
        (dict(tau_range=(0.0, 0.5)), ValueError, "tau_range"),
        (dict(tau_range=(0.3,)), ValueError, "tau_range"),
        (dict(seed=-1), ValueError, "seed"),
        (dict(names=["a", "a"]), ValueError, "names"),
    ],
)
def test_bad_input_names_the_argument(kwargs, error, match):
    args = dict(images=np.zeros((1, 4, 4), np.float32), probs=np.full((1, 4, 4), 0.5, np.float32))
    args.update(kwargs)
    with pytest.raises(error, match=match):
        AmbiguousSlices(**args)


def test_index_out_of_range_and_negative_index():
    images, probs = _maps(n=2)
    ds = AmbiguousSlices(images, probs)
    with pytest.raises(IndexError, match="out of range"):
        ds.draw(2)
    assert torch.equal(ds[-1][0], ds[1][0])
