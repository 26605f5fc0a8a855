"""Calibration statistics for the int8 export, and the depthwise convolutions' balance.

A depthwise convolution's output (the input of the 1x1 convolution after it) has one int8
scale per tensor, so a channel whose range is small next to the widest one keeps only a few
of the 256 levels. As a depthwise convolution works on each channel alone, its output channel
c can be multiplied by any s_c > 0 if the 1x1 convolution's input channel c is divided by it:
the float function is unchanged, and with s_c = 1 / sqrt(channel c's calibrated extent) the
channels' shares of the levels are evened out without coarsening the 1x1 kernel's steps.
"""

import numpy as np
from keras import layers

from kstyle.export.serving import PadToMultiple
from kstyle.graph import Graph, graph_size_multiple

# s_c = extent_c ** -BALANCE_EXPONENT: the square root splits the range between the depthwise
# output (one int8 scale per tensor) and the 1x1 kernel's input channels (one scale per output
# channel); on the tiny preset's int8 test net, exponents 0 / 0.25 / 0.5 / 0.75 / 1 gave
# 29.2 / 29.9 / 30.0 / 29.3 / 26.4 dB.
BALANCE_EXPONENT = 0.5


def calibration_samples(images, num_styles: int = 1) -> list:
    """``[(image, style vector (N,) float32 or None)]``: the calibration set of a net of
    ``num_styles`` styles. One style has no vector. For N, image i takes style i mod N (one-hot)
    and images are repeated until every style has one, so that the calibrated ranges cover
    every style's scales at about the cost of one."""
    if num_styles == 1:
        return [(image, None) for image in images]
    eye = np.eye(num_styles, dtype=np.float32)
    count = max(len(images), num_styles)
    return [(images[i % len(images)], eye[i % num_styles]) for i in range(count)]


def sample_inputs(graph, sample) -> dict:
    """``graph``'s input values for one calibration ``sample`` (image, style or None): the
    image reflect-padded to the graph's size multiple, as the serving model does."""
    image, style = sample
    values = {graph.inputs[0]: PadToMultiple(graph_size_multiple(graph))(image[None])}
    if style is not None:
        values[graph.inputs[1]] = style[None]
    return values


def output_ranges(graph, tensors, samples):
    """Per-channel statistics of ``tensors`` of ``graph`` over ``samples``
    (:func:`calibration_samples`): lists of the min, the max, the RMS per-image standard
    deviation, and the 10th percentile of the per-image minima and 90th of the per-image
    maxima."""
    lows = [np.inf] * len(tensors)
    highs = [-np.inf] * len(tensors)
    variances = [0.0] * len(tensors)
    extremes = [[] for _ in tensors]
    for sample in samples:
        outputs = graph.evaluate(sample_inputs(graph, sample), tensors)
        for index, output in enumerate(outputs):
            output = np.asarray(output)
            lows[index] = np.minimum(lows[index], output.min(axis=(0, 1, 2)))
            highs[index] = np.maximum(highs[index], output.max(axis=(0, 1, 2)))
            variances[index] = variances[index] + output.var(axis=(0, 1, 2)) / len(samples)
            extremes[index].append((output.min(axis=(0, 1, 2)), output.max(axis=(0, 1, 2))))
    typical = []
    for pairs in extremes:
        mins, maxs = (np.stack(values) for values in zip(*pairs, strict=True))
        typical.append((np.percentile(mins, 10, axis=0), np.percentile(maxs, 90, axis=0)))
    return lows, highs, [np.sqrt(v) for v in variances], typical


def depthwise_pointwise(graph: Graph) -> list:
    """``[(DepthwiseConv2D node, the node of the 1x1 Conv2D that alone reads its output)]`` for
    the depthwise convolutions (depth multiplier 1, called once) that :func:`balance_depthwise`
    can rescale, found by structure."""
    found = []
    for node in graph.nodes_of(layers.DepthwiseConv2D):
        depthwise = node.layer
        if depthwise.depth_multiplier != 1 or graph.calls(depthwise) != 1:
            continue
        if graph.is_output(node.output):
            continue
        readers = graph.consumers(node.output)
        if len(readers) != 1 or graph.calls(readers[0].layer) != 1:
            continue
        pointwise = readers[0].layer
        if (
            type(pointwise) is layers.Conv2D
            and tuple(pointwise.kernel_size) == (1, 1)
            and pointwise.groups == 1
        ):
            found.append((node, readers[0]))
    return found


def balance_depthwise(weights: dict, pairs: list, lows, highs) -> None:
    """Rescales each pair of :func:`depthwise_pointwise` in ``weights`` (``{layer name: its
    weights}``, changed in place): depthwise output channel c by ``extent_c **
    -BALANCE_EXPONENT``, the 1x1 kernel's input channel c by the inverse, where ``extent_c`` is
    the channel's largest magnitude over the calibration images (``lows``/``highs``:
    per-channel extremes of the depthwise outputs, in ``pairs``' order)."""
    for (depthwise, pointwise), low, high in zip(pairs, lows, highs, strict=True):
        extent = np.maximum(np.abs(low), np.abs(high))
        scale = np.where(extent > 1e-12, np.maximum(extent, 1e-12) ** -BALANCE_EXPONENT, 1.0)
        kernel, *bias = weights[depthwise.name]  # (k, k, C, 1) and, if any, (C,)
        weights[depthwise.name] = [kernel * scale[None, None, :, None]]
        weights[depthwise.name] += [b * scale for b in bias]
        point_kernel, *rest = weights[pointwise.name]  # (1, 1, C, F)
        weights[pointwise.name] = [point_kernel / scale[None, None, :, None], *rest]
