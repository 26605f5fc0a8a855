import os

import numpy as np
import pytest
from conftest import random_image
from PIL import Image

from kstyle.errors import KstyleError
from kstyle.images import load_image, side_by_side
from kstyle.inference import stylize_array
from kstyle.stylize_files import stylize
from kstyle.transform_net import load_transform_net


@pytest.fixture(scope="module")
def model(saved_model_path):
    return load_transform_net(saved_model_path)


def test_load_from_file_and_run_dir(saved_model_path):
    assert load_transform_net(saved_model_path).count_params() == 1_679_235
    assert load_transform_net(os.path.dirname(saved_model_path)).count_params() == 1_679_235


def test_load_errors(tmp_path):
    with pytest.raises(KstyleError, match="not found"):
        load_transform_net(str(tmp_path / "missing.keras"))
    with pytest.raises(KstyleError, match="no model.keras"):
        load_transform_net(str(tmp_path))
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(KstyleError, match="could not load model"):
        load_transform_net(str(corrupt))


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


@pytest.mark.parametrize("shape", [(33, 47), (32, 32), (5, 7), (2, 3)])
def test_stylize_array_keeps_any_size(model, shape):
    image = random_image(*shape, seed=5)
    original = image.copy()
    out = stylize_array(model, image)
    assert out.shape == (*shape, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(image, original)  # the caller's array is untouched


def test_stylize_array_equals_predict_on_multiples_of_four(model):
    image = random_image(36, 44, seed=6)
    expected = model.predict(image[None].astype("float32"), verbose=0)[0]
    out = stylize_array(model, image)
    assert np.abs(out.astype(float) - expected).max() <= 0.5 + 1e-3


def test_stylize_file_and_side_by_side(model, tmp_path):
    source = str(tmp_path / "in.jpg")
    Image.fromarray(random_image(33, 47, seed=7)).save(source)
    written, failed = stylize(model, source, str(tmp_path / "out.png"))
    assert failed == [] and Image.open(written[0]).size == (47, 33)
    written, _ = stylize(model, source, str(tmp_path / "pair.png"), show_input=True)
    assert Image.open(written[0]).size == (47 * 2 + 8, 33)
    assert side_by_side(np.zeros((3, 2, 3), np.uint8), np.zeros((5, 4, 3), np.uint8)).shape == (
        5,
        14,
        3,
    )


def test_stylize_folder_skips_bad_files_and_writes_the_rest(model, tmp_path):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(random_image(20, 24, seed=8)).save(folder / "a.jpg")
    Image.fromarray(random_image(24, 20, seed=9)).save(folder / "sub" / "b.png")
    (folder / "broken.jpg").write_bytes(b"")
    written, failed = stylize(model, str(folder), str(tmp_path / "out"))
    assert sorted(os.path.relpath(p, tmp_path / "out") for p in written) == ["a.png", "sub/b.png"]
    assert [os.path.basename(source) for source, _ in failed] == ["broken.jpg"]


def test_stylize_bad_paths(model, tmp_path):
    with pytest.raises(KstyleError, match="input not found"):
        stylize(model, str(tmp_path / "nope.jpg"), str(tmp_path / "o.png"))
    source = str(tmp_path / "in.png")
    Image.fromarray(random_image(8, 8)).save(source)
    with pytest.raises(KstyleError, match="unknown output image type"):
        stylize(model, source, str(tmp_path / "out.xyz"))
