"""The wide output convolution computed on pixel blocks: the same function as the layer it
replaces, found by the graph and only where it applies."""

import keras
import numpy as np
import pytest
from conftest import randomize_norms


@pytest.mark.parametrize("kernel", [5, 7, 9])
def test_a_blocked_convolution_is_the_convolution(kernel):
    from kstyle.blocked_conv import BlockedConv2D

    keras.utils.set_random_seed(kernel)
    conv = keras.layers.Conv2D(3, kernel, padding="same", bias_initializer="random_normal")
    images = np.random.default_rng(kernel).normal(0, 1, (2, 12, 16, 8)).astype("float32")
    expected = conv(images).numpy()
    blocked = BlockedConv2D(conv)(images).numpy()
    np.testing.assert_allclose(blocked, expected, atol=1e-4, rtol=1e-4)
    assert np.abs(expected).max() > 1  # a real signal, with the bias in it


@pytest.mark.parametrize("arch", ["johnson", "tiny"])
def test_the_blocked_inference_net_stylizes_as_the_fused_one(arch):
    from kstyle.blocked_conv import BlockedConv2D, blocked_net
    from kstyle.forward import inference_net
    from kstyle.transform_net import build_transform_net

    keras.utils.set_random_seed(1)
    fused = inference_net(randomize_norms(build_transform_net(arch), seed=1))
    blocked = blocked_net(fused)
    assert [layer.name for layer in blocked.layers if isinstance(layer, BlockedConv2D)] == [
        "out_conv"
    ]
    images = np.random.default_rng(2).uniform(0, 255, (1, 40, 56, 3)).astype("float32")
    expected = fused(images).numpy()
    assert expected.std() > 10  # a picture, not a flat field
    np.testing.assert_allclose(blocked(images).numpy(), expected, atol=2e-3)
    assert blocked.get_layer("out_conv").source is fused.get_layer("out_conv")  # shared kernel


def test_layers_it_does_not_fit_are_left_alone():
    from kstyle.blocked_conv import blocked_net
    from kstyle.transform_net import build_transform_net

    reflect = build_transform_net("johnson", padding="reflect")  # 'valid' after a pad layer
    assert blocked_net(reflect) is reflect
    inputs = keras.Input((None, None, 8))
    strided = keras.layers.Conv2D(3, 9, strides=2, padding="same")(inputs)
    wide = keras.layers.Conv2D(16, 9, padding="same")(inputs)  # fills a vector already
    small = keras.layers.Conv2D(3, 3, padding="same")(inputs)  # nothing to gain
    for outputs in (strided, wide, small, keras.layers.Conv2D(3, 9, padding="same")(inputs)):
        model = keras.Model(inputs, outputs)  # the last: any side, not a multiple of 4
        assert blocked_net(model) is model
    half = keras.layers.Conv2D(8, 3, strides=2, padding="same")(inputs)  # sides of 2 at most
    model = keras.Model(inputs, keras.layers.Conv2D(3, 9, padding="same")(half))
    assert blocked_net(model) is model
