"""A tiny untrained model (random weights: the plugin's plumbing, not its accuracy, is under test)."""

import pytest

from spadfast import SPADTrainer

from ..helpers import tiny_config


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """Run folder of a 16 px binary model (1 channel, 2 DDIM steps, 2 members); no training step."""
    out = tmp_path_factory.mktemp("viewer_model") / "run"
    SPADTrainer(tiny_config(sample_steps=2, ensemble=2), out_dir=out).save(out)
    return out


@pytest.fixture(scope="session")
def tiny_volume_run(tmp_path_factory):
    """Run folder of a tiny model that records a volume modality (so the volume path accepts it)."""
    out = tmp_path_factory.mktemp("viewer_volume_model") / "run"
    SPADTrainer(tiny_config(sample_steps=2, ensemble=2, modalities=("MR",)), out_dir=out).save(out)
    return out
