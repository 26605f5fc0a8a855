import os

import numpy as np
import pytest
import tensorflow as tf
from conftest import random_image, write_image_folder
from PIL import Image

from kstyle.data import folder_dataset, list_image_files, tfds_dataset
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
    # the gray image arrives as three equal channels
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
        )
        assert data.num_images == 9 and data.steps_per_epoch == 2
        batches = [b.numpy() for b in data.one_epoch(0)]
    assert [b.shape for b in batches] == [(4, 32, 32, 3)] * 2
    assert all(b.dtype == np.float32 and b.min() >= 0 and b.max() <= 255 for b in batches)


def test_unknown_tfds_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(KstyleError, match="could not load tfds dataset"):
        tfds_dataset("no_such_dataset_kstyle", data_dir=str(tmp_path), download=False)


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
            "coco/2014", data_dir=str(tmp_path), image_size=16, batch_size=2, seed=3
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
