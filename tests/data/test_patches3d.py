"""3-D training patches (issue 32.2): shapes, (seed, epoch, index) draws, foreground oversampling, refusals, flips."""

from __future__ import annotations

import pytest
import torch

from spadfast.data.patches3d import VolumePatches3D, flips_3d
from spadfast.data.synthetic_volumes import write_demo_volumes
from spadfast.data.volumes import VolumeSlices


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    root = write_demo_volumes(tmp_path_factory.mktemp("vol3d"), n_cases=2, shape=(16, 16, 12), num_classes=3)
    return VolumeSlices(root, image_size=None, foreground_fraction=None)


def test_patch_shapes_dtypes_and_values(volumes):
    ds = VolumePatches3D(volumes, (8, 12, 6), seed=1)
    assert len(ds) == 2 and ds.spacing == pytest.approx((0.8, 0.8, 2.5))
    assert (ds.num_classes, ds.image_channels, ds.modalities, ds.root) == (3, 1, ["MR"], volumes.root)
    image, mask = ds.draw(1, 4)
    assert image.shape == (1, 8, 12, 6) and mask.shape == (2, 8, 12, 6)
    assert image.dtype == mask.dtype == torch.float32
    assert set(mask.unique().tolist()) <= {0.0, 1.0} and float(mask.sum(0).max()) <= 1
    # the block is the volume's own voxels at the drawn corner
    z, y, x = ds.corner(1, 4)
    whole_image, whole_mask = ds.case(1)
    assert torch.equal(image, whole_image[:, z:z + 8, y:y + 12, x:x + 6])
    assert torch.equal(mask, whole_mask[:, z:z + 8, y:y + 12, x:x + 6])


def test_draws_are_pure_functions_of_seed_epoch_index(volumes):
    a, b = VolumePatches3D(volumes, (4, 4, 4), seed=5), VolumePatches3D(volumes, (4, 4, 4), seed=5)
    corners = [a.corner(i, e) for e in range(6) for i in range(2)]
    assert corners == [b.corner(i, e) for e in range(6) for i in range(2)]
    assert len(set(corners)) > 3  # epochs draw new blocks
    assert corners != [VolumePatches3D(volumes, (4, 4, 4), seed=6).corner(i, e) for e in range(6) for i in range(2)]
    assert torch.equal(a[1][0], a.draw(1, 0)[0])


def test_foreground_oversampling(volumes):
    always = VolumePatches3D(volumes, (4, 4, 4), seed=0, foreground_share=1.0)
    never = VolumePatches3D(volumes, (4, 4, 4), seed=0, foreground_share=0.0)
    fg_always = sum(bool(always.draw(i, e)[1].any()) for e in range(10) for i in range(2))
    fg_never = sum(bool(never.draw(i, e)[1].any()) for e in range(10) for i in range(2))
    assert fg_always == 20 and fg_never < 20


def test_refusals_before_work(volumes):
    with pytest.raises(ValueError, match=r"`patch_size_3d` \(17, 4, 4\) is larger than case 'case_000'.*axis 0"):
        VolumePatches3D(volumes, (17, 4, 4))
    with pytest.raises(ValueError, match="axis 2"):
        VolumePatches3D(volumes, (4, 4, 13))
    with pytest.raises(ValueError, match="`patch_size_3d`"):
        VolumePatches3D(volumes, (4, 4))
    with pytest.raises(TypeError, match="`volumes`"):
        VolumePatches3D([], (4, 4, 4))


def test_flips_3d_move_image_and_mask_together():
    image = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 1, 3, 4, 5)
    mask = (image > 50).float()
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    out_i, out_m = flips_3d(image, mask, g1)
    assert torch.equal(out_m, (out_i > 50).float())  # the same flips on both
    assert torch.equal(flips_3d(image, mask, g2)[0], out_i)
    flipped = [not torch.equal(out_i[b], image[b]) for b in range(2)]
    ops = torch.randint(0, 8, (2,), generator=torch.Generator().manual_seed(3))
    assert flipped == [int(o) != 0 for o in ops]
    assert sorted(out_i.flatten().tolist()) == sorted(image.flatten().tolist())
