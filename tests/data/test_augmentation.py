"""The augment block: each transform does what it says, image and mask stay aligned, masks stay binary, draws are
seeded, old configs (augment: true/false) mean what they meant, and a run with every transform on resumes exactly;
``dihedral`` moves image and mask through the same symmetry of the square."""

import pytest
import torch

from spadfast import SPADTrainer
from spadfast.config import SPADConfig
from spadfast.data.augmentation import AugmentConfig, augment_batch, dihedral
from spadfast.models.checkpoint import read_checkpoint
from spadfast.ops.blobs import blob_masks

from ..helpers import tiny_config


def _batch(B=6, H=32, W=40):
    mask = blob_masks((B, 1, H, W), seed=1, cell=8).float()
    return mask * 2 - 1, mask  # an image equal to its mask: alignment is visible


@pytest.mark.parametrize("name,cfg", [
    ("rotate", AugmentConfig(flips=False, rotate_prob=1.0)),
    ("scale", AugmentConfig(flips=False, scale_prob=1.0)),
    ("elastic", AugmentConfig(flips=False, elastic_prob=1.0)),
    ("all", AugmentConfig.nnunet()),
])
def test_spatial_transforms_move_image_and_mask_together(name, cfg):
    image, mask = _batch()
    out_i, out_m = augment_batch(image, mask, cfg, torch.Generator().manual_seed(3))
    assert out_i.shape == image.shape and out_m.shape == mask.shape
    assert set(out_m.unique().tolist()) <= {0.0, 1.0}
    if name != "all":
        assert not torch.equal(out_m, mask)
        # bilinear image vs nearest mask of the same grid: they agree away from edges
        agree = ((out_i > 0) == (out_m > 0.5)).float().mean()
        assert float(agree) > 0.97, float(agree)
    again = augment_batch(image, mask, cfg, torch.Generator().manual_seed(3))
    assert torch.equal(again[0], out_i) and torch.equal(again[1], out_m)


def test_intensity_transforms_leave_the_mask_and_the_range_alone():
    image = torch.rand(8, 1, 24, 24) * 2 - 1
    mask = (torch.rand(8, 1, 24, 24) > 0.5).float()
    cfg = AugmentConfig(flips=False, gamma_prob=1.0, noise_prob=1.0, blur_prob=1.0)
    out_i, out_m = augment_batch(image, mask, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(out_m, mask) and not torch.equal(out_i, image)
    assert float(out_i.min()) >= -1 and float(out_i.max()) <= 1
    gamma_only = AugmentConfig(flips=False, gamma_prob=1.0, gamma_range=(2.0, 2.0))
    g_i, _ = augment_batch(image, mask, gamma_only, torch.Generator())
    torch.testing.assert_close(g_i, ((image + 1) / 2) ** 2 * 2 - 1)


def test_probability_zero_is_the_identity_and_flips_alone_keep_their_stream():
    image, mask = _batch()
    off = AugmentConfig(flips=False)
    assert all(torch.equal(a, b) for a, b in zip(augment_batch(image, mask, off, torch.Generator()), (image, mask)))
    from spadfast.data.augmentation import dihedral

    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    flips = augment_batch(image, mask, AugmentConfig(), g1)
    want = dihedral(image, mask, torch.randint(0, 8, (image.shape[0],), generator=g2))
    assert torch.equal(flips[0], want[0]) and torch.equal(flips[1], want[1])


def test_old_bool_configs_and_bad_values():
    assert SPADConfig(augment=True).augment == AugmentConfig()
    assert SPADConfig(augment=False).augment == AugmentConfig(flips=False)
    assert SPADConfig.from_dict({"augment": {"rotate_prob": 0.2}}).augment.rotate_prob == 0.2
    with pytest.raises(ValueError, match="augment.rotate_prob"):
        AugmentConfig(rotate_prob=1.5)
    with pytest.raises(ValueError, match="augment.scale_range"):
        AugmentConfig(scale_range=(1.4, 0.7))
    with pytest.raises(ValueError, match="augment.nope"):
        SPADConfig.from_dict({"augment": {"nope": 1}})


def test_a_run_with_every_transform_resumes_bit_identically(tmp_path):
    aug = {**AugmentConfig.nnunet().__dict__, "elastic_prob": 0.5}
    straight = SPADTrainer(tiny_config(train_steps=4, augment=aug), out_dir=tmp_path / "a")
    straight.fit()
    straight.save(tmp_path / "a")
    half = SPADTrainer(tiny_config(train_steps=4, augment=aug), out_dir=tmp_path / "b")
    half.fit(2)
    half.save(tmp_path / "b")
    resumed = SPADTrainer.from_checkpoint(tmp_path / "b", out_dir=tmp_path / "b")
    resumed.fit()
    resumed.save(tmp_path / "b")
    a, b = read_checkpoint(tmp_path / "a")[0], read_checkpoint(tmp_path / "b")[0]
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


def symmetries(plane: torch.Tensor) -> list[torch.Tensor]:
    """The 8 rotations/reflections of a square plane (the 4 flips of a non-square one), from torch's own ops."""
    flips = [plane, plane.flip(-1), plane.flip(-2), plane.flip(-1).flip(-2)]
    if plane.shape[-1] != plane.shape[-2]:
        return flips
    return flips + [f.transpose(-1, -2) for f in flips]


@pytest.mark.parametrize("shape", [(12, 12), (10, 14)])
def test_dihedral_moves_image_and_mask_together_through_every_symmetry(shape):
    torch.manual_seed(0)
    mask = (torch.rand(8, 1, *shape) < 0.3).float()
    image = torch.cat([mask * 2 - 1, torch.rand(8, 1, *shape)], dim=1)  # channel 0 is the mask's picture
    ops = torch.arange(8)
    out_image, out_mask = dihedral(image, mask, ops)
    assert out_image.shape == image.shape and out_mask.shape == mask.shape and out_mask.dtype == mask.dtype
    seen = set()
    for b in range(8):
        assert torch.equal((out_image[b, 0] + 1) / 2, out_mask[b, 0])  # still one picture
        candidates = symmetries(image[b])
        index = next(i for i, c in enumerate(candidates) if torch.equal(c, out_image[b]))
        assert torch.equal(symmetries(mask[b])[index], out_mask[b])  # the mask got the image's symmetry
        seen.add(index)
    assert len(seen) == len(symmetries(mask[0]))  # ops 0..7 reach every symmetry (4 on non-square planes)
