"""BcD scaled to each object (``bcd_object_frac``): the plain BcD when every object is large enough, a narrower band
around small objects, the same random stream either way."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spadfast.config import PerturbConfig
from spadfast.diffusion.perturb import spad_perturb
from spadfast.diffusion.structured_perturb import object_radii
from spadfast.ops.reference import canny


def _disks(centres_radii, size=40, batch=2):
    yy, xx = np.mgrid[0:size, 0:size]
    m = np.zeros((batch, 1, size, size), np.float32)
    for b in range(batch):
        for (cy, cx), r in centres_radii:
            m[b, 0][(yy - cy - b) ** 2 + (xx - cx) ** 2 <= r * r] = 1
    return torch.from_numpy(m)


@pytest.mark.parametrize("path", ["generator", "seed"])
def test_large_fraction_is_exactly_the_plain_bcd(path):
    mask = (torch.rand(3, 1, 33, 29, generator=torch.Generator().manual_seed(0)) > 0.6).float()
    outs = []
    for frac in (0.0, 1000.0):
        cfg = PerturbConfig(bcd_object_frac=frac)
        kwargs = dict(generator=torch.Generator().manual_seed(4)) if path == "generator" else dict(seed=4, offset=8)
        out = spad_perturb(mask, 0.1, cfg, backend="reference", **kwargs)
        after = torch.rand(1, generator=kwargs["generator"]) if path == "generator" else None
        outs.append((out, after))
    assert torch.equal(outs[0][0], outs[1][0])
    assert outs[0][1] is None or torch.equal(outs[0][1], outs[1][1])  # the stream advanced the same way


def test_object_radii_follow_the_equivalent_radius():
    mask = _disks([((10, 10), 9), ((30, 30), 2)], batch=1)
    groups = object_radii(mask, 3, 3.0, 0.4)
    assert [r for r, _ in groups] == [3, 1]  # big: min(1, 0.4 * 9.0 / 3) = 1 -> 3; small (13 px): 0.4 * 2.03 / 3 -> 1
    big, small = groups[0][1][0, 0], groups[1][1][0, 0]
    assert bool(big[10, 10]) and not bool(big[30, 30]) and bool(small[30, 30]) and not bool(small[10, 10])


def test_small_objects_get_a_narrower_band():
    mask = _disks([((12, 12), 9), ((30, 30), 2)])
    cfg = PerturbConfig(scd=False, bcd_max=0.0, blur_sigma_max=2.0, band_radius_max=3, bcd_object_frac=0.4)
    out = spad_perturb(mask, 0.0, cfg, seed=0, backend="reference")
    changed = (out - mask).abs() > 1e-6
    edges = canny(mask).float()
    near_small = torch.zeros_like(mask, dtype=torch.bool)
    near_small[..., 24:37, 24:37] = True
    within_1 = F.max_pool2d(edges, 3, stride=1, padding=1) > 0
    within_3 = F.max_pool2d(edges, 7, stride=1, padding=3) > 0
    assert bool(changed[near_small].any())
    assert not bool((changed & near_small & ~within_1).any())  # the small disk: a 1 px band only
    plain = spad_perturb(mask, 0.0, PerturbConfig(scd=False, bcd_max=0.0, band_radius_max=3), seed=0,
                         backend="reference")
    plain_changed = (plain - mask).abs() > 1e-6
    assert bool((plain_changed & near_small & ~within_1).any())  # without scaling its band is wider
    assert torch.equal(changed & ~near_small, plain_changed & ~near_small)  # the big disk is untouched by scaling
    assert bool((changed & within_3 & ~within_1).any())


def test_config_refuses_a_negative_fraction():
    with pytest.raises(ValueError, match="bcd_object_frac"):
        PerturbConfig(bcd_object_frac=-0.1)
    assert math.isclose(PerturbConfig(bcd_object_frac=0.5).bcd_object_frac, 0.5)
