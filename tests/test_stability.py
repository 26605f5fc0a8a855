"""The temporal-stability measure (kstyle.stability): synthetic clips under known motion, the
warp between frames, and the temporal error of known "networks"."""

import dataclasses

import numpy as np
import pytest
from PIL import Image

from kstyle.stability import (
    MOTIONS,
    moving_average,
    sample,
    stability,
    synthetic_clip,
    temporal_error,
)


@pytest.fixture(scope="module")
def photo():
    """matplotlib's sample portrait (600 x 512), a real photo with edges and texture."""
    from kstyle.demo import sample_photo_paths

    with Image.open(sample_photo_paths()[0]) as image:
        return np.asarray(image.convert("RGB"))


@pytest.mark.parametrize("motion", MOTIONS)
def test_the_identity_network_has_the_input_s_figure_and_fresh_noise_a_worse_one(photo, motion):
    clip = synthetic_clip(photo, motion, frames=5, size=(64, 80))
    assert clip.frames.shape == (5, 64, 80, 3) and clip.frames.dtype == np.uint8
    same = stability(lambda frame: frame, clip)
    assert same["output"] == same["input"]
    rng = np.random.default_rng(1)
    sigma = 6.0

    def noisy(frame):
        return np.clip(np.round(frame + rng.normal(0, sigma, frame.shape)), 0, 255).astype(np.uint8)

    worse = stability(noisy, clip)
    # two frames' independent noise: up to 2 sigma^2 more (clipping trims a little, and the
    # bilinear warp of a zoom or rotation averages the warped frame's noise down)
    added = worse["output"]["mse"] - worse["input"]["mse"]
    assert 1.3 * sigma**2 < added < 2.2 * sigma**2, added
    assert worse["output"]["db"] < same["input"]["db"] - 3
    if motion == "pan":  # whole pixels: the warp is exact
        assert same["input"]["mse"] == 0 and same["ratio"] is None
    else:
        assert same["ratio"] == 1.0 and worse["ratio"] > 2
    if motion == "noise":  # two frames' sensor noise: 2 sigma^2 = 8 levels^2, plus rounding
        assert 7.5 < same["input"]["mse"] < 9.0


@pytest.mark.parametrize("motion", ["pan", "zoom", "rotate"])
def test_the_known_motion_is_what_the_frames_show(photo, motion):
    """Warped by the right map, frame t lands on frame t+1 (within interpolation); by the
    opposite map, far off."""
    clip = synthetic_clip(photo, motion, frames=4, size=(64, 80))
    right = temporal_error(clip.frames, clip)["mse"]
    reversed_steps = [np.linalg.inv(step) for step in clip.steps]
    wrong = temporal_error(clip.frames, dataclasses.replace(clip, steps=reversed_steps))["mse"]
    assert right < 6.0 and wrong > 10 * max(right, 1.0), (right, wrong)


def test_sampling_is_bilinear_and_knows_what_lies_outside():
    image = np.arange(12, dtype=np.float32).reshape(3, 4, 1)  # value = 4 y + x
    half = np.array([[1, 0, 0.5], [0, 1, 0.25], [0, 0, 1]])  # (x, y) -> (x + 0.5, y + 0.25)
    values, inside = sample(image, half, (3, 4))
    expected = 4 * (np.arange(3)[:, None] + 0.25) + np.arange(4)[None] + 0.5
    np.testing.assert_allclose(values[..., 0][inside], expected[inside], rtol=1e-6)
    assert inside[:2, :3].all() and not inside[2].any() and not inside[:, 3].any()


def test_moving_average_is_the_exponential_average():
    frames = np.array([[0.0], [10.0], [10.0], [40.0]])
    np.testing.assert_allclose(moving_average(frames, 0.5)[:, 0], [0.0, 5.0, 7.5, 23.75])
    np.testing.assert_array_equal(moving_average(frames, 0.0), frames)
    with pytest.raises(ValueError, match="keep must be in"):
        moving_average(frames, 1.0)


