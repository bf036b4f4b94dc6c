"""Test-time augmentation: every view is undone exactly, members are spread over the views (no extra denoiser rows),
a model that ignores orientation gives the same result with and without TTA, and the API matches predict."""

from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from spadfast import SPADTrainer
from spadfast.data.synthetic import write_synthetic_folder
from spadfast.infer.segmenter import Segmenter, predict_folder
from spadfast.infer.tta import _apply, _invert, segment_tta, views

from ..helpers import tiny_config


@pytest.mark.parametrize("shape", [(5, 5), (4, 7), (9, 3)])
def test_every_view_is_undone_exactly(shape):
    x = torch.rand(2, 3, *shape)
    vs = views(shape[0] == shape[1])
    assert len(vs) == (8 if shape[0] == shape[1] else 4) and len(set(vs)) == len(vs)
    outs = [_apply(x, v) for v in vs]
    for v, y in zip(vs, outs):
        assert torch.equal(_invert(y, v), x)
    assert len({tuple(y.flatten().tolist()) for y in outs if y.shape == x.shape}) == sum(y.shape == x.shape for y in outs)


class _Pointwise:
    """Members are a pixelwise function of the image (plus a per-member offset): orientation does not matter."""

    def __init__(self):
        self.rows = 0

    def segment(self, images, steps=None, ensemble=1, seed=0, return_members=False, noise_keys=None):
        self.rows += images.shape[0] * ensemble
        base = torch.sigmoid(images[:, :1])
        members = torch.stack([base[:, 0] * (0.9 + 0.02 * k) for k in range(ensemble)], dim=1)  # [B,K,H,W]
        probs = members.mean(1, keepdim=True)
        return SimpleNamespace(members=members, probs=probs, std=members.std(1, keepdim=True, unbiased=False))


@pytest.mark.parametrize("ensemble", [1, 3, 8, 16])
def test_tta_spreads_members_and_undoes_the_views(ensemble):
    images = torch.rand(2, 1, 12, 12) * 2 - 1
    fake = _Pointwise()
    out = segment_tta(fake.segment, images, 2, ensemble, 0, [11, 12])
    assert fake.rows == 2 * ensemble  # the same rows as plain sampling: views share the members
    assert out.members.shape == (2, ensemble, 12, 12)
    n_views = min(8, ensemble)
    counts = [len(range(v, ensemble, n_views)) for v in range(n_views)]
    factors = torch.tensor([0.9 + 0.02 * j for c in counts for j in range(c)])
    # every view mapped back onto the image: the mean is the pointwise map times the mean factor, exactly
    torch.testing.assert_close(out.probs[:, 0], torch.sigmoid(images[:, 0]) * factors.mean(), rtol=1e-5, atol=1e-6)


def test_tta_through_predict_and_the_api_agree(tmp_path):
    data = write_synthetic_folder(tmp_path / "data", 3, 16, seed=4)
    trainer = SPADTrainer(tiny_config(train_steps=2))
    trainer.fit()
    trainer.save(tmp_path / "run")
    seg = Segmenter.from_checkpoint(tmp_path / "run")
    predict_folder(seg, data / "images", tmp_path / "tta", steps=2, ensemble=4, tta=True)
    for path in sorted((data / "images").glob("*.png")):
        written = cv2.imread(str(tmp_path / "tta" / path.name), cv2.IMREAD_GRAYSCALE) > 0
        assert np.array_equal(seg.predict(path, steps=2, ensemble=4, tta=True)["mask"], written)
