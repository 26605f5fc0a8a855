"""A small demo set made on the spot from photos that matplotlib ships, and a style image.

Nothing is downloaded: the content images are random crops, flips, small rotations and
colour shifts of matplotlib's sample photos, and the style image is drawn procedurally
(bold swirling brush strokes). The same seed always gives the same files.
"""

import math
import os

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

SAMPLE_PHOTOS = ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png")
STYLE_PALETTE = (
    (18, 38, 92),
    (30, 70, 150),
    (60, 120, 190),
    (238, 200, 60),
    (250, 230, 120),
    (20, 20, 40),
    (120, 170, 210),
    (200, 90, 40),
)


def sample_photo_paths() -> list[str]:
    """Paths of the photos in matplotlib's ``sample_data`` used as demo content."""
    import matplotlib

    folder = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data")
    return [os.path.join(folder, name) for name in SAMPLE_PHOTOS]


def make_content_images(folder: str, count: int = 64, size: int = 160, seed: int = 0) -> list:
    """Writes ``count`` JPEG variations of the sample photos into ``folder``; returns paths."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    photos = []
    for path in sample_photo_paths():
        with Image.open(path) as image:
            photos.append(image.convert("RGB"))
    written = []
    for index in range(count):
        photo = photos[index % len(photos)]
        width, height = photo.size
        crop = int(min(width, height) * rng.uniform(0.35, 1.0))
        left = int(rng.integers(0, width - crop + 1))
        top = int(rng.integers(0, height - crop + 1))
        image = photo.crop((left, top, left + crop, top + crop))
        image = image.rotate(float(rng.uniform(-12, 12)), Image.Resampling.BILINEAR)
        if rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        image = ImageEnhance.Color(image).enhance(float(rng.uniform(0.6, 1.4)))
        image = ImageEnhance.Brightness(image).enhance(float(rng.uniform(0.8, 1.2)))
        image = image.resize((size, size), Image.Resampling.LANCZOS)
        target = os.path.join(folder, f"demo_{index:03d}.jpg")
        image.save(target, quality=92)
        written.append(target)
    return written


def make_style_image(path: str, size: int = 256, seed: int = 0) -> str:
    """Draws a swirling, Starry-Night-coloured brush-stroke painting and saves it to ``path``."""
    rng = np.random.default_rng(seed)
    scale = 4  # draw large, then shrink, for smooth strokes
    canvas = Image.new("RGB", (size * scale, size * scale), STYLE_PALETTE[0])
    draw = ImageDraw.Draw(canvas)
    centres = rng.uniform(0, size * scale, size=(5, 2))
    for _ in range(900):
        x, y = rng.uniform(0, size * scale, size=2)
        cx, cy = centres[rng.integers(len(centres))]
        angle = math.atan2(y - cy, x - cx) + math.pi / 2  # strokes circle around a centre
        length = rng.uniform(10, 28) * scale
        dx, dy = math.cos(angle) * length, math.sin(angle) * length
        colour = STYLE_PALETTE[int(rng.integers(len(STYLE_PALETTE)))]
        width = int(rng.uniform(2, 6) * scale)
        draw.line((x - dx / 2, y - dy / 2, x + dx / 2, y + dy / 2), fill=colour, width=width)
    canvas = canvas.filter(ImageFilter.GaussianBlur(scale / 2))
    canvas = canvas.resize((size, size), Image.Resampling.LANCZOS)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    canvas.save(path)
    return path


def prepare_demo(folder: str) -> dict:
    """Makes the demo set under ``folder`` (once) and returns its paths.

    Returns:
        ``{"style": style PNG, "data": content folder, "photo": a full-size photo to stylize}``.
    """
    style = os.path.join(folder, "demo_style.png")
    data = os.path.join(folder, "content")
    if not os.path.isfile(style):
        make_style_image(style)
    if not os.path.isdir(data) or not os.listdir(data):
        make_content_images(data)
    return {"style": style, "data": data, "photo": sample_photo_paths()[0]}


def structured_image(height, width, seed=0):
    """Gradients, discs, rectangles and noise: an image with real edges and flat areas."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack(
        [x / width * 255, y / height * 255, 128 + 60 * np.sin(x / 17.0) * np.cos(y / 23.0)], -1
    )
    for _ in range(12):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        radius = rng.uniform(height / 20, height / 5)
        image[(y - cy) ** 2 + (x - cx) ** 2 < radius**2] = rng.uniform(0, 255, 3)
    for _ in range(8):
        top, left = rng.integers(0, height - 8), rng.integers(0, width - 8)
        image[
            top : top + rng.integers(4, height // 4), left : left + rng.integers(4, width // 4)
        ] = rng.uniform(0, 255, 3)
    image += rng.normal(0, 12, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)
