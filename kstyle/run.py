"""One training run, from options to a run directory: the library behind ``train.py``.

``train(TrainConfig(...))`` checks every input before it builds a model, then trains and
writes into ``config.output``: ``model.keras`` (the transform net alone), ``config.json``,
``history.csv``, ``losses.png``, ``preview.png`` and TensorBoard logs under ``logs/``.
"""

import dataclasses
import json
import math
import os
import platform
import sys

import numpy as np

from kstyle.errors import KstyleError

RUN_FILES = ("model.keras", "config.json", "history.csv", "losses.png", "preview.png")


@dataclasses.dataclass
class TrainConfig:
    """Every option of a training run; the defaults are the reference example's."""

    style: str
    data: str | None = None  # a folder of images; None: the tfds dataset below
    tfds_name: str = "coco/2014"
    tfds_split: str = "train"
    tfds_data_dir: str | None = None
    output: str | None = None  # None: runs/<style file name>
    epochs: int = 2
    batch_size: int = 4
    image_size: int = 256
    style_size: int | None = None  # None: image_size
    learning_rate: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    content_weight: float = 1e-4
    style_weight: float = 3e-8
    tv_weight: float = 0.0
    fraction: float = 1.0
    steps: int | None = None
    vgg_weights: str = "imagenet"
    padding: str = "zeros"
    plot_every: int = 10
    seed: int | None = None
    verbose: int | str = "auto"

    def resolved_output(self) -> str:
        """The run directory: ``output``, or ``runs/<style file name without extension>``."""
        if self.output:
            return self.output
        return os.path.join("runs", os.path.splitext(os.path.basename(self.style))[0])

    def validate(self) -> None:
        """Raises KstyleError for option values that cannot work."""
        positive = {
            "--epochs": self.epochs,
            "--batch-size": self.batch_size,
            "--image-size": self.image_size,
            "--learning-rate": self.learning_rate,
        }
        if self.style_size is not None:
            positive["--style-size"] = self.style_size
        if self.steps is not None:
            positive["--steps"] = self.steps
        for flag, value in positive.items():
            if value <= 0:
                raise KstyleError(f"{flag} must be positive, got {value}")
        for flag, value in (
            ("--content-weight", self.content_weight),
            ("--style-weight", self.style_weight),
            ("--tv-weight", self.tv_weight),
        ):
            if value < 0:
                raise KstyleError(f"{flag} must not be negative, got {value}")
        if not 0.0 < self.fraction <= 1.0:
            raise KstyleError(f"--fraction must be in (0, 1], got {self.fraction}")
        if not (0.0 <= self.beta1 < 1.0 and 0.0 <= self.beta2 < 1.0):
            raise KstyleError("--beta1 and --beta2 must be in [0, 1)")
        if self.image_size % 4:
            raise KstyleError(f"--image-size must be a multiple of 4, got {self.image_size}")
        if self.padding not in ("zeros", "reflect"):
            raise KstyleError(f"--padding must be zeros or reflect, got {self.padding}")


def load_style_image(path: str, size: int) -> np.ndarray:
    """The style image as (size, size, 3) float32 RGB in [0, 255], resized like the content."""
    import tensorflow as tf

    from kstyle.data import decode_and_resize
    from kstyle.stylize import load_image

    image = load_image(path)
    encoded = tf.io.encode_png(image)
    return decode_and_resize(encoded, size).numpy()


def library_versions() -> dict:
    """Versions of kstyle, Python, TensorFlow and Keras, for ``config.json``."""
    import keras
    import tensorflow as tf

    import kstyle

    return {
        "kstyle": kstyle.__version__,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }


def write_json_atomically(data: dict, path: str) -> None:
    """Writes ``data`` as indented JSON through a temporary file and a rename."""
    temporary = f"{path}.tmp"
    with open(temporary, "w") as file:
        json.dump(data, file, indent=2, sort_keys=True)
        file.write("\n")
    os.replace(temporary, path)


def build_training_data(config: TrainConfig):
    """The content pipeline of ``config``: its folder, or its tfds dataset."""
    from kstyle.data import folder_dataset, tfds_dataset

    common = dict(
        image_size=config.image_size,
        batch_size=config.batch_size,
        fraction=config.fraction,
        seed=config.seed,
    )
    if config.data is not None:
        return folder_dataset(config.data, **common)
    return tfds_dataset(
        config.tfds_name, config.tfds_split, data_dir=config.tfds_data_dir, **common
    )


