"""``reorient: RAS``: one anatomy stored in any axis order and direction gives the same slices in training and the
same prediction in world space; outputs stay on the input's own grid."""

import itertools

import nibabel as nib
import numpy as np
import pytest
import torch

from spadfast.config import SPADConfig
from spadfast.data.volumes import VolumeSlices
from spadfast.diffusion.sampler import SampleResult
from spadfast.infer.volumes import segment_volume
from spadfast.io.orientation import Reorientation
from tests.infer.test_volumes import oblique_affine

# every signed axis permutation: the 48 ways an array can be stored
ORNTS = [np.array([[p[0], s[0]], [p[1], s[1]], [p[2], s[2]]], dtype=float)
         for p in itertools.permutations(range(3)) for s in itertools.product((1, -1), repeat=3)]


@pytest.mark.parametrize("k", range(len(ORNTS)))
def test_to_standard_equals_nibabels_closest_canonical_for_every_storage(k):
    rng = np.random.default_rng(k)
    base = nib.Nifti1Image(rng.random((5, 6, 7)).astype(np.float32), oblique_affine(angles=(0.1, -0.2, 0.15)))
    img = base.as_reoriented(ORNTS[k])
    turn = Reorientation(img.affine, "RAS")
    data = np.asarray(img.dataobj)
    expected = np.asarray(nib.as_closest_canonical(img).dataobj)
    assert np.array_equal(turn.to_standard(data), expected)
    assert np.array_equal(turn.to_standard(data), np.asarray(base.dataobj))  # every storage -> the same array
    assert np.array_equal(turn.to_stored(turn.to_standard(data)), data)
    assert turn.shape(data.shape) == expected.shape
    stacked = np.stack([data, 2 * data])  # channel-first arrays keep their first axis
    assert np.array_equal(turn.to_standard(stacked, 1)[1], 2 * expected)


def test_none_is_the_identity_and_an_unknown_code_is_refused():
    x = np.arange(24).reshape(2, 3, 4)
    turn = Reorientation(np.diag([-1.0, -1.0, 1.0, 1.0]), None)
    assert turn.identity and turn.to_standard(x) is x
    with pytest.raises(ValueError, match="reorient"):
        Reorientation(np.eye(4), "LPS")
    with pytest.raises(ValueError, match="reorient"):
        SPADConfig(reorient="LPS")
    with pytest.raises(TypeError, match="reorient"):
        SPADConfig(reorient=3)


class PositionalSegmenter:
    """Foreground where the image is bright *and* in the slice's upper-left corner (upper half, left third): a model
    that is neither flip- nor transpose-invariant, as a trained one is not, so a flipped or transposed slice changes
    its answer."""

    def __init__(self, size=16, reorient=None):
        self.config = SPADConfig(image_size=size, image_channels=1, device="cpu", channel_mults=(1,),
                                 attention_levels=(), modalities=("MR",), reorient=reorient)
        self.keys = []

    def segment(self, images, steps=None, ensemble=None, seed=0, noise_keys=None):
        self.keys.extend(noise_keys)
        H, W = images.shape[-2:]
        corner = ((torch.arange(H) < H // 2).view(H, 1) & (torch.arange(W) < W // 3).view(1, W)).float()
        probs = (images[:, :1] > 0).float() * corner
        return SampleResult(probs, 0.1 * probs, probs > 0.5)


def _stored(folder, ornt):
    data = np.random.default_rng(1).normal(size=(14, 12, 5)).astype(np.float32)
    img = nib.Nifti1Image(data, oblique_affine()).as_reoriented(ornt)
    folder.mkdir()
    path = folder / "case.nii.gz"  # one case name: the same noise keys whenever the slices agree
    nib.save(img, str(path))
    return path


@pytest.mark.parametrize("k", [2, 4, 16, 47])  # an in-plane flip of either axis, a transpose, the full reversal
def test_prediction_is_the_same_in_world_space_for_any_storage(tmp_path, k):
    base, other = _stored(tmp_path / "base", ORNTS[0]), _stored(tmp_path / "other", ORNTS[k])
    runs = {}
    for reorient in (None, "RAS"):
        for path in (base, other):
            seg = PositionalSegmenter(reorient=reorient)  # the model's reorient: the one segment_volume reads
            out = segment_volume(seg, [path], write_uncertainty=True)
            stored = nib.load(str(path))
            assert out["labels"].shape == stored.shape and out["std"].shape[:3] == stored.shape  # the input's grid
            world = nib.as_closest_canonical(nib.Nifti1Image(out["labels"], stored.affine))  # one common storage
            runs[reorient, path.parent.name] = (np.asarray(world.dataobj), seg.keys)
    assert np.array_equal(runs["RAS", "base"][0], runs["RAS", "other"][0]) and runs["RAS", "base"][0].any()
    assert runs["RAS", "base"][1] == runs["RAS", "other"][1]  # same slices, same noise keys
    assert not np.array_equal(runs[None, "base"][0], runs[None, "other"][0])  # sliced as stored: they differ


def _decathlon(root, ornt, n=2):
    rng = np.random.default_rng(3)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for i in range(n):
        data = rng.normal(size=(12, 10, 6)).astype(np.float32)
        label = (data > 0.8).astype(np.uint8)
        for sub, arr, name in (("imagesTr", data, f"c{i}_0000"), ("labelsTr", label, f"c{i}")):
            img = nib.Nifti1Image(arr, oblique_affine()).as_reoriented(ornt)
            nib.save(img, str(root / sub / f"{name}.nii.gz"))
    return root


def test_training_slices_are_the_same_for_any_storage(tmp_path):
    a = VolumeSlices(_decathlon(tmp_path / "a", ORNTS[0]), image_size=None, foreground_fraction=None,
                     reorient="RAS")
    b = VolumeSlices(_decathlon(tmp_path / "b", ORNTS[29]), image_size=None, foreground_fraction=None,
                     reorient="RAS")
    plain = VolumeSlices(tmp_path / "b", image_size=None, foreground_fraction=None)
    assert a.axis == b.axis and len(a) == len(b) and a.spacings == b.spacings
    for i in range(len(a)):
        for x, y in zip(a[i], b[i]):
            assert torch.equal(x, y)
    assert len(plain) != len(a) or any(not torch.equal(plain[i][0], a[i][0]) for i in range(len(a)))
