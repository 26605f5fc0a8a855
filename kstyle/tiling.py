"""Stylize large images in tiles, in bounded memory, without seams.

The transform net's instance norms normalise with statistics of the whole image, so running
the plain net on tiles would give every tile its own colours and contrast. Instead:

1. **Statistics.** Every norm layer's per-channel mean and variance of its input, over the
   whole image at full resolution. When a whole-image pass fits ``stats_pixels``, that pass
   records them directly. Otherwise :func:`exact_norm_statistics` computes exactly the same
   numbers in bounded memory: the input of norm k depends only on the image and the norms
   before it, so the net runs stage by stage along its graph in bands of image rows with the
   context its kernels and strides need, stored tensors going to temporary files on disk
   (:mod:`kstyle.staged`). A net whose layers that plan cannot follow logs a warning and
   takes its statistics from a downscaled copy, as ``exact_statistics=False`` asks for
   (faster, but approximate).
2. **Tile passes.** A copy of the net whose norm layers are :class:`FixedStatsNormalization`
   (same trained gamma and beta, but normalising with the recorded statistics) runs on
   overlapping windows: each ``tile``-sized cell of the image plus a ``margin`` of real
   image context on every side (clipped at the image border, where the net's own padding
   applies exactly as in a full-image pass). Cell and window corners are multiples of the
   net's size multiple (4 for the seed net), so the stride grids line up with the full-image
   pass.
3. **Blending.** Each window's output is trusted over its cell widened by ``feather / 2`` on
   each side, with weights that ramp linearly over the ``feather`` band; overlapping
   outputs are averaged by weight.

Memory: the working set is one window's (or band's) activations plus a float32 (H, W, 3)
accumulator and an (H, W) weight map; see :func:`kstyle.memory.forward_bytes` for the
activation cost per pixel. Disk: the float32 tensors of the statistics pass that a later stage
still reads.
"""

import collections
import logging
import math

import keras
import numpy as np
from keras import layers, ops

from kstyle.constants import SIZE_MULTIPLE
from kstyle.errors import KstyleError
from kstyle.forward import inference_net, run_model
from kstyle.graph import Graph, instance_norms, size_multiple
from kstyle.memory import BYTES_PER_PIXEL, DEFAULT_MAX_MEMORY, pixels_within
from kstyle.staged import StagePlan, receptive_radius

# Context on each side of a tile, in cells of the net's coarsest grid (its size multiple, 4
# px for the seed net): the default margin, or less where the net's receptive radius plus half
# the feather is less (see TiledStylizer).
DEFAULT_MARGIN_CELLS = 12
DEFAULT_MARGIN = DEFAULT_MARGIN_CELLS * SIZE_MULTIPLE  # px, for the seed net's grid
DEFAULT_FEATHER = 32  # px over which neighbouring tiles cross-fade

logger = logging.getLogger(__name__)


