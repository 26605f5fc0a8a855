"""The int8 study's alternatives to kstyle's int8 recipe (docs/int8.md), built from the steps
of :mod:`kstyle.export.int8`: another per-channel extent for the equalization, no equalization,
the residual stream rescaled, no pre-tanh clip, other float ops, chosen convolutions kept
float, 16-bit activations. ``bench/int8_study.py`` and ``bench/bar_margins.py`` use them; the
tests check that each keeps the function it claims to.

``variant_flatbuffer()`` with the defaults is kstyle's ``int8_flatbuffer``.
"""

import re

import numpy as np
import tensorflow as tf
from int8_stream import residual_stream  # bench/

from kstyle import internals
from kstyle.errors import KstyleError
from kstyle.export.calibration import (
    balance_depthwise,
    calibration_samples,
    depthwise_pointwise,
    output_ranges,
)
from kstyle.export.int8 import (
    INT8_FLOAT_OPS,
    TANH_CLIP,
    calibrated_converter,
    clip_extent,
    export_clone,
    float_ops_debugger,
    int8_inner_model,
    measured_ranges,
    norm_convs,
    rescale_norm_convs,
)
from kstyle.export.serving import export_model, serving_model
from kstyle.graph import Graph, size_multiple
from kstyle.style_tables import style_count


def _range_extent(low, high, spread, typical):
    """Half the calibrated min-max range, and its centre."""
    return (high - low) / 2, (high + low) / 2


def _std_extent(low, high, spread, typical):
    """The calibrated standard deviation, and the range's centre."""
    return spread, (high + low) / 2


def _mixed_extent(low, high, spread, typical):
    """The larger of the half range and 6 standard deviations (headroom for images outside a
    small calibration set's range), and the range's centre."""
    return np.maximum((high - low) / 2, 6 * spread), (high + low) / 2


# by: the per-channel extent that the equalization maps to 1; only "clip" clips the norms' inputs
EXTENTS = {"clip": clip_extent, "range": _range_extent, "std": _std_extent, "mixed": _mixed_extent}


def _rescale_stream(weights, graph, stream, samples, exponent) -> None:
    """Rescales the residual stream's channels by ``extent ** -exponent`` in ``weights`` (in
    place): the norms that write it scale their gamma and beta, the convolutions that read it
    divide their input channels by the same factor (exact: ReLU, padding and upsampling
    commute with a positive channel scale)."""
    lows, highs, *_ = output_ranges(graph, stream.tensors, samples)
    ends = zip(lows, highs, strict=True)
    extent = np.max([np.maximum(np.abs(low), np.abs(high)) for low, high in ends], axis=0)
    factor = np.where(extent > 1e-12, np.maximum(extent, 1e-12) ** -exponent, 1.0)
    for name in stream.writers:
        gamma, beta = weights[name]
        weights[name] = [gamma * factor, beta * factor]
    for name in stream.readers:
        kernel, *rest = weights[name]
        weights[name] = [kernel / factor[None, None, :, None], *rest]


