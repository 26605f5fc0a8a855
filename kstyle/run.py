"""One training run, from options to a run directory: the library behind ``train.py``.

``train(TrainConfig(...))`` checks every input before it builds a model, then trains and
writes into ``config.output``: ``model.keras`` (the transform net alone), ``config.json``,
``history.csv``, ``losses.png``, ``preview.png``, TensorBoard logs under ``logs/``,
checkpoints under ``checkpoints/`` while it runs, and ``summary.json`` once it has finished.

Running the same command again continues a killed run from its last checkpoint (same step,
optimizer state and data order); a finished run is left alone unless ``restart`` is set.
"""

import contextlib
import dataclasses
import json
import os
import platform
import shutil
import signal
import sys
import threading

import numpy as np

from kstyle.errors import KstyleError
from kstyle.files import write_json_atomically

RUN_FILES = ("model.keras", "config.json", "history.csv", "losses.png", "preview.png")
# Files and folders of a run that --restart removes (never anything else in the folder).
RESTART_REMOVES = (*RUN_FILES, "summary.json", "stylized.png", "checkpoints", "logs")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # Ctrl-C, and a preemptible VM's notice
# Options that define what a run computes: a resumed run must have the same ones.
RESUME_KEYS = (
    "style",
    "data",
    "tfds_name",
    "tfds_split",
    "epochs",
    "batch_size",
    "image_size",
    "style_size",
    "beta1",
    "beta2",
    "content_weight",
    "style_weight",
    "tv_weight",
    "fraction",
    "steps",
    "vgg_weights",
    "padding",
    "seed",
    "mixed_precision",
    "cache",
)  # fmt: skip  (--learning-rate may change: a run resumed after a NaN needs a lower one)


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
    checkpoint_every: int = 500
    restart: bool = False
    mixed_precision: str = "off"
    jit_compile: str = "auto"
    strategy: str = "auto"
    cache: bool = False  # decode the images once and keep them in memory

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
        if self.checkpoint_every < 0:
            raise KstyleError(f"--checkpoint-every must not be negative: {self.checkpoint_every}")
        from kstyle.distribute import JIT_COMPILE, MIXED_PRECISION, STRATEGIES

        for flag, value, choices in (
            ("--mixed-precision", self.mixed_precision, MIXED_PRECISION),
            ("--jit-compile", self.jit_compile, JIT_COMPILE),
            ("--strategy", self.strategy, STRATEGIES),
        ):
            if value not in choices:
                raise KstyleError(f"{flag} must be one of {', '.join(choices)}, got {value!r}")


def load_style_image(path: str, size: int) -> np.ndarray:
    """The style image as (size, size, 3) float32 RGB in [0, 255], resized like the content."""
    import tensorflow as tf

    from kstyle.data import decode_and_resize
    from kstyle.images import load_image

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


def build_training_data(config: TrainConfig, seed: int | None):
    """The content pipeline of ``config``: its folder, or its tfds dataset."""
    from kstyle.data import folder_dataset, tfds_dataset

    common = dict(
        image_size=config.image_size,
        batch_size=config.batch_size,
        fraction=config.fraction,
        seed=seed,
        cache=config.cache,
    )
    if config.data is not None:
        return folder_dataset(config.data, **common)
    return tfds_dataset(
        config.tfds_name, config.tfds_split, data_dir=config.tfds_data_dir, **common
    )


@dataclasses.dataclass
class FitCall:
    """One ``fit`` call of a run: epochs ``[initial_epoch, epochs)`` of ``steps_per_epoch``."""

    start_step: int
    initial_epoch: int
    epochs: int
    steps_per_epoch: int


def fit_schedule(start_step: int, total_steps: int, steps_per_epoch: int) -> list[FitCall]:
    """The ``fit`` calls that take a run from ``start_step`` to ``total_steps``.

    Keras resumes only at epoch boundaries, so a run resumed mid-epoch first finishes that
    epoch in a call of its own; a last partial epoch (``--steps``) gets its own call too. Each
    call's progress bar therefore counts exactly the steps it will run.
    """
    calls = []
    step = start_step
    while step < total_steps:
        epoch, offset = divmod(step, steps_per_epoch)
        if offset or total_steps - step < steps_per_epoch:
            count = min(steps_per_epoch - offset, total_steps - step)
            calls.append(FitCall(step, epoch, epoch + 1, count))
            step += count
        else:
            full = (total_steps - step) // steps_per_epoch
            calls.append(FitCall(step, epoch, epoch + full, steps_per_epoch))
            step += full * steps_per_epoch
    return calls


