"""Full-integer (int8) TFLite export: every convolution int8, the instance-norm arithmetic
float, with the convolutions before each norm equalized so that every channel gets a similar
share of its tensor's 256 levels, and a pre-tanh clip (``docs/int8.md`` has the study).

The rewrites find what they change in the model's graph (:class:`kstyle.graph.Graph`): layer
types and connections, never layer names.
"""

import contextlib
import logging
import tempfile

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from kstyle.constants import STYLE_INPUT
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
from kstyle.graph import Graph, instance_norms, output_tanh, size_multiple
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
    if bool(norm.layer.scale) != bool(norm.layer.center):
        return "the norm has a learned scale or offset, not both"
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


def export_clone(transform_net) -> keras.Model:
    """A copy of ``transform_net`` with export layers (:func:`kstyle.export.serving.export_layer`)
    and the same weights: what the int8 rewrites change."""
    clone = keras.models.clone_model(transform_net, clone_function=export_layer)
    clone.set_weights(transform_net.get_weights())
    return clone


def measured_ranges(graph, samples, pairs: dict, depthwise: list):
    """:func:`kstyle.export.calibration.output_ranges` over ``samples`` of the outputs of the
    convolutions of ``pairs`` (:func:`norm_convs`), then of the depthwise convolutions of
    ``depthwise`` (:func:`kstyle.export.calibration.depthwise_pointwise`)."""
    probes = [node.output for node in pairs.values()] + [node.output for node, _ in depthwise]
    return output_ranges(graph, probes, samples) if probes else ([], [], [], [])


def clip_extent(low, high, spread, typical):
    """``(half range, centre)`` per channel of a convolution's output before a norm, from its
    calibrated statistics (:func:`kstyle.export.calibration.output_ranges`): the typical range
    (the 10th percentile of the per-image minima to the 90th of the maxima), widened to at
    least 6 standard deviations, so that rare extremes do not coarsen every image's steps (the
    equalized output is clipped to [-1, 1] before the norm)."""
    low, high = typical
    return np.maximum((high - low) / 2, 6 * spread), (high + low) / 2


def rescale_norm_convs(weights: dict, clone, pairs: dict, stats, extent=clip_extent) -> dict:
    """Rescales and shifts each convolution of ``pairs`` (``{norm: conv node}``) in ``weights``
    (``{layer name: weights}``, changed in place) so that every output channel spans about
    [-1, 1] by ``extent`` of its ``stats`` (one ``(low, high, spread, typical)`` per pair);
    returns ``{norm name: per-channel epsilons}`` that keep each norm's function."""
    epsilons = {}
    for name, (low, high, spread, typical) in zip(pairs, stats, strict=True):
        half, offset = extent(low, high, spread, typical)
        scale = np.where(half > 1e-12, 1.0 / np.maximum(half, 1e-12), 1.0)
        conv = pairs[name].name
        kernel, bias = weights[conv]
        weights[conv] = [kernel * scale, (bias - offset) * scale]
        epsilons[name] = clone.get_layer(name).epsilon * scale**2
    return epsilons


def int8_inner_model(clone, weights: dict, epsilons: dict, norm_clip=1.0, tanh_clip=TANH_CLIP):
    """``clone`` (:func:`export_clone`) with ``weights``, its instance norms as
    :class:`ChannelEpsilonInstanceNorm` (``epsilons`` where given, their inputs clipped to
    ±``norm_clip``), and its output tanh clipped to ±``tanh_clip`` (:class:`ClippedTanh`;
    None: as it is)."""
    graph = Graph(clone)
    plain_norms = moment_norms(graph)
    tanh = output_tanh(graph)
    if tanh_clip and not (tanh or graph.nodes_of(TanhToPixels)):
        logger.warning("int8 export: %r has no tanh output layer, so no pre-tanh clip", clone.name)

    def substitute(layer):
        if layer.name in epsilons:
            return ChannelEpsilonInstanceNorm(
                epsilons[layer.name], clip=norm_clip, affine=layer.scale, name=layer.name
            )
        if layer.name in plain_norms:
            uniform = [layer.epsilon] * plain_norms[layer.name]
            return ChannelEpsilonInstanceNorm(uniform, affine=layer.scale, name=layer.name)
        if tanh_clip and isinstance(layer, TanhToPixels):
            return ClippedTanhToPixels(tanh_clip, name=layer.name, dtype=layer.dtype_policy)
        if tanh_clip and tanh is not None and layer is tanh.layer:
            return ClippedTanh(tanh_clip, name=layer.name, dtype=layer.dtype_policy)
        return layer.__class__.from_config(layer.get_config())

    rewritten = keras.models.clone_model(clone, clone_function=substitute)
    for layer in rewritten.layers:
        layer.set_weights(weights[layer.name])
    return rewritten


