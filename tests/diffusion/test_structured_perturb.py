"""Structured corruptions: each changes what its name says, within its bound, seeded; checked against scipy."""

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from spadfast.config import PerturbConfig
from spadfast.diffusion.perturb import spad_perturb
from spadfast.diffusion.structured_perturb import (
    _dilate,
    _disk,
    _erode,
    add_blobs,
    erase_cells,
    generator_for,
    morph_objects,
    warp_contours,
)
from spadfast.ops.blobs import blob_masks


def _masks(seed: int, n: int = 4, h: int = 37, w: int = 29) -> torch.Tensor:
    return blob_masks((n, 1, h, w), seed=seed, cell=8, threshold=0.7).float()


@pytest.mark.parametrize("radius", range(0, 5))
def test_dilation_and_erosion_match_scipy(radius):
    m = _masks(radius)
    disk = _disk(radius, torch.device("cpu")).numpy().astype(bool) if radius else np.ones((1, 1), bool)
    for row in range(m.shape[0]):
        a = m[row, 0].numpy().astype(bool)
        assert np.array_equal(_dilate(m[row:row + 1], radius)[0, 0].numpy().astype(bool),
                              ndimage.binary_dilation(a, disk) if radius else a)
        assert np.array_equal(_erode(m[row:row + 1], radius)[0, 0].numpy().astype(bool),
                              ndimage.binary_erosion(a, disk, border_value=1) if radius else a)


def test_erase_cells_removes_only_non_anchor_cells_at_the_share():
    m = _masks(1, n=64, h=64, w=64)
    out = erase_cells(m, 0.6, 4, 0.25, torch.Generator().manual_seed(0))
    assert bool((out <= m).all()) and set(out.unique().tolist()) <= {0.0, 1.0}
    # the same draws, replayed: cell u < share and not an anchor is erased, everything else kept
    g = torch.Generator().manual_seed(0)
    u, anchor = torch.rand((64, 1, 16, 16), generator=g), torch.rand((64, 1, 16, 16), generator=g) < 0.25
    erased = ((u < 0.6) & ~anchor).repeat_interleave(4, 2).repeat_interleave(4, 3)
    assert torch.equal(out, m * (~erased).float())
    share = float(((u < 0.6) & ~anchor).float().mean())
    assert abs(share - 0.6 * 0.75) < 0.02


@pytest.mark.parametrize("px", [0, 1, 2, 3])
def test_morph_stays_within_its_radius_and_changes_objects(px):
    m = _masks(2)
    out = morph_objects(m, px, torch.Generator().manual_seed(px))
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    assert bool((out <= _dilate(m, px)).all()) and bool((out >= _erode(m, px)).all())
    if px == 0:
        assert torch.equal(out, m)
    else:
        assert not torch.equal(out, m)


@pytest.mark.parametrize("px", [0.0, 0.7, 1.5, 3.0])
def test_warp_moves_pixels_by_at_most_its_peak(px):
    m = _masks(3, n=6, h=48, w=40)
    out = warp_contours(m, px, torch.Generator().manual_seed(1))
    r = math.ceil(px) + 1
    square = lambda x, k: torch.nn.functional.max_pool2d(x, 2 * k + 1, 1, k)  # noqa: E731
    assert bool((out <= square(m, r)).all()) and bool((1 - out <= square(1 - m, r)).all())
    assert torch.equal(out, m) if px == 0 else not torch.equal(out, m)


def test_blobs_land_on_background_at_the_poisson_rate():
    m = _masks(4, n=400, h=40, w=40)
    out = add_blobs(m, 2.0, 0, torch.Generator().manual_seed(0))
    assert bool((out >= m).all())
    added = (out - m).flatten(1).sum(1)
    assert abs(float(added.mean()) - 2.0) < 0.25  # Poisson(2) one-pixel blobs, duplicates rare
    big = add_blobs(m[:5], 1.0, 3, torch.Generator().manual_seed(1))
    assert set(big.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(add_blobs(m, 0.0, 3, torch.Generator()), m)


def test_spad_perturb_with_structured_options_is_seeded_and_binary():
    cfg = PerturbConfig(scd_kind="erase", scd_max=0.5, morph_px=2, warp_px=1.5, blob_count=1.0, bcd=False)
    m = _masks(5)
    a = spad_perturb(m, 0.1, cfg, seed=3, offset=0, backend="reference")
    assert torch.equal(a, spad_perturb(m, 0.1, cfg, seed=3, offset=0, backend="reference"))
    assert not torch.equal(a, spad_perturb(m, 0.1, cfg, seed=3, offset=m.numel() * 2, backend="reference"))
    assert set(a.unique().tolist()) <= {0.0, 1.0}  # whole pixels change: survives the forward noise
    assert torch.equal(spad_perturb(m, 0.95, cfg, seed=3, backend="reference"), m)  # PaS at 0: clean
    assert generator_for(1, 2).initial_seed() == generator_for(1, 2).initial_seed() != generator_for(1, 3).initial_seed()


@pytest.mark.parametrize("bad", [dict(scd_kind="blur"), dict(scd_kind="erase", scd_max=1.5), dict(morph_px=-1),
                                 dict(warp_px=-0.5), dict(blob_count=-1.0)])
def test_bad_structured_settings_are_refused_by_name(bad):
    with pytest.raises(ValueError, match=next(iter(bad)) if "scd_max" not in bad else "scd_max"):
        PerturbConfig(**bad)
