"""The fused inference graph and the compiled forward pass."""

import keras
import numpy as np
import pytest

from kstyle.forward import UpsampleConv2D, inference_net
from kstyle.transform_net import ReflectionPadding2D, build_transform_net


def _randomized(net, seed):
    """``net`` with non-trivial norm parameters, so every layer matters."""
    rng = np.random.default_rng(seed)
    for layer in net.layers:
        if isinstance(layer, keras.layers.GroupNormalization):
            gamma, beta = layer.get_weights()
            layer.set_weights(
                [gamma + rng.uniform(0, 1, gamma.shape), rng.normal(0, 0.3, beta.shape)]
            )
    return net


@pytest.mark.parametrize("padding", ["zeros", "reflect"])
def test_inference_net_fuses_upsampling_into_the_next_conv(padding):
    keras.utils.set_random_seed(3)
    net = _randomized(build_transform_net(padding=padding), 3)
    fused = inference_net(net)
    kinds = [type(layer) for layer in fused.layers]
    assert kinds.count(UpsampleConv2D) == 2 and keras.layers.UpSampling2D not in kinds
    assert fused.count_params() == net.count_params()
    images = np.random.default_rng(1).uniform(0, 255, (2, 36, 44, 3)).astype("float32")
    assert np.abs(np.asarray(fused(images)) - np.asarray(net(images))).max() < 5e-3
    # the kernels are shared, not copied: a change to net reaches the fused model
    conv = net.get_layer("up2_conv")
    conv.kernel.assign(conv.kernel * -2.0)
    assert np.abs(np.asarray(fused(images)) - np.asarray(net(images))).max() < 5e-3


@pytest.mark.parametrize("reflect", [False, True])
def test_upsample_conv_equals_upsampling_then_conv(reflect):
    rng = np.random.default_rng(5)
    images = rng.normal(size=(1, 7, 10, 6)).astype("float32")
    kernel = rng.normal(size=(3, 3, 6, 5)).astype("float32")
    bias = rng.normal(size=(5,)).astype("float32")
    upsampled = keras.layers.UpSampling2D(2)(images)
    if reflect:
        upsampled = ReflectionPadding2D(1)(upsampled)
    conv = keras.layers.Conv2D(5, 3, padding="valid" if reflect else "same")
    conv.build(upsampled.shape)
    conv.set_weights([kernel, bias])
    expected = np.asarray(conv(upsampled))
    layer = UpsampleConv2D(5, reflect=reflect)
    layer.build(images.shape)
    layer.set_weights([kernel, bias])
    assert np.abs(np.asarray(layer(images)) - expected).max() < 1e-4
    clone = UpsampleConv2D.from_config(layer.get_config())
    assert (clone.filters, clone.reflect) == (5, reflect)


def test_inference_net_leaves_other_models_alone():
    inputs = keras.Input((None, None, 4))
    upsampled = keras.layers.UpSampling2D(2)(inputs)
    outputs = keras.layers.Conv2D(4, 5, padding="same")(upsampled)  # not 3x3: not fused
    model = keras.Model(inputs, outputs)
    assert inference_net(model) is model


def test_inference_net_reads_each_models_own_graph():
    """Layers shared between models: what follows the upsampling in *this* model decides."""
    inputs = keras.Input((None, None, 4))
    upsample = keras.layers.UpSampling2D(2)
    conv = keras.layers.Conv2D(4, 3, padding="same")
    first = keras.Model(inputs, conv(upsample(inputs)))
    other_inputs = keras.Input((None, None, 4))
    cropped = keras.layers.Cropping2D(1)(upsample(other_inputs))
    second = keras.Model(other_inputs, conv(cropped))
    assert inference_net(second) is second  # a crop sits between them here
    fused = inference_net(first)
    assert [type(layer) for layer in fused.layers].count(UpsampleConv2D) == 1
    images = np.random.default_rng(2).normal(size=(1, 6, 8, 4)).astype("float32")
    assert np.abs(np.asarray(fused(images)) - np.asarray(first(images))).max() < 1e-4


def test_inference_net_keeps_dtype_policies_and_model_outputs():
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        mixed = build_transform_net()
    finally:
        keras.config.set_dtype_policy("float32")
    fused = [layer for layer in inference_net(mixed).layers if isinstance(layer, UpsampleConv2D)]
    assert [layer.dtype_policy.name for layer in fused] == ["mixed_bfloat16"] * 2
    # an upsampled tensor that is itself an output cannot disappear into a fused layer
    inputs = keras.Input((None, None, 4))
    upsampled = keras.layers.UpSampling2D(2)(inputs)
    model = keras.Model(inputs, [upsampled, keras.layers.Conv2D(4, 3, padding="same")(upsampled)])
    assert inference_net(model) is model
