"""One training run, from options to a run directory: the library behind ``train.py``.

``train(TrainConfig(...))`` checks every input before it builds a model, then trains and
writes into ``config.output``: ``model.keras`` (the transform net alone), ``config.json``,
``history.csv``, ``losses.png``, ``preview.png``, TensorBoard logs under ``logs/``,
checkpoints under ``checkpoints/`` while it runs, and ``summary.json`` once it has finished.

Running the same command again continues a killed run from its last checkpoint (same step,
optimizer state and data order); a finished run is left alone unless ``restart`` is set.

``train`` goes through four phases, each a function of its own that hands a :class:`Run` on:
:func:`open_run` (checks, the run directory, a previous run, the data seed), :func:`build_run`
(data, models, callbacks), :func:`fit_run` (the ``fit`` calls, stops and NaNs) and
:func:`finish_run` (model, summary).
"""

import dataclasses
import os
import shutil
import time

from kstyle.config import RunOptions, TrainConfig  # noqa: F401 (README: from kstyle.run import)
from kstyle.errors import KstyleError
from kstyle.files import remove_leftovers, write_json_atomically
from kstyle.run_dir import (
    check_loss_net,
    check_ownership,
    clear_run,
    model_marks,
    own_run_dir,
    previous_run,
    read_json,
    smoke_test_fields,
    worker_dir,
    write_run_config,
)
from kstyle.schedule import fit_schedule, steps_line, total_steps_of
from kstyle.smoke import smoke_line
from kstyle.tasks import build_task_trainer
from kstyle.tuning import apply_tuned_training


def build_training_data(config: RunOptions, seed: int | None):
    """The content pipeline of ``config``: its folder, its tfds dataset, or else the COCO 2014
    train images (fetched once into ``config.data_dir``, see ``kstyle.coco``)."""
    from kstyle.coco import coco_train_folder
    from kstyle.data import folder_dataset, tfds_dataset

    common = dict(image_size=config.image_size, batch_size=config.batch_size, seed=seed)
    common.update(fraction=config.fraction, cache=config.cache, max_pixels=config.max_pixels)
    if config.tfds_name is not None and config.data is None:
        return tfds_dataset(config.tfds_name, config.tfds_split, config.tfds_data_dir, **common)
    return folder_dataset(config.data or coco_train_folder(config.data_dir), **common)


@dataclasses.dataclass
class Run:
    """One run as its phases hand it on: :func:`open_run` fills the first group of
    attributes, :func:`build_run` the second."""

    config: RunOptions
    strategy: object  # the tf.distribute strategy
    run_dir: str  # this worker's run directory
    finished: dict | None = None  # summary.json of a run that finished before
    previous: dict | None = None  # config.json of the run being resumed (None: a new run)
    data_seed: int | None = None

    data: object = None  # kstyle.data.TrainingData
    trainer: object = None  # kstyle.trainer.StyleTransferTrainer
    checkpoint: object = None  # kstyle.callbacks.TrainingCheckpoint
    monitor: object = None  # kstyle.callbacks.TrainingMonitor
    stop: object = None  # kstyle.stopping.StopRequest
    callbacks: list = dataclasses.field(default_factory=list)
    start_step: int = 0
    total_steps: int = 0
    verbose: int | str = "auto"  # fit's: 0 when a ProgressLog prints lines instead
    fit_seconds: float = 0.0  # the time this process's fit calls took

    @property
    def model_path(self) -> str:
        """Where the trained transform net goes."""
        return os.path.join(self.run_dir, "model.keras")

    @property
    def summary_path(self) -> str:
        """The summary of a finished run; its presence marks the run finished."""
        return os.path.join(self.run_dir, "summary.json")