@keras.saving.register_keras_serializable(package="kstyle")
class FixedStatsNormalization(layers.Layer):
    """Instance norm with given statistics: ``(x - mean) / sqrt(var + eps) * gamma + beta``.

    Input (B, H, W, C) -> output of the same shape. ``mean`` and ``variance`` (C,) are
    non-trainable weights set with :func:`set_norm_statistics`, so every tile of an image is
    normalised alike. ``gamma`` and ``beta`` (C,) are the trained scale and offset.
    """

    def __init__(self, epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        channels = (int(input_shape[-1]),)
        self.gamma = self.add_weight(shape=channels, initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=channels, initializer="zeros", name="beta")
        self.mean = self.add_weight(
            shape=channels, initializer="zeros", trainable=False, name="mean"
        )
        self.variance = self.add_weight(
            shape=channels, initializer="ones", trainable=False, name="variance"
        )

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        scale = ops.rsqrt(self.variance + self.epsilon) * self.gamma
        outputs = x * scale + (self.beta - self.mean * scale)
        return ops.cast(outputs, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


def _norm_nodes(graph):
    """The instance-norm calls of ``graph`` (:func:`kstyle.graph.instance_norms`), each layer
    called once (one set of fixed statistics per layer)."""
    nodes = instance_norms(graph)
    for name, calls in collections.Counter(node.name for node in nodes).items():
        if calls > 1:
            raise KstyleError(
                f"tiling needs each instance norm called once; {name!r} is called {calls} times"
            )
    return nodes


def build_statistics_model(model):
    """A model from the net's input (B, H, W, 3) to each norm layer's input statistics.

    Returns a ``keras.Model`` whose outputs are ``[mean_1, var_1, mean_2, var_2, ...]``, each
    (B, C_k): the per-channel mean and (population) variance over H and W of the input of the
    k-th instance-norm call of ``model``'s graph, in topological order (None without norms).
    """
    graph = Graph(model)
    norms = _norm_nodes(graph)
    if not norms:
        return None
    values = dict(zip(graph.inputs, model.inputs, strict=True))
    outputs = []
    for x in graph.evaluate(values, [node.inputs[0] for node in norms]):
        outputs += ops.moments(ops.cast(x, "float32"), axes=[1, 2])
    return keras.Model(model.inputs, outputs, name=f"{model.name}_norm_statistics")


def build_tile_model(model):
    """A copy of ``model`` whose instance norms use fixed statistics (shares all other weights).

    Every instance norm (found in ``model``'s graph) becomes a :class:`FixedStatsNormalization`
    with the same name, epsilon, dtype policy, gamma and beta; set its statistics with
    :func:`set_norm_statistics`.
    """
    norms = {node.name: node.layer for node in _norm_nodes(Graph(model))}
    fixed = {}

    def clone(layer):
        if norms.get(layer.name) is not layer:
            return layer  # shared: same weights, same object
        fixed[layer.name] = FixedStatsNormalization(
            epsilon=layer.epsilon, name=layer.name, dtype=layer.dtype_policy
        )
        return fixed[layer.name]

    tile_model = keras.models.clone_model(model, clone_function=clone)
    for name, layer in fixed.items():  # built by the clone's call
        if norms[name].scale:
            layer.gamma.assign(norms[name].gamma)
        if norms[name].center:
            layer.beta.assign(norms[name].beta)
    return tile_model


def _fixed_norms(tile_model) -> dict:
    """``{name: layer}`` of the FixedStatsNormalization calls of ``tile_model``, in graph order."""
    return {node.name: node.layer for node in Graph(tile_model).nodes_of(FixedStatsNormalization)}


def set_norm_statistics(tile_model, statistics):
    """Sets every FixedStatsNormalization's mean and variance from a statistics-model output.

    ``statistics`` is the list returned by the statistics model for one image (batch of 1):
    ``[mean_1, var_1, ...]``, each (1, C_k), in the graph order of both models.
    """
    fixed = list(_fixed_norms(tile_model).values())
    if len(statistics) != 2 * len(fixed):
        raise ValueError(f"expected {2 * len(fixed)} statistics, got {len(statistics)}")
    for index, layer in enumerate(fixed):
        layer.mean.assign(np.asarray(statistics[2 * index])[0])
        layer.variance.assign(np.asarray(statistics[2 * index + 1])[0])


def statistics_plan(tile_model) -> StagePlan:
    """The :class:`kstyle.staged.StagePlan` of ``tile_model``'s exact statistics, on its fused
    inference graph (:func:`kstyle.forward.inference_net`: the same function, fewer
    multiply-adds).

    Raises:
        KstyleError: a layer whose spatial behaviour the plan does not know, naming it.
    """
    return StagePlan(inference_net(tile_model), list(_fixed_norms(tile_model)))


def exact_norm_statistics(tile_model, image, work_bytes, directory=None, plan=None):
    """Sets every norm of ``tile_model`` to the full-resolution statistics, in bounded memory.

    Exactly the statistics a whole-image pass would see, computed stage by stage along the
    graph in bands of image rows with derived context (:mod:`kstyle.staged`), the stored
    tensors in float32 files under ``directory`` (removed at the end, also on errors).

    Args:
        tile_model: from :func:`build_tile_model`.
        image: (H, W, 3) in [0, 255], H and W multiples of the net's size multiple.
        work_bytes: memory for one band's activations; sets the band height.
        directory: where the temporary files go (default: the system temp dir).
        plan: ``statistics_plan(tile_model)``, when already built.

    Returns:
        The statistics as :func:`set_norm_statistics` takes them: ``[mean_1, var_1, ...]``,
        each (1, C_k) float32.
    """
    fixed = _fixed_norms(tile_model)
    plan = plan or statistics_plan(tile_model)
    found = {}

    def record(name, mean, variance):
        fixed[name].mean.assign(mean)
        fixed[name].variance.assign(variance)
        found[name] = (mean[None], variance[None])

    plan.run(image, work_bytes, record, directory)
    return [value for name in fixed for value in found[name]]


def auto_tile_size(max_memory: int, margin: int = DEFAULT_MARGIN) -> int:
    """The largest tile (multiple of 4, 64 to 2048 px) whose window's forward pass fits.

    The window is the tile plus ``margin`` px on each side; its estimated forward memory
    (:func:`kstyle.memory.forward_bytes`) must stay within ``max_memory`` bytes.
    """
    side = int(math.sqrt(pixels_within(max_memory))) - 2 * margin
    side -= side % SIZE_MULTIPLE
    return int(min(2048, max(64, side)))


def _downscaled(image: np.ndarray, max_pixels: int, multiple: int) -> np.ndarray:
    """The image as float32, area-downscaled (sides multiples of ``multiple``) to at most
    max_pixels."""
    height, width = image.shape[:2]
    if height * width <= max_pixels:
        return image.astype(np.float32)
    scale = math.sqrt(max_pixels / (height * width))
    size = [max(multiple, int(side * scale) // multiple * multiple) for side in (height, width)]
    import tensorflow as tf

    resized = tf.image.resize(image[None].astype(np.float32), size, "area", antialias=True)
    return np.asarray(resized)[0]


def _round_up(value, multiple: int) -> int:
    return -(-int(value) // multiple) * multiple


def _ramp(start, end, lo_edge, hi_edge, feather):
    """1-D blending weights over [start, end): linear ramps of ``feather`` px at inner ends."""
    position = np.arange(start, end, dtype=np.float32) + 0.5
    weight = np.ones(end - start, np.float32)
    if not lo_edge:
        weight = np.minimum(weight, np.clip((position - start) / feather, 0.0, 1.0))
    if not hi_edge:
        weight = np.minimum(weight, np.clip((end - position) / feather, 0.0, 1.0))
    return weight


def _spans(size, tile, margin, feather):
    """For one axis: (window, trusted span, trusted weights) of every tile.

    Cells tile the axis without overlap; a window is its cell plus ``margin`` px of context on
    each side; the trusted span is the cell plus ``feather / 2`` px on each side (all clipped
    to [0, size)). Neighbouring trusted spans overlap by ``feather`` px, where their weights
    ramp linearly and sum to 1.
    """
    spans = []
    for cell in range(0, size, tile):
        cell_end = min(size, cell + tile)
        trusted = (max(0, cell - feather // 2), min(size, cell_end + feather // 2))
        window = (max(0, cell - margin), min(size, cell_end + margin))
        weight = _ramp(*trusted, trusted[0] == 0, trusted[1] == size, feather)
        spans.append((window, trusted, weight))
    return spans


class TiledStylizer:
    """Stylizes large images in tiles with shared instance-norm statistics (see module doc).

    Build once per model and reuse it for many images: it holds the statistics and tile models
    and the statistics plan.

    Args:
        model: the transform net (instance norms as ``GroupNormalization(groups=-1)``).
        tile: cell size in px (a multiple of the net's size multiple ``multiple``, 4 for the
            seed net); each window adds ``margin`` px on every side.
        margin: context around each cell, px (a multiple of ``multiple``, at least
            ``feather / 2``). Default: the net's receptive radius (:func:`receptive_radius`,
            read from its graph) plus ``feather / 2``, rounded up to ``multiple``, so that the
            trusted span of every window sees all the context it reads, but at most
            :data:`DEFAULT_MARGIN_CELLS` cells of ``multiple`` px (48 px for the seed net, 96
            for ``live``; the seed net's radius is larger; the trusted spans then
            miss some context and tiles are close to, not exactly, an untiled pass).
        feather: width in px of the linear cross-fade between neighbouring tiles.
        stats_pixels: the most pixels a whole-image statistics pass may take (default: what
            fits DEFAULT_MAX_MEMORY). Larger images get exact statistics from
            :func:`exact_norm_statistics` (bands of activations of about
            ``stats_pixels * BYTES_PER_PIXEL / 4`` bytes, the rest on disk).
        exact_statistics: False takes the statistics of larger images from a copy downscaled
            to ``stats_pixels`` instead (faster, no disk, but drifts from an untiled pass).
            A net the exact pass cannot follow does the same, with a logged warning.
        directory: where exact_norm_statistics keeps its temporary files (default: temp dir).

    Raises:
        KstyleError: a bad tile size, or a norm that is not instance norm (naming it).
    """

    def __init__(
        self,
        model,
        tile: int,
        margin: int | None = None,
        feather: int = DEFAULT_FEATHER,
        stats_pixels: int | None = None,
        exact_statistics: bool = True,
        directory=None,
    ):
        try:
            self.multiple = size_multiple(model)
        except KstyleError:  # layers whose scales do not add up: the exact pass warns below
            self.multiple = SIZE_MULTIPLE
        if tile % self.multiple or tile < self.multiple:
            raise KstyleError(f"--tile must be a positive multiple of {self.multiple}, got {tile}")
        feather = max(1, min(feather, tile))
        try:
            self.radius = receptive_radius(model)
        except KstyleError:
            self.radius = None  # margin: the default
        if margin is None:
            default = DEFAULT_MARGIN_CELLS * max(self.multiple, SIZE_MULTIPLE)
            needed = default if self.radius is None else self.radius + -(-feather // 2)
            margin = _round_up(min(default, needed), self.multiple)
        if margin % self.multiple or margin < feather / 2:
            raise ValueError(
                f"margin must be a multiple of {self.multiple} and at least feather / 2"
            )
        self.tile, self.margin, self.feather = tile, margin, feather
        self.stats_pixels = stats_pixels or pixels_within(DEFAULT_MAX_MEMORY)
        self.statistics_model = build_statistics_model(model)
        self.tile_model = build_tile_model(model)
        self.plan = None
        if exact_statistics and self.statistics_model is not None:
            try:
                self.plan = statistics_plan(self.tile_model)
            except KstyleError as error:
                logger.warning(
                    "exact tiled statistics are not available for %s (%s); images over %d "
                    "pixels take their statistics from a downscaled copy (approximate)",
                    model.name, error, self.stats_pixels,
                )  # fmt: skip
        self.exact_statistics = self.plan is not None
        self.directory = directory

    def tiles(self, height: int, width: int) -> int:
        """How many tiles an (height, width) image is cut into."""
        return math.ceil(height / self.tile) * math.ceil(width / self.tile)

    def set_statistics(self, image: np.ndarray):
        """Sets the tile model's norm statistics for ``image`` (H, W, 3), exact where
        ``exact_statistics`` (see the class doc)."""
        height, width = image.shape[:2]
        if self.statistics_model is None:
            return
        if self.exact_statistics and height * width > self.stats_pixels:
            work_bytes = self.stats_pixels * BYTES_PER_PIXEL // 4
            exact_norm_statistics(self.tile_model, image, work_bytes, self.directory, self.plan)
        else:
            small = _downscaled(image, self.stats_pixels, self.multiple)
            statistics = run_model(self.statistics_model, small[None])
            del small
            set_norm_statistics(self.tile_model, statistics)

    def __call__(self, image: np.ndarray, progress=None) -> np.ndarray:
        """Stylizes one (H, W, 3) image; returns (H, W, 3) float32 in [0, 255].

        ``image`` is uint8 or float RGB in [0, 255] with H and W multiples of ``multiple``.
        ``progress``, if given, is called with no arguments after every tile.
        """
        height, width = image.shape[:2]
        if height % self.multiple or width % self.multiple:
            raise ValueError(
                f"image sides must be multiples of {self.multiple}, got {height}x{width}"
            )
        self.set_statistics(image)
        accumulator = np.zeros((height, width, 3), np.float32)
        weights = np.zeros((height, width), np.float32)
        rows = _spans(height, self.tile, self.margin, self.feather)
        columns = _spans(width, self.tile, self.margin, self.feather)
        for (top, bottom), (trust_top, trust_bottom), row_weight in rows:
            for (left, right), (trust_left, trust_right), column_weight in columns:
                window = image[top:bottom, left:right].astype(np.float32)[None]
                output = run_model(self.tile_model, window)[0]
                output = output[
                    trust_top - top : trust_bottom - top, trust_left - left : trust_right - left
                ]
                weight = row_weight[:, None] * column_weight[None, :]
                region = (slice(trust_top, trust_bottom), slice(trust_left, trust_right))
                accumulator[region] += output * weight[..., None]
                weights[region] += weight
                if progress is not None:
                    progress()
        accumulator /= weights[..., None]
        return accumulator


def stylize_tiled(model, image: np.ndarray, tile: int, **options) -> np.ndarray:
    """Stylizes one (H, W, 3) image in tiles; returns (H, W, 3) float32 in [0, 255].

    A one-off shortcut for ``TiledStylizer(model, tile, **options)(image)``; H and W must be
    multiples of 4. See :class:`TiledStylizer` for the options.
    """
    progress = options.pop("progress", None)
    return TiledStylizer(model, tile, **options)(image, progress=progress)
