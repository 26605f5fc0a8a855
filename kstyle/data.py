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
CACHE_SHUFFLE_BUFFER = 8192  # cached images are shuffled as uint8 (196 kB each at 256²)


MAX_EPOCHS = 2**31  # streams are "endless"; ``fit`` decides how many steps to take


@dataclasses.dataclass
class TrainingData:
    """A training pipeline and what is known about it.

    ``stream(start_step)`` yields (batch_size, image_size, image_size, 3) float32 batches in
    [0, 255], epoch after epoch without end: epoch ``e`` is the images in an order fixed by
    ``(seed, e)``, batched with its last partial batch dropped. The stream is therefore a pure
    function of the seed and the step, so a resumed run continues with the very batches the
    killed run would have seen next.

    Attributes:
        num_images: images in one epoch before any are skipped.
        steps_per_epoch: ``num_images // batch_size``: an upper bound when files are skipped.
        description: where the images come from, for logs.
        seed: the shuffling seed (drawn at random when none was given).
        checked: files the pipeline has tried to decode so far, over all passes (or None).
        skipped: files of the first pass that could not be decoded (or None).
    """

    make_epoch: object  # (epoch tensor, first batch, shard count, shard index, batch) -> Dataset
    num_images: int
    steps_per_epoch: int
    batch_size: int
    description: str
    seed: int
    checked: tf.Variable | None = None
    skipped: tf.Variable | None = None

    def stream(self, start_step: int = 0, input_context=None) -> tf.data.Dataset:
        """Batches from global step ``start_step`` on, for ``fit``.

        Args:
            start_step: training steps already done (0 for a new run).
            input_context: a ``tf.distribute.InputContext`` when each worker reads its own
                shard of the files (multi-worker training); batches are then per replica.
        """
        start_epoch, first_batch = divmod(int(start_step), self.steps_per_epoch)
        shards, index, batch = 1, 0, self.batch_size
        if input_context is not None:
            shards, index = input_context.num_input_pipelines, input_context.input_pipeline_id
            batch = input_context.get_per_replica_batch_size(self.batch_size)
        epochs = tf.data.Dataset.range(start_epoch, MAX_EPOCHS)
        dataset = epochs.flat_map(
            lambda epoch: self.make_epoch(
                epoch,
                tf.where(epoch == start_epoch, tf.constant(first_batch, tf.int64), 0)
                * (self.batch_size // shards),
                shards,
                index,
                batch,
            )
        )
        options = tf.data.Options()
        options.autotune.enabled = True
        options.experimental_optimization.map_parallelization = True
        if input_context is not None:  # each worker already reads only its own files
            options.experimental_distribute.auto_shard_policy = (
                tf.data.experimental.AutoShardPolicy.OFF
            )
        return dataset.prefetch(tf.data.AUTOTUNE).with_options(options)

    def one_epoch(self, epoch: int = 0) -> tf.data.Dataset:
        """The batches of epoch ``epoch`` alone (a finite dataset)."""
        return self.make_epoch(tf.constant(epoch, tf.int64), 0, 1, 0, self.batch_size)

    def skipped_files(self) -> tuple[int, bool]:
        """``(unreadable files seen so far in one pass, whether that pass is complete)``."""
        if self.skipped is None:
            return 0, True
        return int(self.skipped.numpy()), int(self.checked.numpy()) >= self.num_images


def resolve_seed(seed: int | None) -> int:
    """``seed``, or a fresh random one: a run always knows its data order."""
    import secrets

    return int(seed) if seed is not None else secrets.randbelow(2**31)


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


def folder_dataset(
    folder: str, image_size=256, batch_size=4, fraction=1.0, seed=None, cache=None
) -> TrainingData:
    """Training batches from every image under ``folder`` (see ``list_image_files``).

    File order is reshuffled every epoch, as a function of ``seed`` and the epoch. Files that
    cannot be decoded (truncated, empty, not an image) are dropped and counted in
    ``TrainingData.skipped``. ``cache``: None (decode every epoch), ``"memory"``, or a file
    path prefix for ``tf.data``'s on-disk cache of the decoded, resized images.
    """
    files = list_image_files(folder, fraction)
    if len(files) // batch_size == 0:
        raise KstyleError(
            f"{len(files)} images in {folder} make no batch of {batch_size}; "
            "add images or lower --batch-size"
        )
    seed = resolve_seed(seed)
    checked = tf.Variable(0, dtype=tf.int64, trainable=False, name="files_checked")
    skipped = tf.Variable(0, dtype=tf.int64, trainable=False, name="files_skipped")
    num_files = tf.constant(len(files), tf.int64)
    paths = tf.constant(files)

    def keep_readable(index, image, readable):
        # Runs once per file, in order; the first len(files) checks are the first pass.
        in_first_pass = checked.assign_add(1) <= num_files
        skipped.assign_add(tf.cast(in_first_pass & tf.logical_not(readable), tf.int64))
        return readable

    def decoded(indices):
        return indices.interleave(
            lambda index: _decode_or_flag(paths[index], image_size).map(
                lambda image, readable: (index, image, readable)
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        ).filter(keep_readable)

    cached = None
    if cache is not None:  # decode once, in file order; later epochs reorder the cache
        cached = decoded(tf.data.Dataset.range(len(files)))
        cached = cached.map(
            lambda index, image, readable: (index, tf.cast(tf.round(image), tf.uint8))
        )
        cached = cached.cache("" if cache == "memory" else cache)

    def make_epoch(epoch, first_file, shards, shard_index, batch):
        if cached is None:
            order = tf.random.experimental.stateless_shuffle(
                tf.range(len(files), dtype=tf.int64),
                seed=tf.stack([tf.constant(seed, tf.int64), epoch]),
            )
            indices = tf.data.Dataset.from_tensor_slices(order).shard(shards, shard_index)
            images = decoded(indices.skip(first_file)).map(lambda index, image, ok: image)
        else:  # the cache holds the files in order: shuffle it with a seed of this epoch
            images = cached.shard(shards, shard_index).shuffle(
                min(len(files), CACHE_SHUFFLE_BUFFER), seed=seed * 1_000_003 + epoch
            )
            images = images.skip(first_file).map(lambda index, image: tf.cast(image, tf.float32))
        return images.batch(batch, drop_remainder=True)

    return TrainingData(
        make_epoch=make_epoch,
        num_images=len(files),
        steps_per_epoch=len(files) // batch_size,
        batch_size=batch_size,
        description=f"{len(files)} images from {folder}",
        seed=seed,
        checked=checked,
        skipped=skipped,
    )


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
    cache=None,
) -> TrainingData:
    """Training batches from a TensorFlow Datasets image dataset (COCO 2014 train by default).

    The dataset is downloaded and prepared by tfds on first use (COCO 2014 is about 13 GB)
    into ``data_dir`` (tfds's default ``~/tensorflow_datasets`` when None). ``fraction`` keeps
    the first ``floor(N * fraction)`` examples of the split, as the reference does with files.
    The record files are read in an order fixed by ``seed``; each epoch then shuffles the
    encoded images through a buffer of 2048 with a seed of its own (so that a resumed run sees
    the same order). ``cache`` as in ``folder_dataset``.
    """
    import tensorflow_datasets as tfds

    seed = resolve_seed(seed)
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
            read_config=tfds.ReadConfig(shuffle_seed=seed, shuffle_reshuffle_each_iteration=False),
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
    encoded = dataset.take(keep).map(lambda example: example["image"])

    def decode(images):
        return images.map(
            lambda image: decode_and_resize(image, image_size),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )

    cached = None
    if cache is not None:
        cached = decode(encoded).map(lambda image: tf.cast(tf.round(image), tf.uint8))
        cached = cached.cache("" if cache == "memory" else cache)

    def make_epoch(epoch, first_file, shards, shard_index, batch):
        epoch_seed = seed * 1_000_003 + epoch
        if cached is None:
            images = encoded.shard(shards, shard_index)
            images = images.shuffle(min(keep, SHUFFLE_BUFFER_ENCODED), seed=epoch_seed)
            images = decode(images.skip(first_file))
        else:
            images = cached.shard(shards, shard_index)
            images = images.shuffle(min(keep, CACHE_SHUFFLE_BUFFER), seed=epoch_seed)
            images = images.skip(first_file).map(lambda image: tf.cast(image, tf.float32))
        return images.batch(batch, drop_remainder=True)

    return TrainingData(
        make_epoch=make_epoch,
        num_images=keep,
        steps_per_epoch=keep // batch_size,
        batch_size=batch_size,
        description=f"{keep} images from tfds {name} {split}",
        seed=seed,
    )