def train(config: RunOptions, printer=print, hard_stop: bool = False) -> dict:
    """Runs training as ``config`` says and returns a summary dict.

    The summary has ``run_dir``, ``model_path``, ``steps``, ``resumed_from`` and the last
    step's losses; ``finished_before`` is True when the run directory already held a finished
    run (nothing is trained then). Inputs are checked before any model is built.

    SIGINT and SIGTERM stop the run after the current step; with ``hard_stop`` (the command
    line's) also promptly (see :class:`kstyle.stopping.StopRequest`). The process owns the
    run directory while it trains (:func:`kstyle.run_dir.own_run_dir`): another ``train``
    into it is refused, naming this process.

    Raises:
        KstyleError: bad options or inputs, another process owns the run directory, the VGG
            weights are unavailable, a loss became
            NaN or infinite (exit code 3; the last good checkpoint is kept), or training was
            interrupted (exit code 130; a checkpoint of that step is written first).
        KeyboardInterrupt: a second Ctrl-C without ``hard_stop``.
    """
    from kstyle.stopping import StopRequest, latest_checkpoint

    config.validate()
    checkpoints = os.path.join(worker_dir(config.resolved_output()), "checkpoints")
    stop = StopRequest(hard=hard_stop, last_checkpoint=lambda: latest_checkpoint(checkpoints))
    # the run directory first, before any work; signals from the start: a stop is prompt in
    # every phase
    with own_run_dir(config.resolved_output()), stop.handling_signals():
        run = open_run(config)
        run.stop = stop
        if run.finished is not None:
            note = f", {run.finished['note']}" if run.finished.get("note") else ""
            printer(
                f"{run.run_dir} holds a finished run ({run.finished.get('steps')} steps{note}; "
                f"model: {run.finished.get('model_path')}); nothing to do. Pass --restart to "
                "train it again from scratch, or choose another --output"
            )
            return {**run.finished, "finished_before": True}
        build_run(run, printer)
        fit_run(run)
        return finish_run(run)


def open_run(config: RunOptions) -> Run:
    """Phase 1: checks ``config``, makes the strategy and finds what the run directory holds.

    The returned run has ``finished`` (the summary of a run that finished before: nothing
    more to do), or ``previous`` (the saved config of a run to resume) or neither, and the
    data seed: the resumed run's, else ``config.seed``, else one that every worker shares.
    With ``config.restart``, what a previous run wrote is removed first; without it, a smoke
    test (``--vgg-weights random``) and a run with a trained loss network never continue each
    other (:func:`kstyle.run_dir.check_loss_net`).
    """
    config.validate()
    from kstyle.distribute import (
        agree_across_workers,
        in_multi_worker_mode,
        make_strategy,
        shared_seed,
    )

    apply_tuned_training(config)  # --mixed-precision auto; --jit-compile auto where tuned
    strategy = make_strategy(config.strategy)  # first: multi-worker collectives need it
    if config.batch_size % strategy.num_replicas_in_sync:
        raise KstyleError(
            f"--batch-size {config.batch_size} is the global batch and must be a multiple of "
            f"the {strategy.num_replicas_in_sync} replicas"
        )
    config.check_inputs()  # a missing or unreadable style (or teacher) fails before anything
    run = Run(config, strategy, worker_dir(config.resolved_output()))
    check_ownership(run.run_dir)
    remove_leftovers(run.run_dir)  # temporary files of writes that a kill cut short
    if config.restart:
        clear_run(run.run_dir)
    check_loss_net(run.run_dir, config)  # a smoke test and a real run never continue each other
    finished_here = int(os.path.isfile(run.summary_path))
    finished = agree_across_workers(strategy, finished_here, "all")
    if finished != agree_across_workers(strategy, finished_here, "any"):
        raise KstyleError(
            "some workers hold a finished run and others do not; pass --restart on every worker"
        )
    if finished:
        run.finished = read_json(run.summary_path)
        return run
    run.previous = previous_run(run.run_dir, config)
    run.data_seed = run.previous["data_seed"] if run.previous else config.seed
    if run.data_seed is None and in_multi_worker_mode(strategy):
        run.data_seed = shared_seed()  # every worker must draw the same permutations
    return run


def build_run(run: Run, printer=print) -> None:
    """Phase 2: the data, the trainer (restored from the last checkpoint when resuming), the
    run's ``config.json`` (or a line saying where it resumes) and the callbacks."""
    from kstyle.distribute import strategy_name

    config = run.config
    run.data = build_training_data(config, run.data_seed)
    steps_per_epoch = run.data.steps_per_epoch
    if run.previous and run.previous.get("steps_per_epoch") != steps_per_epoch:
        raise KstyleError(
            f"the data changed since {run.run_dir} was started ({steps_per_epoch} steps per "
            f"epoch now, {run.previous.get('steps_per_epoch')} then); resuming would not "
            "continue the same run. Restore the data, pass --restart, or choose another --output"
        )
    run.total_steps = total_steps_of(steps_per_epoch, config.epochs, config.steps)
    os.makedirs(run.run_dir, exist_ok=True)
    _build_models(run, printer)
    if run.previous is None:
        strategy = strategy_name(run.strategy)
        write_run_config(run.run_dir, config, run.data, run.total_steps, strategy)
        length = steps_line(steps_per_epoch, config.epochs, config.steps)
        if length is not None:
            printer(length)
        printer(
            f"training on {run.data.description}: {run.total_steps} steps on {strategy}, "
            f"run directory {run.run_dir}"
        )
    else:
        epoch, batch = divmod(run.start_step, steps_per_epoch)
        printer(
            f"resuming {run.run_dir} at step {run.start_step} of {run.total_steps} "
            f"(epoch {epoch + 1}, batch {batch}) from its last checkpoint"
        )
    if config.smoke_test_cause() is not None:
        printer(f"note: {smoke_line(config.smoke_test_cause())}")
    _build_callbacks(run, printer)