def plan_steps(steps_per_epoch: int, epochs: int, max_steps: int | None):
    """``(steps_per_epoch, epochs, total_steps)`` for ``fit``, honouring ``--steps``."""
    total = steps_per_epoch * epochs
    if max_steps is not None and max_steps < total:
        total = max_steps
        steps_per_epoch = min(steps_per_epoch, max_steps)
        epochs = math.ceil(max_steps / steps_per_epoch)
    return steps_per_epoch, epochs, total


def train(config: TrainConfig, printer=print) -> dict:
    """Runs training as ``config`` says and returns a summary dict.

    The summary has ``run_dir``, ``model_path``, ``steps`` and the last step's losses.
    Inputs are checked before any model is built (style file, data folder, options).

    Raises:
        KstyleError: bad options or inputs, the VGG weights are unavailable, or training
            was interrupted (the model so far is saved first; exit code 130).
    """
    config.validate()
    from kstyle.stylize import load_image

    load_image(config.style)  # a missing or unreadable style file fails before anything else
    data = build_training_data(config)

    import keras

    from kstyle.loss_net import build_loss_net
    from kstyle.monitor import (
        SaveTransformNet,
        SkippedFilesReport,
        StopAfterSteps,
        TrainingMonitor,
        save_model_atomically,
    )
    from kstyle.trainer import StyleTransferTrainer
    from kstyle.transform_net import build_transform_net

    run_dir = config.resolved_output()
    os.makedirs(run_dir, exist_ok=True)
    model_path = os.path.join(run_dir, "model.keras")
    if config.seed is not None:
        keras.utils.set_random_seed(config.seed)

    style_size = config.style_size or config.image_size
    style_image = load_style_image(config.style, style_size)
    loss_net = build_loss_net(config.vgg_weights)
    transform_net = build_transform_net(padding=config.padding)
    trainer = StyleTransferTrainer(
        transform_net,
        loss_net,
        style_image,
        content_weight=config.content_weight,
        style_weight=config.style_weight,
        tv_weight=config.tv_weight,
        image_size=config.image_size,
    )
    trainer.compile(
        optimizer=keras.optimizers.Adam(
            learning_rate=config.learning_rate, beta_1=config.beta1, beta_2=config.beta2
        )
    )

    steps_per_epoch, epochs, total_steps = plan_steps(
        data.steps_per_epoch, config.epochs, config.steps
    )
    write_json_atomically(
        {
            **dataclasses.asdict(config),
            "output": run_dir,
            "style_size": style_size,
            "data_description": data.description,
            "steps_per_epoch": steps_per_epoch,
            "total_steps": total_steps,
            "command": sys.argv,
            "versions": library_versions(),
        },
        os.path.join(run_dir, "config.json"),
    )
    printer(f"training on {data.description}: {total_steps} steps, run directory {run_dir}")
    monitor = TrainingMonitor(run_dir, total_steps, plot_every=config.plot_every)
    callbacks = [
        monitor,
        SaveTransformNet(model_path),
        SkippedFilesReport(data, printer),
        keras.callbacks.TensorBoard(
            log_dir=os.path.join(run_dir, "logs"), update_freq=max(1, config.plot_every)
        ),
    ]
    if total_steps < steps_per_epoch * epochs:
        callbacks.append(StopAfterSteps(total_steps))
    try:
        trainer.fit(
            data.dataset.repeat(),
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            callbacks=callbacks,
            shuffle=False,  # the pipeline reshuffles every epoch itself
            verbose=config.verbose,
        )
    except KeyboardInterrupt as interrupt:
        save_model_atomically(transform_net, model_path)
        raise KstyleError(
            f"interrupted after {monitor.step} steps; the model so far is in {model_path}",
            exit_code=130,
        ) from interrupt
    save_model_atomically(transform_net, model_path)
    last = monitor.rows[-1] if monitor.rows else {}
    return {
        "run_dir": run_dir,
        "model_path": model_path,
        "steps": monitor.step,
        "losses": {name: last.get(name) for name in ("loss", "content", "style", "tv")},
        "skipped_images": data.skipped_files()[0],
        "transform_net": transform_net,
    }
