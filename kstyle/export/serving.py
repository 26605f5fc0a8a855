"""The serving model every export writes: uint8 RGB ``[batch, H, W, 3]`` in, uint8 RGB of the
same shape out, for any H and W of at least 4 pixels (the graph reflect-pads to a multiple of
4 and crops back, exactly as ``kstyle.stylize_array`` does).

:func:`export_model` builds it from a transform net with the same weights, with substitutions
that converters need and that do not change the output: the fused inference graph
(:func:`kstyle.forward.inference_net`), nearest upsampling by ``tf.image.resize`` (whose
static channel count the TFLite converter keeps), and instance norms as 4-D moments
(which XNNPACK runs; ``GroupNormalization``'s dynamic 5-D reshapes split its graph).
"""

import keras
import tensorflow as tf

from kstyle.checks import fixed_size
from kstyle.constants import NO_QUANTIZATION, SIZE_MULTIPLE, STYLE_INPUT
from kstyle.forward import inference_net
from kstyle.graph import Graph, graph_size_multiple, is_instance_norm
from kstyle.quiet import filtered_stderr
from kstyle.style_tables import style_count
from kstyle.transform_net import DepthToSpace

OUTPUT_NAME = "stylized"  # every format's output (the SavedModel signature's key too)
IMAGE_INPUT = "image"  # every format's image input


@keras.saving.register_keras_serializable(package="kstyle")
class PadToMultiple(keras.layers.Layer):
    """uint8 or float (B, H, W, 3) -> float32, reflect-padded at the bottom and right to
    multiples of ``multiple``. H and W must be at least ``multiple`` pixels."""

    def __init__(self, multiple=SIZE_MULTIPLE, **kwargs):
        super().__init__(**kwargs)
        self.multiple = int(multiple)

    def call(self, images):
        height, width = images.shape[1:3]
        if height and width and not height % self.multiple and not width % self.multiple:
            # a fixed size that needs no padding: no dynamic shapes, which would keep a
            # runtime's delegate (XNNPACK in TFLite) off the whole graph
            return tf.cast(images, tf.float32)
        shape = tf.shape(images)
        # (m - h % m) % m, not (-h) % m: ONNX's Mod would take the sign of a negative operand
        pad_h = (self.multiple - shape[1] % self.multiple) % self.multiple
        pad_w = (self.multiple - shape[2] % self.multiple) % self.multiple
        # padded before the cast: a runtime's dynamic pad (outside XNNPACK in TFLite) then
        # moves a quarter of the bytes, and the float graph after it is one delegate partition
        padded = tf.pad(images, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]], mode="REFLECT")
        # an explicit channel count: dynamic padding would otherwise lose it in TFLite
        padded = tf.reshape(padded, [shape[0], shape[1] + pad_h, shape[2] + pad_w, 3])
        return tf.cast(padded, tf.float32)

    def compute_output_spec(self, images):
        return keras.KerasTensor((images.shape[0], None, None, 3), dtype="float32")

    def get_config(self):
        return {**super().get_config(), "multiple": self.multiple}


@keras.saving.register_keras_serializable(package="kstyle")
class CropToPixels(keras.layers.Layer):
    """Rounds ``padded`` (B, H', W', 3) to uint8 and crops it to the size of ``reference``
    (rounded first: the float ops stay in one delegate partition, the crop moves bytes)."""

    def call(self, padded, reference):
        pixels = tf.cast(tf.clip_by_value(tf.round(padded), 0.0, 255.0), tf.uint8)
        if None not in padded.shape[1:3] and padded.shape[1:3] == reference.shape[1:3]:
            return pixels
        shape = tf.shape(reference)
        return pixels[:, : shape[1], : shape[2], :]

    def compute_output_shape(self, padded_shape, reference_shape):
        return reference_shape

    def compute_output_spec(self, padded, reference):
        return keras.KerasTensor(reference.shape, dtype="uint8")


@keras.saving.register_keras_serializable(package="kstyle")
class NearestUpsample2x(keras.layers.Layer):
    """Nearest-neighbour x2 upsampling through ``tf.image.resize``: equal to UpSampling2D(2)."""

    spatial_scale = 2  # read by kstyle.graph.spatial_change

    def call(self, inputs):
        shape = tf.shape(inputs)
        return tf.image.resize(inputs, (2 * shape[1], 2 * shape[2]), method="nearest")

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        double = lambda size: None if size is None else 2 * size  # noqa: E731
        return (batch, double(height), double(width), channels)