def _build_models(run: Run, printer) -> None:
    """The trainer and its checkpoint; a resumed run restores the step all workers have."""
    import keras

    from kstyle.callbacks import TrainingCheckpoint, latest_checkpoint_step
    from kstyle.distribute import agree_across_workers

    config = run.config
    if config.seed is not None:
        keras.utils.set_random_seed(config.seed)
    with run.strategy.scope():
        run.trainer, optimizer = build_task_trainer(config)
    run.checkpoint = TrainingCheckpoint(
        os.path.join(run.run_dir, "checkpoints"),
        run.trainer.transform_net,
        optimizer,
        every=config.checkpoint_every,
    )
    if run.previous:
        local = latest_checkpoint_step(run.checkpoint.directory) or 0
        run.start_step = run.checkpoint.restore(agree_across_workers(run.strategy, local, "min"))
        if run.previous.get("learning_rate") != config.learning_rate:
            inner = getattr(optimizer, "inner_optimizer", optimizer)
            inner.learning_rate = config.learning_rate
            printer(
                f"learning rate changed from {run.previous.get('learning_rate')} to "
                f"{config.learning_rate} for the rest of the run"
            )


def _build_callbacks(run: Run, printer) -> None:
    """The callbacks of every ``fit`` call, in the order that keeps a broken step out of the
    checkpoint and lets a stop come after the step's checkpoint and history."""
    from kstyle.callbacks import (
        LossTensorBoard,
        NonFiniteLossGuard,
        ProgressLog,
        SaveTransformNet,
        SkippedFilesReport,
        TrainingMonitor,
        progress_lines_wanted,
    )
    from kstyle.distribute import agree_across_workers, float32_copy, is_chief
    from kstyle.stopping import StopRequest

    config = run.config
    run.monitor = TrainingMonitor(
        run.run_dir, run.total_steps, plot_every=config.plot_every, initial_step=run.start_step
    )
    # history and curves before the checkpoint: a kill between them never loses a step
    run.callbacks = [
        NonFiniteLossGuard(run.start_step),  # first: a broken step must not reach the checkpoint
        run.monitor,
    ]
    if is_chief():
        run.callbacks.append(
            LossTensorBoard(
                os.path.join(run.run_dir, "logs", "train"),
                initial_step=run.start_step,
                update_freq=max(1, config.plot_every),
                preview_every=config.plot_every,
            )
        )
    run.callbacks += [
        run.checkpoint,
        SaveTransformNet(run.model_path, float32_copy, marks=model_marks(config)),
        SkippedFilesReport(run.data, printer),
    ]
    lines = progress_lines_wanted(config.verbose, config.log_every)
    run.verbose = 0 if lines else config.verbose  # lines instead of Keras's bar
    if lines:
        run.callbacks.append(
            ProgressLog(run.total_steps, config.log_every, run.start_step, printer)
        )
    if run.stop is None:
        run.stop = StopRequest()
    run.stop.agree = lambda flag: agree_across_workers(run.strategy, flag, "any")
    run.callbacks.append(run.stop)  # last: a stop comes after the step's checkpoint and history


