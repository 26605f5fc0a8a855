"""Image files in and out: reading (EXIF orientation, any mode to 8-bit RGB, a
decompression-bomb guard), atomic writing, and small array helpers shared by every command.
"""

import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from kstyle.errors import KstyleError
from kstyle.files import atomic_output

OUTPUT_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
# Pillow's decompression-bomb limit (about 89.5 MP). kstyle refuses images above it outright
# (Pillow itself only warns up to twice the limit); --max-pixels changes it, 0 turns it off.
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS


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


def side_by_side(left: np.ndarray, right: np.ndarray, gap: int = 8) -> np.ndarray:
    """Two (H, W, 3) uint8 images next to each other on white, tops aligned."""
    height = max(left.shape[0], right.shape[0])
    canvas = np.full((height, left.shape[1] + gap + right.shape[1], 3), 255, np.uint8)
    canvas[: left.shape[0], : left.shape[1]] = left
    canvas[: right.shape[0], left.shape[1] + gap :] = right
    return canvas


def picture_grid(rows, gap: int = 8) -> np.ndarray:
    """Rows of (H, W, 3) uint8 pictures as one picture on white: each row's pictures side by
    side, the rows one under another, ``gap`` px apart, left-aligned."""
    lines = []
    for pictures in rows:
        line = pictures[0]
        for picture in pictures[1:]:
            line = side_by_side(line, picture, gap)
        lines.append(line)
    canvas = np.full(
        (
            sum(line.shape[0] for line in lines) + gap * (len(lines) - 1),
            max(line.shape[1] for line in lines),
            3,
        ),
        255,
        np.uint8,
    )
    top = 0
    for line in lines:
        canvas[top : top + line.shape[0], : line.shape[1]] = line
        top += line.shape[0] + gap
    return canvas


def check_output_image(path: str) -> str:
    """Returns the Pillow format that ``path``'s extension picks (:data:`OUTPUT_EXTENSIONS`).

    Raises:
        KstyleError: an extension kstyle does not write.
    """
    extension = os.path.splitext(path)[1].lower()
    if extension not in OUTPUT_EXTENSIONS:
        raise KstyleError(
            f"unknown output image type {extension or '(none)'} for {path}; "
            f"use one of {', '.join(OUTPUT_EXTENSIONS)}"
        )
    return Image.registered_extensions()[extension]


def save_image(array: np.ndarray, path: str) -> None:
    """Writes a (H, W, 3) uint8 RGB array to ``path`` atomically; the extension picks the
    format (:func:`check_output_image`; JPEG and WebP at quality 95)."""
    image_format = check_output_image(path)
    options = {"quality": 95} if image_format in ("JPEG", "WEBP") else {}
    with atomic_output(path) as temporary:
        Image.fromarray(array).save(temporary, format=image_format, **options)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 images of one shape, in dB (inf when equal)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def to_uint8(image) -> np.ndarray:
    """Rounds and clips [0, 255] floats (or passes uint8) to a uint8 array of the same shape."""
    return np.clip(np.round(np.asarray(image)), 0, 255).astype(np.uint8)


def seam_metric(image, tile):
    """``(border, inside)``: the mean |step| between neighbouring pixels across the borders of
    ``tile``-px tiles, and everywhere else, of an (H, W, C) image (a seam shows as border >
    inside)."""
    image = image.astype(np.float64)
    steps_x = np.abs(np.diff(image, axis=1)).mean(axis=(0, 2))  # between columns i and i+1
    steps_y = np.abs(np.diff(image, axis=0)).mean(axis=(1, 2))
    at_x = np.zeros(len(steps_x), bool)
    at_x[tile - 1 :: tile] = True
    at_y = np.zeros(len(steps_y), bool)
    at_y[tile - 1 :: tile] = True
    border = np.concatenate([steps_x[at_x], steps_y[at_y]]).mean()
    inside = np.concatenate([steps_x[~at_x], steps_y[~at_y]]).mean()
    return border, inside
