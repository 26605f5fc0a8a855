"""Reading, writing and comparing images."""

import numpy as np
import pytest
from conftest import random_image
from PIL import Image

from kstyle.errors import KstyleError
from kstyle.images import load_image


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


def test_exif_orientation_is_applied(tmp_path):
    image = Image.fromarray(random_image(20, 40, seed=3))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = str(tmp_path / "rotated.jpg")
    image.save(path, exif=exif)
    assert load_image(path).shape == (40, 20, 3)


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
