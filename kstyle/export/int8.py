"""Full-integer (int8) TFLite export: every convolution int8, the instance-norm arithmetic
float, with the convolutions before each norm equalized so that every channel gets a similar
share of its tensor's 256 levels, and a pre-tanh clip (``docs/int8.md`` has the study).

The rewrites find what they change in the model's graph (:class:`kstyle.graph.Graph`): layer
types and connections, never layer names.
"""

import itertools
import logging

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from kstyle import internals
from kstyle.errors import KstyleError
from kstyle.export.calibration import (
    balance_depthwise,
    calibration_samples,
    depthwise_pointwise,
    output_ranges,
)
from kstyle.export.serving import (
    IMAGE_INPUT,
    ChannelEpsilonInstanceNorm,
    export_layer,
    moment_norms,
    serving_archive,
    serving_model,
)
from kstyle.export.stream import residual_stream
from kstyle.graph import Graph, instance_norms, output_tanh, size_multiple
from kstyle.norms import STYLE_INPUT
from kstyle.quiet import filtered_stderr
from kstyle.style_tables import style_count
from kstyle.transform_net import ReflectionPadding2D, TanhToPixels

logger = logging.getLogger(__name__)

TANH_CLIP = 4.0  # pre-tanh clip of int8 graphs: moves no pixel by > 127.5*(1-tanh(4)) = 0.085


@keras.saving.register_keras_serializable(package="kstyle")
class ClippedTanh(keras.layers.Layer):
    """``tanh(clip(x, -c, c))``: the output tanh of int8 export graphs.

    The last convolution's int8 output has one scale per tensor, set by its calibrated range,
    and a net's pre-tanh activations can reach far beyond the few units where tanh is steep
    (``docs/int8.md`` has measured ranges): one int8 step then spans many output levels.
    Clipping to [-c, c] first gives the range 2c (c = 4: 4 levels per step) and changes the
    pixels (``127.5 * (tanh + 1)``) by at most ``127.5 * (1 - tanh(c))`` levels.
    """

    def __init__(self, clip=TANH_CLIP, **kwargs):
        super().__init__(**kwargs)
        self.clip = float(clip)

    def call(self, inputs):
        return tf.math.tanh(tf.clip_by_value(inputs, -self.clip, self.clip))

    def get_config(self):
        return {**super().get_config(), "clip": self.clip}


@keras.saving.register_keras_serializable(package="kstyle")
class ClippedTanhToPixels(ClippedTanh):
    """``127.5 * (tanh(clip(x, -c, c)) + 1)``: :class:`ClippedTanh` in place of an older net's
    ``TanhToPixels`` output layer."""

    def call(self, inputs):
        return 127.5 * (super().call(inputs) + 1.0)


def _why_not_equalizable(graph, norm) -> str | None:
    """Why the convolution before the instance norm ``norm`` (a Node) cannot absorb a
    per-channel scale and shift; None when it can."""
    tensor = norm.inputs[0]
    conv = graph.producer(tensor)
    if graph.calls(norm.layer) != 1:
        return "the norm is called more than once"
    if type(conv.layer) is not layers.Conv2D:
        return f"its input comes from {conv.name!r} ({type(conv.layer).__name__}), not a Conv2D"
    if not conv.layer.use_bias or conv.layer.activation is not keras.activations.linear:
        return f"convolution {conv.name!r} has no bias or has an activation"
    readers = [node.position for node in graph.consumers(tensor)]
    if graph.calls(conv.layer) != 1 or graph.is_output(tensor) or readers != [norm.position]:
        return f"the output of convolution {conv.name!r} is read by more than this norm"
    return None


def _reads_the_image(graph, node) -> bool:
    """Whether ``node`` reads the model's input, directly or through padding layers."""
    while node.inputs:
        node = graph.producer(node.inputs[0])
        if isinstance(node.layer, layers.InputLayer):
            return True
        if not isinstance(node.layer, ReflectionPadding2D | layers.ZeroPadding2D):
            return False
    return False


