"""The ``live`` preset: a net laid out for the frame budget (stride-4 stem, body at 1/8, pixel
shuffle out). The passes every preset goes through (fusion, tiling, exports, int8, video) run
it through conftest's ``variant_net`` and ``preset_net``; here: its layout, size, FLOPs and
pixel shuffle."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import randomize_norms

from kstyle.errors import KstyleError
from kstyle.export import export
from kstyle.flops import count_flops, layer_flops
from kstyle.graph import Graph, size_multiple, tensor_scales
from kstyle.inference import stylize_array
from kstyle.presets import PRESETS
from kstyle.transform_net import DepthToSpace, build_transform_net

# parameters by hand: a k x k conv has k*k*cin*cout + cout, a depthwise 3x3 9*c (no bias),
# an instance norm 2*c; quarter 16 channels (1/4 resolution), eighth 64 (1/8), 4 blocks
LIVE_PARAMS = (
    (4 * 4 * 3 * 16 + 16) + 2 * 16  # stem conv and norm
    + (9 * 16 + 16 * 64 + 64) + 2 * 64  # down: depthwise stride 2, 1x1, norm
    + 4 * 2 * ((9 * 64 + 64 * 64 + 64) + 2 * 64)  # residual blocks
    + (9 * 64 + 64 * 16 + 16) + 2 * 16  # up: depthwise, 1x1, norm
    + (3 * 3 * 16 * 48 + 48)  # out conv to 4 x 4 x 3 values per 1/4 pixel
)  # fmt: skip


def _live_flops(height, width):
    """2 x multiply-adds, by hand, of live at (height, width), multiples of 8."""
    quarter = (height // 4) * (width // 4)
    eighth = (height // 8) * (width // 8)
    multiply_adds = (
        quarter * 4 * 4 * 3 * 16  # stem: one 4x4x3 window per 1/4 pixel
        + eighth * (9 * 16 + 16 * 64)  # down (stride 2)
        + 4 * 2 * eighth * (9 * 64 + 64 * 64)  # residual blocks
        + quarter * (9 * 64 + 64 * 16)  # up, after the x2 upsampling
        + quarter * 3 * 3 * 16 * 48  # out conv
    )
    return 2 * multiply_adds


@pytest.mark.parametrize("padding", ["zeros", "reflect"])
def test_live_parameters_and_flops_are_the_arithmetic(padding):
    net = build_transform_net("live", padding=padding)
    assert net.count_params() == LIVE_PARAMS == 49_696
    for height, width in ((256, 256), (720, 1280)):
        assert count_flops(net, height, width) == _live_flops(height, width)
    # the budget: at most 0.3 GFLOP at 256²
    assert _live_flops(256, 256) <= 0.3e9


def test_live_runs_almost_nothing_at_full_resolution():
    """At most 2 layers read or write full-resolution tensors (the stem and the pixel shuffle),
    with at most 10 % of the FLOPs; no norm runs above 1/4 of the resolution, the body at
    1/8."""
    net = build_transform_net("live")
    graph = Graph(net)
    scales = tensor_scales(graph)
    full = [
        node.name
        for node in graph.nodes
        if node.inputs and 1 in (*(scales[t] for t in node.inputs), scales[node.output])
    ]
    assert full == ["stem_conv", "out_shuffle"]
    flops = layer_flops(net, 256, 256)
    full_flops = sum(count for count, resolution in flops.values() if resolution == 1)
    assert full_flops == 2 * 64 * 64 * 4 * 4 * 3 * 16  # the stem only (the shuffle has none)
    assert full_flops <= 0.1 * sum(count for count, _ in flops.values())
    norms = graph.nodes_of(keras.layers.GroupNormalization)
    assert len(norms) == 11 and max(scales[n.output] for n in norms) == 1 / 4
    blocks = [node for node in graph.nodes if node.name.endswith("_add")]
    assert {scales[node.output] for node in blocks} == {1 / 8, 1 / 4}  # body; the skip
    assert size_multiple(net) == PRESETS["live"].size_multiple == 8


def test_live_takes_no_johnson_knobs():
    with pytest.raises(ValueError, match="no knob width"):
        build_transform_net("live", width=0.5)


def test_depth_to_space_is_tensorflows_and_the_index_rule():
    """Output (y * b + i, x * b + j, c) is input (y, x, (i * b + j) * C + c): TensorFlow's
    ``depth_to_space`` and ONNX's DCR mode."""
    values = np.arange(2 * 3 * 5 * 48, dtype=np.float32).reshape(2, 3, 5, 48)
    shuffled = np.asarray(DepthToSpace(4)(values))
    assert shuffled.shape == (2, 12, 20, 3)
    np.testing.assert_array_equal(shuffled, tf.nn.depth_to_space(values, 4).numpy())
    y, x, i, j, c = 2, 4, 1, 3, 2
    assert shuffled[1, y * 4 + i, x * 4 + j, c] == values[1, y, x, (i * 4 + j) * 3 + c]


