"""Reading a model's structure from its config: calls, connections, scales."""

import fractions

import keras
import numpy as np
import pytest
from conftest import build_variant, with_old_output

from kstyle.errors import KstyleError
from kstyle.graph import (
    Graph,
    Tensor,
    instance_norms,
    output_tanh,
    size_multiple,
    tensor_scales,
)


@pytest.fixture(scope="module")
def seed_net():
    return build_variant("seed")


def test_nodes_follow_the_seed_layout(seed_net):
    graph = Graph(seed_net)
    kinds = [type(node.layer).__name__ for node in graph.nodes]
    assert kinds[:4] == ["InputLayer", "Conv2D", "GroupNormalization", "ReLU"]
    assert kinds.count("Add") == 5 and kinds.count("UpSampling2D") == 2
    assert len(instance_norms(graph)) == 15
    # every call reads tensors that earlier calls made: a topological order
    made = set(graph.inputs)
    for node in graph.nodes[1:]:
        assert set(node.inputs) <= made, node.name
        made.add(node.output)
    assert graph.outputs == [graph.nodes[-1].output]


def test_connections_are_found_by_structure_in_a_renamed_net():
    graph = Graph(build_variant("renamed"))
    adds = graph.nodes_of(keras.layers.Add)
    assert len(adds) == 5
    for add in adds:
        # a residual add reads the block input and the second norm of the block
        sources = [type(graph.producer(t).layer).__name__ for t in add.inputs]
        assert sorted(sources) in (["GroupNormalization", "ReLU"], ["Add", "GroupNormalization"])
    first = graph.consumers(graph.inputs[0])
    assert [type(node.layer).__name__ for node in first] == ["Conv2D"]
    second_conv = graph.nodes[4]
    assert graph.channels(second_conv.inputs[0]) == 32 and graph.channels(second_conv.output) == 64


@pytest.mark.numeric
def test_evaluate_reproduces_the_model_and_can_replace_layers(seed_net, bars):
    graph = Graph(seed_net)
    image = np.random.default_rng(0).uniform(0, 255, (1, 24, 32, 3)).astype("float32")
    (output,) = graph.evaluate({graph.inputs[0]: image}, graph.outputs)
    # the same layers called one by one or as one model: the same kernels, measured equal bit
    # for bit on every CPU path (docs/performance.md#numeric-bars); atol 1e-4 (a few float32
    # ulps at 255) spares a runtime that fuses the model's ops
    model_output = np.asarray(seed_net(image))
    bars.close("Graph.evaluate vs the model", output, model_output, rtol=1e-7, atol=1e-4)
    # from an inner tensor on, with one layer replaced
    norm = instance_norms(graph)[0]
    inner = graph.evaluate({graph.inputs[0]: image}, [norm.inputs[0]])[0]
    (zeroed,) = graph.evaluate(
        {norm.inputs[0]: inner}, graph.outputs, replace={norm.name: lambda x: x * 0.0}
    )
    assert np.abs(np.asarray(zeroed) - np.asarray(output)).max() > 1.0
    with pytest.raises(KstyleError, match="needs a value for the input"):
        graph.evaluate({}, graph.outputs)


def test_scales_and_size_multiple():
    net = build_variant("slim3")
    scales = tensor_scales(Graph(net))
    assert sorted(set(scales.values())) == [fractions.Fraction(1, 4), fractions.Fraction(1, 2), 1]
    assert size_multiple(net) == 4
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same")(inputs)
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same")(x)
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same")(x)
    assert size_multiple(keras.Model(inputs, x)) == 8


def test_a_shared_layer_is_read_per_call_and_clones_are_their_own_graph(seed_net):
    inputs = keras.Input((None, None, 3))
    conv = keras.layers.Conv2D(3, 3, padding="same", name="shared")
    outputs = keras.layers.Add(name="sum")([conv(inputs), conv(conv(inputs))])
    graph = Graph(keras.Model(inputs, outputs))
    calls = [node for node in graph.nodes if node.name == "shared"]
    assert [node.call for node in calls] == [0, 1, 2]
    add = graph.nodes_of(keras.layers.Add)[0]
    assert add.inputs == [Tensor("shared", 0, 0), Tensor("shared", 2, 0)]
    # a clone sharing every layer with the seed net is read as its own graph
    clone = keras.models.clone_model(seed_net, clone_function=lambda layer: layer)
    assert [n.name for n in Graph(clone).nodes] == [n.name for n in Graph(seed_net).nodes]


def test_unsupported_models_are_clear_errors():
    inputs = keras.Input((None, None, 8))
    grouped = keras.layers.GroupNormalization(groups=2, name="grouped")(inputs)
    with pytest.raises(KstyleError, match="'grouped' is a GroupNormalization with 2 groups"):
        instance_norms(Graph(keras.Model(inputs, grouped)))

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(KstyleError, match="not a functional model"):
        Graph(Subclassed())


def test_a_sequential_model_is_read_through_its_functional_graph():
    model = keras.Sequential(
        [keras.Input((None, None, 3)), keras.layers.Conv2D(4, 3, strides=2, padding="same")]
    )
    graph = Graph(model)
    assert [type(node.layer).__name__ for node in graph.nodes] == ["InputLayer", "Conv2D"]
    assert size_multiple(model) == 2
    with pytest.raises(KstyleError, match="has no input shape yet"):
        Graph(keras.Sequential([keras.layers.Dense(2)]))


@pytest.mark.parametrize("kind", ["seed", "renamed", "reflect"])
def test_output_tanh_is_found_by_structure(kind):
    graph = Graph(build_variant(kind))
    node = output_tanh(graph)
    assert node.layer.activation is keras.activations.tanh
    # its input is the last convolution, and two Rescalings lead from it to the output
    assert type(graph.producer(node.inputs[0]).layer) is keras.layers.Conv2D
    (offset,) = graph.consumers(node.output)
    (scale,) = graph.consumers(offset.output)
    assert [offset.layer.scale, offset.layer.offset, scale.layer.scale] == [1.0, 1.0, 127.5]
    assert graph.outputs == [scale.output]


def _head(make_output):
    inputs = keras.Input((None, None, 3))
    return Graph(keras.Model(inputs, make_output(keras.layers.Conv2D(3, 3)(inputs))))


def test_outputs_without_a_tanh_to_rescale_have_none(seed_net):
    assert output_tanh(Graph(with_old_output(seed_net))) is None  # TanhToPixels: not built-in
    activation, rescaling = keras.layers.Activation, keras.layers.Rescaling
    assert output_tanh(_head(lambda x: rescaling(255.0)(activation("sigmoid")(x)))) is None
    assert output_tanh(_head(lambda x: keras.layers.ReLU()(activation("tanh")(x)))) is None
    assert output_tanh(_head(lambda x: activation("tanh")(x))) is not None  # no rescaling: fine
    assert output_tanh(_head(lambda x: rescaling(2.0)(keras.layers.Add()([x, x])))) is None

    def tanh_and_its_rescaling(x):  # two outputs
        t = activation("tanh")(x)
        return [rescaling(2.0)(t), t]

    assert output_tanh(_head(tanh_and_its_rescaling)) is None