def norm_convs(graph) -> dict:
    """``{instance-norm layer name: the Conv2D node before it}`` in ``graph`` (a
    :class:`kstyle.graph.Graph`), for the norms whose input channels an equalization can
    rescale: the output of a plain, once-called ``Conv2D`` with a bias, read by that norm alone.

    The norm after the convolution that reads the image is left out by design: that
    convolution's channel ranges follow the pictures' content, so ranges fitted to the
    calibration photos misfit others, while the image's own range is fixed. On the 6-step test
    nets, leaving it out changed int8 PSNR by -0.4 to +0.3 dB (seed net), +0.7 to +1.0 dB
    (``tiny``) and +7 to +9 dB (``live``, whose stride-4 stem sees 4x4 patches). Any other
    instance norm that cannot be equalized is left out with a logged warning naming it (its
    channels then share one int8 range, as without equalization).

    Raises:
        KstyleError: a ``GroupNormalization`` that is not an instance norm, naming it.
    """
    pairs = {}
    for norm in instance_norms(graph):
        if _reads_the_image(graph, graph.producer(norm.inputs[0])):
            continue
        reason = _why_not_equalizable(graph, norm)
        if reason:
            logger.warning("int8 export: instance norm %r is not equalized: %s", norm.name, reason)
        else:
            pairs[norm.name] = graph.producer(norm.inputs[0])
    return pairs