def equalized_export_model(transform_net, calibration_images, input_size=None, batch_size=1):
    """The serving model of ``transform_net`` rescaled for one int8 range per tensor.

    Integer activations have one scale per tensor, and a convolution's output channels before
    an instance norm span very different ranges: a channel whose range is small next to the
    widest one keeps only a few int8 levels, and the norm then divides by that channel's small
    standard deviation, magnifying the rounding error. The norm is blind to a per-channel shift
    and positive scale of its input, so each such convolution's kernel and bias are rescaled
    and shifted here so that every channel spans about [-1, 1] (:func:`clip_extent`; clipped
    there before the norm), and the norm's epsilon is rescaled to match. The convolutions are
    found by :func:`norm_convs` (a norm it cannot handle is logged and left as it is). The
    depthwise convolutions' outputs are balanced with their 1x1 readers
    (:func:`kstyle.export.calibration.balance_depthwise`), and the output tanh clips its input
    to ±:data:`TANH_CLIP` (:class:`ClippedTanh`). The clips change the float function slightly,
    which the PSNR figures include; the rest is exact. For a net of N styles the calibrated
    ranges cover every style (:func:`kstyle.export.calibration.calibration_samples`).

    ``docs/int8.md`` has the study that chose this recipe (``bench/int8_variants.py`` builds
    its alternatives from these steps).

    Returns:
        A ``keras.Model`` from uint8 (B, H, W, 3) to uint8 (B, H, W, 3), as ``export_model``.

    Raises:
        KstyleError: a ``GroupNormalization`` that is not an instance norm.
    """
    clone = export_clone(transform_net)
    graph = Graph(clone)
    pairs, depthwise = norm_convs(graph), depthwise_pointwise(graph)
    samples = calibration_samples(calibration_images, style_count(transform_net))
    lows, highs, spreads, typical = measured_ranges(graph, samples, pairs, depthwise)
    weights = {layer.name: layer.get_weights() for layer in clone.layers}
    if depthwise:  # their outputs are the last probes
        balance_depthwise(weights, depthwise, lows[len(pairs) :], highs[len(pairs) :])
    stats = list(zip(lows, highs, spreads, typical, strict=True))[: len(pairs)]
    epsilons = rescale_norm_convs(weights, clone, pairs, stats)
    inner = int8_inner_model(clone, weights, epsilons)
    name = f"{transform_net.name}_uint8_equalized"
    return serving_model(inner, size_multiple(transform_net), input_size, batch_size, name)


# Ops of the instance norms (mean, variance, rsqrt, scale and shift) and of the residual adds:
# int8 activations cannot hold the variance's range, so these stay float in "int8" models.
INT8_FLOAT_OPS = ("MEAN", "SQUARED_DIFFERENCE", "RSQRT", "SUB", "MUL", "ADD")


@contextlib.contextmanager
def calibrated_converter(model, samples, input_size=None):
    """A TFLite converter of the serving ``model`` (batch 1) set for full-integer
    quantization, calibrated on ``samples`` (:func:`kstyle.export.calibration.calibration_samples`);
    valid inside the ``with`` block (its SavedModel is a temporary folder). The converter's and
    the debugger's own lines are filtered (:mod:`kstyle.quiet`)."""
    with tempfile.TemporaryDirectory() as directory, filtered_stderr():
        serving_archive(None, directory, input_size=input_size, batch_size=1, model=model)
        converter = tf.lite.TFLiteConverter.from_saved_model(directory)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]

        converter.representative_dataset = lambda: map(converter_inputs, samples)
        yield converter


def converter_inputs(sample) -> dict:
    """A calibration ``sample`` (image, style vector or None) as the converter's inputs, by
    signature name, each with a batch axis."""
    image, style = sample
    inputs = {IMAGE_INPUT: image[None]}
    return inputs if style is None else {**inputs, STYLE_INPUT: style[None]}


def float_ops_debugger(converter, samples, float_ops=INT8_FLOAT_OPS):
    """TFLite's ``QuantizationDebugger`` of ``converter`` (:func:`calibrated_converter`) with
    the ops ``float_ops`` kept float; its ``get_nondebug_quantized_model()`` is the file."""
    return tf.lite.experimental.QuantizationDebugger(
        converter=converter,
        debug_dataset=lambda: map(converter_inputs, samples[:1]),
        debug_options=tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=list(float_ops)),
    )


def int8_flatbuffer(transform_net, calibration_images, input_size=None):
    """Full-integer TFLite conversion: every convolution int8, the norm arithmetic float.

    The recipe, and why (``docs/int8.md`` has the study, ``bench/int8_study.py`` measures the
    alternatives):

    - :data:`INT8_FLOAT_OPS`: the instance norms' mean, variance, rsqrt, scale and shift and
      the residual adds stay float (the debugger's ``denylisted_ops``); int8 cannot hold the
      variance.
    - the convolutions before the norms are equalized, and the pre-tanh activations clipped to
      ±4 (:func:`equalized_export_model`): without the equalization the narrowest channels
      keep a few levels; without the clip one int8 step of the output convolution spans many
      output levels, the largest single loss of the model. The clip moves the float output by
      at most 0.085 levels and costs no float op.

    Args:
        transform_net: the net (of one style or N; for N, the file takes the style input).
        calibration_images: uint8 (H, W, 3) arrays.
        input_size: None for a dynamic H, W; N or (H, W) for a fixed size.
    """
    model = equalized_export_model(transform_net, calibration_images, input_size, 1)
    samples = calibration_samples(calibration_images, style_count(transform_net))
    with calibrated_converter(model, samples, input_size) as converter:
        return float_ops_debugger(converter, samples).get_nondebug_quantized_model()
