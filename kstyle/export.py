"""Serving artifacts for a trained transform net: SavedModel, TFLite and ONNX, each verified.

Every artifact has the same contract: uint8 RGB ``[batch, H, W, 3]`` in, uint8 RGB of the same
shape out, for any H and W of at least 4 pixels (the graph reflect-pads to a multiple of 4 and
crops back, exactly as ``kstyle.stylize_array`` does). A JSON sidecar next to each file records
the model's name, style and this contract.

``export_model`` builds that contract as a Keras model. It clones the transform net with the same
weights but with two TFLite-friendly substitutions that do not change the output: nearest
upsampling by ``tf.image.resize`` instead of ``UpSampling2D`` (whose ``tf.repeat`` loses the
static channel count that the TFLite converter needs), and a reshape after the dynamic padding
for the same reason.
"""

import dataclasses
import itertools
import json
import os
import shutil
import statistics
import time

import keras
import numpy as np
import tensorflow as tf

from kstyle.errors import KstyleError
from kstyle.stylize import SIZE_MULTIPLE
from kstyle.transform_net import inference_net

FORMATS = ("saved_model", "tflite", "onnx")
QUANTIZATIONS = ("none", "float16", "dynamic", "int8")
# Minimum PSNR (dB) of each TFLite quantization against the Keras model; fp32 formats instead
# must stay within 1 uint8 level everywhere.
PSNR_BARS = {"float16": 40.0, "dynamic": 30.0, "int8": 30.0}
MAX_ABS_DIFF_BAR = 1


@keras.saving.register_keras_serializable(package="kstyle")
class PadToMultiple(keras.layers.Layer):
    """uint8 or float (B, H, W, 3) -> float32, reflect-padded at the bottom and right to
    multiples of ``multiple``. H and W must be at least ``multiple`` pixels."""

    def __init__(self, multiple=SIZE_MULTIPLE, **kwargs):
        super().__init__(**kwargs)
        self.multiple = int(multiple)

    def call(self, images):
        images = tf.cast(images, tf.float32)
        shape = tf.shape(images)
        # (m - h % m) % m, not (-h) % m: ONNX's Mod would take the sign of a negative operand
        pad_h = (self.multiple - shape[1] % self.multiple) % self.multiple
        pad_w = (self.multiple - shape[2] % self.multiple) % self.multiple
        padded = tf.pad(images, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]], mode="REFLECT")
        # an explicit channel count: dynamic padding would otherwise lose it in TFLite
        return tf.reshape(padded, [shape[0], shape[1] + pad_h, shape[2] + pad_w, 3])

    def compute_output_spec(self, images):
        return keras.KerasTensor((images.shape[0], None, None, 3), dtype="float32")

    def get_config(self):
        return {**super().get_config(), "multiple": self.multiple}


@keras.saving.register_keras_serializable(package="kstyle")
class CropToPixels(keras.layers.Layer):
    """Crops ``padded`` (B, H', W', 3) to the size of ``reference`` and rounds to uint8."""

    def call(self, padded, reference):
        shape = tf.shape(reference)
        cropped = padded[:, : shape[1], : shape[2], :]
        return tf.cast(tf.clip_by_value(tf.round(cropped), 0.0, 255.0), tf.uint8)

    def compute_output_shape(self, padded_shape, reference_shape):
        return reference_shape

    def compute_output_spec(self, padded, reference):
        return keras.KerasTensor(reference.shape, dtype="uint8")


@keras.saving.register_keras_serializable(package="kstyle")
class NearestUpsample2x(keras.layers.Layer):
    """Nearest-neighbour x2 upsampling through ``tf.image.resize``: equal to UpSampling2D(2)."""

    def call(self, inputs):
        shape = tf.shape(inputs)
        return tf.image.resize(inputs, (2 * shape[1], 2 * shape[2]), method="nearest")

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        double = lambda size: None if size is None else 2 * size  # noqa: E731
        return (batch, double(height), double(width), channels)


def _export_layer(layer):
    if isinstance(layer, keras.layers.UpSampling2D):
        return NearestUpsample2x(name=layer.name)
    return layer.__class__.from_config(layer.get_config())


def _is_instance_norm(layer):
    """Whether ``layer`` is a ``GroupNormalization`` with one group per channel (last axis)."""
    return (
        isinstance(layer, keras.layers.GroupNormalization)
        and layer.groups in (-1, layer.input.shape[-1])
        and layer.axis in (-1, 3)
        and layer.scale
        and layer.center
    )


