"""The residual stream of a transform net, for the int8 study's rescaling of it
(bench/int8_variants.py, ``stream_exponent``): which tensors carry it, which norms write it and
which convolutions read it, found by structure (:mod:`kstyle.graph`). A study option, not
kstyle's recipe (docs/int8.md: it gained nothing)."""

import dataclasses
import logging

from keras import layers

from kstyle.export.serving import NearestUpsample2x
from kstyle.transform_net import ReflectionPadding2D

logger = logging.getLogger("kstyle.export.int8")  # the int8 export's warnings, one logger


@dataclasses.dataclass
class ResidualStream:
    """The residual stream of a transform net: the tensors that carry it (the adds' outputs
    and the ReLU outputs among their inputs), the norms that write it (their output reaches an
    add, directly or through a ReLU) and the convolutions that read it (directly or through
    padding and upsampling), as layer names."""

    tensors: list
    writers: list
    readers: list


class _NotAStream(Exception):
    pass


# Layers that commute with a positive per-channel scale: y(s * x) = s * y(x).
_PASSTHROUGH = (ReflectionPadding2D, NearestUpsample2x, layers.UpSampling2D)


# Convolutions whose kernel (kh, kw, input channels, ...) can absorb a per-input-channel scale.
_STREAM_READERS = (layers.Conv2D, layers.DepthwiseConv2D)


def _commutes_with_scale(layer) -> bool:
    if isinstance(layer, layers.ReLU):
        return layer.max_value is None and not layer.threshold
    return isinstance(layer, _PASSTHROUGH)


def _find_stream(graph) -> ResidualStream:
    adds = graph.nodes_of(layers.Add)
    if not adds:
        raise _NotAStream("the model has no residual adds")
    scaled, writers = set(), []
    for add in adds:
        scaled.add(add.output)
        for tensor in add.inputs:
            node = graph.producer(tensor)
            if isinstance(node.layer, layers.Add):
                continue
            norm = node
            if isinstance(node.layer, layers.ReLU) and _commutes_with_scale(node.layer):
                norm = graph.producer(node.inputs[0])
            layer = norm.layer
            if not (isinstance(layer, layers.GroupNormalization) and layer.scale and layer.center):
                raise _NotAStream(f"add {add.name!r} reads {node.name!r}, not a norm (or its ReLU)")
            if graph.calls(layer) != 1:
                raise _NotAStream(f"norm {norm.name!r} is called more than once")
            if norm.name not in writers:
                writers.append(norm.name)
            scaled.add(norm.output)
    readers = []
    for node in graph.nodes:
        if isinstance(node.layer, layers.Add) or not scaled.intersection(node.inputs):
            continue
        if _commutes_with_scale(node.layer):
            scaled.add(node.output)
        elif type(node.layer) in _STREAM_READERS and getattr(node.layer, "groups", 1) == 1:
            if graph.calls(node.layer) != 1:
                raise _NotAStream(f"convolution {node.name!r} is called more than once")
            readers.append(node.name)
        else:
            raise _NotAStream(f"{node.name!r} ({type(node.layer).__name__}) reads the stream")
    if any(graph.is_output(tensor) for tensor in scaled):
        raise _NotAStream("the stream is a model output")
    carriers = [
        tensor
        for tensor in sorted(scaled, key=lambda t: graph.producer(t).position)
        if isinstance(graph.producer(tensor).layer, layers.Add | layers.ReLU)
    ]
    if len({graph.channels(tensor) for tensor in carriers}) != 1:
        raise _NotAStream("its tensors differ in channel count")
    return ResidualStream(carriers, writers, readers)


def residual_stream(graph) -> ResidualStream | None:
    """The :class:`ResidualStream` of ``graph`` (a :class:`kstyle.graph.Graph`), or None, with
    a logged warning saying why, where the graph does not have that shape."""
    try:
        return _find_stream(graph)
    except _NotAStream as reason:
        logger.warning("int8 export: the residual stream is not rescaled: %s", reason)
        return None