def equalized_export_model(
    transform_net,
    calibration_images,
    input_size=None,
    batch_size=1,
    stream_exponent=0.0,
    by="clip",
    tanh_clip=TANH_CLIP,
):
    """The serving model of ``transform_net`` rescaled for one int8 range per tensor.

    Integer activations have one scale per tensor, and a convolution's output channels before
    an instance norm span very different ranges: a channel whose range is small next to the
    widest one keeps only a few int8 levels, and the norm then divides by that channel's small
    standard deviation, magnifying the rounding error. The norm is blind to a per-channel shift
    and positive scale of its input, so each such convolution's kernel and bias are rescaled
    and shifted here so that every channel spans about the same range, and the norm's epsilon
    is rescaled to match: the float function is unchanged (within float rounding), and every
    channel gets a similar share of the 256 int8 levels. The convolutions are found by
    :func:`norm_convs` (a norm it cannot handle is logged and left as it is). For a net of N
    styles the calibrated ranges cover every style (:func:`calibration_samples`).

    ``by`` is the per-channel extent mapped to 1: ``range`` (half the calibrated min-max
    range), ``std`` (the calibrated standard deviation), ``mixed`` (the larger of the half
    range and 6 standard deviations: headroom for images outside a small calibration set's
    range) or ``clip`` (the default: as ``mixed``, but the half range runs from the 10th
    percentile of the per-image minima to the 90th of the maxima, and the convolution's output
    is clipped to [-1, 1] before the norm, so rare extremes do not coarsen every image's
    steps; the clipping changes the float function slightly, which the PSNR figures include),
    or None (leave those convolutions as they are).

    With ``stream_exponent`` a > 0 the residual stream's channels are also rescaled, by
    ``range**-a``: the norms that write it scale their gamma and beta, and the convolutions that
    read it divide their input channels by the same factor (exact, as ReLU, padding and
    upsampling commute with a positive channel scale; see :func:`residual_stream`).

    With ``tanh_clip`` c the output's tanh clips its input to [-c, c] first: the tanh
    ``Activation`` the output rescales (:func:`kstyle.graph.output_tanh`) becomes a
    :class:`ClippedTanh`, an older net's ``TanhToPixels`` a :class:`ClippedTanhToPixels`;
    None keeps the plain output.

    Returns:
        A ``keras.Model`` from uint8 (B, H, W, 3) to uint8 (B, H, W, 3), as ``export_model``.

    Raises:
        KstyleError: an unknown ``by``, or a ``GroupNormalization`` that is not an instance
            norm (with ``by``).
    """
    if by not in (None, "clip", "range", "std", "mixed"):
        raise KstyleError(f"unknown equalization {by!r}; use clip, range, std, mixed or None")
    clone = keras.models.clone_model(transform_net, clone_function=export_layer)
    clone.set_weights(transform_net.get_weights())
    graph = Graph(clone)
    pairs = norm_convs(graph) if by else {}
    names = list(pairs)
    stream = residual_stream(graph) if stream_exponent else None
    # (with the stream rescaled, its depthwise readers are left as the stream pass sets them)
    depthwise = depthwise_pointwise(graph) if by and not stream else []
    probes = [pairs[name].output for name in names] + (stream.tensors if stream else [])
    probes += [node.output for node, _ in depthwise]
    samples = calibration_samples(calibration_images, style_count(transform_net))
    lows, highs, spreads, typical = (
        output_ranges(graph, probes, samples) if probes else ([], [], [], [])
    )
    weights = {layer.name: layer.get_weights() for layer in clone.layers}
    if depthwise:  # their outputs are the last probes
        count = len(depthwise)
        balance_depthwise(weights, depthwise, lows[-count:], highs[-count:])
    if stream:
        ends = zip(lows[len(names) :], highs[len(names) :], strict=True)
        extent = np.max([np.maximum(np.abs(low), np.abs(high)) for low, high in ends], axis=0)
        factor = np.where(extent > 1e-12, np.maximum(extent, 1e-12) ** -stream_exponent, 1.0)
        for name in stream.writers:
            gamma, beta = weights[name]
            weights[name] = [gamma * factor, beta * factor]
        for name in stream.readers:
            kernel, *rest = weights[name]
            weights[name] = [kernel / factor[None, None, :, None], *rest]
    epsilons = {}
    for name, low, high, spread, usual in zip(names, lows, highs, spreads, typical, strict=False):
        if by == "clip":
            low, high = usual
        half = {
            "clip": np.maximum((high - low) / 2, 6 * spread),
            "range": (high - low) / 2,
            "std": spread,
            "mixed": np.maximum((high - low) / 2, 6 * spread),
        }[by]
        scale = np.where(half > 1e-12, 1.0 / np.maximum(half, 1e-12), 1.0)
        offset = (high + low) / 2
        conv = pairs[name].name
        kernel, bias = weights[conv]
        weights[conv] = [kernel * scale, (bias - offset) * scale]
        epsilons[name] = clone.get_layer(name).epsilon * scale**2
    plain_norms = moment_norms(graph)
    tanh = output_tanh(graph)
    if tanh_clip and not (tanh or graph.nodes_of(TanhToPixels)):
        logger.warning(
            "int8 export: %r has no tanh output layer, so no pre-tanh clip", transform_net.name
        )

    def substitute(layer):
        if layer.name in epsilons:
            clip = 1.0 if by == "clip" else None
            return ChannelEpsilonInstanceNorm(
                epsilons[layer.name], clip=clip, affine=layer.scale, name=layer.name
            )
        if layer.name in plain_norms:
            uniform = [layer.epsilon] * plain_norms[layer.name]
            return ChannelEpsilonInstanceNorm(uniform, affine=layer.scale, name=layer.name)
        if tanh_clip and isinstance(layer, TanhToPixels):
            return ClippedTanhToPixels(tanh_clip, name=layer.name, dtype=layer.dtype_policy)
        if tanh_clip and tanh is not None and layer is tanh.layer:
            return ClippedTanh(tanh_clip, name=layer.name, dtype=layer.dtype_policy)
        return layer.__class__.from_config(layer.get_config())

    equalized = keras.models.clone_model(clone, clone_function=substitute)
    for layer in equalized.layers:
        layer.set_weights(weights[layer.name])
    name = f"{transform_net.name}_uint8_equalized"
    return serving_model(equalized, size_multiple(transform_net), input_size, batch_size, name)


# Ops of the instance norms (mean, variance, rsqrt, scale and shift) and of the residual adds:
# int8 activations cannot hold the variance's range, so these stay float in "int8" models.
INT8_FLOAT_OPS = ("MEAN", "SQUARED_DIFFERENCE", "RSQRT", "SUB", "MUL", "ADD")