def _serving_layer(layer):
    """``_export_layer``, and each instance norm as 4-D moments over (H, W).

    ``GroupNormalization`` reshapes to 5-D through the input's dynamic shape; in TFLite those
    SHAPE/RESHAPE ops and the 5-D MEAN fall outside XNNPACK and split its graph at every norm,
    which made the fp32 TFLite file 1.4x slower than TensorFlow. The same arithmetic on 4-D
    tensors runs in XNNPACK (about as fast as TensorFlow here).
    """
    if _is_instance_norm(layer):
        channels = layer.input.shape[-1]
        return ChannelEpsilonInstanceNorm([layer.epsilon] * channels, name=layer.name)
    return _export_layer(layer)


def export_model(transform_net, input_size=None, batch_size=None):
    """The uint8-in, uint8-out serving model of ``transform_net`` (same weights).

    Args:
        transform_net: a trained transform net (float RGB [0, 255] in and out).
        input_size: None for any H, W; an int N for a fixed N x N input.
        batch_size: None for any batch; an int for a fixed batch (TFLite uses 1).

    Returns:
        A ``keras.Model`` from uint8 (B, H, W, 3) to uint8 (B, H, W, 3).
    """
    fused = inference_net(transform_net)
    clone = keras.models.clone_model(fused, clone_function=_serving_layer)
    clone.set_weights(fused.get_weights())
    images = keras.Input(
        shape=(input_size, input_size, 3), batch_size=batch_size, dtype="uint8", name="image"
    )
    padded = PadToMultiple(name="pad_to_multiple")(images)
    stylized = clone(padded)
    outputs = CropToPixels(name="stylized")(stylized, images)
    return keras.Model(images, outputs, name=f"{transform_net.name}_uint8")


def serving_archive(transform_net, directory, input_size=None, batch_size=None, model=None):
    """Writes the uint8 serving model as a SavedModel with a ``serving_default`` signature.

    The signature takes ``image``: uint8 [batch, H, W, 3] and returns ``{"stylized": uint8
    [batch, H, W, 3]}``. Keras's ExportArchive tracks the weights, so converters freeze them.
    ``model``, when given, is a prebuilt serving model to write instead of ``export_model``'s.
    """
    if model is None:
        model = export_model(transform_net, input_size=input_size, batch_size=batch_size)
    spec = tf.TensorSpec([batch_size, input_size, input_size, 3], tf.uint8, name="image")
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serving_default", lambda image: {"stylized": model(image)}, input_signature=[spec]
    )
    archive.write_out(directory, verbose=False)
    return directory


@keras.saving.register_keras_serializable(package="kstyle")
class ChannelEpsilonInstanceNorm(keras.layers.Layer):
    """Instance normalization over (H, W) with one epsilon per channel (export graphs).

    ``GroupNormalization(groups=-1)`` of ``x`` equals this layer of ``s * (x - o)`` with
    epsilon ``eps * s**2`` for any per-channel ``s > 0`` and ``o``: that is what lets
    :func:`equalized_export_model` rescale the convolution before each norm exactly.
    """

    def __init__(self, epsilons, clip=None, **kwargs):
        super().__init__(**kwargs)
        self.epsilons = [float(e) for e in epsilons]
        self.clip = clip

    def build(self, input_shape):
        channels = len(self.epsilons)
        self.gamma = self.add_weight(shape=(channels,), initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=(channels,), initializer="zeros", name="beta")

    def call(self, inputs):
        if self.clip:
            inputs = tf.clip_by_value(inputs, -self.clip, self.clip)
        mean, variance = tf.nn.moments(inputs, axes=[1, 2], keepdims=True)
        epsilons = tf.constant(self.epsilons, tf.float32)
        inv = tf.math.rsqrt(variance + epsilons) * self.gamma
        return inputs * inv + (self.beta - mean * inv)

    def get_config(self):
        return {**super().get_config(), "epsilons": self.epsilons, "clip": self.clip}


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


def tflite_bytes(transform_net, quantize="none", input_size=None, calibration_images=None):
    """Converts the serving model to a TFLite flatbuffer (batch 1, uint8 in and out).

    Args:
        quantize: ``none`` (fp32), ``float16`` (fp16 weights), ``dynamic`` (int8 weights,
            dynamic-range activations) or ``int8`` (integer convolutions and activations
            calibrated on ``calibration_images``; the instance-norm arithmetic stays float; see
            :func:`int8_flatbuffer`).
        input_size: None for a dynamic H, W (resize the input tensor before use), or N.
        calibration_images: uint8 (H, W, 3) arrays, required for ``int8``.
    """
    import tempfile

    if quantize not in QUANTIZATIONS:
        raise KstyleError(f"unknown quantization {quantize!r}; use one of {QUANTIZATIONS}")
    if quantize == "int8" and not calibration_images:
        raise KstyleError("--quantize int8 needs --calibration-data DIR (representative photos)")
    if quantize == "int8":
        return int8_flatbuffer(transform_net, calibration_images, input_size)
    with tempfile.TemporaryDirectory() as directory:
        serving_archive(transform_net, directory, input_size=input_size, batch_size=1)
        converter = tf.lite.TFLiteConverter.from_saved_model(directory)
        if quantize == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif quantize == "dynamic":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        return converter.convert()


