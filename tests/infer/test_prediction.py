"""Segmenter.predict's result: the documented attributes (``.mask`` = labels, ``.probs``, ``.std``) and the mapping
keys the README used before."""

import numpy as np
import pytest

from spadfast.infer.prediction import Prediction


def test_attributes_and_keys_agree():
    labels = np.array([[0, 2], [1, 0]])
    probs = np.random.default_rng(0).random((2, 2, 2)).astype(np.float32)
    out = Prediction(labels, probs, probs / 2)
    assert out.mask is out.labels and out["mask"] is labels and out["labels"] is labels
    assert out.foreground.tolist() == [[False, True], [True, False]] and out["foreground"].dtype == bool
    assert out["probs"] is probs and np.array_equal(out["std"], probs / 2)
    assert set(out) == {"labels", "mask", "foreground", "probs", "std"} and len(dict(out)) == 5
    with pytest.raises(KeyError):
        out["nope"]
