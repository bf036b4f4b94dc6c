"""spadfast.viewers.layers: the widget's compute function on arrays, without napari or Qt."""

import nibabel as nib
import numpy as np
import pytest

from spadfast.infer.segmenter import Segmenter
from spadfast.models.export import export_model
from spadfast.viewers.layers import (
    check_layer,
    iter_segment_layer,
    load_segmenter,
    model_class_names,
    segment_layer,
)


def _image(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def test_a_2d_layer_equals_segmenter_predict(tiny_run):
    segmenter = load_segmenter(tiny_run)
    image = _image((20, 17))
    seen = []
    result = segment_layer(segmenter, image, progress=lambda d, t: seen.append((d, t)))
    expected = Segmenter.load(tiny_run).predict(image)
    assert result.labels.dtype == np.int32 and result.labels.shape == (20, 17)
    assert result.uncertainty.dtype == np.float32 and result.uncertainty.shape == (20, 17)
    np.testing.assert_array_equal(result.labels, expected.labels)
    np.testing.assert_array_equal(result.uncertainty, expected.std)
    assert result.class_names == ("background", "class 1")
    assert seen == [(0, 1), (1, 1)]


def test_steps_members_and_tta_reach_predict(tiny_run):
    segmenter = load_segmenter(tiny_run)
    image = _image((16, 16), seed=3)
    result = segment_layer(segmenter, image, steps=3, ensemble=4, tta=True, seed=5)
    expected = segmenter.predict(image, steps=3, ensemble=4, tta=True, seed=5)
    np.testing.assert_array_equal(result.uncertainty, expected.std)
    assert not np.array_equal(result.uncertainty, segmenter.predict(image).std)


def test_a_stack_slice_by_slice_and_the_current_slice(tiny_run):
    segmenter = load_segmenter(tiny_run)
    stack = _image((3, 16, 18), seed=1)
    progress = []
    whole = segment_layer(segmenter, stack, mode="stack", progress=lambda d, t: progress.append((d, t)))
    assert progress == [(0, 3), (1, 3), (2, 3), (3, 3)]
    for z in range(3):
        p = segmenter.predict(stack[z])
        np.testing.assert_array_equal(whole.labels[z], p.labels)
        np.testing.assert_array_equal(whole.uncertainty[z], p.std)
    one = segment_layer(segmenter, stack, mode="slice", current=1)
    np.testing.assert_array_equal(one.uncertainty[1], whole.uncertainty[1])
    assert not one.uncertainty[[0, 2]].any() and not one.labels[[0, 2]].any()


def test_the_volume_path_equals_predicting_the_nifti(tiny_volume_run, tmp_path):
    segmenter = load_segmenter(tiny_volume_run)
    stack = np.random.default_rng(2).random((3, 16, 16)).astype(np.float32)
    result = segment_layer(segmenter, stack, mode="volume", scale=(2.0, 0.5, 0.5))
    path = tmp_path / "image_0000.nii.gz"  # case "image": the name the volume path gives an in-memory stack
    nib.save(nib.Nifti1Image(stack, np.diag([2.0, 0.5, 0.5, 1.0])), str(path))
    expected = segmenter.predict(path)
    assert result.labels.shape == stack.shape
    np.testing.assert_array_equal(result.labels, expected.labels)
    np.testing.assert_array_equal(result.uncertainty, expected.std.max(axis=-1))


def test_class_names_come_from_the_export(tiny_run, tmp_path):
    export = export_model(tiny_run, tmp_path / "m.safetensors", class_names=["bg", "nucleus"])
    assert model_class_names(export, 2) == ("bg", "nucleus")
    assert model_class_names(tiny_run, 2) == ("background", "class 1")
    result = segment_layer(load_segmenter(export), _image((16, 16)), class_names=model_class_names(export, 2))
    assert result.class_names == ("bg", "nucleus")


@pytest.mark.parametrize("shape, rgb, mode, match", [
    ((16, 16, 3), True, "image", "RGB but the model reads 1 channel"),
    ((2, 3, 16, 16), False, "stack", "4 spatial dimensions"),
    ((16,), False, "image", "1 spatial dimensions"),
    ((16, 16), False, "stack", "needs a 3-D stack"),
    ((3, 16, 16), False, "image", "is a 3-D stack"),
    ((3, 16, 16), False, "slice", "outside the stack"),
    ((16, 16), False, "sideways", "`mode` must be one of"),
])
def test_bad_layers_are_refused_in_one_line_before_work(tiny_run, shape, rgb, mode, match):
    config = load_segmenter(tiny_run).config
    with pytest.raises(ValueError, match=match):
        check_layer(shape, rgb, config, mode, current=5)
    work = iter_segment_layer(load_segmenter(tiny_run), np.zeros(shape, np.uint8), rgb=rgb, mode=mode, current=5)
    with pytest.raises(ValueError, match=match):
        next(work)  # the first step: nothing was segmented yet


def test_the_volume_path_refuses_a_2d_image_model(tiny_run):
    with pytest.raises(ValueError, match="trained on 2-D images"):
        check_layer((3, 16, 16), False, load_segmenter(tiny_run).config, "volume")


@pytest.mark.parametrize("path, match", [(None, "choose a model"), ("", "choose a model"),
                                         ("/nonexistent/run", "does not exist")])
def test_no_model_is_a_one_line_error(path, match):
    with pytest.raises(ValueError, match=match):
        load_segmenter(path)


def test_the_loaded_model_is_reused_until_its_file_changes(tiny_run):
    assert load_segmenter(tiny_run) is load_segmenter(str(tiny_run))
