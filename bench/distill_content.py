"""Content for bench/distill_fidelity.py: sample photos split by photo, crops, scenes, a teacher.

The photos are the sample images that registry packages ship inside their wheels (nothing is
downloaded): matplotlib's ``mpl-data/sample_data``, scikit-image's ``skimage/data`` and
scikit-learn's ``sklearn/datasets/images``. scikit-image and scikit-learn are needed by this
benchmark only (``pip install scikit-image scikit-learn``), not by kstyle.

The split is by photo (:data:`TRAIN_PHOTOS`, :data:`HELD_OUT_PHOTOS`): a held-out photo is
never cropped for training, for the teacher's fit or the student's.
"""

import importlib.util
import os

import numpy as np
from PIL import Image, ImageChops, ImageFilter

TRAIN_SCENE_SEED_START = 10_000  # held-out scenes use seeds 0 up
MIN_CROP_FRACTION = 0.25  # crop sides are 25-100 % of the photo's short side
DATA_FOLDERS = {  # package -> its sample images' folder inside the package
    "matplotlib": ("mpl-data", "sample_data"),
    "skimage": ("data",),
    "sklearn": ("datasets", "images"),
}
TRAIN_PHOTOS = (  # (package, file): cropped for training, never measured
    ("matplotlib", "Minduka_Present_Blue_Pack.png"),  # an illustration, 128²
    ("skimage", "astronaut.png"),
    ("skimage", "rocket.jpg"),
    ("skimage", "motorcycle_left.png"),
    ("skimage", "hubble_deep_field.jpg"),
    ("skimage", "ihc.png"),  # microscopy
    ("skimage", "retina.jpg"),
    ("skimage", "camera.png"),  # gray photos from here on (gray repeated to RGB)
    ("skimage", "coins.png"),
    ("skimage", "moon.png"),
    ("skimage", "grass.png"),
    ("skimage", "gravel.png"),
    ("skimage", "brick.png"),
)
HELD_OUT_PHOTOS = (  # (package, file): measured only, never cropped for training
    ("matplotlib", "grace_hopper.jpg"),  # portrait
    ("skimage", "chelsea.png"),  # a cat: fur
    ("skimage", "coffee.png"),  # a still life
    ("sklearn", "china.jpg"),  # a temple, trees and sky
    ("sklearn", "flower.jpg"),  # a close-up with a blurred background
)


