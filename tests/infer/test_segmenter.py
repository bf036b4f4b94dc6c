"""spadfast.infer.segmenter: the image a model sees, per-image noise keys, and the inference-only Segmenter."""

import itertools

import cv2
import numpy as np
import pytest
import torch

from spadfast import SPADTrainer
from spadfast.data.folders import SegmentationFolder
from spadfast.diffusion.sampler import image_noise_key
from spadfast.infer.segmenter import Segmenter, predict_folder

from ..helpers import tiny_config


def _write_folder(root, specs):
    """Images of several kinds (dtype, channels, native size), each with a random mask of its size."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for name, (dtype, channels, h, w, ext) in specs.items():
        top = np.iinfo(dtype).max
        shape = (h, w) if channels == 1 else (h, w, 3)
        image = rng.integers(0, top, size=shape, endpoint=True).astype(dtype)
        cv2.imwrite(str(root / "images" / f"{name}{ext}"), image)
        cv2.imwrite(str(root / "masks" / f"{name}.png"), (rng.random((h, w)) > 0.5).astype(np.uint8) * 255)
    return root


SPECS = {
    f"{dt.__name__}_{c}_{h}x{w}{ext[1:]}": (dt, c, h, w, ext)
    for (dt, c, (h, w), ext) in itertools.product(
        (np.uint8, np.uint16), (1, 3), ((16, 16), (23, 17), (40, 31), (9, 12)), (".png", ".tif")
    )
}


class Spy:
    """A segmenter that records the tensors that reach the model, and returns empty probabilities."""

    def __init__(self, config):
        self.config = config
        self.seen: dict[int, torch.Tensor] = {}

    def segment(self, images, steps=None, ensemble=None, seed=0, return_members=False, noise_keys=None):
        from spadfast.diffusion.sampler import SampleResult

        for image, key in zip(images, noise_keys):
            self.seen[key] = image.clone()
        zeros = torch.zeros(images.shape[0], 1, *images.shape[2:])
        return SampleResult(zeros, zeros, zeros > 0.5)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [16, 20])
def test_a_folder_image_reaches_the_model_bit_identically_in_training_and_prediction(tmp_path, channels, size):
    """Every stored kind (8/16-bit, gray/RGB, PNG/TIFF, shrunk or enlarged): the training item and the tensor that
    ``predict`` hands to the model are the same bits."""
    root = _write_folder(tmp_path / "data", SPECS)
    folder = SegmentationFolder(root, image_size=size, channels=channels)
    spy = Spy(tiny_config(image_size=16, image_channels=channels, resize=True))
    spy.config.image_size = size  # the config check wants a multiple of 2; the folder and predict do not care
    predict_folder(spy, root / "images", tmp_path / "pred", batch_size=5)
    assert len(spy.seen) == len(SPECS)
    for i, name in enumerate(folder.names):
        assert torch.equal(folder[i][0], spy.seen[image_noise_key(name)]), name


def test_same_image_same_mask_whatever_batch_size_or_folder(tmp_path):
    """Initial noise is keyed by the file name: batch size and the other files do not change a mask."""
    from spadfast.data.synthetic import write_synthetic_folder

    data = write_synthetic_folder(tmp_path / "data", 5, 16, seed=1)
    trainer = SPADTrainer(tiny_config())
    trainer.fit(2)
    trainer.save(tmp_path / "run")
    segmenter = Segmenter.from_checkpoint(tmp_path / "run")
    outputs = []
    for batch_size in (1, 2, 5):
        out = tmp_path / f"pred{batch_size}"
        predict_folder(segmenter, data / "images", out, batch_size=batch_size, uncertainty=True)
        outputs.append(out)
    subset = tmp_path / "subset"
    (subset / "images").mkdir(parents=True)
    for name in ("0001.png", "0004.png"):
        (subset / "images" / name).write_bytes((data / "images" / name).read_bytes())
    predict_folder(segmenter, subset / "images", tmp_path / "pred_subset", batch_size=2, uncertainty=True)
    for name in sorted(p.name for p in (data / "images").iterdir()):
        ref = cv2.imread(str(outputs[0] / "uncertainty" / name), cv2.IMREAD_UNCHANGED)
        assert ref.any(), "members must differ, or the test cannot tell noise apart"
        for out in outputs[1:]:
            assert np.array_equal(cv2.imread(str(out / "uncertainty" / name), cv2.IMREAD_UNCHANGED), ref), name
            assert (out / name).read_bytes() == (outputs[0] / name).read_bytes()
        if name in ("0001.png", "0004.png"):
            got = cv2.imread(str(tmp_path / "pred_subset" / "uncertainty" / name), cv2.IMREAD_UNCHANGED)
            assert np.array_equal(got, ref), name


def test_segmenter_matches_the_trainers_ema_sampling(tmp_path):
    trainer = SPADTrainer(tiny_config())
    trainer.fit(3)
    trainer.save(tmp_path)
    segmenter = Segmenter.from_checkpoint(tmp_path)
    assert not hasattr(segmenter, "optimizer")
    images = torch.rand(2, 1, 16, 16) * 2 - 1
    a = trainer.segment(images, steps=3, ensemble=2, seed=4)
    b = segmenter.segment(images, steps=3, ensemble=2, seed=4)
    assert torch.equal(a.probs, b.probs) and torch.equal(a.std, b.std)


@pytest.mark.slow
def test_compiled_and_bf16_prediction_paths(tmp_path):
    """``predict --compile`` samples what the eager model samples; ``--amp bf16`` stays close; auto picks by CPU."""
    from spadfast.runtime.cpu_features import cpu_has_native_bf16

    trainer = SPADTrainer(tiny_config(prediction_type="sample"))
    trainer.fit(3)
    trainer.save(tmp_path)
    images = torch.rand(2, 1, 16, 16) * 2 - 1
    eager = Segmenter.from_checkpoint(tmp_path).segment(images, steps=2, ensemble=2)
    compiled = Segmenter.from_checkpoint(tmp_path, compile=True)
    torch.testing.assert_close(compiled.segment(images, steps=2, ensemble=2).probs, eager.probs,
                               rtol=1e-4, atol=1e-4)
    bf16 = Segmenter.from_checkpoint(tmp_path, amp="bf16")
    assert bf16.config.amp == "bf16"
    # every denoiser call of the bf16 path runs under bf16 autocast; its accuracy against fp32 is
    # tests/test_model.py::test_autocast_logits_match_fp32_within_the_dtype_tolerance (fixed weights, per dtype)
    output_dtypes = []
    bf16.sampler.model.out_conv.register_forward_hook(lambda module, args, out: output_dtypes.append(out.dtype))
    assert torch.isfinite(bf16.segment(images, steps=2, ensemble=2).probs).all()
    assert len(output_dtypes) == 2 and set(output_dtypes) == {torch.bfloat16}  # one call per step
    auto = Segmenter.from_checkpoint(tmp_path, amp="auto")
    assert auto.config.amp == ("bf16" if cpu_has_native_bf16() else "none")
    with pytest.raises(ValueError, match="`amp`"):
        Segmenter.from_checkpoint(tmp_path, amp="fp8")


def _random_output_model(config, run):
    """Save an untrained run whose EMA output layer is random: a fresh model's output layer is zero, so its masks
    would not depend on the image at all."""
    trainer = SPADTrainer(config)
    with torch.no_grad():
        for p in trainer.ema.out_conv.parameters():
            p.normal_(0, 0.3, generator=torch.Generator().manual_seed(7))
    trainer.save(run)


@pytest.fixture(scope="module")
def rgb_model(tmp_path_factory):
    """A 3-channel native-resolution model whose output depends on its input, and PNGs of every layout."""
    root = tmp_path_factory.mktemp("rgb")
    _random_output_model(tiny_config(image_channels=3, resize=False, train_steps=1), root / "run")
    rng = np.random.default_rng(3)
    images = root / "images"
    images.mkdir()
    for bits, dtype in ((8, np.uint8), (16, np.uint16)):
        top = np.iinfo(dtype).max
        rgba = rng.integers(0, top, (20, 24, 4), endpoint=True).astype(dtype)
        rgba[:, :, 0] //= 4  # channels of different brightness, so that an order swap shows
        rgba[:, :, 3] = top  # opaque: PNG readers agree on the colour of opaque pixels
        cv2.imwrite(str(images / f"gray{bits}.png"), rgba[:, :, 1])
        cv2.imwrite(str(images / f"rgb{bits}.png"), cv2.cvtColor(rgba[:, :, :3], cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(images / f"rgba{bits}.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    return root


def test_arrays_as_python_readers_return_them_predict_as_the_cli_writes_the_file(rgb_model, tmp_path):
    """Issue 29.6: arrays are RGB(A); PIL's array of a file gives the mask predict writes for that file."""
    from PIL import Image

    from spadfast.cli import main as cli_main

    images = rgb_model / "images"
    assert cli_main(["predict", "--checkpoint", str(rgb_model / "run"), "--images", str(images), "--out",
                     str(tmp_path / "pred"), "--steps", "2", "--ensemble", "2"]) == 0
    segmenter = Segmenter.load(rgb_model / "run")
    for path in sorted(images.glob("*.png")):
        if path.stem in ("rgb16", "rgba16"):  # PIL cannot open 16-bit colour PNGs: OpenCV's BGR(A), turned to RGB(A)
            stored = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            array = cv2.cvtColor(stored, cv2.COLOR_BGR2RGB if stored.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)
        else:
            array = np.asarray(Image.open(path))
        assert array.ndim == (2 if path.stem.startswith("gray") else 3), path.stem
        from_array = segmenter.predict(array, steps=2, ensemble=2, name=path.stem)
        from_path = segmenter.predict(path, steps=2, ensemble=2)
        written = cv2.imread(str(tmp_path / "pred" / path.name), cv2.IMREAD_GRAYSCALE) > 0
        assert np.array_equal(from_array.probs, from_path.probs), path.stem
        assert np.array_equal(from_array.mask > 0, written), path.stem


