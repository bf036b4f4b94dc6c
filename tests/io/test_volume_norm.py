"""Volume intensity normalisation: the data-set CT statistics (nnU-Net's CTNormalization) are the statistics of every
training case's foreground voxels, are computed once at training start, travel in the checkpoint and are what
prediction applies; per-volume statistics stay for MR and for checkpoints written before the key existed."""

import nibabel as nib
import numpy as np
import pytest
import torch

from spadfast import SPADTrainer
from spadfast.config import SPADConfig
from spadfast.data.batches import volume_dataset
from spadfast.data.synthetic_volumes import write_demo_volumes
from spadfast.data.volumes import VolumeSlices
from spadfast.infer.segmenter import Segmenter
from spadfast.infer.volumes import model_preprocessing
from spadfast.io.volume_norm import (
    CTStats,
    apply_normalization,
    ct_stats_from_flat,
    ct_stats_to_flat,
    dataset_ct_stats,
    foreground_sample,
    normalization_params,
)

from ..helpers import tiny_config


def _foreground_voxels(root, split="Tr"):
    """Every foreground voxel of every case's image, read with nibabel alone (the independent computation)."""
    out = []
    for label_path in sorted((root / f"labels{split}").glob("*.nii.gz")):
        case = label_path.name.removesuffix(".nii.gz")
        image = np.asarray(nib.load(root / f"images{split}" / f"{case}_0000.nii.gz").dataobj, np.float64)
        label = np.asarray(nib.load(label_path).dataobj)
        out.append(image[label > 0])
    return np.concatenate(out)


def test_dataset_stats_are_the_percentiles_mean_and_std_of_all_foreground_voxels(tmp_path):
    root = write_demo_volumes(tmp_path / "ct", n_cases=3, shape=(12, 10, 5), modality="CT", n_test=0)
    voxels = _foreground_voxels(root)
    assert voxels.size < 10_000  # every voxel is sampled: the statistics are exact
    ds = VolumeSlices(root, image_size=8, ct_stats="compute")
    (stats,) = ds.ct_stats
    np.testing.assert_allclose([stats.lo, stats.hi], np.percentile(voxels, [0.5, 99.5]), rtol=1e-12)
    np.testing.assert_allclose([stats.mean, stats.std], [voxels.mean(), voxels.std()], rtol=1e-12)


def test_foreground_sample_is_deterministic_bounded_and_from_the_foreground():
    rng = np.random.default_rng(0)
    image, label = rng.normal(size=(40, 30, 20)), rng.random((40, 30, 20)) < 0.5
    a, b = foreground_sample(image, label, n=500), foreground_sample(image.copy(), label.copy(), n=500)
    assert a.size == 500 and np.array_equal(a, b)
    assert np.isin(a, image[label]).all()
    with pytest.raises(ValueError, match="no training case has a labelled voxel"):
        dataset_ct_stats([np.zeros(0)])


def test_the_same_hounsfield_value_gets_the_same_input_in_every_scan():
    """HU are absolute: a contrast scan (bright vessels widening its own percentiles) and a native one map one HU
    alike with data-set statistics, and differently with per-volume statistics (what nnU-Net avoids)."""
    rng = np.random.default_rng(1)
    native = rng.normal(40, 20, size=(20, 20, 8))
    contrast = native.copy()
    contrast[:5] = rng.normal(300, 30, size=(5, 20, 8))  # enhanced vessels in another scan
    stats = CTStats(-100.0, 250.0, 50.0, 60.0)
    a = apply_normalization(native, normalization_params(native, "CT", ct_stats=stats))
    b = apply_normalization(contrast, normalization_params(contrast, "CT", ct_stats=stats))
    np.testing.assert_array_equal(a[5:], b[5:])
    per_volume = [apply_normalization(v, normalization_params(v, "ct")) for v in (native, contrast)]
    assert np.abs(per_volume[0][5:] - per_volume[1][5:]).max() > 0.1
    assert a.min() >= -1 and a.max() <= 1
    x = np.array([-500.0, -100.0, 50.0, 250.0, 900.0])
    z = apply_normalization(x, normalization_params(x, "CT", ct_stats=stats))
    scale = max(abs(-100 - 50), abs(250 - 50))  # the clip window's largest distance from the mean
    np.testing.assert_allclose(z, [(-100 - 50) / scale, (-100 - 50) / scale, 0.0, 1.0, 1.0], rtol=1e-6)
    mr = normalization_params(native, "MR", ct_stats=stats)  # only CT channels use CT statistics
    assert mr.kind == "zscore"


def test_flat_config_form_round_trips():
    stats = [CTStats(-10.0, 90.0, 30.0, 12.5), None]
    flat = ct_stats_to_flat(stats)
    assert flat == (-10.0, 90.0, 30.0, 12.5, 0.0, 0.0, 0.0, 0.0)
    assert ct_stats_from_flat(flat) == stats and ct_stats_from_flat(()) is None
    with pytest.raises(ValueError, match="`ct_stats` must be"):
        SPADConfig(ct_stats=(1.0, 2.0))


def test_cached_and_streamed_slices_normalise_alike_with_computed_stats(tmp_path):
    root = write_demo_volumes(tmp_path / "ct", n_cases=3, shape=(12, 10, 5), modality="CT", n_test=0)
    cached = VolumeSlices(root, image_size=8, ct_stats="compute", cache_volumes=4, foreground_fraction=None)
    streamed = VolumeSlices(root, image_size=8, ct_stats="compute", cache_volumes=0, foreground_fraction=None)
    given = VolumeSlices(root, image_size=8, ct_stats=cached.ct_stats, cache_volumes=0, foreground_fraction=None)
    assert cached.ct_stats == streamed.ct_stats
    for i in range(len(cached)):
        assert torch.equal(cached[i][0], streamed[i][0]) and torch.equal(cached[i][0], given[i][0])


def test_training_stores_the_stats_and_prediction_applies_them(tmp_path):
    root = write_demo_volumes(tmp_path / "ct", n_cases=2, shape=(12, 10, 5), modality="CT", n_test=1)
    cfg = tiny_config(train_steps=1, num_classes=3, image_size=8, resize=True)
    trainer = SPADTrainer(cfg, root)
    want = dataset_ct_stats([_foreground_voxels(root)])
    np.testing.assert_allclose(trainer.config.ct_stats, ct_stats_to_flat([want]), rtol=1e-12)
    trainer.save(tmp_path / "run")
    segmenter = Segmenter.from_checkpoint(tmp_path / "run")
    assert model_preprocessing(segmenter.config).ct_stats == (want,)
    # a config that claims data-set statistics but holds none is refused before any voxel is read
    segmenter.config.ct_stats = ()
    with pytest.raises(ValueError, match="ct_normalization: volume"):
        model_preprocessing(segmenter.config)
    # validation volumes without training statistics: one line naming the argument
    empty = tiny_config(num_classes=3, image_size=8, resize=True)
    with pytest.raises(ValueError, match="`val_data`.*ct_normalization 'dataset'"):
        volume_dataset(root, empty, "val_data")


def test_checkpoints_written_before_the_key_keep_per_volume_statistics():
    meta = {"config": SPADConfig().to_dict(), "step": 0, "optimizer_param_groups": []}
    del meta["config"]["ct_normalization"], meta["config"]["ct_stats"]
    assert SPADConfig.from_checkpoint_meta(meta, "old").ct_normalization == "volume"
    assert SPADConfig().ct_normalization == "dataset"  # new configs: nnU-Net's rule
