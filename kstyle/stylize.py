"""Inference: load a trained transform network and stylize images of any size.

Images are read with Pillow (EXIF orientation applied; gray, RGBA, palette, 16-bit and CMYK
made 8-bit RGB), reflect-padded to a multiple of 4, run through the network once, and cropped
back, so the output has the input's exact size.
"""

import os

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from kstyle.data import IMAGE_EXTENSIONS
from kstyle.errors import KstyleError

SIZE_MULTIPLE = 4  # two stride-2 convolutions, then two x2 upsamplings
OUTPUT_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


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


def load_image(path: str, max_size: int | None = None) -> np.ndarray:
    """Reads an image file as a (H, W, 3) uint8 RGB array.

    EXIF orientation is applied; gray, palette, 16-bit and CMYK become RGB; transparency is
    composited on white. ``max_size`` shrinks the image (keeping its aspect ratio) so that
    its longer side is at most that many pixels.

    Raises:
        KstyleError: the file is missing or is not an image Pillow can read.
    """
    if not os.path.isfile(path):
        raise KstyleError(f"image not found: {path}")
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            image.load()
            if max_size and max(image.size) > max_size:
                scale = max_size / max(image.size)
                new_size = tuple(max(1, round(side * scale)) for side in image.size)
                if image.mode not in ("RGB", "RGBA", "L", "LA"):
                    image = Image.fromarray(_to_8bit_rgb(image))
                image = image.resize(new_size, Image.Resampling.LANCZOS)
            return _to_8bit_rgb(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise KstyleError(f"cannot read image {path}: {error}".splitlines()[0]) from error


def stylize_array(model, image: np.ndarray) -> np.ndarray:
    """Stylizes one (H, W, 3) uint8 or [0, 255] float image; returns (H, W, 3) uint8.

    The image is reflect-padded to a multiple of 4 (edge-padded where it is too small to
    mirror) and the output cropped back, so any H, W work. The input is not modified.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise KstyleError(f"expected an (H, W, 3) image, got shape {image.shape}")
    height, width = image.shape[:2]
    pad_h = (-height) % SIZE_MULTIPLE
    pad_w = (-width) % SIZE_MULTIPLE
    batch = image.astype(np.float32)[None]
    if pad_h or pad_w:
        mode = "reflect" if height > pad_h and width > pad_w else "edge"
        batch = np.pad(batch, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode=mode)
    output = np.asarray(model(batch, training=False))[0, :height, :width]
    return np.clip(np.round(output), 0, 255).astype(np.uint8)


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


def stylize(model, input_path: str, output_path: str, max_size=None, show_input=False):
    """Stylizes an image file, or every image under a folder, and writes the results.

    Args:
        model: a transform network, or a path to a ``.keras`` file or run directory.
        input_path: an image file or a folder (searched recursively).
        output_path: a file when the input is a file (an existing folder is also accepted);
            a folder when the input is a folder (the tree is mirrored, names kept, PNG output).
        max_size: shrink inputs so their longer side is at most this (None: keep the size).
        show_input: write input | output side by side, like the reference's final figure.

    Returns:
        ``(written, failed)``: output paths written, and ``(input path, reason)`` pairs for
        images that could not be read; one bad image never stops a folder.
    """
    if isinstance(model, str):
        model = load_transform_net(model)
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
    for source, target in jobs:
        try:
            content = load_image(source, max_size=max_size)
        except KstyleError as error:
            if len(jobs) == 1:
                raise
            failed.append((source, str(error)))
            continue
        result = stylize_array(model, content)
        if show_input:
            result = side_by_side(content, result)
        save_image(result, target)
        written.append(target)
    return written, failed
