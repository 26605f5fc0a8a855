"""The fused inference graph and the compiled forward pass."""

import keras
import numpy as np
import pytest
from conftest import randomize_norms

from kstyle.forward import UpsampleConv2D, inference_net
from kstyle.transform_net import ReflectionPadding2D, build_transform_net


@pytest.mark.numeric
def test_fused_net_is_the_same_function_on_every_variant(variant_net, request, bars):
    fused = inference_net(variant_net)
    kinds = [type(layer) for layer in fused.layers]
    if request.node.callspec.params["variant_net"].startswith(("tiny", "live")):
        # the tiny and live presets' upsamplings feed depthwise convolutions: left unfused
        assert fused is variant_net and keras.layers.DepthwiseConv2D in kinds
    else:
        assert kinds.count(UpsampleConv2D) == 2 and keras.layers.UpSampling2D not in kinds
    assert fused.count_params() == variant_net.count_params()
    # sides that are multiples of 8: a direct call runs no padding (live's size multiple)
    images = np.random.default_rng(1).uniform(0, 255, (2, 40, 48, 3)).astype("float32")
    difference = np.abs(np.asarray(fused(images)) - np.asarray(variant_net(images)))
    # measured at most 0.0009 levels on every CPU path (docs/performance.md#numeric-bars)
    bars.at_most("fused vs unfused, variant nets (float levels)", difference.max(), 0.01)


def test_an_upsampled_tensor_read_twice_is_not_fused():
    inputs = keras.Input((None, None, 4))
    upsampled = keras.layers.UpSampling2D(2)(inputs)
    conv = keras.layers.Conv2D(4, 3, padding="same")(upsampled)
    other = keras.layers.Conv2D(4, 1)(upsampled)  # a second reader of the upsampled tensor
    model = keras.Model(inputs, keras.layers.Add()([conv, other]))
    assert inference_net(model) is model


@pytest.mark.parametrize("padding", ["zeros", "reflect"])
def test_fused_layers_share_the_nets_kernels(padding):
    """A change to the net's weights (training) reaches the fused model: shared, not copied."""
    keras.utils.set_random_seed(3)
    net = randomize_norms(build_transform_net(padding=padding), 3)
    fused = inference_net(net)
    # sides that are multiples of 8: a direct call runs no padding (live's size multiple)
    images = np.random.default_rng(1).uniform(0, 255, (2, 40, 48, 3)).astype("float32")
    before = np.asarray(fused(images))
    conv = net.get_layer("up2_conv")
    conv.kernel.assign(conv.kernel * -2.0)
    after = np.asarray(fused(images))
    assert np.abs(after - before).max() > 1.0  # the change shows
    assert np.abs(after - np.asarray(net(images))).max() <= 0.01


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
