"""spadfast.io.files: hostile image/mask files (RGBA and gray-alpha masks, multi-page TIFFs,
integer intensity norms, empty and full masks, hidden files) and the atomic writer."""

import cv2
import numpy as np
import pytest

from spadfast.data.folders import SegmentationFolder
from spadfast.io.files import (
    index_folder,
    intensity_range,
    read_mask,
    read_model_input,
    remove_stale_temps,
    write_atomic,
)


def _rgba(label: np.ndarray, colour=(0, 0, 255)) -> np.ndarray:
    out = np.zeros((*label.shape, 4), np.uint8)
    out[:, :, :3] = colour
    out[:, :, 3] = label
    return out


@pytest.mark.parametrize("colour", [(0, 0, 0), (0, 0, 255), (12, 200, 7), (255, 255, 255)])
@pytest.mark.parametrize("on", [1, 128, 255])
def test_rgba_mask_with_the_label_in_alpha(tmp_path, colour, on):
    label = np.zeros((9, 11), np.uint8)
    label[2:6, 3:9] = on
    path = tmp_path / "m.png"
    cv2.imwrite(str(path), _rgba(label, colour))
    assert np.array_equal(read_mask(path), label != 0)


def test_gray_alpha_mask_and_varying_colour_masks(tmp_path):
    label = np.zeros((6, 6), np.uint8)
    label[1:4, 1:4] = 255
    ga = np.stack([np.full((6, 6), 255, np.uint8), label], axis=-1)  # gray + alpha (as decoded; cv2 cannot write it)
    from spadfast.io.files import _mask_from_array

    assert np.array_equal(_mask_from_array(ga, tmp_path / "ga.png"), label != 0)
    path = tmp_path / "ga.png"
    rgba = _rgba(np.full((6, 6), 255, np.uint8))
    rgba[:, :, :3] = label[:, :, None]  # label in gray RGB, alpha opaque: the colour carries the label
    cv2.imwrite(str(path), rgba)
    assert np.array_equal(read_mask(path), label != 0)
    rgba[0, 0, :3] = (1, 2, 3)  # channels disagree
    cv2.imwrite(str(path), rgba)
    with pytest.raises(ValueError, match="ga.png"):
        read_mask(path)


def test_multipage_tiff_is_refused(tmp_path):
    path = tmp_path / "stack.tif"
    assert cv2.imwritemulti(str(path), [np.zeros((4, 4), np.uint8), np.ones((4, 4), np.uint8)])
    with pytest.raises(ValueError, match="multipage"):
        read_mask(path)
    single = tmp_path / "one.tif"
    cv2.imwrite(str(single), np.ones((4, 4), np.uint8))
    assert read_mask(single).all()


@pytest.mark.parametrize("norm", ["dtype", "minmax", "percentile"])
@pytest.mark.parametrize("bits", [8, 12, 16])
def test_intensity_norms_on_integer_images(tmp_path, norm, bits):
    rng = np.random.default_rng(bits)
    dtype = np.uint8 if bits == 8 else np.uint16
    image = rng.integers(0, 2**bits, size=(20, 17)).astype(dtype)
    image[0, 0], image[0, 1] = 0, 2**bits - 1
    path = tmp_path / "i.png"
    cv2.imwrite(str(path), image)
    x, native, used = read_model_input(path, None, 1, norm)
    assert native == (20, 17) and x.shape == (1, 20, 17) and x.dtype == np.float32
    assert -1 <= x.min() and x.max() <= 1
    if norm == "minmax":
        assert x.min() == -1 and x.max() == 1
    elif norm == "dtype":
        top = np.iinfo(dtype).max
        np.testing.assert_allclose(x[0], image / top * 2 - 1, atol=1e-6)
        assert used == pytest.approx(image.max() / top)
    else:
        lo, hi = np.percentile(image, (0.5, 99.5))
        np.testing.assert_allclose(x[0], np.clip((image - lo) / (hi - lo) * 2 - 1, -1, 1), atol=1e-5)


