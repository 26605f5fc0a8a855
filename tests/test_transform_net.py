import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import randomize_norms, with_old_output

from kstyle.errors import KstyleError
from kstyle.graph import Graph
from kstyle.inference import stylize_array
from kstyle.transform_net import (
    ReflectionPadding2D,
    TanhToPixels,
    build_transform_net,
    load_transform_net,
    pixels_output,
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
    graph = Graph(net)
    for add in graph.nodes_of(keras.layers.Add):
        consumers = [node.layer for node in graph.consumers(add.output)]
        assert consumers and not any(isinstance(c, keras.layers.ReLU) for c in consumers)


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


def _tanh_inputs():
    """float32 pre-tanh values: a fine grid over the steep part and a wide random spread."""
    rng = np.random.default_rng(0)
    spread = rng.normal(0, 3, 200_000).astype("float32")
    grid = np.linspace(-6, 6, 200_001, dtype="float32")
    return np.concatenate([grid, spread, [0.0, 50.0, -50.0]]).astype("float32")


@pytest.mark.parametrize("jit", [False, True])
def test_pixels_output_is_tanh_to_pixels_bit_for_bit(jit):
    """The built-in output computes TanhToPixels's values and gradients exactly (so training
    losses do not change), where the one-layer ``Rescaling(127.5, offset=127.5)`` does not."""
    inputs = keras.Input((None,))
    built_in = keras.Model(inputs, pixels_output(inputs))
    old, x = TanhToPixels(), tf.constant(_tanh_inputs())

    def values_and_gradients(function):
        @tf.function(jit_compile=jit)
        def run():
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = function(x[None])[0]
                target = y * tf.cos(x)  # a non-constant upstream gradient
            return y, tape.gradient(target, x)

        return run()

    new_y, new_grad = values_and_gradients(built_in)
    old_y, old_grad = values_and_gradients(old)
    np.testing.assert_array_equal(new_y.numpy(), old_y.numpy())
    np.testing.assert_array_equal(new_grad.numpy(), old_grad.numpy())
    affine = keras.layers.Rescaling(127.5, offset=127.5)(tf.tanh(x)).numpy()
    assert np.mean(affine != old_y.numpy()) > 0.1  # the check can tell the difference


def test_default_net_is_built_from_built_in_layers_only():
    def registered(model):
        return {keras.saving.get_registered_name(type(layer)) for layer in model.layers}

    assert not [name for name in registered(build_transform_net()) if "kstyle" in name]
    kstyle_layers = [name for name in registered(build_transform_net(padding="reflect"))]
    assert [name for name in kstyle_layers if "kstyle" in name] == ["kstyle>ReflectionPadding2D"]


def test_output_stays_float32_under_mixed_precision():
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        mixed = build_transform_net()
    finally:
        keras.config.set_dtype_policy("float32")
    assert mixed.get_layer("out_conv").compute_dtype == "bfloat16"
    assert mixed.outputs[0].dtype == "float32"
    y = mixed(np.full((1, 8, 8, 3), 100.0, "float32"))
    assert keras.backend.standardize_dtype(y.dtype) == "float32"
    assert 0 <= float(np.min(y)) <= float(np.max(y)) <= 255


def test_older_files_with_tanh_to_pixels_still_load(tmp_path):
    """A net saved with the older TanhToPixels output loads through kstyle and stylizes as the
    same net with the built-in output does."""
    keras.utils.set_random_seed(4)
    net = randomize_norms(build_transform_net(), seed=4)
    path = tmp_path / "old.keras"
    with_old_output(net).save(path)
    loaded = load_transform_net(str(path))
    assert [type(layer) for layer in loaded.layers][-1] is TanhToPixels
    image = np.random.default_rng(5).integers(0, 256, (36, 44, 3), dtype=np.uint8)
    expected = stylize_array(net, image)
    assert expected.std() > 5  # randomized norms: not a flat image
    np.testing.assert_array_equal(stylize_array(loaded, image), expected)


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


# parameters by hand: a k x k conv has k*k*cin*cout + cout, a depthwise 3x3 9*c (no bias),
# an instance norm 2*c
SLIM_PARAMS = (
    (9 * 9 * 3 * 16 + 16) + (9 * 16 * 32 + 32) + (9 * 32 * 64 + 64)
    + 10 * (9 * 64 * 64 + 64) + (9 * 64 * 32 + 32) + (9 * 32 * 16 + 16) + (9 * 9 * 16 * 3 + 3)
    + 2 * (16 + 32 + 64 + 10 * 64 + 32 + 16)
)  # fmt: skip
TINY_PARAMS = (
    (7 * 7 * 3 * 16 + 16) + (9 * 16 + 16 * 32 + 32) + (9 * 32 + 32 * 64 + 64)
    + 6 * (9 * 64 + 64 * 64 + 64) + (9 * 64 + 64 * 32 + 32) + (9 * 32 + 32 * 16 + 16)
    + (7 * 7 * 16 * 3 + 3) + 2 * (16 + 32 + 64 + 6 * 64 + 32 + 16)
)  # fmt: skip


@pytest.mark.parametrize("padding", ["zeros", "reflect"])
@pytest.mark.parametrize(
    "arch, params", [("johnson", 1_679_235), ("slim", SLIM_PARAMS), ("tiny", TINY_PARAMS)]
)
def test_preset_parameter_counts(arch, params, padding):
    assert build_transform_net(arch, padding=padding).count_params() == params


def test_presets_are_the_seed_layout_with_their_knobs():
    tiny = build_transform_net("tiny")
    depthwise = [layer for layer in tiny.layers if isinstance(layer, keras.layers.DepthwiseConv2D)]
    convs = [layer for layer in tiny.layers if type(layer) is keras.layers.Conv2D]
    assert len(depthwise) == 2 + 6 + 2 and not any(layer.use_bias for layer in depthwise)
    assert [c.kernel_size for c in (convs[0], convs[-1])] == [(7, 7), (7, 7)]
    assert all(c.kernel_size == (1, 1) for c in convs[1:-1])
    assert [c.filters for c in convs] == [16, 32, 64] + [64] * 6 + [32, 16, 3]
    assert [d.strides for d in depthwise[:3]] == [(2, 2), (2, 2), (1, 1)]
    norms = [layer for layer in tiny.layers if isinstance(layer, keras.layers.GroupNormalization)]
    assert len(norms) == 3 + 6 + 2 and all(n.epsilon == 1e-5 for n in norms)
    # every preset ends in the same built-in pixel output; a knob overrides the preset
    assert [layer.name for layer in tiny.layers[-3:]] == [
        "out_tanh",
        "to_pixels_offset",
        "to_pixels",
    ]
    wider = build_transform_net("tiny", width=1.0, num_residual_blocks=1, edge_kernel=9)
    assert wider.get_layer("down1_conv").kernel_size == (9, 9)
    assert wider.get_layer("res1_a_conv").filters == 128 and "res2_add" not in {
        layer.name for layer in wider.layers
    }
    with pytest.raises(ValueError, match="johnson, slim, tiny|'johnson', 'slim', 'tiny'"):
        build_transform_net("huge")
    with pytest.raises(ValueError, match="edge_kernel"):
        build_transform_net(edge_kernel=4)


@pytest.mark.parametrize("arch", ["slim", "tiny"])
def test_every_preset_stylizes_odd_sizes_and_round_trips(arch, tmp_path):
    keras.utils.set_random_seed(6)
    net = randomize_norms(build_transform_net(arch), seed=6)
    image = np.random.default_rng(7).integers(0, 256, (33, 47, 3), dtype=np.uint8)
    styled = stylize_array(net, image)
    assert styled.shape == image.shape and styled.std() > 5
    path = tmp_path / f"{arch}.keras"
    net.save(path)
    loaded = load_transform_net(str(path))
    assert loaded.count_params() == net.count_params()
    np.testing.assert_array_equal(stylize_array(loaded, image), styled)
