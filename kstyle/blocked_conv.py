"""A wide convolution with few output channels, computed on blocks of pixels.

The seed net's last layer is a 9x9 convolution from 32 channels to 3. oneDNN pads those 3
output channels to a vector's 16, so the layer took a fifth of a stylize pass for 6 % of its
multiply-adds (docs/performance.md, "Where the time goes"). Computed on 4x4 blocks of pixels
(``space_to_depth``), the same function is one 3x3 convolution from 16 x 32 channels to
16 x 3, which vector units fill: :func:`blocked_net` finds such layers by walking the graph
(:mod:`kstyle.graph`) and swaps in :class:`BlockedConv2D`, which reads the original kernel.
"""

import keras
import numpy as np
from keras import layers, ops

from kstyle.graph import Graph, graph_size_multiple, tensor_scales

BLOCK = 4  # pixels per block side: the seed net's size multiple
MAX_FILTERS = 8  # output channels below a vector's width: where blocking pays


def _block_taps(block: int) -> np.ndarray:
    """(3, block, block, 2 * block + 1) 0/1: for block offset ``b`` (of the three a 3x3
    convolution of blocks reads), input position ``p`` in that block and output position
    ``q`` in the output's block, the tap ``t`` of a (2 * block + 1)-wide kernel that joins
    them (input pixel ``block * b + p`` of the padded window, output ``q``: ``t`` is their
    distance)."""
    taps = np.zeros((3, block, block, 2 * block + 1), np.float32)
    for b in range(3):
        for p in range(block):
            for q in range(block):
                tap = block * b + p - q
                if 0 <= tap <= 2 * block:
                    taps[b, p, q, tap] = 1.0
    return taps


class BlockedConv2D(layers.Layer):
    """A stride-1, zero-padded ('same') KxK convolution ``source`` (K odd, K // 2 <= ``block``)
    computed on ``block`` x ``block`` pixel blocks: zero padding of ``block`` pixels,
    ``space_to_depth``, one 3x3 'valid' convolution of the rearranged kernel (``source``'s,
    read at each call), and ``depth_to_space`` back. The same function, float rounding aside;
    H and W must be multiples of ``block``. (B, H, W, C) -> (B, H, W, filters). For inference
    graphs only: it is not saved.
    """

    def __init__(self, source, block=BLOCK, **kwargs):
        super().__init__(**kwargs)
        self.source, self.block = source, int(block)
        self.trim = self.block - source.kernel_size[0] // 2  # zero taps around the kernel
        self.taps = _block_taps(self.block)

    def call(self, inputs):
        block, trim = self.block, self.trim
        kernel = ops.pad(self.source.kernel, [[trim, trim], [trim, trim], [0, 0], [0, 0]])
        taps = ops.convert_to_tensor(self.taps, dtype=kernel.dtype)
        blocked = ops.einsum("xpqs,yrut,stio->xypriquo", taps, taps, kernel)
        channels, filters = kernel.shape[2], kernel.shape[3]
        blocked = ops.reshape(blocked, (3, 3, block * block * channels, block * block * filters))
        padded = ops.pad(inputs, [[0, 0], [block, block], [block, block], [0, 0]])
        outputs = ops.conv(ops.space_to_depth(padded, block), blocked, padding="valid")
        return ops.depth_to_space(outputs + ops.tile(self.source.bias, [block * block]), block)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:3], self.source.filters)


def _blockable(conv, side, block: int = BLOCK) -> bool:
    """Whether ``conv`` is a plain stride-1 'same' KxK convolution (K odd, from 5 to
    2 * ``block`` + 1) with at most :data:`MAX_FILTERS` outputs, whose input sides are
    multiples of ``block`` (``side``: that side for the smallest input the net takes, a
    Fraction, None where unknown)."""
    size = tuple(conv.kernel_size)
    return (
        type(conv) is layers.Conv2D
        and conv.data_format == "channels_last"
        and size[0] == size[1]
        and size[0] % 2 == 1
        and 5 <= size[0] <= 2 * block + 1
        and tuple(conv.strides) == (1, 1)
        and tuple(conv.dilation_rate) == (1, 1)
        and conv.groups == 1
        and conv.padding == "same"
        and conv.use_bias
        and conv.activation is keras.activations.linear
        and conv.filters <= MAX_FILTERS
        and side is not None
        and (side / block).denominator == 1
    )


def blocked_net(model):
    """``model`` with each convolution that :func:`_blockable` accepts computed by a
    :class:`BlockedConv2D`; every other layer, and the kernels, are ``model``'s own (shared).
    Returns ``model`` itself when no layer qualifies."""
    graph = Graph(model)
    scales, multiple = tensor_scales(graph), graph_size_multiple(graph)
    blocked = {}
    for node in graph.nodes_of(layers.Conv2D):
        scale = scales.get(node.inputs[0]) if node.inputs else None
        side = None if scale is None else scale * multiple
        if graph.calls(node.layer) == 1 and _blockable(node.layer, side):
            conv = node.layer
            blocked[conv.name] = BlockedConv2D(conv, name=conv.name, dtype=conv.dtype_policy)
    if not blocked:
        return model
    return keras.models.clone_model(
        model, clone_function=lambda layer: blocked.get(layer.name, layer)
    )