def test_constant_image_maps_to_minus_one_and_bad_norm_is_named():
    assert intensity_range(np.full((3, 3), 7, np.uint16), 65535.0, "minmax") == (7.0, 8.0)
    with pytest.raises(ValueError, match="`intensity_norm`"):
        intensity_range(np.zeros((2, 2), np.uint8), 255.0, "zscore")


def _folder(root, images, masks):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, (image, mask) in enumerate(zip(images, masks)):
        cv2.imwrite(str(root / "images" / f"{i}.png"), image)
        cv2.imwrite(str(root / "masks" / f"{i}.png"), mask)
    return root


def test_twelve_bit_data_warns_with_dtype_norm_and_not_with_minmax(tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 4096, (8, 8)).astype(np.uint16) for _ in range(3)]
    masks = [(rng.random((8, 8)) > 0.5).astype(np.uint8) * 255 for _ in range(3)]
    root = _folder(tmp_path / "d", images, masks)
    with pytest.warns(UserWarning, match="intensity_norm"):
        SegmentationFolder(root)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = SegmentationFolder(root, intensity_norm="minmax")
    assert float(ds[0][0].min()) == -1.0 and float(ds[0][0].max()) == 1.0


def test_empty_and_full_masks_warn(tmp_path):
    image = np.full((8, 8), 100, np.uint8)
    root = _folder(tmp_path / "empty", [image, image], [np.zeros((8, 8), np.uint8)] * 2)
    with pytest.warns(UserWarning, match="no mask"):
        SegmentationFolder(root)
    root = _folder(tmp_path / "full", [image, image], [np.zeros((8, 8), np.uint8), np.full((8, 8), 255, np.uint8)])
    with pytest.warns(UserWarning, match="entirely foreground"):
        SegmentationFolder(root)


def test_hidden_files_are_skipped_everywhere(tmp_path):
    (tmp_path / "a.png").write_bytes(cv2.imencode(".png", np.zeros((2, 2), np.uint8))[1].tobytes())
    (tmp_path / "._a.png").write_bytes(b"AppleDouble junk")
    (tmp_path / ".b.png").write_bytes(b"junk")
    assert list(index_folder(tmp_path)) == ["a"]


def test_atomic_writer_names_its_temp_files_and_cleans_them(tmp_path):
    target = tmp_path / "x.bin"

    def boom(tmp):
        tmp.write_bytes(b"partial")
        assert ".x.bin.spadfast-tmp-" in tmp.name
        raise KeyboardInterrupt  # a kill mid-write

    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, boom)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / ".x.bin.spadfast-tmp-zz").write_bytes(b"left by a SIGKILL")
    (tmp_path / ".user-file").write_bytes(b"not ours")
    assert [p.name for p in remove_stale_temps(tmp_path)] == [".x.bin.spadfast-tmp-zz"]
    assert (tmp_path / ".user-file").exists()


@pytest.mark.parametrize("stage", ["write", "fsync", "replace"])
def test_full_disk_at_any_stage_keeps_the_old_file_and_names_the_target(tmp_path, monkeypatch, stage):
    import errno
    import os

    import spadfast.io.files as files

    target = tmp_path / "x.bin"
    target.write_bytes(b"previous")
    real = {"fsync": os.fsync, "replace": os.replace}

    def no_space(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def write(tmp):
        tmp.write_bytes(b"half")
        if stage == "write":
            no_space()

    if stage != "write":
        monkeypatch.setattr(files.os, stage, no_space)
    with pytest.raises(OSError) as info:
        write_atomic(target, write)
    monkeypatch.setattr(files.os, "fsync", real["fsync"])
    monkeypatch.setattr(files.os, "replace", real["replace"])
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert "No space left on device" in str(info.value) and "unchanged" in str(info.value)
    assert target.read_bytes() == b"previous" and sorted(p.name for p in tmp_path.iterdir()) == ["x.bin"]
    write_atomic(target, lambda tmp: tmp.write_bytes(b"new"))  # the disk has room again: a retry succeeds
    assert target.read_bytes() == b"new"