def total_steps_of(steps_per_epoch: int, epochs: int, max_steps: int | None) -> int:
    """Steps in the whole run: ``epochs`` epochs, or ``max_steps`` if that is fewer."""
    total = steps_per_epoch * epochs
    return min(total, max_steps) if max_steps is not None else total


def build_trainer(config: TrainConfig, style_image):
    """The compiled ``StyleTransferTrainer`` of ``config`` and its (built) optimizer.

    Call it inside the strategy's scope. Layers are built with ``config.mixed_precision``'s
    dtype policy; float16 wraps Adam in a ``LossScaleOptimizer``.
    """
    import keras

    from kstyle.distribute import JIT_COMPILE, dtype_policy
    from kstyle.loss_net import build_loss_net
    from kstyle.trainer import StyleTransferTrainer
    from kstyle.transform_net import build_transform_net

    with dtype_policy(config.mixed_precision):
        transform_net = build_transform_net(padding=config.padding)
        trainer = StyleTransferTrainer(
            transform_net,
            build_loss_net(config.vgg_weights),
            style_image,
            content_weight=config.content_weight,
            style_weight=config.style_weight,
            tv_weight=config.tv_weight,
            image_size=config.image_size,
        )
        optimizer = keras.optimizers.Adam(
            learning_rate=config.learning_rate, beta_1=config.beta1, beta_2=config.beta2
        )
        if config.mixed_precision == "float16":  # bfloat16 has float32's range: no scaling
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        trainer.compile(optimizer=optimizer, jit_compile=JIT_COMPILE[config.jit_compile])
        optimizer.build(transform_net.trainable_variables)
    return trainer, optimizer


def _worker_dir(run_dir: str) -> str:
    """This worker's run directory: ``run_dir`` for the chief, a subfolder for the others."""
    from kstyle.distribute import is_chief, worker_role

    if is_chief():
        return run_dir
    task_type, index = worker_role()
    return os.path.join(run_dir, f"{task_type}-{index}")


def _previous_run(run_dir: str, config: TrainConfig) -> dict | None:
    """The saved config of a resumable run in ``run_dir`` (None: start a new run).

    Raises:
        KstyleError: the run there was started with other options.
    """
    from kstyle.callbacks import latest_checkpoint_step

    config_path = os.path.join(run_dir, "config.json")
    step = latest_checkpoint_step(os.path.join(run_dir, "checkpoints"))
    if step is None or not os.path.isfile(config_path):
        return None
    saved = _read_json(config_path)
    if "data_seed" not in saved:
        raise KstyleError(f"{config_path} lacks data_seed; pass --restart to start over")
    now = dataclasses.asdict(config)
    for key in RESUME_KEYS:
        if key in saved and saved[key] != now[key]:
            flag = "--" + key.replace("_", "-")
            raise KstyleError(
                f"{run_dir} holds a run started with {flag} {saved[key]} (now {now[key]}); "
                "rerun it with its options to resume, pass --restart to start over, "
                "or choose another --output"
            )
    return saved


def _read_json(path: str) -> dict:
    """A JSON object from ``path``, or a KstyleError that names the file."""
    try:
        with open(path) as file:
            data = json.load(file)
    except (OSError, ValueError) as error:
        raise KstyleError(
            f"could not read {path} ({type(error).__name__}); pass --restart to start over"
        ) from error
    if not isinstance(data, dict):
        raise KstyleError(f"{path} is not a JSON object; pass --restart to start over")
    return data


def _clear_run(run_dir: str) -> None:
    """Removes what a previous run wrote into ``run_dir`` (for ``--restart``)."""
    for name in RESTART_REMOVES:
        path = os.path.join(run_dir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)


