"""The image transformation network of Johnson et al. (2016), as in the reference example.

conv9x9/32 -> conv3x3/64 s2 -> conv3x3/128 s2 (each conv + instance norm + ReLU),
5 residual blocks (conv-IN-ReLU-conv-IN + skip, no ReLU after the add),
2 x (nearest upsample x2 + conv3x3 + IN + ReLU) to 64 and 32 channels, conv9x9/3,
and the output scaling 255 * (tanh(y) + 1) / 2. With the defaults: 1,679,235 parameters.
"""

import collections

import keras
from keras import layers, ops

PADDINGS = ("zeros", "reflect")
INSTANCE_NORM_EPSILON = 1e-5  # the reference (MATLAB) default; Keras's own default is 1e-3


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
    """Maps unbounded activations to pixel values: ``255 * (tanh(x) + 1) / 2``, in [0, 255]."""

    def call(self, inputs):
        return 127.5 * (ops.tanh(inputs) + 1.0)


def _conv(x, filters, kernel_size, strides, padding, name):
    if padding == "reflect":
        x = ReflectionPadding2D(kernel_size // 2, name=f"{name}_pad")(x)
        conv_padding = "valid"
    else:
        conv_padding = "same"
    return layers.Conv2D(filters, kernel_size, strides=strides, padding=conv_padding, name=name)(x)


def _instance_norm(x, name):
    return layers.GroupNormalization(groups=-1, epsilon=INSTANCE_NORM_EPSILON, name=name)(x)


def _conv_norm_relu(x, filters, kernel_size, strides, padding, name):
    x = _conv(x, filters, kernel_size, strides, padding, f"{name}_conv")
    x = _instance_norm(x, f"{name}_norm")
    return layers.ReLU(name=f"{name}_relu")(x)


def _residual_block(x, padding, name):
    y = _conv_norm_relu(x, 128, 3, 1, padding, f"{name}_a")
    y = _conv(y, 128, 3, 1, padding, f"{name}_b_conv")
    y = _instance_norm(y, f"{name}_b_norm")
    return layers.Add(name=f"{name}_add")([x, y])


def build_transform_net(padding: str = "zeros", num_residual_blocks: int = 5, name="transform_net"):
    """Builds the transform network as a Keras functional model.

    Args:
        padding: ``"zeros"`` (the reference's zero "same" padding) or ``"reflect"``
            (mirror padding, fewer border artefacts; same parameter count).
        num_residual_blocks: 5 in the reference.

    Returns:
        A ``keras.Model`` from RGB floats in [0, 255] of shape (B, H, W, 3) to RGB floats in
        [0, 255] of the same shape. H and W are free; multiples of 4 give an output of exactly
        the input size (the two stride-2 convolutions round odd sizes up).
    """
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    inputs = keras.Input(shape=(None, None, 3), name="content")
    x = _conv_norm_relu(inputs, 32, 9, 1, padding, "down1")
    x = _conv_norm_relu(x, 64, 3, 2, padding, "down2")
    x = _conv_norm_relu(x, 128, 3, 2, padding, "down3")
    for i in range(num_residual_blocks):
        x = _residual_block(x, padding, f"res{i + 1}")
    x = layers.UpSampling2D(2, interpolation="nearest", name="up1_upsample")(x)
    x = _conv_norm_relu(x, 64, 3, 1, padding, "up1")
    x = layers.UpSampling2D(2, interpolation="nearest", name="up2_upsample")(x)
    x = _conv_norm_relu(x, 32, 3, 1, padding, "up2")
    x = _conv(x, 3, 9, 1, padding, "out_conv")
    outputs = TanhToPixels(name="to_pixels", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name)


# For output phase a (row or column parity), which of the 3 kernel taps land on the low-resolution
# input at offsets 0 and 1 of a window that starts one pixel before the output's source pixel.
_PHASE_TAPS = (((1, 0, 0), (0, 1, 1)), ((1, 1, 0), (0, 0, 1)))


@keras.saving.register_keras_serializable(package="kstyle")
class UpsampleConv2D(layers.Layer):
    """Nearest x2 upsampling then a 3x3 convolution, computed at the low resolution.

    Each output pixel of a 3x3 convolution over a nearest-upsampled image sees only 2x2 input
    pixels, so the four output phases are four 2x2 convolutions (the 3x3 kernel's taps summed
    per phase) interleaved by ``depth_to_space``: 4/9 of the multiply-adds, the same function.
    Zero padding of the upsampled image is zero padding here; reflect padding of the upsampled
    image by one pixel is symmetric padding here. (B, H, W, C) -> (B, 2H, 2W, filters).

    ``source``, when given, is the ``Conv2D`` whose kernel and bias this layer reads (shared,
    not copied); otherwise the layer owns a (3, 3, C, filters) kernel and a bias.
    """

    def __init__(self, filters, reflect=False, source=None, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.reflect = bool(reflect)
        self.source = source

    def build(self, input_shape):
        if self.source is None:
            shape = (3, 3, input_shape[-1], self.filters)
            self.kernel = self.add_weight(shape=shape, name="kernel")
            self.bias = self.add_weight(shape=(self.filters,), initializer="zeros", name="bias")

    def call(self, inputs):
        kernel = self.kernel if self.source is None else self.source.kernel
        bias = self.bias if self.source is None else self.source.bias
        taps = ops.convert_to_tensor(_PHASE_TAPS, dtype=kernel.dtype)
        phase_kernels = ops.einsum("apr,bqs,rsio->abpqio", taps, taps, kernel)
        padded = ops.pad(
            inputs,
            [[0, 0], [1, 1], [1, 1], [0, 0]],
            mode="symmetric" if self.reflect else "constant",
        )
        windows = (slice(None, -1), slice(1, None))  # offsets 0 and 1, static for converters
        phases = [
            ops.conv(padded[:, windows[a], windows[b], :], phase_kernels[a, b], padding="valid")
            for a in (0, 1)
            for b in (0, 1)
        ]
        return ops.depth_to_space(ops.concatenate(phases, axis=-1), 2) + bias

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        double = lambda size: None if size is None else 2 * size  # noqa: E731
        return (batch, double(height), double(width), self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "reflect": self.reflect}


def _graph(model):
    """(nodes, readers, uses) of ``model``'s own graph: its nodes, {id(node): the nodes that
    read its output} and {id(layer): how many times ``model`` calls it}. Built from
    ``model``'s nodes, not ``layer.input``, which names a layer's first call, perhaps in
    another model."""
    nodes = [node for depth in model._nodes_by_depth.values() for node in depth]
    readers = collections.defaultdict(list)
    uses = collections.Counter(id(node.operation) for node in nodes)
    for node in nodes:
        for parent in node.parent_nodes:
            readers[id(parent)].append(node)
    return nodes, readers, uses


def _fusable_upsample_conv(upsample_node, readers, uses, outputs):
    """(pad or None, conv) when ``upsample_node`` (a nearest x2 upsampling called once) feeds
    only a 3x3 stride-1 conv, directly ('same' padding) or through a 1-pixel
    ``ReflectionPadding2D`` ('valid'), each called once, and neither the upsampled nor the
    padded tensor is among the model's ``outputs`` (ids)."""
    upsample = upsample_node.operation
    if tuple(upsample.size) != (2, 2) or upsample.interpolation != "nearest":
        return None
    if upsample.data_format != "channels_last":
        return None

    def only_reader(node):
        if any(id(tensor) in outputs for tensor in node.output_tensors):
            return None
        following = readers.get(id(node), [])
        if len(following) != 1 or uses.get(id(following[0].operation)) != 1:
            return None
        return following[0]

    pad, node = None, only_reader(upsample_node)
    if node is not None and isinstance(node.operation, ReflectionPadding2D):
        if node.operation.padding != 1:
            return None
        pad, node = node.operation, only_reader(node)
    conv = None if node is None else node.operation
    if not isinstance(conv, layers.Conv2D) or conv.data_format != "channels_last":
        return None
    plain = (
        tuple(conv.kernel_size) == (3, 3)
        and tuple(conv.strides) == (1, 1)
        and tuple(conv.dilation_rate) == (1, 1)
        and conv.groups == 1
        and conv.use_bias
        and conv.activation is keras.activations.linear
    )
    if not plain or conv.padding != ("valid" if pad else "same"):
        return None
    return pad, conv


def inference_net(model):
    """``model`` with each nearest x2 upsampling and the 3x3 convolution after it fused into an
    :class:`UpsampleConv2D` (the same function with 4/9 of those multiply-adds: about 8 % less
    time per image on a CPU, ``bench/bench.py``). Every other layer, and the fused
    convolutions' kernels, are ``model``'s own (shared, so the result follows training).
    Returns ``model`` itself when there is nothing to fuse.
    """
    nodes, readers, uses = _graph(model)
    outputs = {id(tensor) for tensor in model.outputs}
    fused, skipped = {}, set()
    for node in nodes:
        layer = node.operation
        if isinstance(layer, layers.UpSampling2D) and uses[id(layer)] == 1:
            match = _fusable_upsample_conv(node, readers, uses, outputs)
            if match:
                pad, conv = match
                skipped.update(other.name for other in (layer, pad) if other is not None)
                fused[conv.name] = UpsampleConv2D(
                    conv.filters,
                    reflect=pad is not None,
                    source=conv,
                    name=conv.name,
                    dtype=conv.dtype_policy,
                )
    if not fused:
        return model

    def substitute(layer):
        if layer.name in skipped:
            return layers.Identity(name=layer.name)
        return fused.get(layer.name, layer)

    return keras.models.clone_model(model, clone_function=substitute)
