"""The data layer (files, folders, synthetic, visualize): synthetic lesions, data folders, mask I/O and overlays."""

import os

import cv2
import numpy as np
import pytest
import torch

from spadfast.data.folders import SegmentationFolder
from spadfast.data.synthetic import SyntheticLesions, write_synthetic_folder
from spadfast.evaluation.visualize import overlay_contour
from spadfast.io.files import read_image, read_mask, write_mask_png

# ---------------------------------------------------------------------------------------------------------------
# SyntheticLesions


def test_synthetic_is_deterministic_per_seed_and_index():
    a, b = SyntheticLesions(6, image_size=32, seed=3), SyntheticLesions(6, image_size=32, seed=3)
    longer = SyntheticLesions(50, image_size=32, seed=3)
    for i in [0, 5, 2]:  # access order does not matter
        for x, y, z in zip(a[i], b[i], longer[i]):
            assert torch.equal(x, y) and torch.equal(x, z)
    assert not torch.equal(a[0][0], a[1][0])
    assert not torch.equal(a[0][0], SyntheticLesions(6, image_size=32, seed=4)[0][0])
    assert torch.equal(a[-1][0], a[5][0])


@pytest.mark.parametrize("channels", [1, 3])
def test_synthetic_shapes_ranges_and_lesions(channels):
    s = 64
    images, masks = SyntheticLesions(150, image_size=s, seed=0, channels=channels).tensors()
    assert images.shape == (150, channels, s, s) and masks.shape == (150, 1, s, s)
    assert images.dtype == torch.float32 and masks.dtype == torch.float32
    assert images.min() >= -1 and images.max() <= 1
    assert set(masks.unique().tolist()) == {0.0, 1.0}
    fraction = masks.mean(dim=(1, 2, 3))
    assert fraction.min() >= 0.05 and fraction.max() <= 0.301
    # The lesion is clearly brighter than its surroundings, in every sample.
    gray = images.mean(dim=1, keepdim=True)
    inside = (gray * masks).sum((1, 2, 3)) / masks.sum((1, 2, 3))
    outside = (gray * (1 - masks)).sum((1, 2, 3)) / (1 - masks).sum((1, 2, 3))
    assert (inside - outside).min() > 0.3
    # Variety: some lesions touch the border, some samples have two lesions.
    m = masks[:, 0].bool()
    touches = m[:, 0].any(1) | m[:, -1].any(1) | m[:, :, 0].any(1) | m[:, :, -1].any(1)
    assert 0.05 < touches.float().mean() < 0.8
    counts = [cv2.connectedComponents(x.numpy().astype(np.uint8))[0] - 1 for x in m]
    assert 1 in counts and 2 in counts
    if channels == 3:
        assert not torch.equal(images[:, 0], images[:, 1])


def test_synthetic_tensors_equal_items_and_bad_args():
    ds = SyntheticLesions(4, image_size=16, seed=1)
    images, masks = ds.tensors()
    for i in range(4):
        assert torch.equal(images[i], ds[i][0]) and torch.equal(masks[i], ds[i][1])
    assert len(list(iter(ds))) == 4
    with pytest.raises(IndexError):
        ds[4]
    with pytest.raises(TypeError, match="`n`"):
        SyntheticLesions(2.5)
    with pytest.raises(ValueError, match="`image_size`"):
        SyntheticLesions(2, image_size=4)
    with pytest.raises(ValueError, match="`seed`"):
        SyntheticLesions(2, seed=-1)
    with pytest.raises(ValueError, match="`channels`"):
        SyntheticLesions(2, channels=2)
    assert len(SyntheticLesions(0)) == 0


# ---------------------------------------------------------------------------------------------------------------
# Folder helpers


def make_folder(root, pairs):
    """pairs: {image_name: array} and {mask_name: array}, written with cv2 (BGR order for colour)."""
    images, masks = pairs
    for sub, files in (("images", images), ("masks", masks)):
        (root / sub).mkdir(parents=True, exist_ok=True)
        for name, array in files.items():
            assert cv2.imwrite(str(root / sub / name), array), name
    return root


def square_mask(h=20, w=20):
    m = np.zeros((h, w), np.uint8)
    m[4:12, 6:15] = 1
    return m


