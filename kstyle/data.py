"""Content images for training, as batched ``tf.data`` pipelines of float32 RGB in [0, 255].

Two sources: a folder of images (searched recursively) or a TensorFlow Datasets dataset
(``coco/2014`` train by default, the reference's data). Every image is decoded, made RGB
(gray repeated, alpha dropped), resized to ``image_size`` × ``image_size`` without keeping the
aspect ratio (as the reference does), reshuffled every epoch and batched with the last
partial batch dropped. Unreadable files are skipped and counted, never fatal.
"""

import dataclasses
import math
import os

import tensorflow as tf

from kstyle.errors import KstyleError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
DEFAULT_TFDS_NAME = "coco/2014"
SHUFFLE_BUFFER_ENCODED = 2048  # tfds images are shuffled as encoded bytes (~160 kB each)


@dataclasses.dataclass
class TrainingData:
    """A training pipeline and what is known about it.

    Attributes:
        dataset: yields (batch_size, image_size, image_size, 3) float32 batches in [0, 255].
        num_images: images in one epoch before any are skipped.
        steps_per_epoch: ``num_images // batch_size``: an upper bound when files are skipped.
        description: where the images come from, for logs.
        checked: files the pipeline has tried to decode so far, over all passes (or None).
        skipped: files of the first pass that could not be decoded (or None).
    """

    dataset: tf.data.Dataset
    num_images: int
    steps_per_epoch: int
    description: str
    checked: tf.Variable | None = None
    skipped: tf.Variable | None = None

    def skipped_files(self) -> tuple[int, bool]:
        """``(unreadable files seen so far in one pass, whether that pass is complete)``."""
        if self.skipped is None:
            return 0, True
        return int(self.skipped.numpy()), int(self.checked.numpy()) >= self.num_images


def list_image_files(folder: str, fraction: float = 1.0) -> list[str]:
    """Image files under ``folder`` (recursive, sorted), the first ``floor(N * fraction)``.

    Raises:
        KstyleError: the folder is missing, holds no images, or the fraction keeps none.
    """
    if not 0.0 < fraction <= 1.0:
        raise KstyleError(f"--fraction must be in (0, 1], got {fraction}")
    if not os.path.isdir(folder):
        raise KstyleError(f"data folder not found: {folder}")
    files = []
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        files.extend(
            os.path.join(root, name)
            for name in sorted(names)
            if name.lower().endswith(IMAGE_EXTENSIONS)
        )
    if not files:
        raise KstyleError(
            f"no images in {folder} (looked for {', '.join(IMAGE_EXTENSIONS)}, recursively)"
        )
    kept = files[: math.floor(len(files) * fraction)]
    if not kept:
        raise KstyleError(
            f"--fraction {fraction} keeps none of the {len(files)} images in {folder}"
        )
    return kept


def decode_and_resize(encoded, image_size: int):
    """Encoded JPEG/PNG/BMP/GIF/WebP bytes -> (image_size, image_size, 3) float32 in [0, 255].

    Gray images get three equal channels and alpha is dropped; GIFs give their first frame.
    """
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False, dtype=tf.uint8)
    image = tf.image.resize(
        tf.cast(image, tf.float32), (image_size, image_size), method="bilinear", antialias=True
    )
    image = tf.clip_by_value(image, 0.0, 255.0)
    image.set_shape((image_size, image_size, 3))
    return image


def _decode_or_flag(path, image_size):
    """A one-element dataset: ``(image, True)``, or ``(zeros, False)`` if ``path`` is unreadable."""
    decoded = tf.data.Dataset.from_tensors(path).map(
        lambda p: (decode_and_resize(tf.io.read_file(p), image_size), True)
    )
    fallback = tf.data.Dataset.from_tensors((tf.zeros((image_size, image_size, 3)), False))
    return decoded.ignore_errors().concatenate(fallback).take(1)


def _batch(dataset, batch_size, options=None):
    dataset = dataset.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    options = options or tf.data.Options()
    return dataset.with_options(options)