def test_integer_empty_and_tiny_arrays_follow_the_file_rules(rgb_model):
    """Issue 29.15: other integer dtypes read as files holding those values; empty and too-small arrays refused
    with the CLI's rule, naming `x`."""
    segmenter = Segmenter.load(rgb_model / "run")
    rng = np.random.default_rng(0)
    u16 = rng.integers(0, 65535, (20, 24), endpoint=True).astype(np.uint16)
    u8 = rng.integers(0, 127, (20, 24), endpoint=True).astype(np.uint8)
    expected16 = segmenter.predict(u16, steps=1, ensemble=1).probs
    expected8 = segmenter.predict(u8, steps=1, ensemble=1).probs
    for same in (u16.astype(np.int32), u16.astype(np.int64), u16.astype(np.uint32)):
        assert np.array_equal(segmenter.predict(same, steps=1, ensemble=1).probs, expected16), same.dtype
    assert np.array_equal(segmenter.predict(u8.astype(np.int8), steps=1, ensemble=1).probs, expected8)
    assert np.array_equal(segmenter.predict((u16 // 2).astype(np.int16), steps=1, ensemble=1).probs,
                          segmenter.predict(u16 // 2, steps=1, ensemble=1).probs)
    with pytest.raises(ValueError, match=r"`x` is int16 with values in \[-5, .*intensity_norm"):
        segmenter.predict(np.full((20, 24), -5, np.int16), steps=1, ensemble=1)
    with pytest.raises(ValueError, match="`x` is empty"):
        segmenter.predict(np.zeros((0, 24), np.uint8))
    with pytest.raises(ValueError, match=r"`x` is 1x1 \(WxH\): images must be at least 8 px"):
        segmenter.predict(np.zeros((1, 1), np.uint8))
    with pytest.raises(ValueError, match="5 channels"):
        segmenter.predict(np.zeros((20, 24, 5), np.uint8))


def test_integer_arrays_outside_a_files_range_are_read_by_value_under_minmax(tmp_path):
    _random_output_model(tiny_config(intensity_norm="minmax", train_steps=1, resize=True), tmp_path / "run")
    segmenter = Segmenter.load(tmp_path / "run")
    ct = np.random.default_rng(1).integers(-1024, 3000, (16, 16)).astype(np.int16)
    shifted = (ct.astype(np.int32) + 1024).astype(np.uint16)  # the same image, offset into a file's range
    torch.testing.assert_close(segmenter.predict(ct, steps=1, ensemble=1).probs,
                               segmenter.predict(shifted, steps=1, ensemble=1).probs, atol=1e-5, rtol=0)