def load_calibration_images(folder, count=100, size=256):
    """The first ``count`` images under ``folder`` as (size, size, 3) uint8 arrays.

    Raises:
        KstyleError: the folder is missing or holds no readable image.
    """
    from kstyle.data import list_image_files
    from kstyle.stylize import load_image

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


def held_out_image(height=256, width=256) -> np.ndarray:
    """A real photo for verification, never used for calibration: matplotlib's sample portrait,
    resized to (height, width, 3) uint8."""
    from PIL import Image

    from kstyle.demo import sample_photo_paths

    with Image.open(sample_photo_paths()[0]) as photo:
        resized = photo.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
    return np.asarray(resized, dtype=np.uint8)


class Runner:
    """Runs one exported artifact on a (H, W, 3) uint8 image and returns the uint8 result."""

    def __init__(self, fmt, path):
        self.format = fmt
        if fmt == "saved_model":
            self.function = tf.saved_model.load(path).signatures["serving_default"]
        elif fmt == "tflite":
            from ai_edge_litert.interpreter import Interpreter

            self.interpreter = Interpreter(model_path=path, num_threads=os.cpu_count())
            self.input = self.interpreter.get_input_details()[0]
            self.output = self.interpreter.get_output_details()[0]
            self.shape = None
        elif fmt == "onnx":
            import onnxruntime

            onnxruntime.set_default_logger_severity(3)
            self.session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
            self.input_name = self.session.get_inputs()[0].name
        else:
            raise KstyleError(f"unknown format {fmt!r}; use one of {FORMATS}")

    def __call__(self, image: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(image[None], dtype=np.uint8)
        if self.format == "saved_model":
            return self.function(image=tf.constant(batch))["stylized"].numpy()[0]
        if self.format == "onnx":
            return self.session.run(None, {self.input_name: batch})[0][0]
        if self.shape != batch.shape:
            if -1 in self.input["shape_signature"]:
                self.interpreter.resize_tensor_input(self.input["index"], batch.shape)
            self.interpreter.allocate_tensors()
            self.shape = batch.shape
        self.interpreter.set_tensor(self.input["index"], batch)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output["index"])[0]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 images in dB (inf when equal)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


@dataclasses.dataclass
class Verification:
    """How one artifact compares with the Keras model on a held-out image."""

    format: str
    quantize: str | None
    path: str
    size_bytes: int
    max_abs_diff: int
    psnr_db: float
    latency_ms: float
    bar: str
    shortfall: str | None  # None when the bar is met

    @property
    def passed(self) -> bool:
        return self.shortfall is None

    def line(self) -> str:
        """One human-readable line for the export log."""
        name = self.format + (f" ({self.quantize})" if self.quantize else "")
        status = "ok" if self.passed else f"FAILED: {self.shortfall}"
        return (
            f"{name:<20} {self.size_bytes / 1e6:7.2f} MB  max|diff| {self.max_abs_diff:3d}  "
            f"PSNR {self.psnr_db:6.1f} dB  {self.latency_ms:8.1f} ms  [{self.bar}] {status}"
        )


def directory_size(path: str) -> int:
    """Bytes in a file, or in all files under a directory."""
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(path)
        for name in names
    )


def verify(fmt, path, transform_net, image, quantize=None, repeats=5) -> Verification:
    """Runs the artifact on ``image`` and checks it against ``stylize_array`` of the Keras net.

    Bars: fp32 formats within 1 uint8 level everywhere; TFLite float16 PSNR >= 40 dB,
    dynamic-range and int8 PSNR >= 30 dB.
    """
    from kstyle.stylize import stylize_array

    reference = stylize_array(transform_net, image)
    runner = Runner(fmt, path)
    output = runner(image)
    if output.shape != reference.shape:
        raise KstyleError(f"{path} returned shape {output.shape}, expected {reference.shape}")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        runner(image)
        times.append(time.perf_counter() - start)
    max_abs = int(np.abs(output.astype(np.int16) - reference.astype(np.int16)).max())
    quality = psnr(output, reference)
    if quantize in PSNR_BARS:
        bar = f"PSNR >= {PSNR_BARS[quantize]:g} dB"
        missing = PSNR_BARS[quantize] - quality
        shortfall = None if missing <= 0 else f"PSNR {quality:.1f} dB is {missing:.1f} dB short"
    else:
        bar = f"max|diff| <= {MAX_ABS_DIFF_BAR}"
        over = max_abs - MAX_ABS_DIFF_BAR
        shortfall = None if over <= 0 else f"max|diff| {max_abs} is {over} level(s) over"
    return Verification(
        fmt,
        quantize,
        path,
        directory_size(path),
        max_abs,
        quality,
        1000 * statistics.median(times),
        bar,
        shortfall,
    )


