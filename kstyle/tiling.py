"""Stylize large images in tiles, in bounded memory, without seams.

The transform net's instance norms normalise with statistics of the whole image, so running
the plain net on tiles would give every tile its own colours and contrast. Instead:

1. **Statistics pass.** The whole image, or a downscaled copy of at most ``stats_pixels``
   pixels, goes through the net
   once, and every norm layer's per-channel mean and variance of its input are recorded.
   The pass runs at full resolution when it fits the memory budget (statistics then exact);
   otherwise on the largest downscaled copy that fits (approximate: the net's statistics
   depend a little on scale, so the result drifts from an untiled pass, but never seams).
2. **Tile passes.** A copy of the net whose norm layers are :class:`FixedStatsNormalization`
   (same trained gamma and beta, but normalising with the recorded statistics) runs on
   overlapping windows: each ``tile``-sized cell of the image plus a ``margin`` of real
   image context on every side (clipped at the image border, where the net's own padding
   applies exactly as in a full-image pass). Cell and window corners are multiples of 4, so
   the stride-2 grids line up with the full-image pass.
3. **Blending.** Each window's output is trusted over its cell widened by ``feather / 2`` on
   each side, with weights that ramp linearly over the ``feather`` band; overlapping
   outputs are averaged by weight.

Memory: the working set is one window's activations plus a float32 (H, W, 3) accumulator and
an (H, W) weight map; see :func:`forward_bytes` for the measured activation cost per pixel.
"""

import math
import re
import warnings

import keras
import numpy as np
from keras import layers, ops

from kstyle.errors import KstyleError

SIZE_MULTIPLE = 4
DEFAULT_MARGIN = 48  # px of context on each side of a tile (the net's receptive radius is ~54)
DEFAULT_FEATHER = 32  # px over which neighbouring tiles cross-fade
# Peak memory of one forward pass, measured as peak RSS on TensorFlow 2.21 CPU (eager, float32;
# bench/large_image.py): about BASE_BYTES + BYTES_PER_PIXEL * H * W. TensorFlow's runtime alone
# is ~650 MB; the pass adds ~2.5-2.8 kB per pixel (1024^2: 3.3 GB, 2048^2: 10.6 GB).
BYTES_PER_PIXEL = 2700
BASE_BYTES = 700 * 2**20
# The budget for the network passes. A 16 MP image then runs as ~880 px tiles and a
# ~0.9 MP statistics pass, peaking at about 3.3 GB RSS (under the 4 GB target).
DEFAULT_MAX_MEMORY = 3 * 2**30


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


def _norm_layers(model):
    norms = [layer for layer in model.layers if isinstance(layer, layers.GroupNormalization)]
    for layer in norms:
        channels = layer.input.shape[-1]
        if layer.groups not in (-1, channels):
            raise KstyleError(f"tiling needs instance norm; {layer.name} has {layer.groups} groups")
    return norms


def build_statistics_model(model):
    """A model from the net's input (B, H, W, 3) to each norm layer's input statistics.

    Returns a ``keras.Model`` whose outputs are ``[mean_1, var_1, mean_2, var_2, ...]``, each
    (B, C_k): the per-channel mean and (population) variance over H and W of the input of the
    k-th instance-norm layer, in ``model.layers`` order.
    """
    outputs = []
    for layer in _norm_layers(model):
        x = ops.cast(layer.input, "float32")
        mean, variance = ops.moments(x, axes=[1, 2])
        outputs += [mean, variance]
    return keras.Model(model.inputs, outputs, name=f"{model.name}_norm_statistics")


def build_tile_model(model):
    """A copy of ``model`` whose instance norms use fixed statistics (shares all other weights).

    Every ``GroupNormalization`` becomes a :class:`FixedStatsNormalization` with the same
    name, epsilon, gamma and beta; set its statistics with :func:`set_norm_statistics`.
    """
    norms = {layer.name: layer for layer in _norm_layers(model)}

    def clone(layer):
        if layer.name not in norms:
            return layer  # shared: same weights, same object
        fixed = FixedStatsNormalization(epsilon=layer.epsilon, name=layer.name)
        channels = layer.input.shape[-1]
        fixed.build((None, None, None, channels))
        if layer.scale:
            fixed.gamma.assign(layer.gamma)
        if layer.center:
            fixed.beta.assign(layer.beta)
        return fixed

    return keras.models.clone_model(model, clone_function=clone)


def set_norm_statistics(tile_model, statistics):
    """Sets every FixedStatsNormalization's mean and variance from a statistics-model output.

    ``statistics`` is the list returned by the statistics model for one image (batch of 1).
    """
    fixed = [layer for layer in tile_model.layers if isinstance(layer, FixedStatsNormalization)]
    if len(statistics) != 2 * len(fixed):
        raise ValueError(f"expected {2 * len(fixed)} statistics, got {len(statistics)}")
    for index, layer in enumerate(fixed):
        layer.mean.assign(np.asarray(statistics[2 * index])[0])
        layer.variance.assign(np.asarray(statistics[2 * index + 1])[0])


