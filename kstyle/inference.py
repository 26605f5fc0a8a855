"""Stylizing arrays: the transform net on one image or a batch of frames, with colour
preservation, strength, padding to the net's size multiple, and tiling where the memory
budget asks for it.
"""

import numpy as np

from kstyle import tiling
from kstyle.checks import check_strength, check_tile
from kstyle.constants import SIZE_MULTIPLE
from kstyle.errors import KstyleError
from kstyle.forward import model_size_multiple, model_smallest_side
from kstyle.images import to_uint8
from kstyle.memory import AUTO, needs_tiling, pixels_within, resolve_max_memory
from kstyle.styles import styled_net
from kstyle.stylize_paths import run_pass

_RGB_TO_YCBCR = np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]]
)
_YCBCR_TO_RGB = np.linalg.inv(_RGB_TO_YCBCR)  # exact inverse: round trips are lossless
_CHROMA_OFFSET = np.array([0.0, 128.0, 128.0])


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) RGB in [0, 255] -> float64 YCbCr, full-range ITU-R BT.601 (as JPEG and Pillow)."""
    return np.asarray(rgb, np.float64) @ _RGB_TO_YCBCR.T + _CHROMA_OFFSET


def ycbcr_to_rgb(ycbcr: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_ycbcr`: (..., 3) YCbCr -> float64 RGB (not clipped)."""
    return (np.asarray(ycbcr, np.float64) - _CHROMA_OFFSET) @ _YCBCR_TO_RGB.T


def preserve_color(content: np.ndarray, stylized: np.ndarray) -> np.ndarray:
    """Luminance-only transfer (Gatys et al. 2016): content's Cb, Cr with the stylized Y.

    Both are (H, W, 3) RGB in [0, 255]; returns (H, W, 3) float64 RGB in [0, 255]. Where the
    stylized luminance would push the content's colour outside the RGB cube, the luminance is
    clamped to the nearest value that keeps it inside, so the chroma is kept exactly.
    """
    content_ycc = rgb_to_ycbcr(content)
    chroma_rgb = ycbcr_to_rgb(np.concatenate([np.zeros_like(content_ycc[..., :1]),
                                              content_ycc[..., 1:]], -1))  # fmt: skip
    lowest = -chroma_rgb.min(axis=-1)  # smallest Y that keeps every channel >= 0
    highest = 255.0 - chroma_rgb.max(axis=-1)  # largest Y that keeps every channel <= 255
    luminance = np.clip(rgb_to_ycbcr(stylized)[..., 0], lowest, np.maximum(lowest, highest))
    return np.clip(chroma_rgb + luminance[..., None], 0.0, 255.0)


def blend(content: np.ndarray, stylized: np.ndarray, strength: float) -> np.ndarray:
    """``strength * stylized + (1 - strength) * content`` in float32, (H, W, 3) in [0, 255]."""
    if strength == 1.0:
        return np.asarray(stylized, np.float32)
    return strength * np.asarray(stylized, np.float32) + (1.0 - strength) * np.asarray(
        content, np.float32
    )


def padded_side(side: int, multiple: int, smallest: int = 0) -> int:
    """``side`` rounded up to a multiple of ``multiple``, and at least ``smallest``."""
    return max(side + (-side) % multiple, smallest)


def pad_to_multiple(batch, multiple=SIZE_MULTIPLE, smallest=0):
    """Reflect-pads (B, H, W, 3) at the bottom and right to multiples of ``multiple``, at least
    ``smallest`` (edge mode where the image is too small to mirror)."""
    height, width = batch.shape[1:3]
    pad_h = padded_side(height, multiple, smallest) - height
    pad_w = padded_side(width, multiple, smallest) - width
    if pad_h or pad_w:
        mode = "reflect" if height > pad_h and width > pad_w else "edge"
        batch = np.pad(batch, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode=mode)
    return batch