def _conv_output_names(calibrated_model, convs):
    """{Keras conv layer name: its CONV_2D op's output tensor name} in a calibrated TFLite
    model (the names ``QuantizationDebugOptions(denylisted_nodes=...)`` takes), for the layer
    names ``convs``."""
    import re

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


def int8_flatbuffer(
    transform_net,
    calibration_images,
    input_size=None,
    equalize=True,
    float_ops=INT8_FLOAT_OPS,
    activations="int8",
    stream_exponent=0.0,
    by="clip",
    tanh_clip=TANH_CLIP,
    float_convs=(),
):
    """Full-integer TFLite conversion: every convolution int8, the norm arithmetic float.

    The default recipe, and why (``bench/int8_study.py`` measures the alternatives):

    - ``float_ops``: the instance norms' mean, variance, rsqrt, scale and shift and the residual
      adds stay float (the debugger's ``denylisted_ops``); int8 cannot hold the variance.
    - ``equalize`` (``by="clip"``): each convolution before a norm is rescaled per channel so
      every channel gets a similar share of its tensor's 256 levels (see
      :func:`equalized_export_model`); without it the narrowest channels keep a few levels.
    - ``tanh_clip`` (4.0): the pre-tanh activations are clipped to [-4, 4] before the int8
      output convolution's range is calibrated (:class:`ClippedTanh`). Calibrated
      ranges there can be far wider than the few units where tanh is steep, so one int8 step
      spans many output levels: the largest single loss of the model. The clip moves the
      float output by at most 0.085 levels and costs no float op. Keeping the output
      convolution and the tanh float instead (``float_convs=("out_conv",)`` and ``TANH`` in
      ``float_ops``) gains little more, for a clear latency cost.

    ``docs/int8.md`` has the measured PSNR and latency of each choice.

    Args:
        equalize: rescale the convolutions before the norms (``equalized_export_model``).
        stream_exponent, by: passed to ``equalized_export_model``.
        tanh_clip: the pre-tanh clip (None: none).
        float_ops: TFLite op names kept float (the debugger's ``denylisted_ops``).
        float_convs: Keras names of convolutions kept float (weights and output), e.g.
            ``("out_conv",)``; their TFLite output tensors become ``denylisted_nodes``.
        activations: ``int8``, or ``int16`` for 16-bit activations with int8 weights.
    """
    import tempfile

    model = None
    if equalize or tanh_clip:
        model = equalized_export_model(
            transform_net,
            calibration_images,
            input_size,
            1,
            stream_exponent if equalize else 0.0,
            by if equalize else None,
            tanh_clip,
        )
    # filtered: the calibrator prints its settings, and the debugger warns that it builds
    # tf.lite.Interpreters (kstyle.quiet)
    with tempfile.TemporaryDirectory() as directory, filtered_stderr():
        serving_archive(transform_net, directory, input_size=input_size, batch_size=1, model=model)
        converter = tf.lite.TFLiteConverter.from_saved_model(directory)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]

        samples = calibration_samples(calibration_images, style_count(transform_net))

        def representative():
            for image, style in samples:
                inputs = {IMAGE_INPUT: image[None]}
                yield inputs if style is None else {**inputs, STYLE_INPUT: style[None]}

        converter.representative_dataset = representative
        if activations == "int16":
            # the debugger re-quantizes to int8, so 16x8 goes through the plain converter
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8,
                tf.lite.OpsSet.TFLITE_BUILTINS,
            ]
        if (not float_ops and not float_convs) or activations == "int16":
            return converter.convert()
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter,
            debug_dataset=lambda: itertools.islice(representative(), 1),
            debug_options=tf.lite.experimental.QuantizationDebugOptions(
                denylisted_ops=list(float_ops)
            ),
        )
        if float_convs:
            # node names exist only once calibrated: quantize the calibrated model again
            nodes = _conv_output_names(debugger.calibrated_model, list(float_convs))
            debugger.options = tf.lite.experimental.QuantizationDebugOptions(
                denylisted_ops=list(float_ops), denylisted_nodes=list(nodes.values())
            )
        return debugger.get_nondebug_quantized_model()
