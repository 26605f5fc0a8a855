"""Exact instance-norm statistics of a large image in bounded memory, staged along the model's
graph.

The input of an instance norm depends only on the image and on the statistics of the norms
before it, so the statistics can be computed one norm after another in bands of image rows.
:class:`StagePlan` reads how from the functional graph (:mod:`kstyle.graph`: layer types,
connections, kernel sizes, strides and paddings, never layer names):

- **Stored tensors.** The image; the input of every norm (its statistics come from it); and
  every tensor that two or more of the layers needed read (a residual stream). Each stored
  tensor other than the image is the *target* of one stage: the layers between already stored
  tensors and it (:meth:`Graph.ancestors`), norms included, whose statistics are known by then
  (a norm's input is stored, so it is an earlier target). Every layer runs in exactly one
  stage. Nothing after the last norm's input runs. A target that no later stage reads never
  goes to disk; the others go to a float32 file, deleted after its last reader.
- **Bands and context.** A stage runs over bands of whole image rows whose boundaries are
  multiples of ``multiple`` (the model's size multiple, :func:`kstyle.graph.tensor_scales`),
  so a tensor at scale ``r`` uses rows ``boundary * r`` and every stride-s window starts and
  ends on its own grid, as in a whole-image pass. Each band reads ``context`` more image rows on
  either side, clipped to the image (where the layers' own padding then applies exactly as in
  a whole-image pass). ``context`` is derived backwards from the target: a convolution or
  pooling of kernel extent ``K`` and stride ``s`` whose padding puts ``p`` rows before the
  input needs ``s * h + max(p, K - s - p)`` input rows for ``h`` output rows of margin; a
  nearest x``u`` upsampling ``ceil(h / u)``; pointwise layers ``h``; the
  maximum over paths, in image rows, rounded up to ``multiple``. Every tensor of a stage then
  covers the same image rows, so layers with several inputs line up. Moments accumulate over
  each band's own rows only (float64, merged as Chan et al.).

A layer whose spatial behaviour is not known here (a transposed convolution, cropping, a
padding that changes a tensor's size, ...) raises a :class:`KstyleError` naming it.
"""

import dataclasses
import fractions
import math
import os
import tempfile
import warnings

import numpy as np
from keras import layers, ops

from kstyle.errors import KstyleError
from kstyle.forward import UpsampleConv2D, quiet_retracing_warning
from kstyle.graph import Graph, is_instance_norm, tensor_scales
from kstyle.transform_net import DepthToSpace, ReflectionPadding2D, TanhToPixels

# Bytes a band takes per element of each of its stage's tensors: float32, and room for the
# copies the runtime makes around a layer (padding, a convolution's workspace).
BAND_BYTES_PER_ELEMENT = 16

_POOLING = (layers.MaxPooling2D, layers.AveragePooling2D)
_WINDOWED = (layers.Conv2D, layers.DepthwiseConv2D, layers.SeparableConv2D, *_POOLING)
_PADDING = (ReflectionPadding2D, layers.ZeroPadding2D)
_POINTWISE = (
    layers.InputLayer, layers.Identity, layers.Activation, layers.ReLU, layers.LeakyReLU,
    layers.ELU, layers.Add, layers.Subtract, layers.Multiply, layers.Average, layers.Maximum,
    layers.Minimum, layers.Rescaling, layers.Dropout, layers.GaussianNoise,
    layers.GaussianDropout, layers.Dense, TanhToPixels,
)  # fmt: skip
_LAST_AXIS = (  # pointwise when they work on the channel axis only
    layers.Concatenate, layers.Softmax, layers.BatchNormalization, layers.LayerNormalization
)  # fmt: skip


def _fail(node, reason):
    return KstyleError(
        f"exact tiled statistics cannot follow layer {node.name!r} "
        f"({type(node.layer).__name__}): {reason}"
    )


def _channels_last(node):
    if getattr(node.layer, "data_format", "channels_last") != "channels_last":
        raise _fail(node, "only channels_last data is supported")


def _is_pointwise(graph, node, pointwise) -> bool:
    layer = node.layer
    if node.name in pointwise or isinstance(layer, _POINTWISE):
        return True
    if isinstance(layer, _LAST_AXIS):
        axes = layer.axis if isinstance(layer.axis, list | tuple) else [layer.axis]
        return all(axis in (-1, 3) for axis in axes)
    return isinstance(layer, layers.GroupNormalization) and is_instance_norm(
        layer, graph.channels(node.inputs[0])
    )