# ---------------------------------------------------------------------------------------------------------------
# SegmentationFolder


def test_round_trip_synthetic_folder(tmp_path):
    root = write_synthetic_folder(tmp_path / "d", n=12, image_size=32, seed=5)
    ds = SegmentationFolder(root)
    ref = SyntheticLesions(12, image_size=32, seed=5)
    assert ds.names == [f"{i:04d}" for i in range(12)] and len(ds) == 12
    assert ds.paths[3] == (root / "images" / "0003.png", root / "masks" / "0003.png")
    assert ds.channels == 1 and ds.image_size == (32, 32)
    for i in range(12):
        image, mask = ds[i]
        ref_image, ref_mask = ref[i]
        assert torch.equal(mask, ref_mask)
        assert image.dtype == torch.float32 and image.shape == (1, 32, 32)
        assert (image - ref_image).abs().max() <= 1 / 127.5 + 1e-6  # 8-bit quantisation only
    rgb = SegmentationFolder(write_synthetic_folder(tmp_path / "rgb", n=3, image_size=16, seed=1, channels=3))
    ref3 = SyntheticLesions(3, image_size=16, seed=1, channels=3)
    assert rgb.channels == 3
    assert (rgb[2][0] - ref3[2][0]).abs().max() <= 1 / 127.5 + 1e-6  # channel order survives the BGR files
    assert torch.equal(rgb[2][1], ref3[2][1])


def test_cache_off_matches_cache_on(tmp_path):
    root = write_synthetic_folder(tmp_path, n=4, image_size=24, seed=2)
    a, b = SegmentationFolder(root, image_size=16), SegmentationFolder(root, image_size=16, cache=False)
    for i in range(4):
        assert all(torch.equal(x, y) for x, y in zip(a[i], b[i]))


