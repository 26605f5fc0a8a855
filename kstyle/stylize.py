"""Inference: load a trained transform network and stylize images of any size.

Images are read with Pillow (EXIF orientation applied; gray, RGBA, palette, 16-bit and CMYK
made 8-bit RGB), reflect-padded to a multiple of 4, run through the network once, and cropped
back, so the output has the input's exact size.
"""

import functools
import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from kstyle import tiling
from kstyle.data import IMAGE_EXTENSIONS
from kstyle.errors import KstyleError

SIZE_MULTIPLE = 4  # two stride-2 convolutions, then two x2 upsamplings
OUTPUT_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm")
# Pillow's decompression-bomb limit (about 89.5 MP). kstyle refuses images above it outright
# (Pillow itself only warns up to twice the limit); --max-pixels changes it, 0 turns it off.
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS
_AUTO = "auto"


def load_transform_net(path: str):
    """Loads a trained transform network from a ``.keras`` file or a training run directory.

    Raises:
        KstyleError: nothing there, or the file is not a loadable Keras model.
    """
    import keras

    import kstyle.loss_net  # noqa: F401  (registers kstyle's layers)
    import kstyle.transform_net  # noqa: F401

    if os.path.isdir(path):
        candidate = os.path.join(path, "model.keras")
        if not os.path.isfile(candidate):
            raise KstyleError(f"no model.keras in run directory {path}")
        path = candidate
    if not os.path.isfile(path):
        raise KstyleError(f"model not found: {path}")
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as error:
        raise KstyleError(
            f"could not load model {path}: {type(error).__name__}: "
            + (str(error).strip().splitlines() or [""])[0][:200]
        ) from error