def folder_dataset(
    folder: str, image_size=256, batch_size=4, fraction=1.0, seed=None
) -> TrainingData:
    """Training batches from every image under ``folder`` (see ``list_image_files``).

    File order is reshuffled every epoch with ``seed``. Files that cannot be decoded
    (truncated, empty, not an image) are dropped and counted in ``TrainingData.skipped``.
    """
    files = list_image_files(folder, fraction)
    checked = tf.Variable(0, dtype=tf.int64, trainable=False, name="files_checked")
    skipped = tf.Variable(0, dtype=tf.int64, trainable=False, name="files_skipped")
    num_files = tf.constant(len(files), tf.int64)

    def keep_readable(image, readable):
        # Runs once per file, in order; each pass over the files is a separate iteration,
        # so the first len(files) checks are exactly the first pass.
        in_first_pass = checked.assign_add(1) <= num_files
        skipped.assign_add(tf.cast(in_first_pass & tf.logical_not(readable), tf.int64))
        return readable

    dataset = tf.data.Dataset.from_tensor_slices(files)
    dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.interleave(
        lambda path: _decode_or_flag(path, image_size),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=seed is not None,
    )
    dataset = dataset.filter(keep_readable).map(lambda image, readable: image)
    data = TrainingData(
        dataset=_batch(dataset, batch_size),
        num_images=len(files),
        steps_per_epoch=len(files) // batch_size,
        description=f"{len(files)} images from {folder}",
        checked=checked,
        skipped=skipped,
    )
    if data.steps_per_epoch == 0:
        raise KstyleError(
            f"{len(files)} images in {folder} make no batch of {batch_size}; "
            "add images or lower --batch-size"
        )
    return data


def _count_examples(builder, split, dataset) -> int:
    """Examples in a tfds split: from its metadata, else from the dataset itself."""
    try:
        return int(builder.info.splits[split].num_examples)
    except (KeyError, ValueError):  # no metadata (e.g. under tfds.testing.mock_data)
        cardinality = int(dataset.cardinality())
        if cardinality >= 0:
            return cardinality
        return int(dataset.reduce(0, lambda count, _: count + 1))


def tfds_dataset(
    name=DEFAULT_TFDS_NAME,
    split="train",
    data_dir=None,
    image_size=256,
    batch_size=4,
    fraction=1.0,
    seed=None,
    download=True,
) -> TrainingData:
    """Training batches from a TensorFlow Datasets image dataset (COCO 2014 train by default).

    The dataset is downloaded and prepared by tfds on first use (COCO 2014 is about 13 GB)
    into ``data_dir`` (tfds's default ``~/tensorflow_datasets`` when None). ``fraction`` keeps
    the first ``floor(N * fraction)`` examples of the split, as the reference does with files.
    """
    import tensorflow_datasets as tfds

    if not 0.0 < fraction <= 1.0:
        raise KstyleError(f"--fraction must be in (0, 1], got {fraction}")
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        if download:
            builder.download_and_prepare()
        dataset = builder.as_dataset(
            split=split,
            shuffle_files=True,
            # read only the encoded image: no decoding here, and no boxes or captions at all
            decoders=tfds.decode.PartialDecoding(
                {"image": True}, decoders={"image": tfds.decode.SkipDecoding()}
            ),
            read_config=tfds.ReadConfig(shuffle_seed=seed),
        )
        total = _count_examples(builder, split, dataset)
    except KstyleError:
        raise
    except Exception as error:
        first_line = (str(error).strip().splitlines() or [""])[0]
        raise KstyleError(
            f"could not load tfds dataset {name!r} split {split!r}: "
            f"{type(error).__name__}: {first_line}"
        ) from error
    keep = math.floor(total * fraction)
    if keep < batch_size:
        raise KstyleError(f"{name} {split} with --fraction {fraction} keeps {keep} images")
    dataset = dataset.take(keep).map(lambda example: example["image"])
    dataset = dataset.shuffle(min(keep, SHUFFLE_BUFFER_ENCODED), seed=seed)
    dataset = dataset.map(
        lambda encoded: decode_and_resize(encoded, image_size),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=seed is not None,
    )
    return TrainingData(
        dataset=_batch(dataset, batch_size),
        num_images=keep,
        steps_per_epoch=keep // batch_size,
        description=f"{keep} images from tfds {name} {split}",
    )
