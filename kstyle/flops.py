"""Floating-point operations of a transform net's forward pass, counted from its structure.

:func:`count_flops` walks the model's graph (:mod:`kstyle.graph`: layer types, kernel sizes,
strides, paddings and channel counts, never layer names), follows every tensor's height and
width from the input's, and counts 2 FLOPs per multiply-add of each convolution: ``Conv2D``,
``DepthwiseConv2D``, ``SeparableConv2D``, ``Conv2DTranspose`` and the fused
:class:`kstyle.forward.UpsampleConv2D`.
Biases, norms, activations and adds are left out (a few percent of a transform net's work).
"""

import math

from keras import layers

from kstyle.forward import UpsampleConv2D
from kstyle.graph import Graph, spatial_change
from kstyle.transform_net import ReflectionPadding2D

_WINDOWED = (layers.Conv2D, layers.DepthwiseConv2D, layers.SeparableConv2D)
_POOLING = (layers.MaxPooling2D, layers.AveragePooling2D)


def _output_size(layer, size):
    """(height, width) of ``layer``'s output for an input of ``size``."""
    if isinstance(layer, _WINDOWED + _POOLING):
        window = layer.pool_size if isinstance(layer, _POOLING) else layer.kernel_size
        dilation = getattr(layer, "dilation_rate", (1, 1))
        found = []
        for side, kernel, stride, rate in zip(size, window, layer.strides, dilation, strict=True):
            if layer.padding == "same":
                found.append(math.ceil(side / stride))
            else:
                found.append((side - (kernel - 1) * rate - 1) // stride + 1)
        return tuple(found)
    if isinstance(layer, ReflectionPadding2D):
        return tuple(side + 2 * layer.padding for side in size)
    if isinstance(layer, layers.ZeroPadding2D):
        return tuple(side + sum(pads) for side, pads in zip(size, layer.padding, strict=True))
    factor, _ = spatial_change(layer)
    return tuple(math.ceil(side * factor) for side in size)


def _multiply_adds(layer, in_size, out_size, channels_in) -> int:
    """Multiply-adds of one call of ``layer`` (0 for a layer that is not a convolution)."""
    out_pixels = out_size[0] * out_size[1]
    if isinstance(layer, layers.Conv2DTranspose):  # each input pixel spreads a kernel
        taps = layer.kernel_size[0] * layer.kernel_size[1]
        return in_size[0] * in_size[1] * taps * channels_in * layer.filters
    if isinstance(layer, UpsampleConv2D):  # four 2x2 convolutions at the input's resolution
        return in_size[0] * in_size[1] * 4 * 4 * channels_in * layer.filters
    if isinstance(layer, layers.SeparableConv2D):
        depth = channels_in * layer.depth_multiplier
        taps = layer.kernel_size[0] * layer.kernel_size[1]
        return out_pixels * (taps * depth + depth * layer.filters)
    if isinstance(layer, layers.DepthwiseConv2D):
        taps = layer.kernel_size[0] * layer.kernel_size[1]
        return out_pixels * taps * channels_in * layer.depth_multiplier
    if isinstance(layer, layers.Conv2D):
        taps = layer.kernel_size[0] * layer.kernel_size[1]
        return out_pixels * taps * (channels_in // layer.groups) * layer.filters
    return 0


def layer_flops(model, height: int, width: int) -> dict:
    """``{layer name: (FLOPs, resolution)}`` of each convolution call of ``model`` for one
    (height, width) image; ``resolution`` is the larger of its input's and output's height
    relative to the image's (1: the layer reads or writes full-resolution tensors)."""
    graph = Graph(model)
    sizes = {tensor: (int(height), int(width)) for tensor in graph.inputs}
    found = {}
    for node in graph.nodes:
        if not node.inputs:
            continue
        in_size = sizes[node.inputs[0]]
        out_size = _output_size(node.layer, in_size)
        sizes[node.output] = out_size
        channels = graph.channels(node.inputs[0])
        multiply_adds = _multiply_adds(node.layer, in_size, out_size, channels or 0)
        if multiply_adds:
            resolution = max(in_size[0], out_size[0]) / int(height)
            found[node.name] = (2 * multiply_adds, resolution)
    return found


def count_flops(model, height: int, width: int) -> int:
    """FLOPs (2 per multiply-add) of the convolutions of ``model``, a functional model with one
    image input, for one (height, width) image; sizes follow the layers' own rounding (a
    'same' stride-2 convolution gives ``ceil(side / 2)``).

    The reference net at 256x256 counts 20,157,825,024 (about 20.2 GFLOP); its fused
    inference graph (:func:`kstyle.forward.inference_net`) fewer, as its up path is fused.
    """
    return sum(flops for flops, _ in layer_flops(model, height, width).values())