def test_live_keras_file_round_trips(tmp_path):
    """The ``.keras`` file names the pixel shuffle as ``kstyle>DepthToSpace`` (registered; the
    other layers are built-ins) and loads to the same function."""
    keras.utils.set_random_seed(2)
    net = randomize_norms(build_transform_net("live"), seed=2)
    path = tmp_path / "live.keras"
    net.save(path)
    kinds = {type(layer).__module__.split(".")[0] for layer in net.layers}
    assert kinds == {"keras", "kstyle"}
    assert [type(layer).__name__ for layer in net.layers if "kstyle" in type(layer).__module__] == [
        "DepthToSpace"
    ]
    loaded = keras.saving.load_model(path)
    images = np.random.default_rng(3).uniform(0, 255, (1, 40, 56, 3)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(loaded(images)), np.asarray(net(images)))


def test_a_new_live_net_starts_as_a_bilinear_upsampling():
    """The output convolution starts so that the last shuffle (x``b``) is a bilinear x``b``
    upsampling (ICNR with bilinear taps): an untrained net draws no b x b blocks. Checked
    against an independent bilinear upsampling (TensorFlow's, half-pixel centres) of the same
    1x1 projection of the convolution's input."""
    keras.utils.set_random_seed(5)
    net = randomize_norms(build_transform_net("live"), seed=5)
    conv, block = net.get_layer("out_conv"), net.get_layer("out_shuffle").block_size
    kernel, bias = conv.get_weights()
    assert np.abs(kernel).max() > 0.01 and not bias.any()
    images = np.random.default_rng(4).uniform(0, 255, (1, 32, 40, 3)).astype(np.float32)
    features = np.asarray(keras.Model(net.inputs, conv.input)(images))
    height, width = features.shape[1:3]
    # phase (0, 0)'s centre tap weighs its own pixel by (1 - (b - 1) / 2b)² in a bilinear xb
    centre = (1 - (block - 1) / (2 * block)) ** 2
    projection = features @ (kernel[1, 1, :, :3] / centre)
    padded = np.pad(projection, ((0, 0), (1, 1), (1, 1), (0, 0)))  # the conv's zero padding
    size = ((height + 2) * block, (width + 2) * block)
    upsampled = tf.image.resize(padded, size, method="bilinear").numpy()
    upsampled = upsampled[:, block:-block, block:-block]
    pre_tanh = np.arctanh(np.asarray(net(images)) / 127.5 - 1.0)
    # the border of a zero-padded resize differs from 'same' padding only at the edge
    inner = (slice(None), slice(block, -block), slice(block, -block))
    np.testing.assert_allclose(pre_tanh[inner], upsampled[inner], atol=2e-3)
    assert pre_tanh.std() > 0.05  # not a flat picture


def test_small_pictures_on_a_reflect_padded_live_net():
    """``live`` with reflect padding mirrors rows of its 1/8 tensors, which needs 2 of them:
    stylizing pads pictures to at least 16 px (edge mode where too small) and crops back,
    instead of failing; an export refuses sizes under that in one line."""
    keras.utils.set_random_seed(6)
    net = randomize_norms(build_transform_net("live", padding="reflect"), seed=6)
    for height, width in ((8, 12), (3, 5), (16, 8)):
        image = np.random.default_rng(height).integers(0, 256, (height, width, 3), np.uint8)
        output = stylize_array(net, image)
        padded = np.pad(image.astype(np.float32), ((0, 16 - height), (0, 16 - width), (0, 0)),
                        mode="edge" if min(height, width) <= 8 else "reflect")  # fmt: skip
        expected = np.asarray(net(padded[None]))[0, :height, :width]
        assert output.shape == image.shape
        assert np.abs(output - expected).max() <= 0.5 + 1e-3


def test_an_export_refuses_sizes_under_the_nets_smallest_side(tmp_path):
    net = build_transform_net("live")
    path = tmp_path / "live.keras"
    net.save(path)
    for options, message in (
        (dict(input_size=4), "--input-size must be at least 8 for this network, got 4"),
        (dict(verify_size=6), "--verify-size must be at least 8 for this network, got 6"),
    ):
        with pytest.raises(KstyleError, match=message):
            export(str(path), str(tmp_path / "out"), ("onnx",), **options)
    assert not (tmp_path / "out").exists()  # refused before anything was written