def fit_run(run: Run) -> None:
    """Phase 3: the ``fit`` calls of :func:`fit_schedule`; SIGINT and SIGTERM (watched since
    :func:`train` began, see :class:`kstyle.stopping.StopRequest`) stop after the current step.

    Raises:
        KstyleError: a loss became NaN or infinite (exit code 3; the last good checkpoint is
            kept), or a stop signal arrived (exit code 130; a checkpoint of that step and the
            model are written first; a stop that no step boundary answers in time, or a second
            signal, ends the process without them).
    """
    from kstyle.callbacks import NonFiniteLoss
    from kstyle.data import unreadable_epoch_message
    from kstyle.stopping import TrainingStopped

    checkpoint = run.checkpoint
    try:
        run.stop.check()  # a stop asked for while the run was being built
        _fit_calls(run)
    except NonFiniteLoss as error:  # the bad step was not applied: the weights are finite
        _save_model(run)
        kept = checkpoint.manager.latest_checkpoint
        where = f"the last good checkpoint ({kept}) is kept" if kept else "no checkpoint yet"
        raise KstyleError(
            f"{error}; training stopped, {where} and {run.model_path} holds the weights of "
            "the step before. Lower --learning-rate or check the data, then rerun to resume, "
            "or pass --restart",
            exit_code=3,
        ) from error
    except TrainingStopped as stopped:  # at a step boundary: every count agrees
        if checkpoint.step == run.start_step:
            kept = checkpoint.manager.latest_checkpoint
            where = f"the last checkpoint ({kept}) is kept" if kept else "nothing was trained"
            raise KstyleError(
                f"{stopped.signal_name} before the first step; {where}", exit_code=130
            ) from stopped
        path = checkpoint.save()
        _save_model(run)
        raise KstyleError(
            f"{stopped.signal_name} after {checkpoint.step} steps; checkpoint {path} written, "
            "rerun the same command to resume",
            exit_code=130,
        ) from stopped
    except Exception as error:  # a pipeline that cannot read one image stops with its line
        if unreadable_epoch_message(error) is None:
            raise
        raise KstyleError(unreadable_epoch_message(error)) from error
    except KeyboardInterrupt as interrupt:  # a second Ctrl-C of a library call: at once
        kept = checkpoint.manager.latest_checkpoint
        where = f"resume from the last checkpoint ({kept})" if kept else "no checkpoint yet"
        raise KstyleError(f"stopped at once; {where}", exit_code=130) from interrupt


def finish_run(run: Run) -> dict:
    """Phase 4: saves the model and ``summary.json``, removes the checkpoints (``model.keras``
    is the result now) and returns the summary, with the trained ``transform_net``."""
    from kstyle.callbacks import read_history

    transform_net = run.trainer.transform_net
    _save_model(run)
    monitor = run.monitor
    if not monitor.rows and os.path.isfile(monitor.history_path):  # resumed at the very end
        monitor.rows = read_history(monitor.history_path, run.start_step)
    last = monitor.rows[-1] if monitor.rows else {}
    summary = {
        "run_dir": run.run_dir,
        "model_path": run.model_path,
        "steps": monitor.step,
        "resumed_from": run.start_step,
        "losses": {name: last.get(name) for name in run.trainer.loss_names},
        "skipped_images": run.data.skipped_files()[0],
        **smoke_test_fields(run.config),
        **run.config.recorded_inputs(),
        **run.trainer.summary_fields(run.fit_seconds),
    }
    write_json_atomically(summary, run.summary_path)
    shutil.rmtree(run.checkpoint.directory, ignore_errors=True)
    return {**summary, "finished_before": False, "transform_net": transform_net}


def _fit_calls(run: Run) -> None:
    """The ``fit`` calls of :func:`fit_schedule`, timed into ``run.fit_seconds``."""
    started = time.monotonic()
    for call in fit_schedule(run.start_step, run.total_steps, run.data.steps_per_epoch):
        run.trainer.fit(
            _distributed_stream(run, call.start_step),
            initial_epoch=call.initial_epoch,
            epochs=call.epochs,
            steps_per_epoch=call.steps_per_epoch,
            callbacks=run.callbacks,
            shuffle=False,  # the stream reshuffles every epoch itself
            verbose=run.verbose,
        )
    run.fit_seconds = time.monotonic() - started


def _save_model(run: Run) -> None:
    """Saves the transform net (float32) to ``model.keras``, marked as a smoke test's or not
    (``kstyle.smoke``)."""
    from kstyle.callbacks import save_model_atomically
    from kstyle.distribute import float32_copy

    marks = model_marks(run.config)
    save_model_atomically(float32_copy(run.trainer.transform_net), run.model_path, marks=marks)


def _distributed_stream(run: Run, start_step: int):
    """The run's stream from ``start_step`` as its trainer takes it; with several replicas,
    one input pipeline per worker."""

    def stream(context=None):
        content = run.data.stream(start_step, context)
        # a pipeline feeds its replicas one (per-replica) batch each, in turn
        per_step = (
            1 if context is None else (context.num_replicas_in_sync // context.num_input_pipelines)
        )
        pipeline = (
            (0, 1) if context is None else (context.input_pipeline_id, context.num_input_pipelines)
        )
        return run.trainer.label_stream(content, start_step, run.data.seed, per_step, pipeline)

    if run.strategy.num_replicas_in_sync == 1:
        return stream()
    return run.strategy.distribute_datasets_from_function(stream)
