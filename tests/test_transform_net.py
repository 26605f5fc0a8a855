import keras
import numpy as np
import pytest

import kstyle  # noqa: F401  (registers the layers)
from kstyle.transform_net import (
    ReflectionPadding2D,
    TanhToPixels,
    UpsampleConv2D,
    build_transform_net,
    inference_net,
)


@pytest.fixture(scope="module")
def net():
    keras.utils.set_random_seed(0)
    return build_transform_net()


@pytest.mark.parametrize("padding", ["zeros", "reflect"])
def test_parameter_count_matches_reference(padding):
    assert build_transform_net(padding=padding).count_params() == 1_679_235


def test_layers_follow_the_reference(net):
    norms = [layer for layer in net.layers if isinstance(layer, keras.layers.GroupNormalization)]
    convs = [layer for layer in net.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(norms) == 3 + 10 + 2
    # groups=-1 becomes one group per channel when built: instance norm
    assert all(
        n.groups == n.gamma.shape[0] and n.epsilon == 1e-5 and n.center and n.scale for n in norms
    )
    assert [c.kernel_size for c in (convs[0], convs[-1])] == [(9, 9), (9, 9)]
    assert [c.filters for c in convs] == [32, 64, 128] + [128] * 10 + [64, 32, 3]
    assert [c.strides for c in convs[:3]] == [(1, 1), (2, 2), (2, 2)]
    ups = [layer for layer in net.layers if isinstance(layer, keras.layers.UpSampling2D)]
    assert [u.interpolation for u in ups] == ["nearest", "nearest"]
    # no ReLU right after a residual add
    for layer in net.layers:
        if isinstance(layer, keras.layers.Add):
            consumers = [n.operation for n in layer._outbound_nodes]
            assert not any(isinstance(c, keras.layers.ReLU) for c in consumers)


@pytest.mark.parametrize("shape", [(32, 32), (48, 64), (64, 40), (36, 52)])
def test_output_shape_equals_input_and_range(net, shape):
    x = np.random.default_rng(1).uniform(0, 255, (2, *shape, 3)).astype("float32")
    y = net.predict(x, verbose=0)
    assert y.shape == x.shape
    assert y.min() >= 0.0 and y.max() <= 255.0
    assert y.std() > 0


def test_keras_file_round_trip(net, tmp_path):
    path = tmp_path / "net.keras"
    net.save(path)
    loaded = keras.saving.load_model(path)
    x = np.random.default_rng(2).uniform(0, 255, (1, 40, 32, 3)).astype("float32")
    np.testing.assert_array_equal(net.predict(x, verbose=0), loaded.predict(x, verbose=0))


def test_reflect_padding_round_trip(tmp_path):
    keras.utils.set_random_seed(1)
    model = build_transform_net(padding="reflect")
    path = tmp_path / "reflect.keras"
    model.save(path)
    x = np.random.default_rng(3).uniform(0, 255, (1, 32, 36, 3)).astype("float32")
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))


def test_reflection_padding_mirrors_the_border():
    x = np.arange(2 * 3 * 4 * 1, dtype="float32").reshape(2, 3, 4, 1)
    y = np.asarray(ReflectionPadding2D(2)(x))
    expected = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
    np.testing.assert_array_equal(y, expected)


def test_tanh_to_pixels():
    x = np.array([-100.0, -1.0, 0.0, 0.5, 100.0], dtype="float32")
    np.testing.assert_allclose(np.asarray(TanhToPixels()(x)), 255 * (np.tanh(x) + 1) / 2, 1e-5)


@pytest.mark.parametrize("layer", [ReflectionPadding2D(3, name="pad"), TanhToPixels(name="pixels")])
def test_layer_config_round_trip(layer):
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(revived) is type(layer) and revived.get_config() == config


def test_unknown_padding_is_rejected():
    with pytest.raises(ValueError, match="padding"):
        build_transform_net(padding="circular")


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
