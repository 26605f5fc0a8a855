"""The image transformation network of Johnson et al. (2016), as in the reference example,
slimmer presets of it, and a layout built for real time (the presets: :mod:`kstyle.presets`).

conv9x9/32 -> conv3x3/64 s2 -> conv3x3/128 s2 (each conv + instance norm + ReLU),
5 residual blocks (conv-IN-ReLU-conv-IN + skip, no ReLU after the add),
2 x (nearest upsample x2 + conv3x3 + IN + ReLU) to 64 and 32 channels, conv9x9/3,
and the output scaling 255 * (tanh(y) + 1) / 2. With the defaults: 1,679,235 parameters.

Each builder takes its normalization as a parameter (``normalizer``, as magenta's
image_stylization nets take ``normalizer_fn``): called as ``(x, name) -> tensor`` after every
normalized convolution, the reference instance norm by default; a conditional instance norm
(:mod:`kstyle.norms`) makes a net of N styles with a second input, the style vector (B, N).

The default net (zero padding) is built from built-in Keras layers only, so its ``.keras`` file
opens with ``keras.saving.load_model`` on any backend without ``import kstyle``
(``docs/other-stacks.md``); reflect padding uses kstyle's ``ReflectionPadding2D``.
"""

import keras
import numpy as np
from keras import layers, ops

from kstyle.checks import model_file
from kstyle.constants import PADDINGS
from kstyle.errors import KstyleError, cause_of
from kstyle.norms import instance_norm, normalizer_for
from kstyle.presets import DEFAULT_ARCH, JOHNSON_LAYOUT, LIVE_LAYOUT, PRESETS


@keras.saving.register_keras_serializable(package="kstyle")
class ReflectionPadding2D(layers.Layer):
    """Pads height and width by ``padding`` pixels on each side, mirroring the border.

    Input (B, H, W, C) -> output (B, H + 2p, W + 2p, C). Needs H, W > p.
    """

    def __init__(self, padding=1, **kwargs):
        super().__init__(**kwargs)
        self.padding = int(padding)

    def call(self, inputs):
        p = self.padding
        return ops.pad(inputs, [[0, 0], [p, p], [p, p], [0, 0]], mode="reflect")

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        grow = 2 * self.padding
        return (
            batch,
            None if height is None else height + grow,
            None if width is None else width + grow,
            channels,
        )

    def get_config(self):
        return {**super().get_config(), "padding": self.padding}


@keras.saving.register_keras_serializable(package="kstyle")
class TanhToPixels(layers.Layer):
    """Maps unbounded activations to pixel values: ``255 * (tanh(x) + 1) / 2``, in [0, 255].

    The output layer of models saved before the built-in output (:func:`pixels_output`); kept
    registered so that their files still load. New nets do not use it.
    """

    def call(self, inputs):
        return 127.5 * (ops.tanh(inputs) + 1.0)


