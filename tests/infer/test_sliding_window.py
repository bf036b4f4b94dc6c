"""Sliding-window inference: coverage, Gaussian blending that normalises at borders, padding, independence of chunk
size and window order, and equality with one window when the image is one window."""

import itertools
from types import SimpleNamespace

import pytest
import torch

from spadfast.diffusion.sampler import image_noise_key
from spadfast.infer.sliding_window import (
    gaussian_importance,
    segment_tiled,
    window_key,
    window_positions,
    window_starts,
)


@pytest.mark.parametrize("window", [1, 7, 16, 33])
def test_windows_cover_every_pixel_with_bounded_steps(window):
    for length, overlap in itertools.product(range(1, 120), (0.0, 0.25, 0.5, 0.75, 0.9)):
        starts = window_starts(max(length, window), window, overlap)
        L = max(length, window)
        assert starts[0] == 0 and starts[-1] == L - window and starts == sorted(set(starts))
        step = max(1, round(window * (1 - overlap)))
        assert all(b - a <= step for a, b in zip(starts, starts[1:]))
        covered = torch.zeros(L, dtype=torch.bool)
        for s in starts:
            covered[s:s + window] = True
        assert bool(covered.all())


def test_gaussian_importance_peaks_in_the_centre_and_has_no_zeros():
    g = gaussian_importance((17, 10))
    assert g.shape == (17, 10) and float(g.max()) == 1.0 and bool((g > 0).all())
    assert torch.equal(g, g.flip(0)) and torch.allclose(g, g.flip(1))
    assert float(g[8, 4]) > float(g[0, 0])


def _pointwise(tiles, noise_keys, **_):
    """A fake segmenter whose output at a pixel depends on that pixel only: blending must reproduce it exactly."""
    p = torch.sigmoid(3 * tiles[:, :1])
    return SimpleNamespace(probs=p, std=0.1 * p)


@pytest.mark.parametrize("shape", [(16, 16), (5, 9), (16, 40), (37, 23), (64, 64), (1, 50)])
@pytest.mark.parametrize("overlap", [0.0, 0.5, 0.8])
def test_blending_normalises_at_borders_and_padding_round_trips(shape, overlap):
    image = torch.rand(2, *shape) * 2 - 1
    probs, std = segment_tiled(_pointwise, image, (16, 16), overlap, "img")
    want = torch.sigmoid(3 * image[:1])
    assert probs.shape == (1, *shape) and std.shape == (1, *shape)
    torch.testing.assert_close(probs, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(std, 0.1 * want, rtol=1e-5, atol=1e-6)


def _keyed(tiles, noise_keys, **_):
    """A fake segmenter whose output depends on each window's noise key (like the initial noise)."""
    k = torch.tensor([(key % 997) / 997 for key in noise_keys]).view(-1, 1, 1, 1)
    p = (torch.sigmoid(tiles[:, :1]) + k) / 2
    return SimpleNamespace(probs=p, std=k.expand_as(p))


def test_result_does_not_depend_on_chunk_size_or_window_order():
    image = torch.rand(1, 45, 70) * 2 - 1
    ref = segment_tiled(_keyed, image, (16, 16), 0.5, "case7", chunk=1)
    for chunk in (2, 5, 1000):
        out = segment_tiled(_keyed, image, (16, 16), 0.5, "case7", chunk=chunk)
        torch.testing.assert_close(out[0], ref[0], rtol=0, atol=1e-6)
    # the noise key is a function of (name, position), not of the order in which windows are visited
    assert window_key("case7", 16, 32) == window_key("case7", 16, 32) != window_key("case7", 32, 16)
    assert window_key("case7", 0, 0) != window_key("case8", 0, 0)
    assert len(set(window_positions((45, 70), (16, 16), 0.5))) == len(window_positions((45, 70), (16, 16), 0.5))


def test_one_window_equals_segmenting_the_image_itself():
    from spadfast import SPADTrainer

    from ..helpers import tiny_config

    trainer = SPADTrainer(tiny_config(train_steps=1))
    image = torch.rand(1, 16, 16) * 2 - 1
    probs, std = segment_tiled(trainer.segment, image, (16, 16), 0.5, "x", steps=2, ensemble=2)
    direct = trainer.segment(image[None], steps=2, ensemble=2, noise_keys=[image_noise_key("x")])
    torch.testing.assert_close(probs, direct.probs[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(std, direct.std[0], rtol=1e-5, atol=1e-6)


def test_bad_overlap_is_refused_by_name():
    with pytest.raises(ValueError, match="tile_overlap"):
        segment_tiled(_pointwise, torch.zeros(1, 8, 8), (8, 8), 1.0, "x")
