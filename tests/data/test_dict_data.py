"""MONAI-style dict datasets: class maps become one mask channel per class, bad items are refused by item, and a
trainer takes a list of dicts (and a real MONAI Dataset with dict transforms) as training data."""

import numpy as np
import pytest
import torch

from spadfast import SPADTrainer
from spadfast.data.dict_data import DictDataset

from ..helpers import tiny_config


def _items(n=4, classes=2, size=16, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        label = rng.integers(0, classes + 1, (1, size, size)).astype(np.int64)
        out.append({"image": torch.rand(1, size, size) * 2 - 1, "label": label, "path": "x.nii"})
    return out


def test_class_maps_become_one_hot_channels():
    items = _items(classes=2)
    ds = DictDataset(items, mask_channels=2)
    image, mask = ds[0]
    assert image.shape == (1, 16, 16) and mask.shape == (2, 16, 16)
    label = torch.from_numpy(items[0]["label"][0])
    assert torch.equal(mask[0] > 0, label == 1) and torch.equal(mask[1] > 0, label == 2)
    assert not bool((mask.sum(0) > 1).any())


@pytest.mark.parametrize("bad,match", [
    ({"image": torch.rand(1, 8, 8) * 3, "label": np.zeros((1, 8, 8))}, r"\[-1, 1\]"),
    ({"image": torch.zeros(1, 8, 8), "label": np.full((1, 8, 8), 3)}, "class values 0..2"),
    ({"image": torch.zeros(1, 8, 8), "label": np.zeros((1, 8, 9))}, "matching"),
    ({"img": torch.zeros(1, 8, 8), "label": np.zeros((1, 8, 8))}, "'image'"),
    ({"image": torch.zeros(8, 8), "label": np.zeros((8, 8))}, "channel-first"),
])
def test_bad_items_are_refused_by_item(bad, match):
    with pytest.raises(ValueError, match=match):
        DictDataset([bad], mask_channels=2)[0]


def test_trainer_takes_a_list_of_dicts():
    trainer = SPADTrainer(tiny_config(num_classes=3, train_steps=2), train_data=_items(6, classes=2))
    trainer.fit()
    assert trainer.step == 2


def test_trainer_takes_a_monai_dataset_with_dict_transforms():
    monai = pytest.importorskip("monai")
    from monai.transforms import Compose, EnsureTyped, ScaleIntensityd

    rng = np.random.default_rng(1)
    raw = [{"image": rng.random((1, 16, 16)).astype(np.float32) * 500, "label": (rng.random((1, 16, 16)) > 0.6)
            .astype(np.uint8)} for _ in range(4)]
    ds = monai.data.Dataset(raw, transform=Compose([ScaleIntensityd(keys="image", minv=-1.0, maxv=1.0),
                                                    EnsureTyped(keys=["image", "label"])]))
    trainer = SPADTrainer(tiny_config(train_steps=1), train_data=ds)
    trainer.fit()
    assert trainer.step == 1
