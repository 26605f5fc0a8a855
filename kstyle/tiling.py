"""Stylize large images in tiles, in bounded memory, without seams.

The transform net's instance norms normalise with statistics of the whole image, so running
the plain net on tiles would give every tile its own colours and contrast. Instead:

1. **Statistics.** Every norm layer's per-channel mean and variance of its input, over the
   whole image at full resolution. When a whole-image pass fits ``stats_pixels``, that pass
   records them directly. Otherwise :func:`exact_norm_statistics` computes exactly the same
   numbers in bounded memory: the input of norm k depends only on the image and norms
   1..k-1, so the net runs stage by stage (norm to norm) in bands of rows with a few rows of
   real context, each stage's output going to a temporary file on disk. (With
   ``exact_statistics=False`` a downscaled copy is used instead: faster, but approximate.)
2. **Tile passes.** A copy of the net whose norm layers are :class:`FixedStatsNormalization`
   (same trained gamma and beta, but normalising with the recorded statistics) runs on
   overlapping windows: each ``tile``-sized cell of the image plus a ``margin`` of real
   image context on every side (clipped at the image border, where the net's own padding
   applies exactly as in a full-image pass). Cell and window corners are multiples of 4, so
   the stride-2 grids line up with the full-image pass.
3. **Blending.** Each window's output is trusted over its cell widened by ``feather / 2`` on
   each side, with weights that ramp linearly over the ``feather`` band; overlapping
   outputs are averaged by weight.

Memory: the working set is one window's (or band's) activations plus a float32 (H, W, 3)
accumulator and an (H, W) weight map; see :func:`forward_bytes` for the measured activation
cost per pixel. Disk: up to about 192 bytes per pixel of temporary files (16 MP: 3 GB).
"""

import math
import os
import tempfile
import warnings

import keras
import numpy as np
from keras import layers, ops

from kstyle.errors import KstyleError
from kstyle.forward import quiet_retracing_warning, run_model
from kstyle.memory import BYTES_PER_PIXEL, DEFAULT_MAX_MEMORY, pixels_within
from kstyle.transform_net import SIZE_MULTIPLE

DEFAULT_MARGIN = 48  # px of context on each side of a tile (the net's receptive radius is ~54)
DEFAULT_FEATHER = 32  # px over which neighbouring tiles cross-fade


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


def auto_tile_size(max_memory: int, margin: int = DEFAULT_MARGIN) -> int:
    """The largest tile (multiple of 4, 64 to 2048 px) whose window's forward pass fits.

    The window is the tile plus ``margin`` px on each side; its estimated forward memory
    (:func:`kstyle.memory.forward_bytes`) must stay within ``max_memory`` bytes.
    """
    side = int(math.sqrt(pixels_within(max_memory))) - 2 * margin
    side -= side % SIZE_MULTIPLE
    return int(min(2048, max(64, side)))


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
    """The input image as a row source with the same ``shape`` and ``read`` as _DiskArray."""

    def __init__(self, image):
        self.image, self.shape = image, image.shape

    def read(self, start, stop):
        return self.image[start:stop].astype(np.float32)


def _stage_plan(model):
    """The number of residual blocks when ``model`` has build_transform_net's layout, else None.

    The exact statistics pass (:func:`exact_norm_statistics`) walks the net stage by stage
    by layer name, so it needs exactly that layout.
    """
    kinds = (layers.GroupNormalization, FixedStatsNormalization)
    names = [layer.name for layer in model.layers if isinstance(layer, kinds)]
    blocks = sum(name.endswith("_a_norm") for name in names)
    expected = [f"down{i}_norm" for i in (1, 2, 3)]
    expected += [f"res{i}_{part}_norm" for i in range(1, blocks + 1) for part in "ab"]
    expected += ["up1_norm", "up2_norm"]
    return blocks if names == expected else None


class _Moments:
    """Per-channel mean and population variance merged over row bands (Chan et al., float64)."""

    def __init__(self, channels):
        self.count, self.mean, self.m2 = 0, np.zeros(channels), np.zeros(channels)

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