def photo_path(package: str, name: str) -> str:
    """The path of sample image ``name`` inside installed ``package`` (not imported)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            f"error: the benchmark's photos need {package} "
            "(pip install matplotlib scikit-image scikit-learn)"
        )
    return os.path.join(spec.submodule_search_locations[0], *DATA_FOLDERS[package], name)


def load_photo(package: str, name: str) -> Image.Image:
    """Sample image ``name`` of ``package`` as an RGB PIL image (gray repeated, alpha dropped)."""
    with Image.open(photo_path(package, name)) as image:
        return image.convert("RGB")


def square_photo(photo: Image.Image, size: int) -> np.ndarray:
    """The centre square of ``photo`` resized to ``size`` x ``size``: (size, size, 3) uint8."""
    side = min(photo.size)
    left, top = (photo.width - side) // 2, (photo.height - side) // 2
    square = photo.crop((left, top, left + side, top + side))
    return np.asarray(square.resize((size, size), Image.Resampling.LANCZOS))


def photo_crops(photo: Image.Image, count: int, size: int, rng) -> list:
    """``count`` random square crops of ``photo``, (size, size, 3) uint8 each: side drawn
    uniformly in [25 %, 100 %] of the short side (but at least ``size`` where the photo
    allows, so that no crop is enlarged), anywhere in the photo, flipped left-right with
    probability 1/2, resized to ``size`` with a Lanczos filter."""
    short = min(photo.size)
    lowest = max(int(short * MIN_CROP_FRACTION), min(size, short))
    crops = []
    for _ in range(count):
        side = int(rng.integers(lowest, short + 1))
        left = int(rng.integers(0, photo.width - side + 1))
        top = int(rng.integers(0, photo.height - side + 1))
        crop = photo.crop((left, top, left + side, top + side))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        crops.append(np.asarray(crop.resize((size, size), Image.Resampling.LANCZOS)))
    return crops


def write_training_content(folder: str, scenes: int, crops: int, size: int, seed: int) -> list:
    """Writes ``scenes`` generated scenes (``kstyle.demo.structured_image``, seeds 10,000 up)
    and ``crops`` crops of the training photos (an equal share per photo, :func:`photo_crops`)
    into ``folder`` as ``size``² PNGs, once: files already there are read back. Returns the
    (size, size, 3) uint8 images, scenes first."""
    from kstyle.demo import structured_image

    os.makedirs(folder, exist_ok=True)
    images = []
    for index in range(scenes):
        path = os.path.join(folder, f"scene_{index:05d}.png")
        if not os.path.isfile(path):
            _save(path, structured_image(size, size, seed=TRAIN_SCENE_SEED_START + index))
        images.append(_read(path))
    rng = np.random.default_rng(seed)
    for number, (package, name) in enumerate(TRAIN_PHOTOS):
        share = crops // len(TRAIN_PHOTOS) + (number < crops % len(TRAIN_PHOTOS))
        stem = os.path.splitext(name)[0]
        paths = [os.path.join(folder, f"photo_{stem}_{i:04d}.png") for i in range(share)]
        if not all(os.path.isfile(path) for path in paths):
            made = photo_crops(load_photo(package, name), share, size, rng)
            for path, crop in zip(paths, made, strict=True):
                _save(path, crop)
        images.extend(_read(path) for path in paths)
    return images


def _save(path: str, image: np.ndarray) -> None:
    """Writes uint8 ``image`` to ``path`` as a PNG, atomically."""
    Image.fromarray(image).save(path + ".partial.png")
    os.replace(path + ".partial.png", path)


def _read(path: str) -> np.ndarray:
    """The image at ``path`` as (H, W, 3) uint8."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def painted(array: np.ndarray) -> np.ndarray:
    """The teacher's target picture for an (H, W, 3) uint8 image: median-smoothed, posterized
    to the demo style's palette (blended 65/35 with the smoothed image), with dark edges."""
    from kstyle.demo import STYLE_PALETTE

    image = Image.fromarray(array)
    smooth = image.filter(ImageFilter.MedianFilter(5))
    palette = Image.new("P", (1, 1))
    repeats = 256 // len(STYLE_PALETTE)
    palette.putpalette([value for colour in STYLE_PALETTE for value in colour] * repeats)
    poster = smooth.quantize(palette=palette, dither=Image.Dither.NONE).convert("RGB")
    mixed = Image.blend(poster, smooth, 0.35)
    edges = image.convert("L").filter(ImageFilter.GaussianBlur(1)).filter(ImageFilter.FIND_EDGES)
    edges = edges.point(lambda value: min(255, value * 3)).convert("RGB")
    return np.asarray(ImageChops.subtract(mixed, edges))


def fit_teacher(images: list, steps: int, path: str, seed: int, crop: int = 128) -> None:
    """Fits a ``johnson`` net to :func:`painted` on random ``crop``² crops of ``images`` (batch
    4, Adam 1e-3, mean squared error of [0, 1] pictures) and saves it to ``path``."""
    import keras
    import tensorflow as tf

    from kstyle.transform_net import build_transform_net

    keras.utils.set_random_seed(seed)
    inputs = np.stack(images).astype(np.float32)
    targets = np.stack([painted(image) for image in images]).astype(np.float32)
    pairs = tf.concat([inputs, targets], axis=-1)

    def random_crop(pair):
        pair = tf.image.random_crop(pair, (crop, crop, 6))
        return pair[..., :3], pair[..., 3:]

    data = tf.data.Dataset.from_tensor_slices(pairs).shuffle(len(images), seed=seed).repeat()
    data = data.map(random_crop).batch(4).prefetch(2)
    net = build_transform_net()
    net.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=lambda target, output: keras.ops.mean(keras.ops.square((output - target) / 255.0)),
    )
    net.fit(data, steps_per_epoch=steps, epochs=1, verbose=2)
    teacher = build_transform_net()  # the weights without the compiled loss (a lambda)
    teacher.set_weights(net.get_weights())
    teacher.save(path + ".partial.keras")
    os.replace(path + ".partial.keras", path)