def test_bad_clips_are_refused(photo):
    with pytest.raises(ValueError, match="unknown motion 'shake'"):
        synthetic_clip(photo, "shake")
    with pytest.raises(ValueError, match="at least 2 frames"):
        synthetic_clip(photo, "pan", frames=1)
    with pytest.raises(ValueError, match="too small"):
        synthetic_clip(photo[:70, :90], "pan", frames=8, size=(64, 80))
    clip = synthetic_clip(photo, "pan", frames=3, size=(32, 40))
    with pytest.raises(ValueError, match="2 frames for a clip of 3"):
        temporal_error(clip.frames[:2], clip)
    with pytest.raises(ValueError, match="lies 20 px inside"):
        temporal_error(clip.frames, clip, margin=20)


# --- training for stability ------------------------------------------------------------------


def test_the_stability_term_against_numpy_with_a_shift():
    """T is a fixed function here (a per-pixel map that depends on the place in the frame, as
    a net's padding makes it): the term is the MSE of T(X)'s window against T(X̃)."""
    import tensorflow as tf

    from kstyle.trainer import stability_term

    rng = np.random.default_rng(0)
    content = rng.uniform(0, 255, (2, 12, 16, 3)).astype(np.float32)

    def net(images):  # brighter to the right: not shift-equivariant
        columns = tf.range(tf.shape(images)[2], dtype=tf.float32)[None, None, :, None]
        return 0.5 * images + 3.0 * columns

    for ky, kx in ((0, 0), (3, 1)):
        noise = rng.normal(0, 2, (2, 8, 12, 3)).astype(np.float32)
        term = stability_term(net, tf.constant(content), net(content), (ky, kx), noise, 4)
        window = content[:, ky : ky + 8, kx : kx + 12]
        reference = 0.5 * content + 3.0 * np.arange(16)[None, None, :, None]
        reference = reference[:, ky : ky + 8, kx : kx + 12]
        moved = 0.5 * (window + noise) + 3.0 * np.arange(12)[None, None, :, None]
        expected = np.mean(((reference - moved) / 255.0) ** 2)
        assert float(term) == pytest.approx(expected, rel=1e-5), (ky, kx)
    # a net that ignores the place and the noise scores 0
    flat = stability_term(lambda x: 0 * x + 7.0, tf.constant(content), 0 * content + 7.0,
                          (2, 1), noise, 4)  # fmt: skip
    assert float(flat) == 0.0


def test_the_perturbation_is_a_function_of_the_step_and_the_replica():
    from kstyle.trainer import stability_perturbation

    shape = (2, 16, 20, 3)
    shift, noise = stability_perturbation(5, shape, 4)
    again, same = stability_perturbation(5, shape, 4)
    assert list(shift.numpy()) == list(again.numpy())
    assert np.array_equal(noise.numpy(), same.numpy())
    assert noise.shape == (2, 12, 16, 3) and 1.8 < float(np.std(noise.numpy())) < 2.2
    shifts = np.array([stability_perturbation(step, shape, 4)[0].numpy() for step in range(80)])
    assert set(shifts[:, 0]) == set(shifts[:, 1]) == {0, 1, 2, 3}  # every phase, each axis
    assert (shifts[:, 0] != shifts[:, 1]).any()  # not only diagonal shifts
    other = stability_perturbation(6, shape, 4)[1].numpy()
    assert not np.array_equal(other, noise.numpy())
    # two replicas of one step draw their own; replica 0 of 1 is the single-device draw
    first, second = (stability_perturbation(5, shape, 4, (r, 2))[1].numpy() for r in (0, 1))
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(stability_perturbation(5, shape, 4, (0, 1))[1].numpy(), noise)


