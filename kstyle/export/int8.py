"""Full-integer (int8) TFLite export: every convolution int8, the instance-norm arithmetic
float, with the convolutions before each norm equalized so that every channel gets a similar
share of its tensor's 256 levels, and a pre-tanh clip (``docs/int8.md`` has the study).
"""

import itertools

import keras
import numpy as np
import tensorflow as tf

from kstyle.errors import KstyleError
from kstyle.export.serving import (
    ChannelEpsilonInstanceNorm,
    CropToPixels,
    NearestUpsample2x,
    PadToMultiple,
    _export_layer,
    _is_instance_norm,
    serving_archive,
)

# Pre-tanh clip of the int8 export graphs: 127.5 * (1 - tanh(4)) = 0.085, so clipping moves no
# output pixel by more than a tenth of a uint8 level.
TANH_CLIP = 4.0


@keras.saving.register_keras_serializable(package="kstyle")
class ClippedTanhToPixels(keras.layers.Layer):
    """``127.5 * (tanh(clip(x, -c, c)) + 1)`` (export graphs of int8 models only).

    The last convolution's int8 output has one scale per tensor, set by its calibrated range,
    and a net's pre-tanh activations can reach -50 where tanh saturated long before: one int8
    step is then 0.2, about 29 output levels where tanh is steep. Clipping to [-c, c] first
    gives the range 2c (c = 4: 4 levels per step) and changes the output by at most
    ``127.5 * (1 - tanh(c))`` levels.
    """

    def __init__(self, clip=TANH_CLIP, **kwargs):
        super().__init__(**kwargs)
        self.clip = float(clip)

    def call(self, inputs):
        inputs = tf.clip_by_value(inputs, -self.clip, self.clip)
        return 127.5 * (tf.math.tanh(inputs) + 1.0)

    def get_config(self):
        return {**super().get_config(), "clip": self.clip}


def _norm_inputs(model):
    """{norm layer name: the Conv2D layer feeding it} for the instance norms of ``model``."""
    pairs = {}
    for layer in model.layers:
        if _is_instance_norm(layer):
            source = layer.input._keras_history.operation
            if isinstance(source, keras.layers.Conv2D):
                pairs[layer.name] = source
    return pairs


def _output_ranges(model, layers, images):
    """Per-channel statistics of each layer's output over ``images`` (uint8 (H, W, 3)): lists
    of the min, the max, the RMS per-image standard deviation, and the 10th percentile of the
    per-image minima and 90th of the per-image maxima."""
    probe = keras.Model(model.inputs, [layer.output for layer in layers])
    pad = PadToMultiple()
    lows = [np.inf] * len(layers)
    highs = [-np.inf] * len(layers)
    variances = [0.0] * len(layers)
    extremes = [[] for _ in layers]
    for image in images:
        outputs = probe(pad(image[None]), training=False)
        for index, output in enumerate(outputs):
            output = np.asarray(output)
            lows[index] = np.minimum(lows[index], output.min(axis=(0, 1, 2)))
            highs[index] = np.maximum(highs[index], output.max(axis=(0, 1, 2)))
            variances[index] = variances[index] + output.var(axis=(0, 1, 2)) / len(images)
            extremes[index].append((output.min(axis=(0, 1, 2)), output.max(axis=(0, 1, 2))))
    typical = []
    for pairs in extremes:
        mins, maxs = (np.stack(values) for values in zip(*pairs, strict=True))
        typical.append((np.percentile(mins, 10, axis=0), np.percentile(maxs, 90, axis=0)))
    return lows, highs, [np.sqrt(v) for v in variances], typical


def _producer(layer):
    return layer.input._keras_history.operation


