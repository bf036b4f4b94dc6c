"""``augment.dihedral``, the trainer's batch augmentation: image and mask get the same symmetry of the square."""

import pytest
import torch

from spadfast.data.augment import dihedral


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
