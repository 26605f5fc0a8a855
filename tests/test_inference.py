"""Stylizing arrays: any size, colour preservation, strength, the memory budget."""

import numpy as np
import pytest
from conftest import random_image
from PIL import Image

from kstyle import memory, tiling
from kstyle.demo import structured_image
from kstyle.errors import KstyleError
from kstyle.inference import rgb_to_ycbcr, stylize_array, ycbcr_to_rgb

# two stride-2 convolutions; live: a stride-4 stem and a stride-2 convolution
PRESET_SIZE_MULTIPLES = dict(johnson=4, slim=4, tiny=4, live=8)


@pytest.mark.numeric
@pytest.mark.parametrize("shape", [(33, 47), (32, 32), (5, 7), (2, 3), (36, 44)])
def test_stylize_array_keeps_any_size(preset_net, shape, request, bars):
    multiple = PRESET_SIZE_MULTIPLES[request.node.callspec.params["preset_net"]]
    image = random_image(*shape, seed=5)
    original = image.copy()
    out = stylize_array(preset_net, image)
    assert out.shape == (*shape, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(image, original)  # the caller's array is untouched
    # the same as padding to multiples of the net's by hand (mirror at the bottom and right, or
    # repeat the edge where the image is too small to mirror), running the net, cropping back
    height, width = shape
    pad = ((0, -height % multiple), (0, -width % multiple), (0, 0))
    mode = "reflect" if height > -height % multiple and width > -width % multiple else "edge"
    padded = np.pad(image.astype(np.float32), pad, mode=mode)
    expected = preset_net.predict(padded[None], verbose=0)[0, :height, :width]
    # rounding to uint8 moves a value by at most 0.5; 1e-3 more for the float rounding of the
    # fused inference graph against the plain net: measured at most 0.50003 on every CPU path
    # (docs/performance.md#numeric-bars)
    quantity = "stylize_array vs predict, presets (levels)"
    bars.at_most(quantity, np.abs(out - expected).max(), 0.5 + 1e-3)


@pytest.mark.numeric
def test_stylize_array_equals_predict_on_multiples_of_four(model, bars):
    image = random_image(36, 44, seed=6)
    expected = model.predict(image[None].astype("float32"), verbose=0)[0]
    out = stylize_array(model, image)
    # as above: 0.5 from rounding, 1e-3 for the fused graph's float rounding
    difference = np.abs(out.astype(float) - expected).max()
    bars.at_most("stylize_array vs predict, seed net (levels)", difference, 0.5 + 1e-3)


def test_ycbcr_round_trip_matches_pillow():
    rgb = random_image(16, 16, seed=1)
    ours = rgb_to_ycbcr(rgb)
    pillow = np.asarray(Image.fromarray(rgb).convert("YCbCr"), np.float64)
    assert np.abs(ours - pillow).max() <= 1.0
    np.testing.assert_allclose(ycbcr_to_rgb(ours), rgb, atol=1e-6)


def test_preserve_color_keeps_chroma_and_takes_stylized_luminance(preset_net):
    content = structured_image(64, 64, seed=2)
    stylized = stylize_array(preset_net, content)
    kept = stylize_array(preset_net, content, preserve_colors=True)
    content_ycc, kept_ycc, styled_ycc = map(rgb_to_ycbcr, (content, kept, stylized))
    assert np.abs(kept_ycc[..., 1:] - content_ycc[..., 1:]).max() <= 1.0  # Cb, Cr within 1
    assert np.abs(kept_ycc[..., 0] - content_ycc[..., 0]).mean() > 5.0  # luminance changed
    # ... to the stylized luminance wherever that colour fits in the RGB cube
    # (elsewhere the luminance is clamped, so the colour ends on a face of the RGB cube)
    close = np.abs(kept_ycc[..., 0] - styled_ycc[..., 0]) <= 1.0
    on_face = (kept <= 1).any(axis=-1) | (kept >= 254).any(axis=-1)
    assert close.mean() > 0.5 and (close | on_face).all()
    assert np.abs(stylized.astype(int) - kept).max() > 10  # not just the stylized output


def test_strength_blends_and_zero_returns_the_input(preset_net):
    content = structured_image(40, 52, seed=3)
    np.testing.assert_array_equal(stylize_array(preset_net, content, strength=0.0), content)
    full = stylize_array(preset_net, content).astype(np.float64)
    half = stylize_array(preset_net, content, strength=0.5).astype(np.float64)
    assert np.abs(half - (full + content) / 2).max() <= 1.0
    assert np.abs(half - content).mean() > 5.0
    np.testing.assert_array_equal(stylize_array(preset_net, content, strength=1.0), full)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(KstyleError, match="--strength"):
            stylize_array(preset_net, content, strength=bad)


def test_auto_tiling_follows_the_memory_budget(model, monkeypatch):
    assert memory.parse_memory("4GB") == 4 * 2**30
    assert memory.parse_memory("512MB") == 512 * 2**20
    with pytest.raises(KstyleError, match="memory size"):
        memory.parse_memory("lots")
    image = structured_image(128, 96, seed=5)
    calls = []
    original = tiling.TiledStylizer.__call__
    monkeypatch.setattr(
        tiling.TiledStylizer, "__call__", lambda self, *a, **k: calls.append(self.tile) or
        original(self, *a, **k)
    )  # fmt: skip
    budget = memory.forward_bytes(64, 64)  # too little for 128 x 96: tiles of 64 px
    monkeypatch.setattr(tiling, "auto_tile_size", lambda memory, margin=48: 64)
    out = stylize_array(model, image, max_memory=budget)
    assert calls == [64] and out.shape == image.shape
    stylize_array(model, image, max_memory="64GB")
    assert calls == [64]  # fits: no tiling


def test_a_net_with_three_stride_2_convolutions_is_padded_to_multiples_of_8():
    import keras

    keras.utils.set_random_seed(4)
    inputs = keras.Input((None, None, 3))
    x = inputs
    for _ in range(3):
        x = keras.layers.Conv2D(4, 3, strides=2, padding="same")(x)
        x = keras.layers.GroupNormalization(groups=-1, epsilon=1e-5)(x)
    for _ in range(3):
        x = keras.layers.UpSampling2D(2)(x)
    net = keras.Model(inputs, keras.layers.Conv2D(3, 3, padding="same")(x))
    image = random_image(37, 45, seed=8)
    out = stylize_array(net, image)
    padded = np.pad(image.astype(np.float32), ((0, 3), (0, 3), (0, 0)), mode="reflect")
    expected = np.clip(np.round(net.predict(padded[None], verbose=0)[0, :37, :45]), 0, 255)
    # 1 level: float rounding at a .5 boundary (conftest.max_level_diff)
    assert out.shape == (37, 45, 3) and np.abs(out - expected).max() <= 1
    tiled = stylize_array(net, image, tile=16)  # tiles and margins on the 8-px grid
    assert tiled.shape == (37, 45, 3)
    with pytest.raises(KstyleError, match="multiple of 8"):
        stylize_array(net, image, tile=12)