def _residual_stream(model):
    """The residual stream of ``model``: (its layers, the norms that write it through a ReLU
    or an add, the convolutions that read it), or None where the graph is not that shape."""
    adds = [layer for layer in model.layers if isinstance(layer, keras.layers.Add)]
    if not adds:
        return None
    stream, writers = set(), set()
    for add in adds:
        stream.add(add.name)
        for tensor in add.input:
            source = tensor._keras_history.operation
            if isinstance(source, keras.layers.GroupNormalization):
                writers.add(source.name)
            elif isinstance(source, keras.layers.ReLU) and isinstance(
                _producer(source), keras.layers.GroupNormalization
            ):
                stream.add(source.name)
                writers.add(_producer(source).name)
            elif not isinstance(source, keras.layers.Add):
                return None
    from kstyle.transform_net import ReflectionPadding2D

    passthrough = (ReflectionPadding2D, NearestUpsample2x, keras.layers.UpSampling2D)
    readers = []
    for layer in model.layers:
        if layer.name in stream or isinstance(layer, keras.layers.InputLayer):
            continue
        inputs = layer.input if isinstance(layer.input, list) else [layer.input]
        sources = [tensor._keras_history.operation.name for tensor in inputs]
        if not any(source in stream for source in sources):
            continue
        if isinstance(layer, keras.layers.Add):
            continue
        if isinstance(layer, passthrough):
            stream.add(layer.name)  # padding and upsampling commute with a channel scale
        elif isinstance(layer, keras.layers.Conv2D):
            readers.append(layer.name)
        else:
            return None
    return stream, writers, readers


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
    channel gets a similar share of the 256 int8 levels.

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
    upsampling commute with a positive channel scale).

    With ``tanh_clip`` c the output layer clips its input to [-c, c] before the tanh
    (:class:`ClippedTanhToPixels`); None keeps the plain output layer.
    """
    from kstyle.transform_net import TanhToPixels

    clone = keras.models.clone_model(transform_net, clone_function=_export_layer)
    clone.set_weights(transform_net.get_weights())
    pairs = _norm_inputs(clone) if by else {}
    names = list(pairs)
    stream = _residual_stream(clone) if stream_exponent else None
    probes = [pairs[n] for n in names]
    if stream:
        stream_layers = [clone.get_layer(n) for n in sorted(stream[0])]
        probes += [
            layer
            for layer in stream_layers
            if isinstance(layer, (keras.layers.Add, keras.layers.ReLU))
        ]
    lows, highs, spreads, typical = (
        _output_ranges(clone, probes, calibration_images) if probes else ([], [], [], [])
    )
    weights = {layer.name: layer.get_weights() for layer in clone.layers}
    if stream:
        _, writers, readers = stream
        ends = zip(lows[len(names) :], highs[len(names) :], strict=True)
        extent = np.max([np.maximum(np.abs(low), np.abs(high)) for low, high in ends], axis=0)
        factor = np.where(extent > 1e-12, np.maximum(extent, 1e-12) ** -stream_exponent, 1.0)
        for name in writers:
            gamma, beta = weights[name]
            weights[name] = [gamma * factor, beta * factor]
        for name in readers:
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
        conv = pairs[name]
        kernel, *rest = weights[conv.name]
        weights[conv.name] = [kernel * scale] + ([(rest[0] - offset) * scale] if rest else [])
        epsilons[name] = clone.get_layer(name).epsilon * scale**2

    def substitute(layer):
        if layer.name in epsilons:
            return ChannelEpsilonInstanceNorm(
                epsilons[layer.name], clip=1.0 if by == "clip" else None, name=layer.name
            )
        if tanh_clip and isinstance(layer, TanhToPixels):
            return ClippedTanhToPixels(tanh_clip, name=layer.name, dtype=layer.dtype_policy)
        return layer.__class__.from_config(layer.get_config())

    equalized = keras.models.clone_model(clone, clone_function=substitute)
    for layer in equalized.layers:
        layer.set_weights(weights[layer.name])
    images = keras.Input(
        shape=(input_size, input_size, 3), batch_size=batch_size, dtype="uint8", name="image"
    )
    padded = PadToMultiple(name="pad_to_multiple")(images)
    outputs = CropToPixels(name="stylized")(equalized(padded), images)
    return keras.Model(images, outputs, name=f"{transform_net.name}_uint8_equalized")


# Ops of the instance norms (mean, variance, rsqrt, scale and shift) and of the residual adds:
# int8 activations cannot hold the variance's range, so these stay float in "int8" models.
INT8_FLOAT_OPS = ("MEAN", "SQUARED_DIFFERENCE", "RSQRT", "SUB", "MUL", "ADD")


def _conv_output_names(calibrated_model, layers):
    """{Keras conv layer name: its CONV_2D op's output tensor name} in a calibrated TFLite
    model (the names ``QuantizationDebugOptions(denylisted_nodes=...)`` takes)."""
    import re

    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=calibrated_model)
    names = {d["index"]: d["name"] for d in interpreter.get_tensor_details()}
    found = {}
    for op in interpreter._get_ops_details():
        if op["op_name"] != "CONV_2D":
            continue
        kernel = names[op["inputs"][1]]
        for layer in layers:
            if re.search(rf"(^|/){re.escape(layer)}(_\d+)?/", kernel):
                found[layer] = names[op["outputs"][0]]
    missing = sorted(set(layers) - set(found))
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
      :func:`equalized_export_model`): 24-26 dB without, about 30-32 dB with.
    - ``tanh_clip`` (4.0): the pre-tanh activations are clipped to [-4, 4] before the int8
      output convolution's range is calibrated (:class:`ClippedTanhToPixels`). Calibrated
      ranges there reached [-50, 8]: one int8 step was then ~29 output levels where tanh is
      steep, the largest single loss of the model. The clip moves the float output by at most
      0.085 levels, costs no float op, and gave +3 to +5.5 dB (34.5-35.5 dB on three nets).
      Keeping the output convolution and the tanh float instead (``float_convs=("out_conv",)``
      and ``TANH`` in ``float_ops``) gained only 0.3-0.7 dB more, for 25-45 % more latency.

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
    with tempfile.TemporaryDirectory() as directory:
        serving_archive(transform_net, directory, input_size=input_size, batch_size=1, model=model)
        converter = tf.lite.TFLiteConverter.from_saved_model(directory)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]

        def representative():
            for image in calibration_images:
                yield [image[None]]

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
            debugger._debug_options = tf.lite.experimental.QuantizationDebugOptions(
                denylisted_ops=list(float_ops), denylisted_nodes=list(nodes.values())
            )
        return debugger.get_nondebug_quantized_model()


def load_calibration_images(folder, count=100, size=256):
    """The first ``count`` images under ``folder`` as (size, size, 3) uint8 arrays.

    Raises:
        KstyleError: the folder is missing or holds no readable image.
    """
    from kstyle.files import list_image_files
    from kstyle.images import load_image

    if folder is None:
        raise KstyleError("--quantize int8 needs --calibration-data DIR (representative photos)")
    images = []
    for path in list_image_files(folder):
        try:
            image = load_image(path)
        except KstyleError:
            continue
        resized = tf.image.resize(image, (size, size), antialias=True)
        images.append(np.clip(np.round(resized.numpy()), 0, 255).astype(np.uint8))
        if len(images) == count:
            break
    if not images:
        raise KstyleError(f"no readable calibration images in {folder}")
    return images