def _padding(graph, node, axis) -> tuple[int, int]:
    """Rows (axis 0) or columns (1), (before, after), that the padding layer feeding a 'valid'
    ``node`` adds, or (0, 0)."""
    layer = graph.producer(node.inputs[0]).layer
    if isinstance(layer, ReflectionPadding2D):
        return layer.padding, layer.padding
    if isinstance(layer, layers.ZeroPadding2D):
        return tuple(int(size) for size in layer.padding[axis])
    return 0, 0


def _windowed_halo(graph, node, halo, axis) -> int:
    layer = node.layer
    _channels_last(node)
    if int(layer.strides[0]) != int(layer.strides[1]):
        raise _fail(node, "different strides for rows and columns are not supported")
    found = []
    for each in (0, 1):
        if isinstance(layer, _POOLING):
            kernel, dilation = int(layer.pool_size[each]), 1
        else:
            kernel, dilation = int(layer.kernel_size[each]), int(layer.dilation_rate[each])
        stride, extent = int(layer.strides[each]), (kernel - 1) * dilation + 1
        if layer.padding == "same":  # TensorFlow's rule, for sizes that are multiples of stride
            before = max(extent - stride, 0) // 2
        elif layer.padding == "valid":
            before, after = _padding(graph, node, each)
            if not extent - stride <= before + after <= extent - 1:
                raise _fail(node, "its output is not its input's size divided by its stride")
        else:
            raise _fail(node, f"padding {layer.padding!r} is not supported")
        found.append(stride * halo + max(before, extent - stride - before))
    return found[axis]


