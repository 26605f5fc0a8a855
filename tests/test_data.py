import json
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import tensorflow as tf
from conftest import raises_within, random_image, write_image_folder
from PIL import Image

from kstyle.data import folder_dataset, list_image_files, tfds_dataset, unreadable_epoch_message
from kstyle.errors import KstyleError


def make_messy_folder(folder):
    """5 good images of varied kinds, and 3 files that cannot be decoded."""
    os.makedirs(os.path.join(folder, "nested", "deeper"))
    Image.fromarray(random_image(40, 50, seed=1)).save(os.path.join(folder, "a.jpg"))
    Image.fromarray(random_image(30, 20, seed=2)).save(os.path.join(folder, "nested", "B.PNG"))
    gray = Image.fromarray(random_image(36, 36, seed=3)[..., 0])
    gray.save(os.path.join(folder, "nested", "deeper", "gray.jpeg"))
    rgba = Image.fromarray(random_image(33, 47, channels=4, seed=4), "RGBA")
    rgba.save(os.path.join(folder, "rgba.png"))
    Image.fromarray(random_image(20, 30, seed=5)).save(os.path.join(folder, "c.webp"))
    with open(os.path.join(folder, "a.jpg"), "rb") as file:
        data = file.read()
    with open(os.path.join(folder, "truncated.jpg"), "wb") as file:
        file.write(data[: len(data) // 2])
    open(os.path.join(folder, "empty.jpg"), "wb").close()
    with open(os.path.join(folder, "notes.jpg"), "w") as file:
        file.write("this is not an image")
    with open(os.path.join(folder, "readme.txt"), "w") as file:
        file.write("ignored: not an image extension")


def test_messy_folder_yields_good_images_and_counts_skips(tmp_path):
    folder = str(tmp_path / "messy")
    make_messy_folder(folder)
    assert len(list_image_files(folder)) == 8
    data = folder_dataset(folder, image_size=32, batch_size=1, seed=0)
    batches = [batch.numpy() for batch in data.one_epoch(0)]
    assert len(batches) == 8  # an epoch keeps its length: it wraps around the lost files
    distinct = {batch.tobytes(): batch for batch in batches}
    images = list(distinct.values())
    assert len(images) == 5
    for image in images:
        assert image.shape == (1, 32, 32, 3) and image.dtype == np.float32
        assert 0.0 <= image.min() and image.max() <= 255.0
    assert data.skipped_files() == (3, True)
    for _ in data.one_epoch(1):  # a second pass does not count the same files again
        pass
    assert data.skipped_files() == (3, True) and int(data.checked.numpy()) > 16
    # the gray image arrives as three equal channels (copies of one decoded channel, resized
    # alike: equal in practice; atol 1e-3 only spares the resize's float rounding)
    grays = [
        im
        for im in images
        if np.allclose(im[..., 0], im[..., 1], atol=1e-3)
        and np.allclose(im[..., 1], im[..., 2], atol=1e-3)
    ]
    assert len(grays) == 1


def test_batches_drop_the_remainder_and_reshuffle_each_epoch(tmp_path):
    folder = str(tmp_path / "imgs")
    write_image_folder(folder, count=10)
    data = folder_dataset(folder, image_size=32, batch_size=4, seed=1)
    assert data.steps_per_epoch == 2 and data.num_images == 10
    epochs = []
    for epoch in range(3):
        batches = [b.numpy() for b in data.one_epoch(epoch)]
        assert [b.shape[0] for b in batches] == [4, 4]
        epochs.append([round(float(image.mean()), 3) for b in batches for image in b])
    assert len({tuple(e) for e in epochs}) > 1  # reshuffled between epochs


def test_fraction_keeps_the_first_files(tmp_path):
    folder = str(tmp_path / "imgs")
    paths = write_image_folder(folder, count=10)
    assert list_image_files(folder, fraction=0.35) == sorted(paths)[:3]
    assert list_image_files(folder, fraction=1.0) == sorted(paths)
    assert folder_dataset(folder, image_size=32, batch_size=1, fraction=0.5).num_images == 5
    with pytest.raises(KstyleError, match="keeps none"):
        list_image_files(folder, fraction=0.05)
    with pytest.raises(KstyleError, match="fraction"):
        list_image_files(folder, fraction=1.5)


def test_bad_folders_are_clear_errors(tmp_path):
    with pytest.raises(KstyleError, match="not found"):
        list_image_files(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(KstyleError, match="no images"):
        list_image_files(str(tmp_path / "empty"))
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.txt").write_text("x")
    with pytest.raises(KstyleError, match="no images"):
        list_image_files(str(tmp_path / "text"))
    small = str(tmp_path / "small")
    write_image_folder(small, count=2)
    with pytest.raises(KstyleError, match="batch"):
        folder_dataset(small, image_size=32, batch_size=4)


def test_tfds_path_with_mock_data(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=12):
        data = tfds_dataset(
            "coco/2014",
            "train",
            data_dir=str(tmp_path),
            image_size=32,
            batch_size=4,
            fraction=0.75,
            seed=0,
            download=False,  # mock data: nothing to download (the check would go online)
        )
        assert data.num_images == 9 and data.steps_per_epoch == 2
        batches = [b.numpy() for b in data.one_epoch(0)]
    assert [b.shape for b in batches] == [(4, 32, 32, 3)] * 2
    assert all(b.dtype == np.float32 and b.min() >= 0 and b.max() <= 255 for b in batches)


def test_unknown_tfds_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(KstyleError, match="could not load tfds dataset"):
        tfds_dataset("no_such_dataset_kstyle", data_dir=str(tmp_path), download=False)


def test_the_real_coco_builder_gets_ready_to_download_offline(tmp_path):
    """What ``download_and_prepare`` runs before its first request, on the real coco/2014
    builder: tfds 4.9.10 imports importlib_resources there without declaring it (fails
    with ModuleNotFoundError where the coco extra does not install it)."""
    from kstyle.coco import COCO_SHA256, COCO_SIZE, COCO_URL, tfds_module

    tfds = tfds_module()
    builder = tfds.builder("coco/2014", data_dir=str(tmp_path))
    builder.assert_is_not_blocked()
    assert not builder.data_path.exists()  # not prepared: download_and_prepare goes on
    config = tfds.download.DownloadConfig()
    assert type(builder).code_path.name == "coco.py"  # needs importlib_resources
    info = type(builder).url_infos[COCO_URL]  # the checksums tfds verifies downloads with
    assert (info.size, info.checksum) == (COCO_SIZE, COCO_SHA256)
    manager = builder._make_download_manager(download_dir=None, download_config=config)
    assert str(manager.download_dir) == str(tmp_path / "downloads")
    assert [names for _, _, names in os.walk(tmp_path) if names] == []  # folders, no file


def test_an_unreachable_tfds_host_fails_at_once_in_one_line(tmp_path, monkeypatch):
    import socket

    import tensorflow_datasets as tfds

    with socket.socket() as probe:  # a port where connections are refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    refused = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: refused)

    def must_not_run(*args, **kwargs):
        raise AssertionError("download_and_prepare ran: it would go online")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", must_not_run)
    error = raises_within(30, lambda: tfds_dataset("coco/2014", data_dir=str(tmp_path)))
    assert isinstance(error, KstyleError), error
    assert str(error).startswith(
        f"cannot reach images.cocodataset.org to download tfds dataset coco/2014 into "
        f"{tmp_path} (--tfds-data-dir) (images.cocodataset.org:80: [Errno 111] Connection "
        "refused); offline, train on a folder of your own images with --data FOLDER"
    )


def test_decode_handles_gif_and_bmp(tmp_path):
    from kstyle.data import decode_and_resize

    for name in ("x.gif", "x.bmp"):
        path = str(tmp_path / name)
        Image.fromarray(random_image(20, 24, seed=7)).save(path)
        image = decode_and_resize(tf.io.read_file(path), 16)
        assert image.shape == (16, 16, 3)


def _signature(batches):
    """Each image of each batch as a rounded mean: enough to tell images apart."""
    return [tuple(round(float(image.mean()), 2) for image in batch) for batch in batches]


@pytest.mark.parametrize("cache", [False, True])
def test_the_stream_resumes_at_any_step_with_the_same_batches(tmp_path, cache):
    folder = str(tmp_path / "imgs")
    write_image_folder(folder, count=10, size=(20, 24))
    data = folder_dataset(folder, image_size=16, batch_size=3, seed=5, cache=cache)
    assert data.steps_per_epoch == 3
    full = _signature(b.numpy() for b in data.stream(0).take(8))
    assert len(set(full)) == 8  # batches differ, within and across epochs
    for start in (2, 3, 4):  # before, at and after the epoch boundary
        resumed = _signature(b.numpy() for b in data.stream(start).take(8 - start))
        assert resumed == full[start:]
    again = folder_dataset(folder, image_size=16, batch_size=3, seed=5, cache=cache)
    assert _signature(b.numpy() for b in again.stream(0).take(8)) == full  # seed fixes it
    other = folder_dataset(folder, image_size=16, batch_size=3, seed=6, cache=cache)
    assert _signature(b.numpy() for b in other.stream(0).take(8)) != full


def test_a_drawn_seed_is_recorded(tmp_path):
    folder = str(tmp_path / "imgs")
    write_image_folder(folder, count=4, size=(20, 24))
    first = folder_dataset(folder, image_size=16, batch_size=2)
    second = folder_dataset(folder, image_size=16, batch_size=2, seed=first.seed)
    assert isinstance(first.seed, int)
    assert _signature(b.numpy() for b in first.stream(1).take(3)) == _signature(
        b.numpy() for b in second.stream(1).take(3)
    )


def test_workers_read_disjoint_shards_with_per_replica_batches(tmp_path):
    folder = str(tmp_path / "imgs")
    write_image_folder(folder, count=12, size=(20, 24))
    data = folder_dataset(folder, image_size=16, batch_size=4, seed=2)
    seen = []
    for worker in range(2):
        context = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=worker, num_replicas_in_sync=2
        )
        batches = [b.numpy() for b in data.stream(0, context).take(3)]
        assert all(b.shape == (2, 16, 16, 3) for b in batches)
        seen.append({value for batch in _signature(batches) for value in batch})
    assert len(seen[0]) == 6 and len(seen[1]) == 6 and not seen[0] & seen[1]


def test_the_tfds_stream_resumes_with_the_same_batches(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=12):
        data = tfds_dataset(
            "coco/2014", data_dir=str(tmp_path), image_size=16, batch_size=2, seed=3, download=False
        )
        assert data.steps_per_epoch == 6
        full = _signature(b.numpy() for b in data.stream(0).take(9))
        resumed = _signature(b.numpy() for b in data.stream(5).take(4))
    assert len(set(full)) == 9
    assert resumed == full[5:]


@pytest.mark.parametrize("cache", [False, True])
def test_resume_is_exact_with_replicas_uneven_epochs_and_unreadable_files(tmp_path, cache):
    import keras

    keras.utils.set_random_seed(1)  # a global seed must not break the seeded pipeline
    folder = str(tmp_path / "imgs")
    write_image_folder(folder, count=10, size=(20, 24))
    (tmp_path / "imgs" / "junk.jpg").write_bytes(b"not an image")  # 11 files, 1 unreadable
    data = folder_dataset(folder, image_size=16, batch_size=4, seed=7, cache=cache)
    context = tf.distribute.InputContext(num_input_pipelines=1, num_replicas_in_sync=2)
    per_replica = lambda start, count: _signature(  # noqa: E731
        b.numpy() for b in data.stream(start, context).take(count)
    )
    steps = data.steps_per_epoch
    full = per_replica(0, 2 * 3 * steps)  # three epochs, two replica batches per step
    assert len(full) == 6 * steps and all(len(batch) == 2 for batch in full)
    for start in range(1, 2 * steps + 1):
        assert per_replica(start, 2) == full[2 * start : 2 * start + 2], start
    epoch = [image for batch in full[: 2 * steps] for image in batch]
    # no image twice within an epoch, except one that stands in for the unreadable file
    assert len(set(epoch)) >= len(epoch) - (0 if cache else 1)


def write_junk(folder, names, seed=0):
    """Files of random bytes (never a decodable image) named ``names`` in ``folder``."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in names:
        with open(os.path.join(folder, name), "wb") as file:
            file.write(rng.bytes(300))


def test_a_folder_without_a_readable_file_fails_instead_of_hanging(tmp_path):
    import keras

    folder = str(tmp_path / "junk")
    write_junk(folder, [f"junk_{index}.jpg" for index in range(4)])
    data = folder_dataset(folder, image_size=16, batch_size=2, seed=0)
    error = raises_within(60, lambda: next(iter(data.stream(0))))
    assert isinstance(error, tf.errors.InvalidArgumentError), repr(error)
    message = unreadable_epoch_message(error)
    assert message == (
        f"no readable image in {folder}: all 4 files failed to decode (or were over "
        "--max-pixels); check the data"
    )
    assert data.skipped_files() == (4, True)  # the whole pass is counted before it stops
    resumed = raises_within(60, lambda: next(iter(data.stream(5))))  # mid-stream as well
    assert unreadable_epoch_message(resumed) == message
    # what fit raises, as the run catches it
    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(3, 1)])
    model.compile("adam", "mse")
    pairs = data.stream(0).map(lambda batch: (batch, batch))
    fitted = raises_within(
        60, lambda: model.fit(pairs, steps_per_epoch=2, shuffle=False, verbose=0)
    )
    assert unreadable_epoch_message(fitted) == message
    assert unreadable_epoch_message(tf.errors.InvalidArgumentError(None, None, "other")) is None
    assert unreadable_epoch_message(ValueError(message)) is None


def test_one_worker_without_a_readable_file_fails_and_the_other_reads(tmp_path):
    from kstyle.data import _epoch_order, decode_and_resize

    folder = str(tmp_path / "imgs")
    names = [f"img_{index:02d}.jpg" for index in range(8)]
    order = _epoch_order(8, 4, tf.constant(0, tf.int64)).numpy()  # epoch 0 with seed 4
    write_junk(folder, [names[i] for i in order[1::2]])  # input pipeline 1's files
    for index in order[0::2]:
        Image.fromarray(random_image(20, 24, seed=int(index))).save(
            os.path.join(folder, names[index])
        )
    data = folder_dataset(folder, image_size=16, batch_size=4, seed=4)
    contexts = [
        tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=i, num_replicas_in_sync=2
        )
        for i in range(2)
    ]
    good = [b.numpy() for b in data.stream(0, contexts[0]).take(2)]  # its half of epoch 0
    assert [b.shape for b in good] == [(2, 16, 16, 3)] * 2
    expected = {
        decode_and_resize(tf.io.read_file(os.path.join(folder, names[index])), 16).numpy().tobytes()
        for index in order[0::2]
    }
    assert {image.tobytes() for batch in good for image in batch} == expected
    error = raises_within(60, lambda: list(data.stream(0, contexts[1]).take(2)))
    assert unreadable_epoch_message(error) == (
        f"no readable image in {folder}: all 4 files of an epoch (input pipeline 1 of 2) failed "
        "to decode (or were over --max-pixels); check the data"
    )


def test_a_pixel_limit_skips_larger_files_and_zero_turns_it_off(tmp_path):
    folder = str(tmp_path / "imgs")
    os.makedirs(folder)
    for index, (height, width) in enumerate([(40, 48), (40, 48), (20, 24), (20, 24)]):
        Image.fromarray(random_image(height, width, seed=index)).save(
            os.path.join(folder, f"img_{index}.png")
        )
    small = folder_dataset(folder, image_size=16, batch_size=2, seed=0, max_pixels=1919)
    kept = {image.tobytes() for batch in small.one_epoch(0) for image in batch.numpy()}
    assert len(kept) == 2 and small.skipped_files() == (2, True)  # 40 x 48 = 1920 > 1919
    for limit in (1920, 0, None):
        every = folder_dataset(folder, image_size=16, batch_size=2, seed=0, max_pixels=limit)
        seen = {image.tobytes() for batch in every.one_epoch(0) for image in batch.numpy()}
        assert len(seen) == 4 and every.skipped_files() == (0, True), limit
    assert kept < seen  # the small ones, decoded the same way
    none = folder_dataset(folder, image_size=16, batch_size=2, seed=0, max_pixels=1)
    assert unreadable_epoch_message(raises_within(60, lambda: list(none.one_epoch(0))))


def big_png(side=20000, rows=5000):
    """A PNG whose header declares side x side RGB pixels, with the first ``rows`` rows of
    zeros (a few hundred kB): decoding it fills rows x side x 3 bytes, then fails."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    compressor, row = zlib.compressobj(9), b"\0" * (1 + 3 * side)
    idat = b"".join(compressor.compress(row) for _ in range(rows)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


PEAK_SCRIPT = """
import json, resource, sys
from kstyle.data import folder_dataset
data = folder_dataset(sys.argv[1], image_size=32, batch_size=2, seed=0, max_pixels=int(sys.argv[2]))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
batches = [b.numpy() for b in data.stream(0).take(2)]
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(dict(batches=len(batches), skipped=data.skipped_files(), kib=[before, peak])))
"""


def peak_of_one_epoch(folder, max_pixels):
    """Runs one epoch of ``folder`` in a fresh process: ``(batches, skipped_files(), peak
    memory in kiB, growth of the peak while streaming in kiB)``."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}  # kstyle as installed
    result = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, folder, str(max_pixels)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    before, peak = out["kib"]
    return out["batches"], tuple(out["skipped"]), peak, peak - before


def test_a_file_declaring_too_many_pixels_is_skipped_without_decoding(tmp_path):
    folder = str(tmp_path / "imgs")
    write_image_folder(folder, count=3, size=(20, 24))
    (tmp_path / "imgs" / "bomb.png").write_bytes(big_png())  # 20000 x 20000 declared
    batches, skipped, peak, growth = peak_of_one_epoch(folder, 89_478_485)  # Pillow's limit
    assert batches == 2 and skipped == (1, True)
    assert peak < 2.5 * 2**20 and growth < 150 * 2**10, (peak, growth)
    # without the limit the same file is handed to the decoder (which fails at its missing
    # rows; how much memory that takes first depends on when the decode runs, so only the
    # count is checked here: bench/faults.py measures the memory of a full bomb)
    batches, skipped, _, _ = peak_of_one_epoch(folder, 0)
    assert batches == 2 and skipped == (1, True)


def test_tfds_images_over_the_pixel_limit_are_skipped_and_counted(tmp_path):
    import io

    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=12):
        options = dict(data_dir=str(tmp_path), image_size=16, batch_size=2, seed=3, download=False)
        builder = tfds.builder("coco/2014", data_dir=str(tmp_path))
        only_bytes = tfds.decode.PartialDecoding(
            {"image": True}, decoders={"image": tfds.decode.SkipDecoding()}
        )
        examples = builder.as_dataset(split="train", decoders=only_bytes)
        sizes = [Image.open(io.BytesIO(ex["image"])).size for ex in tfds.as_numpy(examples)]
        over = sum(width * height > 1000 for width, height in sizes)
        assert 0 < over < 12, sizes  # the mock images straddle the limit
        data = tfds_dataset("coco/2014", max_pixels=1000, **options)
        full = _signature(b.numpy() for b in data.stream(0).take(9))
        assert data.skipped_files() == (over, True) and len(full) == 9
        resumed = _signature(b.numpy() for b in data.stream(5).take(4))
        assert resumed == full[5:]  # an epoch that lost images still resumes exactly
        unlimited = tfds_dataset("coco/2014", max_pixels=0, **options)
        assert len(list(unlimited.one_epoch(0))) == 6 and unlimited.skipped_files() == (0, True)
        none = tfds_dataset("coco/2014", max_pixels=1, **options)
        error = raises_within(60, lambda: next(iter(none.stream(0))))
    assert unreadable_epoch_message(error) == (
        "no readable image in tfds coco/2014 train: all 12 images failed to decode (or were "
        "over --max-pixels); check the data"
    )