def describe_model(model_path: str) -> dict:
    """Name and style of a trained model, from its run directory's config.json if present."""
    run_dir = model_path if os.path.isdir(model_path) else os.path.dirname(model_path)
    name = os.path.basename(os.path.normpath(run_dir)) or "kstyle"
    style = None
    config_path = os.path.join(run_dir, "config.json")
    if os.path.isfile(config_path):
        try:
            with open(config_path) as file:
                style = os.path.basename(json.load(file).get("style") or "") or None
        except (OSError, ValueError):
            style = None
    return {"name": name, "style": style}


def write_metadata(path: str, fmt: str, quantize, input_size, description: dict) -> str:
    """Writes the JSON sidecar ``<path>.json`` (inside the directory for a SavedModel)."""
    import kstyle

    side = None if input_size is None else int(input_size)
    metadata = {
        **description,
        "format": fmt,
        "quantization": quantize,
        "kstyle_version": kstyle.__version__,
        "input": {
            "name": "image",
            "dtype": "uint8",
            "shape": [1 if fmt == "tflite" else None, side, side, 3],
            "layout": "NHWC",
            "channels": "RGB",
            "range": [0, 255],
            "min_size": SIZE_MULTIPLE,
        },
        "output": {
            "name": "stylized",
            "dtype": "uint8",
            "shape": "same as input",
            "channels": "RGB",
            "range": [0, 255],
        },
    }
    target = os.path.join(path, "kstyle.json") if os.path.isdir(path) else f"{path}.json"
    with open(target, "w") as file:
        json.dump(metadata, file, indent=2)
    return target


def _replace(temporary: str, target: str) -> None:
    if os.path.isdir(target):
        shutil.rmtree(target)
    os.replace(temporary, target)


def export(
    model_path,
    output_dir,
    formats=FORMATS,
    quantizations=("none",),
    input_size=None,
    calibration_data=None,
    calibration_count=100,
    verify_size=256,
    printer=print,
):
    """Writes and verifies the requested artifacts; returns their ``Verification`` records.

    Files in ``output_dir``: ``saved_model/``, ``model.tflite`` (fp32) or
    ``model_<quantization>.tflite``, ``model.onnx``, each with a JSON sidecar. Every file is
    written under a temporary name and renamed once complete.
    """
    from kstyle.stylize import load_transform_net

    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise KstyleError(f"unknown format {unknown[0]!r}; use one of {', '.join(FORMATS)}, all")
    for quantize in quantizations:
        if quantize not in QUANTIZATIONS:
            raise KstyleError(f"unknown quantization {quantize!r}; use one of {QUANTIZATIONS}")
    if input_size is not None and (input_size < SIZE_MULTIPLE):
        raise KstyleError(f"--input-size must be at least {SIZE_MULTIPLE}, got {input_size}")
    calibration = None
    if "tflite" in formats and "int8" in quantizations:
        calibration = load_calibration_images(
            calibration_data, calibration_count, input_size or verify_size
        )
    transform_net = load_transform_net(model_path)
    description = {**describe_model(model_path), "source": os.path.abspath(model_path)}
    os.makedirs(output_dir, exist_ok=True)
    side = input_size or verify_size
    image = held_out_image(side, side if input_size else side + side // 4 + 1)
    results = []
    for fmt in formats:
        for quantize in quantizations if fmt == "tflite" else (None,):
            if fmt == "saved_model":
                target = os.path.join(output_dir, "saved_model")
                temporary = os.path.join(output_dir, ".saved_model.tmp")
                shutil.rmtree(temporary, ignore_errors=True)  # left by an interrupted export
                serving_archive(transform_net, temporary, input_size=input_size)
            elif fmt == "tflite":
                suffix = "" if quantize == "none" else f"_{quantize}"
                target = os.path.join(output_dir, f"model{suffix}.tflite")
                temporary = target + ".tmp"
                flatbuffer = tflite_bytes(transform_net, quantize, input_size, calibration)
                with open(temporary, "wb") as file:
                    file.write(flatbuffer)
            else:
                target = os.path.join(output_dir, "model.onnx")
                temporary = os.path.join(output_dir, ".model.tmp.onnx")
                onnx_model = export_model(transform_net, input_size=input_size)
                onnx_model(image[None])  # Keras's ONNX export needs a model that has been called
                onnx_model.export(temporary, format="onnx", verbose=False)
            _replace(temporary, target)
            write_metadata(target, fmt, quantize, input_size, description)
            result = verify(fmt, target, transform_net, image, quantize=quantize)
            printer(result.line())
            results.append(result)
    return results
