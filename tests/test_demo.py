"""The demo set: made on the spot, the same for the same seed."""

import os

import numpy as np
from PIL import Image

from kstyle.demo import make_content_images, make_style_image, prepare_demo, structured_image


def test_the_demo_set_is_reproducible(tmp_path):
    first = make_content_images(str(tmp_path / "a"), count=3, size=32, seed=1)
    again = make_content_images(str(tmp_path / "b"), count=3, size=32, seed=1)
    other = make_content_images(str(tmp_path / "c"), count=3, size=32, seed=2)
    pixels = [[np.asarray(Image.open(p)) for p in paths] for paths in (first, again, other)]
    assert all(p.shape == (32, 32, 3) for p in pixels[0])
    assert all(np.array_equal(x, y) for x, y in zip(pixels[0], pixels[1], strict=True))
    assert not np.array_equal(pixels[0][0], pixels[2][0])
    style = np.asarray(Image.open(make_style_image(str(tmp_path / "s.png"), size=48)))
    assert style.shape == (48, 48, 3) and style.std() > 20  # strokes, not a flat canvas


def test_prepare_demo_makes_the_set_once(tmp_path):
    demo = prepare_demo(str(tmp_path / "demo"))
    assert len(os.listdir(demo["data"])) == 64 and os.path.isfile(demo["photo"])
    stamp = os.path.getmtime(demo["style"])
    assert prepare_demo(str(tmp_path / "demo")) == demo
    assert os.path.getmtime(demo["style"]) == stamp


def test_structured_image_has_edges_and_flat_areas():
    image = structured_image(64, 48, seed=3)
    assert image.shape == (64, 48, 3) and image.dtype == np.uint8
    steps = np.abs(np.diff(image.astype(int), axis=1)).max(axis=-1)
    assert (steps > 60).mean() > 0.005  # disc and rectangle edges
    np.testing.assert_array_equal(image, structured_image(64, 48, seed=3))