def input_halo(graph, node, halo: int, pointwise=(), axis=0) -> int:
    """Rows (``axis`` 0; columns: 1) of margin, at the input's scale, every input of ``node``
    needs beyond a band so that its output is right over the band and ``halo`` rows (at the
    output's scale) beyond it.

    ``pointwise``: names of layers to treat as pointwise (norms whose statistics are fixed).

    Raises:
        KstyleError: a layer whose spatial behaviour is not known here, naming it.
    """
    layer = node.layer
    if _is_pointwise(graph, node, pointwise):
        return halo
    if isinstance(layer, _WINDOWED):
        return _windowed_halo(graph, node, halo, axis)
    if isinstance(layer, _PADDING):  # the 'valid' layer after it accounts for its rows
        _channels_last(node)
        readers = graph.consumers(node.output)
        if len(readers) != 1 or not (
            isinstance(readers[0].layer, _WINDOWED) and readers[0].layer.padding == "valid"
        ):
            raise _fail(
                node, "only padding read by one 'valid' convolution or pooling is supported"
            )
        return halo
    if isinstance(layer, layers.UpSampling2D):
        _channels_last(node)
        if layer.interpolation != "nearest" or int(layer.size[0]) != int(layer.size[1]):
            raise _fail(node, "only nearest upsampling by one factor is supported")
        return -(-halo // int(layer.size[0]))
    if isinstance(layer, DepthToSpace):  # output block (i, j) is one input pixel's
        return -(-halo // layer.block_size)
    if isinstance(layer, UpsampleConv2D):  # nearest x2, then a 3x3 convolution padded by 1
        return -(-(halo + 1) // 2)
    raise _fail(node, "its spatial behaviour is unknown")


def _halos(graph, nodes, targets, pointwise, axis=0) -> dict:
    """``{tensor: rows}``: the margin each tensor read by ``nodes`` needs, at its own scale, for
    ``targets`` to be right over a band (propagated backwards, maximum over paths)."""
    halos = dict.fromkeys(targets, 0)
    for node in reversed(nodes):
        need = input_halo(graph, node, halos.get(node.output, 0), pointwise, axis)
        for tensor in node.inputs:
            halos[tensor] = max(halos.get(tensor, 0), need)
    return halos


def receptive_radius(model) -> int:
    """How many image rows (or columns) on each side of an output pixel the whole net reads,
    derived from the graph as the stages' context is (instance norms count as pointwise: their
    statistics are fixed when tiling).

    Raises:
        KstyleError: a layer whose spatial behaviour is not known here, naming it.
    """
    graph = Graph(model)
    nodes, scales, radius = graph.ancestors(graph.outputs), tensor_scales(graph), 0
    for axis in (0, 1):
        halos = _halos(graph, nodes, graph.outputs, (), axis)
        radius = max(
            radius, *(fractions.Fraction(halos.get(t, 0)) / scales[t] for t in graph.inputs)
        )
    return math.ceil(radius)


@dataclasses.dataclass
class Stage:
    """One stage of a :class:`StagePlan`.

    Attributes:
        target: the tensor the stage computes (a norm's input or a tensor read twice).
        nodes: the layer calls it runs, in topological order.
        inputs: the stored tensors it reads.
        norms: names of the norms whose input ``target`` is (their statistics come from it).
        halo: image rows of context a band needs on each side (a Fraction, derived).
        context: ``halo`` rounded up to the plan's multiple: the rows each band reads.
        keep: whether a later stage reads ``target`` (then it is stored on disk).
    """

    target: object
    nodes: list
    inputs: list
    norms: list
    halo: fractions.Fraction
    context: int
    keep: bool = False


class StagePlan:
    """How to compute the input statistics of ``norms`` of ``model`` stage by stage (module doc).

    Args:
        model: a functional model with one image input (B, H, W, C).
        norms: names of its instance-norm layers whose statistics are fixed (each called once).

    Raises:
        KstyleError: a layer on the way whose spatial behaviour is not known, naming it; a
            model with several inputs; a norm that is not in the model or is called twice.
    """

    def __init__(self, model, norms):
        graph = self.graph = Graph(model)
        if len(graph.inputs) != 1:
            raise KstyleError(
                f"exact tiled statistics need one image input, not {len(graph.inputs)}"
            )
        self.image, self.scales = graph.inputs[0], tensor_scales(graph)
        self.multiple = math.lcm(*(scale.denominator for scale in self.scales.values()))
        readers_of = {}  # norm input -> names of the norms that read it
        for name in norms:
            calls = [node for node in graph.nodes if node.name == name]
            if len(calls) != 1:
                raise KstyleError(f"norm {name!r} is called {len(calls)} times; tiling needs 1")
            readers_of.setdefault(calls[0].inputs[0], []).append(name)
        needed = graph.ancestors(list(readers_of))
        positions = {node.position for node in needed}
        stored = {self.image, *readers_of}
        for node in needed:
            readers = [c for c in graph.consumers(node.output) if c.position in positions]
            stored.update([node.output] if len(readers) > 1 else [])
        targets = sorted(stored - {self.image}, key=lambda t: graph.producer(t).position)
        targets = [self.image] * (self.image in readers_of) + targets
        self.stages = [self._stage(target, stored, readers_of, set(norms)) for target in targets]
        self.last_reader = {}  # stored tensor -> index of the last stage that reads it
        for index, stage in enumerate(self.stages):
            self.last_reader.update(dict.fromkeys(stage.inputs, index))
        for stage in self.stages:
            stage.keep = stage.target in self.last_reader and stage.target != self.image
        self._functions = {}

    def _stage(self, target, stored, readers_of, pointwise):
        graph = self.graph
        if target == self.image:  # a norm reading the image itself
            nodes, inputs = [], [target]
        else:
            nodes = graph.ancestors([target], stop=stored - {target})
            inputs = list(dict.fromkeys(t for node in nodes for t in node.inputs if t in stored))
        halos = _halos(graph, nodes, [target], pointwise)
        halo = max(fractions.Fraction(halos.get(t, 0)) / self.scales[t] for t in inputs)
        context = math.ceil(halo / self.multiple) * self.multiple
        return Stage(target, nodes, inputs, readers_of.get(target, []), halo, context)

    def band_rows(self, stage: Stage, width: int, work_bytes: int) -> int:
        """Image rows per band of ``stage`` (a multiple of ``multiple``, at least one) such that
        a band with its context, over every tensor of the stage, takes about ``work_bytes``."""
        tensors = {*stage.inputs, *(node.output for node in stage.nodes)}
        elements = sum((self.graph.channels(t) or 1) * self.scales[t] ** 2 for t in tensors)
        rows = int(work_bytes / (width * elements * BAND_BYTES_PER_ELEMENT)) - 2 * stage.context
        return max(self.multiple, rows // self.multiple * self.multiple)

    def _function(self, index):
        """The compiled band pass of stage ``index``: (stored inputs over the band's window,
        offset, length) -> the target's rows [offset, offset + length) if kept, and their
        per-channel mean and variance if norms read it. One graph per stage."""
        if index in self._functions:
            return self._functions[index]
        import tensorflow as tf

        quiet_retracing_warning()
        graph, stage = self.graph, self.stages[index]
        specs = [
            tf.TensorSpec((1, None, None, graph.channels(t)), tf.float32) for t in stage.inputs
        ]
        scalar = tf.TensorSpec((), tf.int32)

        # heights and widths are free in the signature: one trace serves every band and image
        @tf.function(reduce_retracing=True, input_signature=[specs, scalar, scalar])
        def band(inputs, offset, length):
            (x,) = graph.evaluate(dict(zip(stage.inputs, inputs, strict=True)), [stage.target])
            x = ops.cast(x, "float32")[:, offset : offset + length]
            moments = list(ops.moments(x, axes=[0, 1, 2])) if stage.norms else []
            return ([x] if stage.keep else []) + moments

        self._functions[index] = band
        return band

    def run(self, image: np.ndarray, work_bytes: int, record, directory=None):
        """Runs every stage over ``image`` (H, W, C) in bands; calls ``record(name, mean,
        variance)`` (float32 (C,) arrays) for each norm as soon as its statistics are known,
        before any later stage runs: ``record`` must make that norm use them.

        H and W must be multiples of ``multiple``. Temporary files go to a new folder under
        ``directory`` (default: the system temp dir), removed at the end, also on errors.
        """
        height, width = image.shape[:2]
        if height % self.multiple or width % self.multiple:
            raise ValueError(
                f"image sides must be multiples of {self.multiple}, got {height}x{width}"
            )
        sources = {self.image: _ImageSource(image)}
        with (
            tempfile.TemporaryDirectory(prefix="kstyle_stats_", dir=directory) as folder,
            warnings.catch_warnings(),
        ):
            warnings.filterwarnings("ignore", message="The structure of `inputs`")
            for index, stage in enumerate(self.stages):
                output, moments = self._run_stage(
                    index, folder, sources, (height, width), work_bytes
                )
                if output is not None:
                    sources[stage.target] = output
                for tensor in stage.inputs:
                    if tensor != self.image and self.last_reader[tensor] == index:
                        sources.pop(tensor).remove()
                for name in stage.norms:
                    record(name, *moments.result())

    def _run_stage(self, index, folder, sources, size, work_bytes):
        """Runs stage ``index`` band by band; returns its target as a _DiskArray (None unless
        kept) and its _Moments."""
        stage, (height, width) = self.stages[index], size
        function, scale = self._function(index), self.scales[stage.target]
        rows = self.band_rows(stage, width, work_bytes)
        output, moments = None, _Moments()
        for start in range(0, height, rows):
            stop = min(height, start + rows)
            top, bottom = max(0, start - stage.context), min(height, stop + stage.context)
            inputs = [
                sources[t].read(_at(top, self.scales[t]), _at(bottom, self.scales[t]))[None]
                for t in stage.inputs
            ]
            results = function(inputs, _at(start - top, scale), _at(stop - start, scale))
            if stage.norms:
                moments.add(_at(stop - start, scale) * _at(width, scale), *results[-2:])
            if stage.keep:
                band = np.asarray(results[0])[0]
                if output is None:
                    shape = (_at(height, scale), *band.shape[1:])
                    output = _DiskArray(folder, f"stage_{index}", shape)
                output.write(_at(start, scale), band)
        return output, moments


def _at(rows, scale) -> int:
    """``rows`` image rows at ``scale`` (whole by construction)."""
    value = rows * scale
    if value.denominator != 1:
        raise AssertionError(f"{rows} image rows at scale {scale} are not whole rows")
    return int(value)


class _Moments:
    """Per-channel mean and population variance merged over row bands (Chan et al., float64)."""

    def __init__(self):
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, count, mean, variance):
        """Merges the moments of ``count`` more values."""
        mean = np.asarray(mean, np.float64)
        total = self.count + count
        delta = mean - self.mean
        self.mean = self.mean + delta * count / total
        self.m2 = self.m2 + np.asarray(variance, np.float64) * count
        self.m2 += delta**2 * self.count * count / total
        self.count = total

    def result(self):
        return self.mean.astype(np.float32), (self.m2 / self.count).astype(np.float32)


class _DiskArray:
    """An (H, W, C) float32 array kept in a file and read or written in whole rows.

    Plain file reads and writes (no memory map), so the array lives in the OS page cache and
    never counts towards the process's resident memory; only the rows in use do.
    """

    def __init__(self, directory, name, shape):
        self.shape = tuple(int(side) for side in shape)
        self.path = os.path.join(directory, f"{name}.f32")
        self.row_items = self.shape[1] * self.shape[2]
        with open(self.path, "wb") as file:
            file.truncate(self.shape[0] * self.row_items * 4)

    def read(self, start, stop):
        """Rows [start, stop) as a (stop - start, W, C) float32 array."""
        count = (stop - start) * self.row_items
        data = np.fromfile(self.path, np.float32, count=count, offset=start * self.row_items * 4)
        return data.reshape((stop - start, *self.shape[1:]))

    def write(self, start, rows):
        """Writes ``rows`` (n, W, C) at rows [start, start + n)."""
        with open(self.path, "r+b") as file:
            file.seek(start * self.row_items * 4)
            np.ascontiguousarray(rows, np.float32).tofile(file)

    def remove(self):
        """Deletes the file."""
        os.remove(self.path)


class _ImageSource:
    """The input image as a row source with the same ``read`` as _DiskArray."""

    def __init__(self, image):
        self.image = image

    def read(self, start, stop):
        return self.image[start:stop].astype(np.float32)