def exact_norm_statistics(tile_model, image, work_bytes, directory=None, context=8):
    """Sets every norm of ``tile_model`` to the full-resolution statistics, in bounded memory.

    Exactly the statistics a whole-image pass would see, computed stage by stage: the input
    of norm k depends only on the image and the statistics of norms 1..k-1, so each stage
    (the layers from one norm's input to the next norm's input: norm, ReLU, skip add,
    upsampling, padding, convolution) runs over the previous stage's output in bands of
    whole rows, with ``context`` rows (multiple of 4) of real neighbouring data above and
    below each band, and stores its output (the next norm's input) in a float32 file under
    ``directory``. Per-channel moments accumulate over each band's own rows only. Band
    starts are even at every resolution, so stride-2 and upsampling grids line up with a
    whole-image pass; the net's own padding applies only at the true image border.

    Cost: about one forward pass plus writing and reading each stage's activations once
    (16 MP: ~2 GB per full-resolution stage on disk, one or two stages at a time).

    Args:
        tile_model: from :func:`build_tile_model` on a build_transform_net layout.
        image: (H, W, 3) in [0, 255], H and W multiples of 4.
        work_bytes: memory for one band's activations; sets the band height.
        directory: where the temporary files go (default: the system temp dir).
        context: rows of context on each side of a band, at the stage's input resolution.
    """
    import tensorflow as tf

    blocks = _stage_plan(tile_model)
    if blocks is None:
        raise KstyleError("exact tiled statistics need the layout of build_transform_net")
    names = {layer.name for layer in tile_model.layers}
    get = tile_model.get_layer

    def conv(name, x):
        if f"{name}_pad" in names:
            x = get(f"{name}_pad")(x)
        return get(name)(x)

    def act(prefix, x):
        return get(f"{prefix}_relu")(get(f"{prefix}_norm")(x))

    def stage(source, factor, channels, function, norm):
        """Runs ``function`` over ``source`` in bands; returns its output as a _DiskArray."""
        height, width, in_channels = source.shape
        out_height, out_width = int(height * factor), int(width * factor)
        output = _DiskArray(folder, norm, (out_height, out_width, channels))
        per_row = out_width * (in_channels / factor**2 + in_channels + 3 * channels) * 4 * 4
        rows = max(SIZE_MULTIPLE, int(work_bytes // per_row) // SIZE_MULTIPLE * SIZE_MULTIPLE)
        moments = _Moments(channels)

        quiet_retracing_warning()  # one graph per stage is intended

        @tf.function(reduce_retracing=True)
        def band(x, offset, length):  # one graph: TensorFlow fuses the elementwise ops
            x = function(x)[:, offset : offset + length]
            return (x, *ops.moments(x, axes=[0, 1, 2]))

        for start in range(0, out_height, rows):
            stop = min(out_height, start + rows)
            core = (int(start / factor), min(height, int(stop / factor)))
            window = (max(0, core[0] - context), min(height, core[1] + context))
            offset = int((core[0] - window[0]) * factor)
            x, mean, variance = band(
                source.read(*window)[None], tf.constant(offset), tf.constant(stop - start)
            )
            moments.add((stop - start) * out_width, mean, variance)
            output.write(start, np.asarray(x)[0])
            del x
        mean, variance = moments.result()
        get(norm).mean.assign(mean)
        get(norm).variance.assign(variance)
        return output

    if context % SIZE_MULTIPLE or context < 4:
        raise ValueError("context must be a multiple of 4 and at least 4 (the 9x9 radius)")
    with tempfile.TemporaryDirectory(prefix="kstyle_stats_", dir=directory) as folder:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The structure of `inputs`")
            channels = int(get("down1_conv").filters)
            last = stage(
                _ImageSource(image), 1, channels, lambda x: conv("down1_conv", x), "down1_norm"
            )
            for prefix, new in (("down1", "down2"), ("down2", "down3")):
                channels = int(get(f"{new}_conv").filters)
                previous, last = last, stage(
                    last, 0.5, channels, lambda x, p=prefix, n=new: conv(f"{n}_conv", act(p, x)),
                    f"{new}_norm",
                )  # fmt: skip
                previous.remove()
            skip = last  # becomes the block input: relu(norm(down3 input)), updated in place
            _elementwise(skip, lambda x: act("down3", x), work_bytes)
            for i in range(1, blocks + 1):
                channels = int(get(f"res{i}_a_conv").filters)
                a = stage(
                    skip, 1, channels, lambda x, i=i: conv(f"res{i}_a_conv", x), f"res{i}_a_norm"
                )
                b = stage(
                    a, 1, int(get(f"res{i}_b_conv").filters),
                    lambda x, i=i: conv(f"res{i}_b_conv", act(f"res{i}_a", x)), f"res{i}_b_norm",
                )  # fmt: skip
                a.remove()
                _elementwise(skip, lambda x, y, i=i: x + get(f"res{i}_b_norm")(y), work_bytes, b)
                b.remove()
            last = stage(
                skip, 2, int(get("up1_conv").filters),
                lambda x: conv("up1_conv", get("up1_upsample")(x)), "up1_norm",
            )  # fmt: skip
            skip.remove()
            stage(
                last, 2, int(get("up2_conv").filters),
                lambda x: conv("up2_conv", get("up2_upsample")(act("up1", x))), "up2_norm",
            )  # fmt: skip


def _elementwise(target, function, work_bytes, other=None):
    """``target = function(target[, other])`` band by band, in place (no spatial context)."""
    height, width, channels = target.shape
    rows = max(1, int(work_bytes // (width * channels * 4 * 8)))
    for start in range(0, height, rows):
        stop = min(height, start + rows)
        arguments = [target.read(start, stop)[None]]
        if other is not None:
            arguments.append(other.read(start, stop)[None])
        target.write(start, np.asarray(function(*arguments))[0])


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
        stats_pixels: the most pixels a whole-image statistics pass may take (default: what
            fits DEFAULT_MAX_MEMORY). Larger images get exact statistics from
            :func:`exact_norm_statistics` (bands of activations of about
            ``stats_pixels * BYTES_PER_PIXEL / 4`` bytes, the rest on disk).
        exact_statistics: False takes the statistics of larger images from a copy downscaled
            to ``stats_pixels`` instead (faster, no disk, but drifts from an untiled pass).
        directory: where exact_norm_statistics keeps its temporary files (default: temp dir).
    """

    def __init__(
        self,
        model,
        tile: int,
        margin: int = DEFAULT_MARGIN,
        feather: int = DEFAULT_FEATHER,
        stats_pixels: int | None = None,
        exact_statistics: bool = True,
        directory=None,
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
        self.exact_statistics = exact_statistics and _stage_plan(model) is not None
        self.directory = directory

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
        if self.exact_statistics and height * width > self.stats_pixels:
            work_bytes = self.stats_pixels * BYTES_PER_PIXEL // 4
            exact_norm_statistics(self.tile_model, image, work_bytes, self.directory)
        else:
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
