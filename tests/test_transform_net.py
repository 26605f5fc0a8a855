import os

import keras
import numpy as np
import pytest

from kstyle.errors import KstyleError
from kstyle.graph import Graph
from kstyle.transform_net import (
    ReflectionPadding2D,
    TanhToPixels,
    build_transform_net,
    load_transform_net,
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