@contextlib.contextmanager
def _stop_signals_handled_by(callback):
    """While training, SIGINT and SIGTERM ask ``callback`` to stop after the current step.

    Only in the main thread (Python delivers signals there); elsewhere nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.signal(number, callback.request) for number in STOP_SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def train(config: TrainConfig, printer=print) -> dict:
    """Runs training as ``config`` says and returns a summary dict.

    The summary has ``run_dir``, ``model_path``, ``steps``, ``resumed_from`` and the last
    step's losses; ``finished_before`` is True when the run directory already held a finished
    run (nothing is trained then). Inputs are checked before any model is built.

    Raises:
        KstyleError: bad options or inputs, the VGG weights are unavailable, a loss became
            NaN or infinite (the last good checkpoint is kept), or training was interrupted
            (a checkpoint of that step is written first; exit code 130).
    """
    config.validate()
    from kstyle.distribute import (
        agree_across_workers,
        float32_copy,
        in_multi_worker_mode,
        is_chief,
        make_strategy,
        shared_seed,
        strategy_name,
    )

    strategy = make_strategy(config.strategy)  # first: multi-worker collectives need it
    if config.batch_size % strategy.num_replicas_in_sync:
        raise KstyleError(
            f"--batch-size {config.batch_size} is the global batch and must be a multiple of "
            f"the {strategy.num_replicas_in_sync} replicas"
        )
    from kstyle.images import load_image

    load_image(config.style)  # a missing or unreadable style file fails before anything else
    run_dir = _worker_dir(config.resolved_output())
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise KstyleError(f"--output {run_dir} is a file, not a directory")
    summary_path = os.path.join(run_dir, "summary.json")
    if config.restart:
        _clear_run(run_dir)
    finished_here = int(os.path.isfile(summary_path))
    finished = agree_across_workers(strategy, finished_here, "all")
    if finished != agree_across_workers(strategy, finished_here, "any"):
        raise KstyleError(
            "some workers hold a finished run and others do not; pass --restart on every worker"
        )
    if finished:
        done = _read_json(summary_path)
        printer(
            f"{run_dir} holds a finished run ({done.get('steps')} steps; model: "
            f"{done.get('model_path')}); nothing to do. Pass --restart to train it again "
            "from scratch, or choose another --output"
        )
        return {**done, "finished_before": True}
    previous = _previous_run(run_dir, config)
    data_seed = previous["data_seed"] if previous else config.seed
    if data_seed is None and in_multi_worker_mode(strategy):
        data_seed = shared_seed()  # every worker must draw the same permutations
    data = build_training_data(config, data_seed)
    if previous and previous.get("steps_per_epoch") != data.steps_per_epoch:
        raise KstyleError(
            f"the data changed since {run_dir} was started ({data.steps_per_epoch} steps per "
            f"epoch now, {previous.get('steps_per_epoch')} then); resuming would not continue "
            "the same run. Restore the data, pass --restart, or choose another --output"
        )

    import keras

    from kstyle.callbacks import (
        NonFiniteLoss,
        NonFiniteLossGuard,
        SaveTransformNet,
        SkippedFilesReport,
        StepTensorBoard,
        StopRequest,
        TrainingCheckpoint,
        TrainingMonitor,
        TrainingStopped,
        latest_checkpoint_step,
        read_history,
        save_model_atomically,
    )

    os.makedirs(run_dir, exist_ok=True)
    model_path = os.path.join(run_dir, "model.keras")
    if config.seed is not None:
        keras.utils.set_random_seed(config.seed)

    style_size = config.style_size or config.image_size
    style_image = load_style_image(config.style, style_size)
    with strategy.scope():
        trainer, optimizer = build_trainer(config, style_image)
    transform_net = trainer.transform_net
    checkpoint = TrainingCheckpoint(
        os.path.join(run_dir, "checkpoints"),
        transform_net,
        optimizer,
        every=config.checkpoint_every,
    )
    start_step = 0
    if previous:
        local = latest_checkpoint_step(checkpoint.directory) or 0
        start_step = checkpoint.restore(agree_across_workers(strategy, local, "min"))
        if previous.get("learning_rate") != config.learning_rate:
            inner = getattr(optimizer, "inner_optimizer", optimizer)
            inner.learning_rate = config.learning_rate
            printer(
                f"learning rate changed from {previous.get('learning_rate')} to "
                f"{config.learning_rate} for the rest of the run"
            )

    total_steps = total_steps_of(data.steps_per_epoch, config.epochs, config.steps)
    if previous is None:
        write_json_atomically(
            {
                **dataclasses.asdict(config),  # the options as given, for resuming
                "run_dir": config.resolved_output(),
                "style_size_used": style_size,
                "data_description": data.description,
                "data_seed": data.seed,
                "steps_per_epoch": data.steps_per_epoch,
                "total_steps": total_steps,
                "strategy_used": strategy_name(strategy),
                "command": sys.argv,
                "versions": library_versions(),
            },
            os.path.join(run_dir, "config.json"),
        )
        printer(
            f"training on {data.description}: {total_steps} steps on "
            f"{strategy_name(strategy)}, run directory {run_dir}"
        )
    else:
        epoch, batch = divmod(start_step, data.steps_per_epoch)
        printer(
            f"resuming {run_dir} at step {start_step} of {total_steps} "
            f"(epoch {epoch + 1}, batch {batch}) from its last checkpoint"
        )
    monitor = TrainingMonitor(
        run_dir, total_steps, plot_every=config.plot_every, initial_step=start_step
    )
    callbacks = [
        NonFiniteLossGuard(start_step),  # first: a broken step must not reach the checkpoint
        monitor,
        checkpoint,
        SaveTransformNet(model_path, float32_copy),
        SkippedFilesReport(data, printer),
    ]
    if is_chief():
        callbacks.append(
            StepTensorBoard(
                start_step,
                log_dir=os.path.join(run_dir, "logs"),
                update_freq=max(1, config.plot_every),
            )
        )
    stop = StopRequest(lambda flag: agree_across_workers(strategy, flag, "any"))
    callbacks.append(stop)  # last: a stop comes after the step's checkpoint and history
    try:
        with _stop_signals_handled_by(stop):
            for call in fit_schedule(start_step, total_steps, data.steps_per_epoch):
                trainer.fit(
                    _distributed_stream(strategy, data, call.start_step),
                    initial_epoch=call.initial_epoch,
                    epochs=call.epochs,
                    steps_per_epoch=call.steps_per_epoch,
                    callbacks=callbacks,
                    shuffle=False,  # the stream reshuffles every epoch itself
                    verbose=config.verbose,
                )
    except NonFiniteLoss as error:
        kept = checkpoint.manager.latest_checkpoint
        where = f"the last good checkpoint ({kept}) is kept" if kept else "no checkpoint yet"
        raise KstyleError(
            f"{error}; training stopped, {where}. Lower --learning-rate or check the data, "
            "then rerun to resume, or pass --restart",
            exit_code=3,
        ) from error
    except TrainingStopped as stopped:  # at a step boundary: every count agrees
        path = checkpoint.save()
        save_model_atomically(float32_copy(transform_net), model_path)
        raise KstyleError(
            f"{stopped.signal_name} after {checkpoint.step} steps; checkpoint {path} written, "
            "rerun the same command to resume",
            exit_code=130,
        ) from stopped
    except KeyboardInterrupt as interrupt:  # a second Ctrl-C: stop at once, mid-step
        kept = checkpoint.manager.latest_checkpoint
        where = f"resume from the last checkpoint ({kept})" if kept else "no checkpoint yet"
        raise KstyleError(f"stopped at once; {where}", exit_code=130) from interrupt
    save_model_atomically(float32_copy(transform_net), model_path)
    if not monitor.rows and os.path.isfile(monitor.history_path):  # resumed at the very end
        monitor.rows = read_history(monitor.history_path, start_step)
    last = monitor.rows[-1] if monitor.rows else {}
    summary = {
        "run_dir": run_dir,
        "model_path": model_path,
        "steps": monitor.step,
        "resumed_from": start_step,
        "losses": {name: last.get(name) for name in ("loss", "content", "style", "tv")},
        "skipped_images": data.skipped_files()[0],
    }
    write_json_atomically(summary, summary_path)
    shutil.rmtree(checkpoint.directory, ignore_errors=True)  # model.keras is the result now
    return {**summary, "finished_before": False, "transform_net": transform_net}


def _distributed_stream(strategy, data, start_step):
    """``data.stream(start_step)``; with several replicas, one input pipeline per worker."""
    if strategy.num_replicas_in_sync == 1:
        return data.stream(start_step)
    return strategy.distribute_datasets_from_function(
        lambda context: data.stream(start_step, context)
    )
