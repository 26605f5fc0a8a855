"""Content images for training, as batched ``tf.data`` pipelines of float32 RGB in [0, 255].

Two sources: a folder of images (searched recursively), such as the COCO 2014 train images
of ``kstyle.coco``, or a TensorFlow Datasets dataset (``coco/2014``). Every image is decoded,
made RGB (gray repeated, alpha dropped), resized to ``image_size`` × ``image_size`` without
keeping the aspect ratio (as the reference does), reshuffled every epoch and batched with the
last partial batch dropped. Unreadable files, and files whose header declares more than
``max_pixels`` pixels (never decoded), are skipped and counted; a pipeline that cannot read a
single image stops with an error (see :func:`unreadable_epoch_message`) instead of looping.
"""

import dataclasses
import itertools
import math
import re

import tensorflow as tf

from kstyle.constants import BATCH_SIZE, DEFAULT_TFDS_NAME, IMAGE_SIZE
from kstyle.errors import KstyleError
from kstyle.files import list_image_files
from kstyle.image_headers import within_pixel_limit
from kstyle.images import DEFAULT_MAX_PIXELS

SHUFFLE_BLOCK = 2048  # tfds images are shuffled in blocks of this many encoded images
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
        steps_per_epoch: batches per epoch (an epoch that lost unreadable files wraps around).
        description: where the images come from, for logs.
        seed: the shuffling seed (drawn at random when none was given).
        checked: files the pipeline has checked so far, over all passes (or None).
        skipped: files of the first pass that could not be decoded or were over the pixel
            limit (or None).
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


def _or_flag(value, function, fallback):
    """A one-element dataset: ``function(value)``, or ``fallback`` if that raises an error."""
    result = tf.data.Dataset.from_tensors(value).map(function).ignore_errors()
    return result.concatenate(tf.data.Dataset.from_tensors(fallback)).take(1)


def _decode_or_flag(path, image_size, max_pixels):
    """A one-element dataset: ``(image, True)``, or ``(zeros, False)`` if ``path`` is unreadable
    or its header declares more than ``max_pixels`` pixels (then it is not decoded at all)."""

    def decode(path):
        encoded = tf.io.read_file(path)
        if max_pixels:  # an error before the decoder starts; _or_flag turns it into the flag
            within = within_pixel_limit(encoded, max_pixels)
            with tf.control_dependencies([tf.raw_ops.Assert(condition=within, data=[path])]):
                encoded = tf.identity(encoded)
        return decode_and_resize(encoded, image_size), tf.constant(True)

    return _or_flag(path, decode, (tf.zeros((image_size, image_size, 3)), False))


_NO_READABLE = "kstyle-no-readable-image"
_NO_READABLE_MESSAGES = {}  # marker -> the one-line message it stands for
_message_keys = itertools.count()


def unreadable_epoch_message(error: BaseException) -> str | None:
    """The one-line message of the error that a pipeline which cannot read a single image
    raises (the exception that iterating ``TrainingData.stream`` or ``fit`` gives), else None.
    """
    found = re.search(rf"\[{_NO_READABLE} \d+\]", str(error))
    if found is None:
        return None
    return _NO_READABLE_MESSAGES.get(found.group(0), "no readable image; check the data")


class _Skips:
    """Drops and counts the unreadable items of a source of ``total`` ``kind`` (files or
    images) named ``source``, and stops a pipeline that goes a whole pass without one."""

    def __init__(self, total: int, source: str, kind: str):
        self.total, self.source, self.kind = total, source, kind
        self.checked = tf.Variable(0, dtype=tf.int64, trainable=False, name="files_checked")
        self.skipped = tf.Variable(0, dtype=tf.int64, trainable=False, name="files_skipped")

    def drop(self, flagged, per_epoch=None, shards=1, index=0):
        """``(item, readable)`` pairs -> the pairs of readable items, counted (strip the flag
        after any ``take``, so that a parallel map never reads past it). With ``per_epoch``,
        ``flagged`` is input pipeline ``index`` of ``shards``'s share of ``per_epoch`` items:
        it is repeated without end, and a whole pass without a readable item raises
        InvalidArgumentError."""
        pass_length = len(range(index, per_epoch or self.total, shards))
        marker = f"[{_NO_READABLE} {next(_message_keys)}]"
        whose = f"all {self.total} {self.kind}"
        if pass_length < self.total:  # an epoch's share: whole batches, or one input pipeline's
            pipeline = f" (input pipeline {index} of {shards})" if shards > 1 else ""
            whose = f"all {pass_length} {self.kind} of an epoch{pipeline}"
        _NO_READABLE_MESSAGES[marker] = (
            f"no readable image in {self.source}: {whose} failed to decode (or were over "
            "--max-pixels); check the data"
        ).replace("\n", " ")

        def count(in_a_row, element):  # in order, once per item: one sequential stage
            in_first_pass = self.checked.assign_add(1) <= self.total  # the first pass's checks
            unreadable = tf.logical_not(element[1])
            self.skipped.assign_add(tf.cast(in_first_pass & unreadable, tf.int64))
            in_a_row = tf.where(unreadable, in_a_row + 1, 0)
            # a graph-side error once a whole pass (counted in full) had no readable item
            check = tf.raw_ops.Assert(condition=in_a_row <= pass_length, data=[marker])
            with tf.control_dependencies([check]):
                return tf.identity(in_a_row), element

        flagged = flagged if per_epoch is None else flagged.repeat()
        return flagged.scan(tf.constant(0, tf.int64), count).filter(lambda item, readable: readable)


