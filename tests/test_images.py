"""Reading, writing and comparing images."""

import os

import numpy as np
import pytest
from conftest import random_image
from PIL import Image

from kstyle.errors import KstyleError
from kstyle.images import load_image, psnr, save_image, seam_metric, side_by_side


def test_image_modes_become_8bit_rgb(tmp_path):
    rgb = random_image(20, 30, seed=1)
    cases = {
        "gray.png": Image.fromarray(rgb[..., 0]),
        "rgba.png": Image.fromarray(random_image(20, 30, channels=4, seed=2), "RGBA"),
        "palette.png": Image.fromarray(rgb).convert("P"),
        "cmyk.jpg": Image.fromarray(rgb).convert("CMYK"),
        "gray16.png": Image.fromarray(rgb[..., 0].astype(np.uint16) * 257),
        "rgb.bmp": Image.fromarray(rgb),
    }
    for name, image in cases.items():
        path = str(tmp_path / name)
        image.save(path)
        loaded = load_image(path)
        assert loaded.shape == (20, 30, 3) and loaded.dtype == np.uint8, name
    # 16-bit gray keeps its full range rather than clipping at 255
    np.testing.assert_array_equal(load_image(str(tmp_path / "gray16.png"))[..., 0], rgb[..., 0])
    # transparent pixels become white
    transparent = np.zeros((4, 4, 4), np.uint8)
    Image.fromarray(transparent, "RGBA").save(tmp_path / "clear.png")
    assert (load_image(str(tmp_path / "clear.png")) == 255).all()


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied(tmp_path, orientation):
    pixels = random_image(20, 40, seed=3)
    exif = Image.Exif()
    exif[0x0112] = orientation  # 3: rotate 180, 6: 90 clockwise, 8: 90 counter-clockwise
    path = str(tmp_path / "rotated.png")  # lossless, so pixels compare exactly
    Image.fromarray(pixels).save(path, exif=exif)
    # what a viewer shows: the stored pixels turned as the tag says (np.rot90 is counter-clockwise)
    expected = {3: np.rot90(pixels, 2), 6: np.rot90(pixels, -1), 8: np.rot90(pixels, 1)}
    np.testing.assert_array_equal(load_image(path), expected[orientation])


def test_max_size_keeps_aspect_ratio(tmp_path):
    path = str(tmp_path / "big.png")
    Image.fromarray(random_image(60, 90, seed=4)).save(path)
    assert load_image(path, max_size=45).shape == (30, 45, 3)
    assert load_image(path, max_size=500).shape == (60, 90, 3)


def test_unreadable_image_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.png"
    path.write_text("no image here")
    with pytest.raises(KstyleError, match="cannot read image"):
        load_image(str(path))


def test_psnr_and_seam_metric_against_hand_computed_values():
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    assert psnr(a, b) == float("inf")
    b[0, 0, 0] = 255  # one error of 255 over 48 values: MSE = 255² / 48
    # float64 arithmetic on a few integers, no kernels: equal to rounding (abs 1e-9 is far
    # above float64's error here and far below any formula slip)
    assert psnr(a, b) == pytest.approx(10 * np.log10(48), abs=1e-9)
    image = np.zeros((4, 4, 1))
    image[:, 2:] = 8.0  # one vertical step of 8 exactly at the tile border (tile = 2)
    border, inside = seam_metric(image, 2)
    # border columns: step between columns 1|2 is 8 (x direction); rows give 0
    assert border == pytest.approx(8 / 2) and inside == pytest.approx(0.0)


def test_save_image_writes_atomically_in_the_extension_format(tmp_path):
    pixels = random_image(12, 10, seed=5)
    save_image(pixels, str(tmp_path / "a.png"))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a.png")), pixels)
    save_image(pixels, str(tmp_path / "sub" / "b.jpg"))
    assert Image.open(tmp_path / "sub" / "b.jpg").format == "JPEG"
    with pytest.raises(KstyleError, match="unknown output image type"):
        save_image(pixels, str(tmp_path / "c.xyz"))
    assert sorted(os.listdir(tmp_path)) == ["a.png", "sub"]


def test_side_by_side_puts_both_on_white():
    left = np.zeros((3, 2, 3), np.uint8)
    right = np.full((5, 4, 3), 7, np.uint8)
    canvas = side_by_side(left, right, gap=8)
    assert canvas.shape == (5, 14, 3)
    assert (canvas[:3, :2] == 0).all() and (canvas[:, 10:] == 7).all()
    assert (canvas[3:, :2] == 255).all() and (canvas[:, 2:10] == 255).all()
