"""TrainConfig: the reference's defaults, what ``validate`` refuses, what a resume must keep."""

import dataclasses

import pytest

from kstyle.config import RESUME_KEYS, TrainConfig, flag_of
from kstyle.errors import KstyleError


def test_the_defaults_are_the_reference_examples():
    config = TrainConfig(style="s.png")
    assert (config.batch_size, config.image_size) == (4, 256)
    assert config.epochs is None  # the reference's 2 epochs (see test_run's total_steps_of)
    assert (config.learning_rate, config.beta1, config.beta2) == (1e-3, 0.9, 0.999)
    assert (config.content_weight, config.style_weight, config.tv_weight) == (1e-4, 3e-8, 0.0)
    assert (config.tfds_name, config.tfds_split, config.padding) == (None, "train", "zeros")
    assert config.data is None and config.style_size is None and config.steps is None
    assert config.data_dir is None  # the COCO train images, under Keras's cache folder
    assert (config.plot_every, config.checkpoint_every) == (10, 500)
    assert (config.mixed_precision, config.jit_compile, config.strategy) == ("off", "auto", "auto")
    assert not config.restart and not config.cache and config.verbose == "auto"
    config.validate()


def test_resolved_output_and_style_size():
    config = TrainConfig(style="styles/the-scream.jpg")
    assert config.resolved_output() == "runs/the-scream"
    assert config.resolved_style_size() == 256
    config = TrainConfig(style="s.png", output="elsewhere", image_size=128, style_size=512)
    assert config.resolved_output() == "elsewhere" and config.resolved_style_size() == 512
    assert TrainConfig(style="s.png", image_size=128).resolved_style_size() == 128


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"epochs": 0}, "--epochs must be positive, got 0"),
        ({"batch_size": -2}, "--batch-size must be positive, got -2"),
        ({"image_size": 0}, "--image-size must be positive, got 0"),
        ({"learning_rate": 0.0}, "--learning-rate must be positive, got 0.0"),
        ({"style_size": 0}, "--style-size must be positive, got 0"),
        ({"steps": -1}, "--steps must be positive, got -1"),
        ({"log_every": 0}, "--log-every must be positive, got 0"),
        ({"content_weight": -1e-4}, "--content-weight must not be negative, got -0.0001"),
        ({"style_weight": -1.0}, "--style-weight must not be negative, got -1.0"),
        ({"tv_weight": -0.5}, "--tv-weight must not be negative, got -0.5"),
        ({"fraction": 0.0}, "--fraction must be in (0, 1], got 0.0"),
        ({"fraction": 1.5}, "--fraction must be in (0, 1], got 1.5"),
        ({"beta1": 1.0}, "--beta1 and --beta2 must be in [0, 1)"),
        ({"beta2": -0.1}, "--beta1 and --beta2 must be in [0, 1)"),
        ({"image_size": 30}, "--image-size must be a multiple of 4 for --arch johnson, got 30"),
        (
            {"image_size": 36, "arch": "live"},
            "--image-size must be a multiple of 8 for --arch live",
        ),
        ({"checkpoint_every": -1}, "--checkpoint-every must not be negative: -1"),
        ({"padding": "same"}, "--padding must be one of zeros, reflect, got 'same'"),
        ({"mixed_precision": "fp16"}, "--mixed-precision must be one of off, float16, bfloat16"),
        ({"jit_compile": "yes"}, "--jit-compile must be one of auto, on, off, got 'yes'"),
        ({"strategy": "gpu"}, "--strategy must be one of auto, default, mirrored, multiworker"),
    ],
)
def test_validate_refuses_values_that_cannot_work(changes, message):
    config = dataclasses.replace(TrainConfig(style="s.png"), **changes)
    with pytest.raises(KstyleError) as caught:
        config.validate()
    assert message in str(caught.value)


def test_validate_accepts_the_edges():
    TrainConfig(style="s.png", fraction=1.0, beta1=0.0, beta2=0.0, tv_weight=0.0).validate()
    TrainConfig(style="s.png", image_size=4, checkpoint_every=0, steps=1).validate()
    TrainConfig(style="s.png", padding="reflect", mixed_precision="bfloat16").validate()


def test_a_resumed_run_must_keep_the_options_that_define_what_it_computes():
    assert RESUME_KEYS == (
        "style", "style_size", "content_weight", "style_weight", "tv_weight",  # the style loss's
        "data", "tfds_name", "tfds_split", "epochs", "batch_size", "image_size",
        "stability_weight", "beta1",
        "beta2", "fraction", "steps", "vgg_weights", "arch", "padding", "seed",
        "mixed_precision", "cache", "max_pixels",
    )  # fmt: skip
    assert "learning_rate" not in RESUME_KEYS  # a run resumed after a NaN needs a lower one


def test_flags_of_fields():
    assert flag_of("batch_size") == "--batch-size"
    assert flag_of("beta1") == "--beta1"