@keras.saving.register_keras_serializable(package="kstyle")
class DepthToSpace(layers.Layer):
    """Pixel shuffle: (B, H, W, C * b * b) -> (B, H * b, W * b, C), each pixel's channels
    spread over a b x b block as TensorFlow's ``depth_to_space`` and ONNX's ``DepthToSpace``
    (DCR) do: output (y * b + i, x * b + j, c) is input (y, x, (i * b + j) * C + c).

    Made of ``keras.ops`` reshapes and a transpose, so it runs on every backend; the exports
    write the runtimes' own op (``kstyle.export.serving.export_layer``).
    """

    def __init__(self, block_size=2, **kwargs):
        super().__init__(**kwargs)
        self.block_size = int(block_size)
        self.spatial_scale = self.block_size  # read by kstyle.graph.spatial_change

    def call(self, inputs):
        b = self.block_size
        shape = ops.shape(inputs)
        height, width, channels = shape[1], shape[2], inputs.shape[-1] // (b * b)
        x = ops.reshape(inputs, (-1, height, width, b, b, channels))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        return ops.reshape(x, (-1, height * b, width * b, channels))

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        b = self.block_size
        grow = lambda side: None if side is None else side * b  # noqa: E731
        return (batch, grow(height), grow(width), channels // (b * b))

    def get_config(self):
        return {**super().get_config(), "block_size": self.block_size}


def _conv(x, filters, kernel_size, strides, padding, name, separable=False):
    """A convolution with zero 'same' or reflect padding; ``separable``: a depthwise
    ``kernel_size`` convolution (no bias) then a 1x1 ``Conv2D`` named ``name``."""
    if padding == "reflect":
        x = ReflectionPadding2D(kernel_size // 2, name=f"{name}_pad")(x)
        conv_padding = "valid"
    else:
        conv_padding = "same"
    if not separable:
        return layers.Conv2D(
            filters, kernel_size, strides=strides, padding=conv_padding, name=name
        )(x)
    x = layers.DepthwiseConv2D(
        kernel_size, strides=strides, padding=conv_padding, use_bias=False, name=f"{name}_dw"
    )(x)
    return layers.Conv2D(filters, 1, name=name)(x)


def _conv_norm_relu(x, filters, kernel_size, strides, padding, name, separable, normalizer):
    x = _conv(x, filters, kernel_size, strides, padding, f"{name}_conv", separable)
    x = normalizer(x, f"{name}_norm")
    return layers.ReLU(name=f"{name}_relu")(x)


def _residual_block(x, filters, padding, name, separable, normalizer):
    y = _conv_norm_relu(x, filters, 3, 1, padding, f"{name}_a", separable, normalizer)
    y = _conv(y, filters, 3, 1, padding, f"{name}_b_conv", separable)
    y = normalizer(y, f"{name}_b_norm")
    return layers.Add(name=f"{name}_add")([x, y])


def pixels_output(x):
    """``127.5 * (tanh(x) + 1)`` from built-in layers: (B, H, W, C) -> same shape, in [0, 255].

    Computed in float32 (also under a mixed-precision policy), bit for bit as
    :class:`TanhToPixels`: ``Rescaling(127.5, offset=127.5)`` would round ``t * 127.5`` before
    adding (or fuse it into one FMA), which differs from ``127.5 * (t + 1)`` in the last bit for
    many values; ``t * 1 + 1`` then ``u * 127.5 + 0`` is exact even as FMAs. The
    gradient (``127.5 * (1 - t**2)``) is the same too.
    """
    t = layers.Activation("tanh", name="out_tanh", dtype="float32")(x)
    t = layers.Rescaling(1.0, offset=1.0, name="to_pixels_offset", dtype="float32")(t)
    return layers.Rescaling(127.5, name="to_pixels", dtype="float32")(t)


def _plain_residual_block(x, filters, padding, name):
    """A residual block without norms: separable conv, ReLU, separable conv, add."""
    y = _conv(x, filters, 3, 1, padding, f"{name}_a_conv", separable=True)
    y = layers.ReLU(name=f"{name}_a_relu")(y)
    y = _conv(y, filters, 3, 1, padding, f"{name}_b_conv", separable=True)
    return layers.Add(name=f"{name}_add")([x, y])


def build_live_net(
    quarter,
    eighth,
    blocks,
    out_kernel,
    block_norms=True,
    half=0,
    padding="zeros",
    name="transform_net",
    normalizer=instance_norm,
):
    """A transform net laid out for a frame budget: almost nothing runs at full resolution.

    A 4x4 stride-4 convolution (a learned space-to-depth) takes the image to 1/4 resolution
    (``quarter`` channels); a depthwise-separable stride-2 convolution to 1/8 (``eighth``
    channels), where ``blocks`` depthwise-separable residual blocks run; a nearest x2
    upsampling and a separable convolution come back to 1/4, where the stem's features are
    added back (a skip that carries detail past the body); an ``out_kernel`` convolution to
    48 channels, the pixel mapping of :func:`pixels_output` and a pixel shuffle
    (:class:`DepthToSpace`, x4) write the pixels: only the first convolution and the shuffle
    touch full-resolution tensors. Instance
    norms follow the stem, the down and up convolutions and (``block_norms``) every
    residual block's convolutions: all at 1/4 or 1/8 resolution. Built-in Keras layers but
    the pixel shuffle (plus ``ReflectionPadding2D`` with ``padding="reflect"``).
    ``normalizer`` replaces those instance norms (see the module).

    Returns:
        A ``keras.Model`` from RGB floats in [0, 255] (B, H, W, 3) to the same; H and W
        multiples of 8 give an output of exactly the input size.
    """
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    inputs = keras.Input(shape=(None, None, 3), name="content")
    x = layers.Conv2D(quarter, 4, strides=4, name="stem_conv")(inputs)
    x = normalizer(x, "stem_norm")
    skip = layers.ReLU(name="stem_relu")(x)
    x = _conv_norm_relu(skip, eighth, 3, 2, padding, "down", True, normalizer)
    for i in range(blocks):
        if block_norms:
            x = _residual_block(x, eighth, padding, f"res{i + 1}", True, normalizer)
        else:
            x = _plain_residual_block(x, eighth, padding, f"res{i + 1}")
    x = layers.UpSampling2D(2, interpolation="nearest", name="up_upsample")(x)
    x = _conv_norm_relu(x, quarter, 3, 1, padding, "up", True, normalizer)
    x = layers.Add(name="skip_add")([x, skip])
    block = 4
    if half:  # a x2 shuffle to 1/2 resolution and a convolution there, then x2 again
        x = _conv(x, half * 2 * 2, 3, 1, padding, "half_conv")
        x = layers.ReLU(name="half_relu")(DepthToSpace(2, name="half_shuffle")(x))
        block = 2
    x = _conv(x, 3 * block * block, out_kernel, 1, padding, "out_conv")
    # the pixel mapping works on each value alone: before the shuffle, it runs at 1/4
    outputs = DepthToSpace(block, name="out_shuffle")(pixels_output(x))
    model = keras.Model(_model_inputs(inputs, normalizer), outputs, name=name)
    if out_kernel == 3:
        _bilinear_start(model.get_layer("out_conv"), block=block)
    if half:
        _bilinear_start(model.get_layer("half_conv"), block=2)
    return model


def _bilinear_weights(block: int) -> np.ndarray:
    """(block, 3): the weights of the previous, same and next low-resolution row for each of
    a block's ``block`` rows in a bilinear x``block`` upsampling (pixel centres aligned)."""
    offsets = (2 * np.arange(block) + 1 - block) / (2 * block)  # in low-resolution rows
    return np.stack([np.maximum(-offsets, 0), 1 - np.abs(offsets), np.maximum(offsets, 0)], 1)


def _bilinear_start(conv, block):
    """Initializes ``conv`` (3x3, before a x``block`` pixel shuffle) so that the shuffled
    output starts as a bilinear upsampling of one random 1x1 projection of its input to RGB:
    an untrained net draws no blocks and no fixed pattern inside them for training to unlearn
    (ICNR, Aitken et al. 2017, with bilinear in place of nearest)."""
    kernel, bias = conv.get_weights()
    channels = kernel.shape[-1] // (block * block)
    projection = kernel[1, 1, :, :channels]  # (input channels, RGB)
    rows = _bilinear_weights(block)
    start = np.zeros_like(kernel)
    for i in range(block):
        for j in range(block):
            taps = np.outer(rows[i], rows[j])  # (3, 3) over the input's neighbours
            phase = slice((i * block + j) * channels, (i * block + j + 1) * channels)
            start[..., phase] = taps[:, :, None, None] * projection
    conv.set_weights([start, np.tile(bias[:channels], block * block)])


def build_johnson_net(
    width,
    num_residual_blocks,
    separable,
    edge_kernel,
    padding="zeros",
    name="transform_net",
    normalizer=instance_norm,
):
    """Johnson et al.'s layout (see the module) with its channel counts, residual blocks and
    first and last kernels as knobs; :func:`build_transform_net` documents each knob.

    Raises:
        ValueError: a width that is not positive, or an edge kernel that is not a positive
            odd size.
    """
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    if edge_kernel < 1 or edge_kernel % 2 == 0:
        raise ValueError(f"edge_kernel must be a positive odd size, got {edge_kernel}")
    c1, c2, c3 = (max(1, round(channels * width)) for channels in (32, 64, 128))
    inputs = keras.Input(shape=(None, None, 3), name="content")
    x = _conv_norm_relu(inputs, c1, edge_kernel, 1, padding, "down1", False, normalizer)
    x = _conv_norm_relu(x, c2, 3, 2, padding, "down2", separable, normalizer)
    x = _conv_norm_relu(x, c3, 3, 2, padding, "down3", separable, normalizer)
    for i in range(num_residual_blocks):
        x = _residual_block(x, c3, padding, f"res{i + 1}", separable, normalizer)
    x = layers.UpSampling2D(2, interpolation="nearest", name="up1_upsample")(x)
    x = _conv_norm_relu(x, c2, 3, 1, padding, "up1", separable, normalizer)
    x = layers.UpSampling2D(2, interpolation="nearest", name="up2_upsample")(x)
    x = _conv_norm_relu(x, c1, 3, 1, padding, "up2", separable, normalizer)
    x = _conv(x, 3, edge_kernel, 1, padding, "out_conv")
    return keras.Model(_model_inputs(inputs, normalizer), pixels_output(x), name=name)


def _model_inputs(content, normalizer):
    """The content input alone, or with the inputs the normalizer adds (its ``inputs``, such
    as a conditional norm's style vector; a plain function ``(x, name)`` adds none)."""
    extra = tuple(getattr(normalizer, "inputs", ()))
    return [content, *extra] if extra else content


# The builder of each layout of kstyle.presets.
BUILDERS = {JOHNSON_LAYOUT: build_johnson_net, LIVE_LAYOUT: build_live_net}


def build_transform_net(
    arch: str = DEFAULT_ARCH,
    padding: str = "zeros",
    num_residual_blocks: int | None = None,
    width: float | None = None,
    separable: bool | None = None,
    edge_kernel: int | None = None,
    name="transform_net",
    num_styles: int = 1,
    normalizer=None,
):
    """Builds a transform network as a Keras functional model.

    Args:
        arch: a preset of :data:`kstyle.presets.PRESETS`: ``"johnson"`` (the reference net,
            1,679,235 parameters), ``"slim"``, ``"tiny"`` or ``"live"``. The knobs below,
            when given, replace the preset's values (the johnson layout's presets only).
        padding: ``"zeros"`` (the reference's zero "same" padding) or ``"reflect"``
            (mirror padding, fewer border artefacts; same parameter count).
        num_residual_blocks: 5 in the reference.
        width: multiplies every hidden layer's channel count (32, 64, 128 in the reference;
            rounded, at least 1).
        separable: each 3x3 convolution becomes a ``DepthwiseConv2D`` (no bias) then a 1x1
            ``Conv2D``, so the layer before every instance norm is still a plain ``Conv2D``
            (the int8 export's equalization and the staged statistics need nothing new).
        edge_kernel: the first and last convolutions' kernel size (odd; 9 in the reference).
        num_styles: 1 (the reference's instance norms; one input) or N > 1: conditional
            instance norms (:class:`kstyle.norms.ConditionalInstanceNorm`) and a second
            input ``style`` (B, N), the style vector.
        normalizer: ``(x, name) -> tensor``, applied after every normalized convolution,
            in place of ``num_styles``' choice (:func:`kstyle.norms.normalizer_for`).

    Returns:
        A ``keras.Model`` from RGB floats in [0, 255] of shape (B, H, W, 3) to RGB floats in
        [0, 255] of the same shape. H and W are free; multiples of the preset's
        ``size_multiple`` give an output of exactly the input size. The output is float32
        under any dtype policy; with ``padding="zeros"`` every layer is a built-in Keras
        layer but ``live``'s pixel shuffle.

    Raises:
        ValueError: an unknown preset or padding, a knob the preset does not have, or a bad
            knob value.
    """
    preset = PRESETS.get(arch)
    if preset is None:
        raise ValueError(f"arch must be one of {tuple(PRESETS)}, got {arch!r}")
    given = dict(
        num_residual_blocks=num_residual_blocks,
        width=width,
        separable=separable,
        edge_kernel=edge_kernel,
    )
    given = {key: value for key, value in given.items() if value is not None}
    unknown = sorted(set(given) - set(preset.knobs))
    if unknown:
        raise ValueError(f"the {arch!r} preset has no knob {', '.join(unknown)}")
    builder = BUILDERS[preset.layout]
    normalizer = normalizer or normalizer_for(num_styles)
    return builder(**{**preset.knobs, **given}, padding=padding, name=name, normalizer=normalizer)


def load_transform_net(path: str):
    """Loads a trained transform network from a ``.keras`` file or a training run directory.

    Raises:
        KstyleError: nothing there, an exported model (TFLite, ONNX, SavedModel), a damaged
            or foreign file (:func:`kstyle.checks.model_file` tells them apart), or a file
            that Keras cannot load as a transform net.
    """
    path = model_file(path)
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as error:
        raise KstyleError(f"could not load model {path}: {cause_of(error)}") from error
    check_transform_net(model, path)
    return model


def check_transform_net(model, source: str) -> None:
    """Raises KstyleError unless ``model`` maps (B, H, W, 3) images to (B, H, W, 3) images,
    as every transform net does, with a style vector (B, N) as its second input where it has
    one (a net of N styles; ``source`` names it in the message)."""
    inputs = list(getattr(model, "inputs", None) or [])
    outputs = getattr(model, "outputs", None) or []
    style = [tensor for tensor in inputs[1:2] if _is_style_input(tensor)]
    images = [tensor for tensor in inputs if tensor not in style]
    shapes = [tuple(tensor.shape) for tensor in (*images, *outputs)]
    if (
        len(images) != 1
        or len(outputs) != 1
        or any(len(shape) != 4 or shape[-1] != 3 for shape in shapes)
    ):
        raise KstyleError(
            f"{source} is not a style transform network: it maps {shapes[:1] or '?'} to "
            f"{shapes[1:] or '?'}, not RGB images (batch, height, width, 3) to the same"
        )


def _is_style_input(tensor) -> bool:
    """Whether a model input is a style vector: (B, N) with N known."""
    shape = tuple(tensor.shape)
    return len(shape) == 2 and shape[1] is not None