class Tilers:
    """Decides which images are tiled, and keeps one :class:`kstyle.tiling.TiledStylizer` per
    tile size so that a folder or a video builds each only once.

    Args:
        model: the transform net.
        tile: tile size in px (multiple of 4) for every image; None tiles only images whose
            whole-image pass would exceed ``max_memory``; 0 never tiles.
        max_memory: the budget (see :func:`kstyle.memory.resolve_max_memory`).
        work_dir: where tiling keeps its temporary files (None: the system's temp folder).
    """

    def __init__(self, model, tile=None, max_memory=AUTO, work_dir=None):
        check_tile(tile)
        self.model, self.tile = model, tile
        self.multiple = model_size_multiple(model)
        self.smallest = model_smallest_side(model)
        if tile and int(tile) % self.multiple:
            raise KstyleError(f"--tile must be a multiple of {self.multiple} for this network")
        self.budget = resolve_max_memory(max_memory)
        self.work_dir = work_dir
        self.built = {}

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) rounded up to the net's size multiple (and its smallest side), as
        stylizing pads them."""
        return tuple(padded_side(side, self.multiple, self.smallest) for side in (height, width))

    def for_size(self, height: int, width: int):
        """The tiler for a padded (height, width) image, or None to run it whole."""
        size = self.tile
        if size is None and needs_tiling(height, width, self.budget):
            size = tiling.auto_tile_size(self.budget)
            size = max(self.multiple, size - size % self.multiple)
        if not size:
            return None
        if size not in self.built:
            self.built[size] = tiling.TiledStylizer(
                self.model,
                int(size),
                stats_pixels=pixels_within(self.budget),
                directory=self.work_dir,
            )
        return self.built[size]


def _finish(content, output, preserve, strength):
    """Colour preservation, then strength blending, then rounding to uint8."""
    if preserve:
        output = preserve_color(content, output)
    return to_uint8(blend(content, output, strength))


def stylize_array(
    model,
    image: np.ndarray,
    *,
    preserve_colors: bool = False,
    strength: float = 1.0,
    tile=None,
    max_memory=AUTO,
    tiler=None,
    progress=None,
    style=None,
) -> np.ndarray:
    """Stylizes one (H, W, 3) uint8 or [0, 255] float image; returns (H, W, 3) uint8.

    The image is reflect-padded to the net's size multiple (4 for the seed net; edge-padded
    where it is too small to mirror) and the output cropped back, so any H, W work. The
    input is not modified.

    Args:
        model: the transform net.
        image: (H, W, 3) RGB in [0, 255].
        preserve_colors: keep the content's colours and take only the stylized luminance
            (YCbCr, full-range BT.601; see :func:`preserve_color`). Applied before ``strength``.
        strength: 0..1; the output is ``strength * stylized + (1 - strength) * content``.
            0 returns the content unchanged (the net is not run).
        tile: tile size in px (multiple of 4) for tiled stylization; None tiles only when a
            whole-image pass would exceed ``max_memory``; 0 never tiles.
        max_memory: bytes (or a string such as ``"4GB"``) the network pass may use; ``"auto"``
            means :data:`kstyle.memory.DEFAULT_MAX_MEMORY`, None means no limit.
        tiler: a prebuilt :class:`kstyle.tiling.TiledStylizer` to reuse (its tile size wins).
        progress: optional callable, called with no arguments after each tile.
        style: for a net of N styles, a style index, ``"0:0.5,3:0.5"`` or N weights
            (:func:`kstyle.styles.style_vector`; None: style 0). A prebuilt ``tiler`` must be
            of the net for this style (:func:`kstyle.styles.styled_net`).
    """
    model = styled_net(model, style)
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise KstyleError(f"expected an (H, W, 3) image, got shape {image.shape}")
    strength = check_strength(strength)
    if strength == 0.0:
        return to_uint8(image)
    height, width = image.shape[:2]
    padded = pad_to_multiple(image[None], model_size_multiple(model), model_smallest_side(model))[0]
    if tiler is None:
        tiler = Tilers(model, tile, max_memory).for_size(*padded.shape[:2])
    if tiler is not None:
        output = tiler(padded, progress=progress)[:height, :width]
    else:
        output = run_pass(model, padded.astype(np.float32)[None])[0, :height, :width]
    return _finish(image, output, preserve_colors, strength)


def stylize_batch(model, frames: np.ndarray, *, preserve_colors=False, strength=1.0, style=None):
    """Stylizes a (B, H, W, 3) batch of same-size frames in one pass; returns uint8 (B, H, W, 3).

    Same options as :func:`stylize_array` (no tiling: the batch must fit in memory).
    """
    model = styled_net(model, style)
    frames = np.asarray(frames)
    strength = check_strength(strength)
    if strength == 0.0:
        return to_uint8(frames)
    height, width = frames.shape[1:3]
    multiple, smallest = model_size_multiple(model), model_smallest_side(model)
    batch = pad_to_multiple(frames.astype(np.float32), multiple, smallest)
    output = run_pass(model, batch)[:, :height, :width]
    return np.stack(
        [_finish(f, o, preserve_colors, strength) for f, o in zip(frames, output, strict=True)]
    )