def _fixed_length_epoch(positions, first_file, length, load, batch, keep=None):
    """One epoch of one input pipeline: ``length`` images in ``positions``'s order, batched.

    ``load`` turns positions into images (None: they are images). ``keep``, for sources that
    may lose items, turns positions into ``(item, True)`` pairs of the readable ones, repeated
    without end after the parallel decoding (which then never reads past an epoch's end): the
    epoch wraps around to its start, so that every epoch has exactly ``length`` images and
    step ``s`` is always batch ``s % steps_per_epoch`` of epoch ``s // steps_per_epoch``. The
    first ``first_file`` images (already trained on) are left out after ``keep`` (a resumed
    folder run re-decodes the part of the epoch it had done), but before ``load``.
    """
    if keep is None:
        return load(positions.skip(first_file)).batch(batch, drop_remainder=True)
    kept = keep(positions).skip(first_file).take(length - first_file).map(lambda item, _: item)
    return (load(kept) if load else kept).batch(batch, drop_remainder=True)


def _epoch_order(size, seed, epoch):
    """A permutation of ``range(size)`` that depends only on ``seed`` and ``epoch``."""
    return tf.random.experimental.stateless_shuffle(
        tf.range(size, dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), epoch])
    )


def _materialize(images: tf.data.Dataset) -> tf.Variable | None:
    """Every float image of ``images``, rounded to uint8 once, in one (N, H, W, 3) variable, or
    None when there is none. A variable, not a constant: it stays out of the graph (2 GB limit).
    """
    import numpy as np

    rounded = images.map(lambda image: tf.cast(tf.round(image), tf.uint8))
    chunks = [chunk.numpy() for chunk in rounded.batch(256)]
    if not chunks:
        return None
    return tf.Variable(np.concatenate(chunks), trainable=False, name="image_cache")