@keras.saving.register_keras_serializable(package="kstyle")
class NativeDepthToSpace(DepthToSpace):
    """:class:`kstyle.transform_net.DepthToSpace` as ``tf.nn.depth_to_space``: the same
    function, which converters write as one op (TFLite ``DEPTH_TO_SPACE``, ONNX
    ``DepthToSpace``) instead of reshapes around a 6-D transpose."""

    def call(self, inputs):
        return tf.nn.depth_to_space(inputs, self.block_size)


def export_layer(layer):
    """A fresh copy of ``layer`` for an export graph (same config; the caller sets the weights),
    with a nearest x2 ``UpSampling2D`` as :class:`NearestUpsample2x` (the same function, whose
    static channel count the TFLite converter keeps)."""
    if (
        isinstance(layer, keras.layers.UpSampling2D)
        and tuple(layer.size) == (2, 2)
        and layer.interpolation == "nearest"
        and layer.data_format == "channels_last"
    ):
        return NearestUpsample2x(name=layer.name)
    if isinstance(layer, DepthToSpace):
        return NativeDepthToSpace(layer.block_size, name=layer.name)
    return layer.__class__.from_config(layer.get_config())


def moment_norms(graph) -> dict:
    """``{layer name: channels}`` of the instance norms of ``graph`` (a
    :class:`kstyle.graph.Graph`) that export graphs compute as 4-D moments
    (:class:`ChannelEpsilonInstanceNorm`): one group per channel, with a learned scale and
    offset or (a conditional norm's, whose scale and offset come from the style) neither.

    ``GroupNormalization`` reshapes to 5-D through the input's dynamic shape; in TFLite those
    SHAPE/RESHAPE ops and the 5-D MEAN fall outside XNNPACK and split its graph at every norm.
    The same arithmetic on 4-D tensors runs in XNNPACK (``docs/performance.md`` has timings).
    """
    norms = {}
    for node in graph.nodes_of(keras.layers.GroupNormalization):
        channels = graph.channels(node.inputs[0])
        layer = node.layer
        both_or_neither = bool(layer.scale) == bool(layer.center)
        if channels and is_instance_norm(layer, channels) and both_or_neither:
            norms[node.name] = channels
    return norms


def export_model(transform_net, input_size=None, batch_size=None):
    """The uint8-in, uint8-out serving model of ``transform_net`` (same weights).

    Args:
        transform_net: a trained transform net (float RGB [0, 255] in and out).
        input_size: None for any H, W; an int N for a fixed N x N input; (H, W) for H x W.
        batch_size: None for any batch; an int for a fixed batch (TFLite uses 1).

    Returns:
        A ``keras.Model`` from uint8 (B, H, W, 3) to uint8 (B, H, W, 3).
    """
    fused = inference_net(transform_net)
    graph = Graph(fused)
    norms = moment_norms(graph)

    def substitute(layer):
        if layer.name in norms:
            epsilons = [layer.epsilon] * norms[layer.name]
            return ChannelEpsilonInstanceNorm(epsilons, affine=layer.scale, name=layer.name)
        return export_layer(layer)

    clone = keras.models.clone_model(fused, clone_function=substitute)
    clone.set_weights(fused.get_weights())
    return serving_model(clone, graph_size_multiple(graph), input_size, batch_size)


def serving_inputs(transform_net, input_size=None, batch_size=None) -> list:
    """The serving model's inputs for ``transform_net``: ``image``, uint8 (B, H, W, 3), and
    for a net of N styles ``style``, float32 (B, N): each image's style weights."""
    images = keras.Input(
        shape=(*fixed_size(input_size), 3), batch_size=batch_size, dtype="uint8", name=IMAGE_INPUT
    )
    count = style_count(transform_net)
    if count == 1:
        return [images]
    style = keras.Input(shape=(count,), batch_size=batch_size, dtype="float32", name=STYLE_INPUT)
    return [images, style]


def serving_model(net, multiple, input_size=None, batch_size=None, name=None) -> keras.Model:
    """``net`` (float RGB [0, 255] in and out, its style vector second for N styles) wrapped
    into the uint8 serving model: reflect-padded to ``multiple``, rounded and cropped back."""
    inputs = serving_inputs(net, input_size, batch_size)
    padded = PadToMultiple(multiple, name="pad_to_multiple")(inputs[0])
    stylized = net([padded, *inputs[1:]]) if len(inputs) > 1 else net(padded)
    outputs = CropToPixels(name=OUTPUT_NAME)(stylized, inputs[0])
    model_inputs = inputs if len(inputs) > 1 else inputs[0]
    return keras.Model(model_inputs, outputs, name=name or f"{net.name}_uint8")