def test_training_with_a_stability_weight_reports_and_records_it(tmp_path):
    import csv
    import json

    from conftest import random_image, write_image_folder

    from kstyle.run import TrainConfig, train

    write_image_folder(str(tmp_path / "data"), count=4, size=(36, 40))
    Image.fromarray(random_image(40, 40, seed=3)).save(tmp_path / "style.png")
    options = dict(style=str(tmp_path / "style.png"), data=str(tmp_path / "data"), image_size=32,
                   batch_size=2, steps=3, vgg_weights="random", arch="tiny", plot_every=0,
                   seed=1, verbose=0)  # fmt: skip
    rows = {}
    for weight in (0.0, 10.0):
        output = tmp_path / f"run{weight:g}"
        train(TrainConfig(output=str(output), stability_weight=weight, **options),
              printer=lambda *_: None)  # fmt: skip
        with open(output / "history.csv", newline="") as file:
            rows[weight] = list(csv.DictReader(file))
        saved = json.loads((output / "config.json").read_text())
        assert saved["stability_weight"] == weight
    assert "stability" not in rows[0.0][0]  # off: today's columns
    first = rows[10.0][0]
    stability = float(first["stability"])
    assert stability > 0
    parts = sum(float(first[name]) for name in ("content", "style", "tv", "stability"))
    assert float(first["loss"]) == pytest.approx(parts, rel=1e-5)
    # the first step's other losses are the unweighted run's: the term only adds
    for name in ("content", "style", "tv"):
        assert float(first[name]) == pytest.approx(float(rows[0.0][0][name]), rel=1e-6)


def test_distilling_with_a_stability_weight_reports_it(tmp_path):
    import csv

    import keras
    from conftest import write_image_folder

    from kstyle.distill_config import DistillConfig
    from kstyle.run import train
    from kstyle.transform_net import build_transform_net

    write_image_folder(str(tmp_path / "data"), count=4, size=(36, 40))
    keras.utils.set_random_seed(2)
    build_transform_net(arch="tiny").save(tmp_path / "teacher.keras")
    config = DistillConfig(teacher=str(tmp_path / "teacher.keras"), data=str(tmp_path / "data"),
                           output=str(tmp_path / "student"), arch="live", image_size=32,
                           batch_size=2, steps=2, seed=1, plot_every=0, verbose=0,
                           stability_weight=0.5)  # fmt: skip
    summary = train(config, printer=lambda *_: None)
    with open(tmp_path / "student" / "history.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [float(row["stability"]) > 0 for row in rows] == [True, True]
    first = rows[0]
    total = float(first["pixel"]) + float(first["perceptual"]) + float(first["stability"])
    assert float(first["loss"]) == pytest.approx(total, rel=1e-5)
    assert summary["losses"]["stability"] > 0


@pytest.mark.parametrize("value", ["-0.5", "nan", "inf"])
def test_a_bad_stability_weight_is_a_one_line_error(value, tmp_path):
    from conftest import run_in_process

    result = run_in_process("train.py", "--demo", "--output", tmp_path / "run",
                            "--stability-weight", value)  # fmt: skip
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    expected = (
        f"error: --stability-weight must be a finite number, not negative, got {float(value)}"
    )
    assert lines == [expected]


def test_the_stability_term_needs_room_for_its_crop_and_older_runs_had_none():
    from kstyle.add_style_config import AddStyleConfig
    from kstyle.config import TrainConfig
    from kstyle.distill_config import DistillConfig
    from kstyle.errors import KstyleError

    for padding, smallest in (("zeros", 8), ("reflect", 12)):
        config = TrainConfig(style="s.png", data="d", image_size=smallest - 4, arch="tiny",
                             padding=padding, stability_weight=1.0)  # fmt: skip
        with pytest.raises(KstyleError, match=f"--image-size at least {smallest} for --arch tiny"):
            config.validate()
    for kind in (TrainConfig, DistillConfig, AddStyleConfig):  # before the option: no term
        assert kind.options_of_older_runs(kind.__new__(kind))["stability_weight"] == 0.0