def _permuted_epochs(count, seed, batch_size, load, skips=None):
    """``make_epoch`` over ``count`` indexed images: a full permutation per epoch, cut to
    whole batches, sharded between input pipelines; ``load`` turns indices into
    ``(image, readable)`` pairs when there are ``skips`` to drop them, else into images."""
    per_epoch = count // batch_size * batch_size

    def make_epoch(epoch, first_file, shards, shard_index, batch):
        order = _epoch_order(count, seed, epoch)[:per_epoch]
        positions = tf.data.Dataset.from_tensor_slices(order).shard(shards, shard_index)
        if skips is None:
            return _fixed_length_epoch(positions, first_file, per_epoch // shards, load, batch)
        keep = lambda all_: skips.drop(load(all_), per_epoch, shards, shard_index)  # noqa: E731
        return _fixed_length_epoch(positions, first_file, per_epoch // shards, None, batch, keep)

    return make_epoch


def _cached_epochs(store, seed, batch_size):
    """``make_epoch`` over images held in memory (``--cache``)."""
    return _permuted_epochs(
        int(store.shape[0]),
        seed,
        batch_size,
        lambda indices: indices.map(lambda i: tf.cast(tf.gather(store, i), tf.float32)),
    )


def folder_dataset(
    folder: str,
    image_size=IMAGE_SIZE,
    batch_size=BATCH_SIZE,
    fraction=1.0,
    seed=None,
    cache=False,
    max_pixels=DEFAULT_MAX_PIXELS,
) -> TrainingData:
    """Training batches from every image under ``folder`` (see ``list_image_files``).

    File order is reshuffled every epoch, as a function of ``seed`` and the epoch. Files that
    cannot be decoded (truncated, empty, not an image), and files whose header declares more
    than ``max_pixels`` pixels (they are not decoded; 0 or None: no limit), are dropped and
    counted in ``TrainingData.skipped``; an epoch that lost files wraps around to keep its
    length. An input pipeline whose files are all dropped raises an error that
    :func:`unreadable_epoch_message` explains. ``cache``: decode every image once, up front,
    and keep it in memory as uint8 (N x image_size² x 3 bytes), instead of decoding every epoch.
    """
    files = list_image_files(folder, fraction)
    if len(files) // batch_size == 0:
        raise KstyleError(
            f"{len(files)} images in {folder} make no batch of {batch_size}; "
            "add images or lower --batch-size"
        )
    seed = resolve_seed(seed)
    skips = _Skips(len(files), folder, "files")
    paths = tf.constant(files)

    def load(positions):  # -> (image, readable) pairs
        return positions.interleave(
            lambda index: _decode_or_flag(paths[index], image_size, max_pixels),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )

    description = f"{len(files)} images from {folder}"
    steps_per_epoch = len(files) // batch_size
    if cache:
        images = skips.drop(load(tf.data.Dataset.range(len(files))))
        store = _materialize(images.map(lambda image, _: image))
        kept = 0 if store is None else int(store.shape[0])
        if kept < batch_size:
            raise KstyleError(f"{kept} readable images in {folder} make no batch of {batch_size}")
        make_epoch = _cached_epochs(store, seed, batch_size)
        steps_per_epoch = kept // batch_size
        description = f"{kept} images from {folder}, decoded once and kept in memory"
    else:
        make_epoch = _permuted_epochs(len(files), seed, batch_size, load, skips)

    return TrainingData(
        make_epoch=make_epoch,
        num_images=len(files),
        steps_per_epoch=steps_per_epoch,
        batch_size=batch_size,
        description=description,
        seed=seed,
        checked=skips.checked,
        skipped=skips.skipped,
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
    image_size=IMAGE_SIZE,
    batch_size=BATCH_SIZE,
    fraction=1.0,
    seed=None,
    download=True,
    cache=False,
    max_pixels=DEFAULT_MAX_PIXELS,
) -> TrainingData:
    """Training batches from a TensorFlow Datasets image dataset (COCO 2014 train by default).

    Needs the ``coco`` extra. tfds downloads and prepares the dataset on first use (all of
    COCO 2014: 40 GB of zips) into ``data_dir`` (None: ``~/tensorflow_datasets``); offline, a
    KstyleError comes at once (``kstyle.coco.check_tfds_reachable``). ``fraction`` keeps
    the first ``floor(N * fraction)`` examples of the split, as the reference does with files.
    The record files are read in an order fixed by ``seed``; each epoch then permutes blocks
    of 2048 encoded images with seeds of its own (stateless, so that a resumed run sees the
    same order). ``cache`` and ``max_pixels`` as in ``folder_dataset``: images whose header
    declares more pixels, or whose header cannot be read, are skipped without decoding and
    counted in ``TrainingData.skipped``; with ``max_pixels`` 0 or None nothing is skipped (and
    an image that fails to decode stops the run, as it always does with tfds).
    """
    from kstyle.coco import check_tfds_reachable, tfds_module

    tfds = tfds_module()  # a one-line error naming the coco extra where it is missing
    seed = resolve_seed(seed)
    if not 0.0 < fraction <= 1.0:
        raise KstyleError(f"--fraction must be in (0, 1], got {fraction}")
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        if download:
            check_tfds_reachable(builder, name)  # offline: one line within seconds
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

    skips = _Skips(keep, f"tfds {name} {split}", "images") if max_pixels else None

    def flag(images):  # -> (encoded, within the pixel limit) pairs
        return images.interleave(
            lambda image: _or_flag(
                image, lambda e: (e, within_pixel_limit(e, max_pixels)), (image, False)
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )

    description = f"{keep} images from tfds {name} {split}"
    steps_per_epoch = keep // batch_size
    if cache:
        kept = skips.drop(flag(encoded)).map(lambda image, _: image) if skips else encoded
        store = _materialize(decode(kept))
        kept = 0 if store is None else int(store.shape[0])
        if kept < batch_size:
            raise KstyleError(f"{kept} readable images in {name} {split} make no batch")
        make_epoch = _cached_epochs(store, seed, batch_size)
        steps_per_epoch = kept // batch_size
        description = f"{kept} images from tfds {name} {split}, decoded once and kept in memory"
    else:
        per_epoch = steps_per_epoch * batch_size

        def shuffled_block(index, block):
            return tf.gather(block, _epoch_order(tf.shape(block, tf.int64)[0], seed, index))

        def make_epoch(epoch, first_file, shards, shard_index, batch):
            # record files in a seeded order; each epoch permutes blocks of 2048 its own way
            blocks = encoded.batch(SHUFFLE_BLOCK).enumerate()
            images = blocks.map(lambda i, block: shuffled_block(epoch * 1_000_003 + i, block))
            images = images.unbatch().take(per_epoch).shard(shards, shard_index)
            readable = skips and (
                lambda all_: skips.drop(flag(all_), per_epoch, shards, shard_index)
            )
            length = per_epoch // shards
            return _fixed_length_epoch(images, first_file, length, decode, batch, readable)

    return TrainingData(
        make_epoch=make_epoch,
        num_images=keep,
        steps_per_epoch=steps_per_epoch,
        batch_size=batch_size,
        description=description,
        seed=seed,
        checked=skips and skips.checked,
        skipped=skips and skips.skipped,
    )
