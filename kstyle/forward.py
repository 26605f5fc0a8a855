"""The forward pass every stylize call and export uses: the fused inference graph of a
transform net, and its compiled ``tf.function``.

:func:`inference_net` finds each nearest x2 upsampling followed by a 3x3 convolution by walking
the model's graph (:mod:`kstyle.graph`: layer types and connections, not names) and fuses the
pair into an :class:`UpsampleConv2D`.
"""

import logging
import warnings
import weakref

import keras
import numpy as np
from keras import layers, ops

from kstyle.graph import Graph, size_multiple, smallest_side
from kstyle.transform_net import ReflectionPadding2D

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

    spatial_scale = 2  # read by kstyle.graph

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


def _only_reader(graph, node):
    """The single call that reads ``node``'s output, where that output is not a model output
    and its layer is called once; else None."""
    if graph.is_output(node.output):
        return None
    readers = graph.consumers(node.output)
    if len(readers) != 1 or graph.calls(readers[0].layer) != 1:
        return None
    return readers[0]


def _fusable_upsample_conv(graph, upsample_node):
    """(pad or None, conv) when ``upsample_node`` (a nearest x2 upsampling called once) feeds
    only a 3x3 stride-1 conv, directly ('same' padding) or through a 1-pixel
    ``ReflectionPadding2D`` ('valid'), each called once, and neither the upsampled nor the
    padded tensor is a model output."""
    upsample = upsample_node.layer
    if tuple(upsample.size) != (2, 2) or upsample.interpolation != "nearest":
        return None
    if upsample.data_format != "channels_last":
        return None
    pad, node = None, _only_reader(graph, upsample_node)
    if node is not None and isinstance(node.layer, ReflectionPadding2D):
        if node.layer.padding != 1:
            return None
        pad, node = node.layer, _only_reader(graph, node)
    conv = None if node is None else node.layer
    if type(conv) is not layers.Conv2D or conv.data_format != "channels_last":
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
    :class:`UpsampleConv2D` (the same function with 4/9 of those multiply-adds). Every other
    layer, and the fused convolutions' kernels, are ``model``'s own (shared, so the result
    follows training). Returns ``model`` itself when there is nothing to fuse.
    """
    graph = Graph(model)
    fused, skipped = {}, set()
    for node in graph.nodes_of(layers.UpSampling2D):
        if graph.calls(node.layer) != 1:
            continue
        match = _fusable_upsample_conv(graph, node)
        if match:
            pad, conv = match
            skipped.update(other.name for other in (node.layer, pad) if other is not None)
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


class _RetracingFilter(logging.Filter):
    def filter(self, record):
        return "triggered tf.function retracing" not in record.getMessage()


def quiet_retracing_warning():
    """Drops TensorFlow's "retracing" warning: kstyle traces one graph per model or stage."""
    import tensorflow as tf

    logger = tf.get_logger()
    if not any(isinstance(f, _RetracingFilter) for f in logger.filters):
        logger.addFilter(_RetracingFilter())


# id(model) -> (weak reference, {(fused, xla, blocked): pass}, size multiple, smallest side)
_FORWARDS = {}


def _entry(model):
    """``model``'s cached (reference, compiled passes, size multiple, smallest side), made on
    first use; the passes are made by :func:`compiled_forward` as they are asked for."""
    entry = _FORWARDS.get(id(model))
    if entry is None or entry[0]() is not model:
        quiet_retracing_warning()  # one graph per model: a style's baked net is a model too
        sizes = size_multiple(model), smallest_side(model)
        entry = _FORWARDS[id(model)] = (weakref.ref(model), {}, *sizes)
        weakref.finalize(model, _FORWARDS.pop, id(model), None)
    return entry


def _compile(model, reference, fused: bool, xla: bool, blocked: bool):
    """A ``tf.function`` of ``model``'s inference pass (``fused``: :func:`inference_net`'s
    graph; ``blocked``: its wide full-resolution convolutions on pixel blocks,
    :func:`kstyle.blocked_conv.blocked_net`), XLA-compiled with ``xla``; it holds ``model``
    only through ``reference``."""
    import tensorflow as tf

    from kstyle.blocked_conv import blocked_net

    net = inference_net(model) if fused else model  # shares model's layers, but is not model
    net = blocked_net(net) if blocked else net
    call = (lambda: net) if net is not model else reference  # (or a cycle)
    return tf.function(
        lambda batch: call()(batch, training=False),
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)],
        jit_compile=xla,
    )


def model_size_multiple(model) -> int:
    """:func:`kstyle.graph.size_multiple` of ``model``, read once and kept while it lives."""
    return _entry(model)[2]


def model_smallest_side(model) -> int:
    """:func:`kstyle.graph.smallest_side` of ``model``, read once and kept while it lives."""
    return _entry(model)[3]


def compiled_forward(model, fused: bool = True, xla: bool = False, blocked: bool = False):
    """``model``'s inference pass as a ``tf.function``, traced once and kept while ``model`` lives.

    Graph execution skips Keras's per-layer Python work. By default the pass runs
    :func:`inference_net` (upsampling fused into the next convolution: the same function,
    fewer multiply-adds) without XLA; ``fused=False`` runs ``model``'s own graph, ``xla=True``
    compiles with XLA (one compilation per input shape), ``blocked=True`` computes the wide
    output convolution on pixel blocks (:mod:`kstyle.blocked_conv`). ``kstyle tune`` measures
    which is fastest on a machine (:mod:`kstyle.stylize_paths`); ``docs/performance.md``
    compares them.
    """
    reference, passes = _entry(model)[:2]
    if (fused, xla, blocked) not in passes:
        passes[fused, xla, blocked] = _compile(model, reference, fused, xla, blocked)
    return passes[fused, xla, blocked]


def run_model(model, batch: np.ndarray, fused=True, xla=False, blocked=False) -> np.ndarray:
    """Runs ``model`` on a (B, H, W, 3) float32 batch in inference mode (compiled, see
    ``compiled_forward`` for ``fused``, ``xla`` and ``blocked``).

    Returns a NumPy array, or a list of them for a model with several outputs.
    """
    with warnings.catch_warnings():  # Keras warns about list-vs-tensor input structure
        warnings.filterwarnings("ignore", message="The structure of `inputs`")
        outputs = compiled_forward(model, fused, xla, blocked)(np.asarray(batch, np.float32))
    if isinstance(outputs, list | tuple):
        return [np.asarray(output) for output in outputs]
    return np.asarray(outputs)