def serving_signature(model, input_size=None, batch_size=None) -> list:
    """The ``tf.TensorSpec`` of each input of ``model`` (a serving model), in order."""
    specs = [tf.TensorSpec([batch_size, *fixed_size(input_size), 3], tf.uint8, name=IMAGE_INPUT)]
    if len(model.inputs) > 1:
        count = model.inputs[1].shape[-1]
        specs.append(tf.TensorSpec([batch_size, count], tf.float32, name=STYLE_INPUT))
    return specs


def serving_archive(transform_net, directory, input_size=None, batch_size=None, model=None):
    """Writes the uint8 serving model as a SavedModel with a ``serving_default`` signature.

    The signature takes ``image``: uint8 [batch, H, W, 3] (and for a net of N styles
    ``style``: float32 [batch, N]) and returns ``{"stylized": uint8 [batch, H, W, 3]}``.
    Keras's ExportArchive tracks the weights, so converters freeze them. ``model``, when
    given, is a prebuilt serving model to write instead of ``export_model``'s.
    """
    if model is None:
        model = export_model(transform_net, input_size=input_size, batch_size=batch_size)
    specs = serving_signature(model, input_size, batch_size)
    archive = keras.export.ExportArchive()
    archive.track(model)
    if len(specs) == 1:
        endpoint = lambda image: {OUTPUT_NAME: model(image)}  # noqa: E731
    else:
        endpoint = lambda image, style: {OUTPUT_NAME: model([image, style])}  # noqa: E731
    archive.add_endpoint("serving_default", endpoint, input_signature=specs)
    archive.write_out(directory, verbose=False)
    return directory


@keras.saving.register_keras_serializable(package="kstyle")
class ChannelEpsilonInstanceNorm(keras.layers.Layer):
    """Instance normalization over (H, W) with one epsilon per channel (export graphs).

    ``GroupNormalization(groups=-1)`` of ``x`` equals this layer of ``s * (x - o)`` with
    epsilon ``eps * s**2`` for any per-channel ``s > 0`` and ``o``: that is what lets
    :func:`equalized_export_model` rescale the convolution before each norm exactly.

    ``affine`` False leaves out the learned scale and offset (a conditional norm's: its
    style's scale and offset are applied after it).
    """

    def __init__(self, epsilons, clip=None, affine=True, **kwargs):
        super().__init__(**kwargs)
        self.epsilons = [float(e) for e in epsilons]
        self.clip = clip
        self.affine = bool(affine)

    def build(self, input_shape):
        channels = len(self.epsilons)
        if self.affine:
            self.gamma = self.add_weight(shape=(channels,), initializer="ones", name="gamma")
            self.beta = self.add_weight(shape=(channels,), initializer="zeros", name="beta")

    def call(self, inputs):
        if self.clip:
            inputs = tf.clip_by_value(inputs, -self.clip, self.clip)
        mean, variance = tf.nn.moments(inputs, axes=[1, 2], keepdims=True)
        epsilons = tf.constant(self.epsilons, tf.float32)
        inv = tf.math.rsqrt(variance + epsilons)
        if not self.affine:
            return (inputs - mean) * inv
        inv = inv * self.gamma
        return inputs * inv + (self.beta - mean * inv)

    def get_config(self):
        config = {**super().get_config(), "epsilons": self.epsilons, "clip": self.clip}
        return {**config, "affine": self.affine}


def plain_tflite_bytes(transform_net, quantize=NO_QUANTIZATION, input_size=None):
    """The serving model as a TFLite flatbuffer (batch 1): ``none`` (fp32), ``float16`` (fp16
    weights) or ``dynamic`` (int8 weights, dynamic-range activations)."""
    import tempfile

    with tempfile.TemporaryDirectory() as directory, filtered_stderr():  # the converter's lines
        serving_archive(transform_net, directory, input_size=input_size, batch_size=1)
        converter = tf.lite.TFLiteConverter.from_saved_model(directory)
        if quantize == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif quantize == "dynamic":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        return converter.convert()