def variant_model(
    net, images, input_size=None, batch_size=1, by="clip", stream_exponent=0.0, tanh_clip=TANH_CLIP
):
    """kstyle's ``equalized_export_model`` with the study's options: ``by`` (a key of
    :data:`EXTENTS`, or None: no equalization and no depthwise balance), ``stream_exponent``
    (a > 0: the residual stream rescaled by ``range ** -a``; its depthwise readers are then
    left unbalanced) and ``tanh_clip`` (None: no pre-tanh clip)."""
    if by not in (None, *EXTENTS):
        raise KstyleError(f"unknown equalization {by!r}; use clip, range, std, mixed or None")
    if stream_exponent and style_count(net) > 1:  # its tables' Add would pass for a residual
        raise KstyleError("the residual stream rescaling takes nets of one style")
    clone = export_clone(net)
    graph = Graph(clone)
    pairs = norm_convs(graph) if by else {}
    stream = residual_stream(graph) if stream_exponent else None
    depthwise = depthwise_pointwise(graph) if by and not stream else []
    samples = calibration_samples(images, style_count(net))
    lows, highs, spreads, typical = measured_ranges(graph, samples, pairs, depthwise)
    weights = {layer.name: layer.get_weights() for layer in clone.layers}
    if depthwise:
        balance_depthwise(weights, depthwise, lows[len(pairs) :], highs[len(pairs) :])
    if stream:
        _rescale_stream(weights, graph, stream, samples, stream_exponent)
    stats = list(zip(lows, highs, spreads, typical, strict=True))[: len(pairs)]
    epsilons = rescale_norm_convs(weights, clone, pairs, stats, EXTENTS.get(by, clip_extent))
    norm_clip = 1.0 if by == "clip" else None
    inner = int8_inner_model(clone, weights, epsilons, norm_clip, tanh_clip)
    name = f"{net.name}_uint8_equalized"  # kstyle's name: the defaults give its very file
    return serving_model(inner, size_multiple(net), input_size, batch_size, name)


def _conv_output_names(calibrated_model, convs):
    """{Keras conv layer name: its CONV_2D op's output tensor name} in a calibrated TFLite
    model (the names ``QuantizationDebugOptions(denylisted_nodes=...)`` takes), for the layer
    names ``convs``."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=calibrated_model)
    names = {d["index"]: d["name"] for d in interpreter.get_tensor_details()}
    found = {}
    for op in internals.tflite_ops(interpreter):
        if op["op_name"] != "CONV_2D":
            continue
        kernel = names[op["inputs"][1]]
        for conv in convs:
            if re.search(rf"(^|/){re.escape(conv)}(_\d+)?/", kernel):
                found[conv] = names[op["outputs"][0]]
    missing = sorted(set(convs) - set(found))
    if missing:
        raise KstyleError(f"no TFLite convolution for layer(s) {missing}")
    return found


def variant_flatbuffer(
    net,
    images,
    input_size=None,
    equalize=True,
    float_ops=INT8_FLOAT_OPS,
    activations="int8",
    stream_exponent=0.0,
    by="clip",
    tanh_clip=TANH_CLIP,
    float_convs=(),
):
    """An int8 TFLite flatbuffer by the study's options (the defaults: kstyle's recipe).

    Args:
        equalize: False: no equalization, no depthwise balance, no stream rescaling.
        float_ops: TFLite op names kept float (the debugger's ``denylisted_ops``).
        activations: ``int8``, or ``int16`` for 16-bit activations with int8 weights (all
            ops quantized: the debugger re-quantizes to int8).
        stream_exponent, by, tanh_clip: as :func:`variant_model`.
        float_convs: Keras names of convolutions kept float (weights and output), e.g.
            ``("out_conv",)``: their TFLite output tensors become ``denylisted_nodes``, which
            exist only once calibrated, so the calibrated model is quantized again through
            the debugger's ``options``.
    """
    if equalize or tanh_clip:
        by, exponent = (by, stream_exponent) if equalize else (None, 0.0)
        model = variant_model(net, images, input_size, 1, by, exponent, tanh_clip)
    else:
        model = export_model(net, input_size=input_size, batch_size=1)
    samples = calibration_samples(images, style_count(net))
    with calibrated_converter(model, samples, input_size) as converter:
        if activations == "int16":
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8,
                tf.lite.OpsSet.TFLITE_BUILTINS,
            ]
        if (not float_ops and not float_convs) or activations == "int16":
            return converter.convert()
        debugger = float_ops_debugger(converter, samples, float_ops)
        if float_convs:
            nodes = _conv_output_names(debugger.calibrated_model, list(float_convs))
            debugger.options = tf.lite.experimental.QuantizationDebugOptions(
                denylisted_ops=list(float_ops), denylisted_nodes=list(nodes.values())
            )
        return debugger.get_nondebug_quantized_model()