def _to_8bit_rgb(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit or 32-bit gray
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode != "F" and values.max() > 255 else 255.0
        if image.mode == "F":
            top = max(float(values.max()), 1.0)
        gray = np.clip(np.round(values / top * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)  # transparent areas become white
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _bomb_message(path, pixels, size, max_pixels):
    return (
        f"{path} has {pixels:,} pixels ({size[0]}x{size[1]}), more than the limit of "
        f"{max_pixels:,} (decompression-bomb guard); raise it with --max-pixels N, "
        "or turn it off with --max-pixels 0"
    )


def check_pixels(path: str, width: int, height: int, max_pixels=DEFAULT_MAX_PIXELS) -> None:
    """Raises KstyleError if a width x height picture exceeds ``max_pixels`` (0/None: no limit)."""
    if max_pixels and width * height > max_pixels:
        raise KstyleError(_bomb_message(path, width * height, (width, height), max_pixels))


def load_image(
    path: str, max_size: int | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Reads an image file as a (H, W, 3) uint8 RGB array.

    EXIF orientation is applied; gray, palette, 16-bit and CMYK become RGB; transparency is
    composited on white. ``max_size`` shrinks the image (keeping its aspect ratio) so that
    its longer side is at most that many pixels. ``max_pixels`` is the decompression-bomb
    guard: a file whose header declares more pixels is refused before it is decoded
    (default: Pillow's ``MAX_IMAGE_PIXELS``; 0 or None: no limit).

    Raises:
        KstyleError: the file is missing, is not an image Pillow can read, or is too large.
    """
    if not os.path.isfile(path):
        raise KstyleError(f"image not found: {path}")
    saved_limit = Image.MAX_IMAGE_PIXELS
    try:
        # Pillow reads its limit from a module global and only warns between 1x and 2x of
        # it; turn its check off for this call and refuse anything over the limit ourselves,
        # from the header, before decoding (the global is restored below).
        Image.MAX_IMAGE_PIXELS = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                check_pixels(path, *image.size, max_pixels=max_pixels)
                image = ImageOps.exif_transpose(image)
                image.load()
                if max_size and max(image.size) > max_size:
                    scale = max_size / max(image.size)
                    new_size = tuple(max(1, round(side * scale)) for side in image.size)
                    if image.mode not in ("RGB", "RGBA", "L", "LA"):
                        image = Image.fromarray(_to_8bit_rgb(image))
                    image = image.resize(new_size, Image.Resampling.LANCZOS)
                return _to_8bit_rgb(image)
    except Image.DecompressionBombError as error:
        raise KstyleError(
            f"{path} is larger than the limit of {max_pixels:,} pixels (decompression-bomb "
            "guard); raise it with --max-pixels N, or turn it off with --max-pixels 0"
        ) from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise KstyleError(f"cannot read image {path}: {error}".splitlines()[0]) from error
    finally:
        Image.MAX_IMAGE_PIXELS = saved_limit


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


def check_strength(strength) -> float:
    """Returns ``strength`` as a float, or raises KstyleError unless 0 <= strength <= 1."""
    try:
        value = float(strength)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise KstyleError(f"--strength must be between 0 and 1, got {strength}")
    return value


def _pad_to_multiple(batch):
    """Reflect-pads (B, H, W, 3) to multiples of 4 (edge mode where too small to mirror)."""
    height, width = batch.shape[1:3]
    pad_h, pad_w = (-height) % SIZE_MULTIPLE, (-width) % SIZE_MULTIPLE
    if pad_h or pad_w:
        mode = "reflect" if height > pad_h and width > pad_w else "edge"
        batch = np.pad(batch, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode=mode)
    return batch


def _finish(content, output, preserve, strength):
    """Colour preservation, then strength blending, then rounding to uint8."""
    if preserve:
        output = preserve_color(content, output)
    output = blend(content, output, strength)
    return np.clip(np.round(output), 0, 255).astype(np.uint8)


def stylize_array(
    model,
    image: np.ndarray,
    *,
    preserve_colors: bool = False,
    strength: float = 1.0,
    tile=None,
    max_memory=_AUTO,
    tiler=None,
    progress=None,
) -> np.ndarray:
    """Stylizes one (H, W, 3) uint8 or [0, 255] float image; returns (H, W, 3) uint8.

    The image is reflect-padded to a multiple of 4 (edge-padded where it is too small to
    mirror) and the output cropped back, so any H, W work. The input is not modified.

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
            means :data:`kstyle.tiling.DEFAULT_MAX_MEMORY`, None means no limit.
        tiler: a prebuilt :class:`kstyle.tiling.TiledStylizer` to reuse (its tile size wins).
        progress: optional callable, called with no arguments after each tile.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise KstyleError(f"expected an (H, W, 3) image, got shape {image.shape}")
    strength = check_strength(strength)
    if strength == 0.0:
        return np.clip(np.round(image), 0, 255).astype(np.uint8)
    height, width = image.shape[:2]
    padded = _pad_to_multiple(image[None])[0]
    if max_memory == _AUTO:
        max_memory = tiling.DEFAULT_MAX_MEMORY
    elif max_memory is not None:
        max_memory = tiling.parse_memory(max_memory)
    if tile is None and tiler is None and tiling.needs_tiling(*padded.shape[:2], max_memory):
        tile = tiling.auto_tile_size(max_memory)
    if tiler is None and tile:
        stats_pixels = tiling.pixels_within(max_memory) if max_memory else 2**62
        tiler = tiling.TiledStylizer(model, int(tile), stats_pixels=stats_pixels)
    if tiler is not None:
        output = tiler(padded, progress=progress)[:height, :width]
    else:
        batch = padded.astype(np.float32)[None]
        output = tiling.run_model(model, batch)[0, :height, :width]
    return _finish(image, output, preserve_colors, strength)


def stylize_batch(model, frames: np.ndarray, *, preserve_colors=False, strength=1.0):
    """Stylizes a (B, H, W, 3) batch of same-size frames in one pass; returns uint8 (B, H, W, 3).

    Same options as :func:`stylize_array` (no tiling: the batch must fit in memory).
    """
    frames = np.asarray(frames)
    strength = check_strength(strength)
    if strength == 0.0:
        return np.clip(np.round(frames), 0, 255).astype(np.uint8)
    height, width = frames.shape[1:3]
    batch = _pad_to_multiple(frames.astype(np.float32))
    output = tiling.run_model(model, batch)[:, :height, :width]
    return np.stack(
        [_finish(f, o, preserve_colors, strength) for f, o in zip(frames, output, strict=True)]
    )


def side_by_side(left: np.ndarray, right: np.ndarray, gap: int = 8) -> np.ndarray:
    """Two (H, W, 3) uint8 images next to each other on white, tops aligned."""
    height = max(left.shape[0], right.shape[0])
    canvas = np.full((height, left.shape[1] + gap + right.shape[1], 3), 255, np.uint8)
    canvas[: left.shape[0], : left.shape[1]] = left
    canvas[: right.shape[0], left.shape[1] + gap :] = right
    return canvas


def save_image(array: np.ndarray, path: str) -> None:
    """Writes a uint8 RGB array to ``path`` atomically (temporary file, then rename)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    extension = os.path.splitext(path)[1].lower()
    if extension not in OUTPUT_EXTENSIONS:
        raise KstyleError(
            f"unknown output image type {extension or '(none)'} for {path}; "
            f"use one of {', '.join(OUTPUT_EXTENSIONS)}"
        )
    temporary = os.path.join(directory, f".{os.path.basename(path)}.tmp{extension}")
    image_format = Image.registered_extensions()[extension]
    Image.fromarray(array).save(
        temporary,
        format=image_format,
        **({"quality": 95} if image_format in ("JPEG", "WEBP") else {}),
    )
    os.replace(temporary, path)


def _image_files(folder):
    return sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(folder)
        for name in names
        if name.lower().endswith(IMAGE_EXTENSIONS)
    )


def is_video(path: str) -> bool:
    """Whether ``path`` has a video extension (:data:`VIDEO_EXTENSIONS`)."""
    return path.lower().endswith(VIDEO_EXTENSIONS)


def stylize(
    model,
    input_path: str,
    output_path: str,
    max_size=None,
    show_input=False,
    *,
    preserve_colors: bool = False,
    strength: float = 1.0,
    tile=None,
    max_memory=_AUTO,
    max_pixels=DEFAULT_MAX_PIXELS,
    progress: bool = False,
):
    """Stylizes an image file, a video, or every image under a folder, and writes the results.

    Args:
        model: a transform network, or a path to a ``.keras`` file or run directory.
        input_path: an image file, a video (:data:`VIDEO_EXTENSIONS`), or a folder (searched
            recursively for images).
        output_path: a file when the input is a file (an existing folder is also accepted);
            a folder when the input is a folder (the tree is mirrored, names kept, PNG output).
            A video input needs a video output path.
        max_size: shrink inputs so their longer side is at most this (None: keep the size).
        show_input: write input | output side by side, like the reference's final figure.
        preserve_colors, strength, tile, max_memory: see :func:`stylize_array`.
        max_pixels: decompression-bomb guard (see :func:`load_image`).
        progress: show a progress bar on stderr (videos: frames/s; large images: tiles).

    Returns:
        ``(written, failed)``: output paths written, and ``(input path, reason)`` pairs for
        images that could not be read; one bad image never stops a folder.
    """
    strength = check_strength(strength)
    if max_memory not in (_AUTO, None):
        max_memory = tiling.parse_memory(max_memory)
    if tile is not None and (int(tile) < 0 or int(tile) % SIZE_MULTIPLE):
        raise KstyleError(f"--tile must be a multiple of 4 (0: never tile), got {tile}")
    if isinstance(model, str):
        model = load_transform_net(model)
    if os.path.isfile(input_path) and is_video(input_path):
        from kstyle.video import stylize_video

        if os.path.isdir(output_path) or not is_video(output_path):
            raise KstyleError(
                f"a video input needs a video output ({', '.join(VIDEO_EXTENSIONS)}), "
                f"got {output_path}"
            )
        stylize_video(
            model,
            input_path,
            output_path,
            max_size=max_size,
            preserve_colors=preserve_colors,
            strength=strength,
            max_memory=max_memory,
            max_pixels=max_pixels,
            show_input=show_input,
            progress=progress,
            tile=tile,
        )
        return [output_path], []
    if os.path.isdir(input_path):
        jobs = []
        for source in _image_files(input_path):
            relative = os.path.splitext(os.path.relpath(source, input_path))[0] + ".png"
            jobs.append((source, os.path.join(output_path, relative)))
        if not jobs:
            raise KstyleError(f"no images in {input_path}")
    elif os.path.isfile(input_path):
        target = output_path
        if os.path.isdir(output_path):
            name = os.path.splitext(os.path.basename(input_path))[0] + ".png"
            target = os.path.join(output_path, name)
        jobs = [(input_path, target)]
    else:
        raise KstyleError(f"input not found: {input_path}")

    written, failed = [], []
    tilers = {}
    for source, target in jobs:
        try:
            content = load_image(source, max_size=max_size, max_pixels=max_pixels)
        except KstyleError as error:
            if len(jobs) == 1:
                raise
            failed.append((source, str(error)))
            continue
        tiler, bar = None, None
        height, width = (side + (-side) % SIZE_MULTIPLE for side in content.shape[:2])
        size = tile
        if size is None and tiling.needs_tiling(
            height, width, tiling.DEFAULT_MAX_MEMORY if max_memory == _AUTO else max_memory
        ):
            size = tiling.auto_tile_size(
                tiling.DEFAULT_MAX_MEMORY if max_memory == _AUTO else max_memory
            )
        if size:
            if size not in tilers:  # build once per tile size, reuse across a folder
                budget = tiling.DEFAULT_MAX_MEMORY if max_memory == _AUTO else max_memory
                stats_pixels = tiling.pixels_within(budget) if budget else 2**62
                tilers[size] = tiling.TiledStylizer(model, int(size), stats_pixels=stats_pixels)
            tiler = tilers[size]
            if progress:
                from kstyle.video import FrameProgress

                bar = FrameProgress(tiler.tiles(height, width), label="tiles")
        result = stylize_array(
            model,
            content,
            preserve_colors=preserve_colors,
            strength=strength,
            tile=0,
            tiler=tiler,
            progress=functools.partial(bar.update, 1) if bar else None,
        )
        if bar:
            bar.close()
        if show_input:
            result = side_by_side(content, result)
        save_image(result, target)
        written.append(target)
    return written, failed
