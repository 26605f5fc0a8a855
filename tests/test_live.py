"""The ``live`` preset: a net laid out for the frame budget (stride-4 stem, body at 1/8, pixel
shuffle out). The passes every preset goes through (fusion, tiling, exports, int8, video) run
it through conftest's ``variant_net`` and ``preset_net``; here: its layout, size, FLOPs and
pixel shuffle."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import randomize_norms

from kstyle.constants import ARCH_SIZE_MULTIPLES, ARCHES
from kstyle.flops import count_flops, layer_flops
from kstyle.graph import Graph, size_multiple, tensor_scales
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
    assert size_multiple(net) == ARCH_SIZE_MULTIPLES["live"] == 8


def test_every_preset_size_multiple_is_the_constant_the_checks_use():
    for arch in ARCHES:
        assert size_multiple(build_transform_net(arch)) == ARCH_SIZE_MULTIPLES[arch], arch


def test_live_takes_no_johnson_knobs():
    with pytest.raises(ValueError, match="no width, blocks"):
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


def test_a_new_live_net_has_no_pattern_inside_its_blocks():
    """The output convolution starts with one kernel for every position of a 4x4 block (ICNR):
    an untrained net's output is constant over each block, so the shuffle starts as a nearest
    upsampling and no grid has to be unlearned."""
    keras.utils.set_random_seed(5)
    net = randomize_norms(build_transform_net("live"), seed=5)
    kernel, bias = net.get_layer("out_conv").get_weights()
    assert np.abs(kernel).max() > 0.01
    np.testing.assert_array_equal(kernel, np.tile(kernel[..., :3], (1, 1, 1, 16)))
    images = np.random.default_rng(4).uniform(0, 255, (1, 32, 40, 3)).astype(np.float32)
    output = np.asarray(net(images))[0]
    blocks = output.reshape(8, 4, 10, 4, 3)
    corners = np.broadcast_to(blocks[:, :1, :, :1], blocks.shape)
    np.testing.assert_allclose(blocks, corners, atol=1e-4)
    assert output.std() > 1  # not a flat picture: the blocks differ