def run_model(model, batch: np.ndarray) -> np.ndarray:
    """Runs ``model`` on a (B, H, W, 3) float32 batch in inference mode.

    Returns a NumPy array, or a list of them for a model with several outputs.
    """
    with warnings.catch_warnings():  # Keras warns about list-vs-tensor input structure
        warnings.filterwarnings("ignore", message="The structure of `inputs`")
        outputs = model(batch, training=False)
    if isinstance(outputs, list | tuple):
        return [np.asarray(output) for output in outputs]
    return np.asarray(outputs)


def forward_bytes(height: int, width: int, batch: int = 1) -> int:
    """Estimated peak memory in bytes of one plain forward pass on (batch, height, width, 3)."""
    return BASE_BYTES + BYTES_PER_PIXEL * batch * height * width


def pixels_within(max_memory: int) -> int:
    """How many pixels one forward pass may take so that it fits ``max_memory`` bytes."""
    return max(4096, (max_memory - BASE_BYTES) // BYTES_PER_PIXEL)


def parse_memory(text) -> int:
    """Parses a memory size such as ``4GB``, ``512MB``, ``1.5G`` or ``1000000`` into bytes.

    Units are binary (1 GB = 2**30 bytes). Raises KstyleError on anything else.
    """
    if isinstance(text, int | float):
        value, unit = float(text), ""
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)i?b?\s*", str(text), re.IGNORECASE)
        if not match:
            raise KstyleError(f"cannot read memory size {text!r}; use e.g. 4GB or 512MB")
        value, unit = float(match.group(1)), match.group(2).lower()
    size = int(value * 1024 ** " kmgt".index(unit or " "))
    if size <= 0:
        raise KstyleError(f"memory size must be positive, got {text!r}")
    return size


def auto_tile_size(max_memory: int, margin: int = DEFAULT_MARGIN) -> int:
    """The largest tile (multiple of 4, 64 to 2048 px) whose window's forward pass fits.

    The window is the tile plus ``margin`` px on each side; its estimated forward memory
    (:func:`forward_bytes`) must stay within ``max_memory`` bytes.
    """
    side = int(math.sqrt(pixels_within(max_memory))) - 2 * margin
    side -= side % SIZE_MULTIPLE
    return int(min(2048, max(64, side)))


def needs_tiling(height: int, width: int, max_memory) -> bool:
    """Whether a whole-image forward pass on (height, width) would exceed ``max_memory`` bytes."""
    return max_memory is not None and forward_bytes(height, width) > max_memory


def _downscaled(image: np.ndarray, max_pixels: int) -> np.ndarray:
    """The image as float32, area-downscaled (sides multiples of 4) to at most max_pixels."""
    height, width = image.shape[:2]
    if height * width <= max_pixels:
        return image.astype(np.float32)
    scale = math.sqrt(max_pixels / (height * width))
    size = [
        max(SIZE_MULTIPLE, int(side * scale) // SIZE_MULTIPLE * SIZE_MULTIPLE)
        for side in (height, width)
    ]
    import tensorflow as tf

    resized = tf.image.resize(image[None].astype(np.float32), size, "area", antialias=True)
    return np.asarray(resized)[0]


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

    Build once per model and reuse it for many images: it holds the statistics and tile models.

    Args:
        model: the transform net (instance norms as ``GroupNormalization(groups=-1)``).
        tile: cell size in px (multiple of 4); each window adds ``margin`` px on every side.
        margin: context around each cell, px (multiple of 4, at least ``feather / 2``).
        feather: width in px of the linear cross-fade between neighbouring tiles.
        stats_pixels: the most pixels the statistics pass may take (default: what fits
            DEFAULT_MAX_MEMORY); larger images are downscaled for that pass only.
    """

    def __init__(
        self,
        model,
        tile: int,
        margin: int = DEFAULT_MARGIN,
        feather: int = DEFAULT_FEATHER,
        stats_pixels: int | None = None,
    ):
        if tile % SIZE_MULTIPLE or tile < SIZE_MULTIPLE:
            raise KstyleError(f"--tile must be a positive multiple of 4, got {tile}")
        feather = max(1, min(feather, tile))
        if margin % SIZE_MULTIPLE or margin < feather / 2:
            raise ValueError("margin must be a multiple of 4 and at least feather / 2")
        self.tile, self.margin, self.feather = tile, margin, feather
        self.stats_pixels = stats_pixels or pixels_within(DEFAULT_MAX_MEMORY)
        self.statistics_model = build_statistics_model(model)
        self.tile_model = build_tile_model(model)

    def tiles(self, height: int, width: int) -> int:
        """How many tiles an (height, width) image is cut into."""
        return math.ceil(height / self.tile) * math.ceil(width / self.tile)

    def __call__(self, image: np.ndarray, progress=None) -> np.ndarray:
        """Stylizes one (H, W, 3) image; returns (H, W, 3) float32 in [0, 255].

        ``image`` is uint8 or float RGB in [0, 255] with H and W multiples of 4.
        ``progress``, if given, is called with no arguments after every tile.
        """
        height, width = image.shape[:2]
        if height % SIZE_MULTIPLE or width % SIZE_MULTIPLE:
            raise ValueError(f"image sides must be multiples of 4, got {height}x{width}")
        small = _downscaled(image, self.stats_pixels)
        statistics = run_model(self.statistics_model, small[None])
        del small
        set_norm_statistics(self.tile_model, statistics)

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