def test_formats_bit_depths_and_mask_encodings(tmp_path):
    m = square_mask()
    gray16 = np.zeros((20, 20), np.uint16)
    gray16[0, 0], gray16[0, 1] = 65535, 32768
    rgb = np.zeros((20, 20, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 10, 20, 250  # B, G, R as cv2 writes them
    bgra = np.dstack([rgb, np.full((20, 20), 7, np.uint8)])
    root = make_folder(
        tmp_path,
        (
            {"a.png": gray16, "b.jpg": rgb, "c.tif": rgb, "d.bmp": rgb, "e.png": bgra, "f.tiff": gray16},
            {
                "a.png": m,  # 0/1
                "b.png": m * 255,  # a jpg image with a png mask
                "c.tif": m.astype(np.uint16) * 65535,
                "d.bmp": np.dstack([m * 255] * 3),  # equal RGB channels are fine
                "e.png": m * 255,
                "f.tiff": m * 3,  # any nonzero value is foreground
            },
        ),
    )
    ds = SegmentationFolder(root, channels=3)
    assert ds.names == ["a", "b", "c", "d", "e", "f"]
    want_mask = torch.from_numpy(m).float()[None]
    for i in range(len(ds)):
        assert torch.equal(ds[i][1], want_mask), ds.names[i]
    a = ds[0][0]
    assert a.shape == (3, 20, 20) and torch.equal(a[0], a[2])  # gray replicated
    assert a[0, 0, 0] == 1.0 and a[0, 1, 1] == -1.0 and abs(a[0, 0, 1].item() - (2 * 32768 / 65535 - 1)) < 1e-6
    for i in (2, 3, 4):  # lossless colour: R, G, B = 250, 20, 10
        np.testing.assert_allclose(ds[i][0][:, 5, 5].numpy(), np.array([250, 20, 10]) / 127.5 - 1, atol=1e-6)
    b = ds[1][0][:, 5, 5].numpy()  # JPEG: approximately
    np.testing.assert_allclose(b, np.array([250, 20, 10]) / 127.5 - 1, atol=0.1)

    gray = SegmentationFolder(root, channels=1)
    assert gray.channels == 1 and gray[2][0].shape == (1, 20, 20)
    want = (0.299 * 250 + 0.587 * 20 + 0.114 * 10) / 127.5 - 1
    assert abs(gray[2][0][0, 5, 5].item() - want) < 1e-3
    assert SegmentationFolder(root).channels == 1  # inferred from the first image, a.png (gray)


def test_read_image_and_read_mask(tmp_path):
    p = tmp_path / "x.png"
    cv2.imwrite(str(p), np.array([[0, 65535]], np.uint16))
    np.testing.assert_array_equal(read_image(p), np.array([[0.0, 1.0]], np.float32))
    c = tmp_path / "c.png"
    cv2.imwrite(str(c), np.array([[[255, 0, 0]]], np.uint8))  # blue in BGR
    np.testing.assert_array_equal(read_image(c), np.array([[[0.0, 0.0, 1.0]]], np.float32))  # RGB order
    j = tmp_path / "m.jpg"
    big = cv2.circle(np.zeros((32, 32), np.uint8), (13, 17), 9, 255, -1)
    cv2.imwrite(str(j), big, [cv2.IMWRITE_JPEG_QUALITY, 50])
    raw = cv2.imread(str(j), cv2.IMREAD_UNCHANGED)
    assert ((raw > 0) & (raw < 128) & (big == 0)).any()  # JPEG noise around the square ...
    assert (read_mask(j) == (big > 0)).mean() > 0.98  # ... which read_mask thresholds away
    assert read_mask(j).dtype == bool


def test_resize_and_native_sizes(tmp_path):
    m = np.kron(square_mask(10, 15), np.ones((2, 2), np.uint8))  # 20 x 30, constant on aligned 2x2 blocks
    img = (m * 200).astype(np.uint8)
    root = make_folder(
        tmp_path / "r", ({"a.png": img, "b.png": cv2.resize(img, (15, 10))}, {"a.png": m, "b.png": m[::2, ::2]})
    )
    with pytest.raises(ValueError, match=str(root / "images" / "b.png")):
        SegmentationFolder(root)  # native sizes differ
    ds = SegmentationFolder(root, image_size=(10, 16))
    assert ds.image_size == (10, 16)
    for i in range(2):
        image, mask = ds[i]
        assert image.shape == (1, 10, 16) and mask.shape == (1, 10, 16)
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
    up = SegmentationFolder(root, image_size=40)
    image, mask = up[0]
    assert image.shape == (1, 40, 40) and set(mask.unique().tolist()) == {0.0, 1.0}
    # An exact 2x downscale of a mask made of aligned 2x2 blocks keeps every block.
    assert torch.equal(SegmentationFolder(root, image_size=(10, 15))[0][1][0], torch.from_numpy(m[::2, ::2]).float())
    for bad in [0, (10,), (10, 0), "32", 2.5]:
        with pytest.raises((TypeError, ValueError), match="`image_size`"):
            SegmentationFolder(root, image_size=bad)
    with pytest.raises(ValueError, match="`channels`"):
        SegmentationFolder(root, channels=2)


def test_every_error_names_the_file(tmp_path):
    m = square_mask()
    img = m * 100

    def folder(name, images, masks):
        return make_folder(tmp_path / name, (images, masks))

    root = folder("missing_mask", {"a.png": img, "b.png": img}, {"a.png": m})
    with pytest.raises(ValueError, match=f"{root / 'images' / 'b.png'} has no mask"):
        SegmentationFolder(root)

    root = folder("missing_image", {"a.png": img}, {"a.png": m, "z.png": m})
    with pytest.raises(ValueError, match=f"{root / 'masks' / 'z.png'} has no image"):
        SegmentationFolder(root)

    root = folder("corrupt_image", {"a.png": img}, {"a.png": m})
    (root / "images" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(ValueError, match=f"cannot decode {root / 'images' / 'a.png'}"):
        SegmentationFolder(root)

    root = folder("corrupt_mask", {"a.png": img, "b.jpg": img}, {"a.png": m, "b.png": m})
    (root / "masks" / "b.png").write_bytes(b"")
    with pytest.raises(ValueError, match=str(root / "masks" / "b.png")):
        SegmentationFolder(root)

    root = folder("sizes", {"a.png": img}, {"a.png": m[:, :-1]})
    with pytest.raises(ValueError, match=f"{root / 'images' / 'a.png'} is 20x20 .* mask {root / 'masks' / 'a.png'}"):
        SegmentationFolder(root)

    root = folder("empty", {}, {})
    with pytest.raises(ValueError, match=f"{root / 'images'} holds no image files"):
        SegmentationFolder(root)
    (root / "images" / "notes.txt").write_text("not an image")  # other files are ignored
    with pytest.raises(ValueError, match="holds no image files"):
        SegmentationFolder(root)

    (tmp_path / "no_masks" / "images").mkdir(parents=True)
    with pytest.raises(ValueError, match=str(tmp_path / "no_masks" / "masks")):
        SegmentationFolder(tmp_path / "no_masks")

    root = folder("dupes", {"a.png": img, "a.jpg": img}, {"a.png": m})
    with pytest.raises(ValueError, match="share the stem 'a'"):
        SegmentationFolder(root)

    colour = np.dstack([m * 255, m * 0, m * 255])
    root = folder("rgb_mask", {"a.png": img}, {"a.png": colour})
    with pytest.raises(ValueError, match=f"{root / 'masks' / 'a.png'} is a colour mask"):
        SegmentationFolder(root)

    root = folder("int_tiff", {"a.tif": m.astype(np.int16)}, {"a.png": m})
    with pytest.raises(ValueError, match=str(root / "images" / "a.tif")):
        SegmentationFolder(root)

    for reader in (read_image, read_mask):
        with pytest.raises(ValueError, match=str(tmp_path / "nope.png")):
            reader(tmp_path / "nope.png")


# ---------------------------------------------------------------------------------------------------------------
# write_mask_png and overlay_contour


def test_write_mask_png(tmp_path):
    m = square_mask(9, 13).astype(bool)
    for i, mask in enumerate([m, torch.from_numpy(m), torch.from_numpy(m).float()[None], m.astype(np.uint8)]):
        path = write_mask_png(tmp_path / "sub" / f"{i}.png", mask)
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert raw.dtype == np.uint8 and raw.shape == (9, 13) and set(np.unique(raw)) == {0, 255}
        np.testing.assert_array_equal(read_mask(path), m)
    assert sorted(os.listdir(tmp_path / "sub")) == ["0.png", "1.png", "2.png", "3.png"]  # no temporary files left
    with pytest.raises(ValueError, match="`path` must end in .png"):
        write_mask_png(tmp_path / "x.jpg", m)
    with pytest.raises(ValueError, match="`mask` must be binary"):
        write_mask_png(tmp_path / "x.png", m * 255)
    with pytest.raises(ValueError, match="`mask` must have shape"):
        write_mask_png(tmp_path / "x.png", np.zeros((2, 3, 3)))
    with pytest.raises(TypeError, match="`mask`"):
        write_mask_png(tmp_path / "x.png", [[0, 1]])
    assert not (tmp_path / "x.png").exists()


def test_overlay_contour():
    m = np.zeros((16, 20), bool)
    m[4:12, 5:15] = True
    image = torch.linspace(-1, 1, 16 * 20).reshape(1, 16, 20)
    out = overlay_contour(image, m, color=(0, 0, 255))
    assert out.shape == (16, 20, 3) and out.dtype == np.uint8
    red = (out == (0, 0, 255)).all(axis=2)
    ring = m & ~cv2.erode(m.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    np.testing.assert_array_equal(red, ring)
    gray = np.clip(np.rint((image[0].numpy() + 1) * 127.5), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(out[~ring], np.repeat(gray[~ring][:, None], 3, axis=1))
    # Layouts agree; uint8 output chains as BGR input.
    from_numpy = overlay_contour(image[0].numpy(), torch.from_numpy(m)[None])
    np.testing.assert_array_equal(from_numpy, overlay_contour(image, m))
    hwc = image.repeat(3, 1, 1)
    np.testing.assert_array_equal(overlay_contour(hwc, m), overlay_contour(hwc.permute(1, 2, 0).numpy(), m))
    twice = overlay_contour(out, np.zeros_like(m), color=(255, 0, 0))
    np.testing.assert_array_equal(twice, out)
    with pytest.raises(ValueError, match="`mask` must have the image's size"):
        overlay_contour(image, m[:-1])
    with pytest.raises(TypeError, match="`image`"):
        overlay_contour(image.numpy().astype(np.int32), m)
