"""Callbacks that show and keep a run's progress: per-step CSV, loss curves, previews, saving.

Every file is written atomically (temporary file, then rename), so a crash or kill never
leaves a half-written CSV, PNG or model behind.
"""

import csv
import glob
import math
import os
import shutil
import time

import keras
import numpy as np

from kstyle.constants import LOG_INTERVAL_SECONDS
from kstyle.errors import KstyleError, cause_of
from kstyle.files import atomic_output, flush_folder, flush_to_disk
from kstyle.history import plot_losses, read_history, write_history_atomically  # noqa: F401
from kstyle.images import picture_grid, save_image, to_uint8
from kstyle.smoke import mark_model_file


def save_model_atomically(model, path: str, marks: dict | None = None) -> None:
    """``model.save(path)`` through a temporary file, so ``path`` is always a whole model, with
    ``marks`` (``{"smoke_test": False}``: :func:`kstyle.smoke.mark_model_file`) in it."""
    with atomic_output(path) as temporary:
        model.save(temporary)
        if marks is not None:
            mark_model_file(temporary, marks)


def preview_picture(trainer):
    """The trainer's last preview (``preview_rows``: input | output, or input | teacher |
    student; a row per style of a net of several) as one uint8 :func:`picture_grid`: what
    ``preview.png`` and TensorBoard's ``preview`` image show."""
    rows = trainer.preview_rows()
    return picture_grid([[to_uint8(np.asarray(panel)) for panel in row] for row in rows])


def _format_seconds(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class TrainingMonitor(keras.callbacks.Callback):
    """Writes ``history.csv`` every step; ``losses.png`` and ``preview.png`` every N steps.

    Reads the trainer's ``last_losses`` (that step's losses, not the running mean) and its
    preview variables (first image of the batch and its output). ``initial_step`` counts
    steps done before this run (0 for a new run). The figures' title shows epoch, iteration
    out of the total, percentage done and elapsed time, like the reference's.
    """

    def __init__(self, run_dir, total_steps, plot_every=10, initial_step=0):
        super().__init__()
        self.run_dir = run_dir
        self.total_steps = int(total_steps)
        self.plot_every = int(plot_every)
        self.step = int(initial_step)
        self.epoch = 0
        self.rows = []
        self.start_time = None
        self.history_path = os.path.join(run_dir, "history.csv")
        self.losses_path = os.path.join(run_dir, "losses.png")
        self.preview_path = os.path.join(run_dir, "preview.png")

    def on_train_begin(self, logs=None):
        if self.start_time is not None:  # a later ``fit`` of the same run
            return
        self.start_time = time.monotonic()
        self.fields = ("step", "epoch", *self.model.history_columns, "seconds")
        if self.step == 0 or not os.path.exists(self.history_path):  # a new run: new history
            with open(self.history_path, "w", newline="") as file:
                csv.writer(file).writerow(self.fields)
        else:  # a resumed run: keep the curve up to the checkpoint, drop steps redone now
            self.rows = read_history(self.history_path, self.step)
            write_history_atomically(self.rows, self.history_path, self.fields)
            if self.rows:
                self.start_time -= self.rows[-1]["seconds"]

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        row = {"step": self.step, "epoch": self.epoch, **self.model.history_values()}
        row["seconds"] = round(time.monotonic() - self.start_time, 3)
        self.rows.append(row)
        with open(self.history_path, "a", newline="") as file:
            csv.writer(file).writerow([row[field] for field in self.fields])
        if self.plot_every > 0 and self.step % self.plot_every == 0:
            self.write_figures()

    def on_train_end(self, logs=None):  # the end of a fit call; with plot_every 0, of the run
        if self.rows and (self.plot_every > 0 or self.step >= self.total_steps):
            self.write_figures()

    def title(self) -> str:
        done = 100.0 * self.step / max(1, self.total_steps)
        elapsed = _format_seconds(time.monotonic() - self.start_time)
        return (
            f"epoch {self.epoch}, iteration {self.step}/{self.total_steps} "
            f"({done:.1f}%), elapsed {elapsed}"
        )

    def write_figures(self) -> None:
        """Refreshes ``losses.png`` and ``preview.png`` from what was seen so far."""
        plot_losses(self.rows, self.losses_path, self.title(), self.model.plotted)
        save_image(preview_picture(self.model), self.preview_path)


class SaveTransformNet(keras.callbacks.Callback):
    """Saves the transform net (alone) to ``path`` atomically at the end of every epoch, with
    ``marks`` (see :func:`save_model_atomically`); ``prepare`` maps the net to what is saved
    (e.g. ``kstyle.distribute.float32_copy``)."""

    def __init__(self, path, prepare=None, marks=None):
        super().__init__()
        self.path = path
        self.prepare = prepare or (lambda model: model)
        self.marks = marks

    def on_epoch_end(self, epoch, logs=None):
        save_model_atomically(self.prepare(self.model.transform_net), self.path, self.marks)


class SkippedFilesReport(keras.callbacks.Callback):
    """Prints how many unreadable files the data pipeline skipped.

    Reported once the first pass over the files is complete (at an epoch's end), or at the end
    of a run that stopped before that, as a count so far.
    """

    def __init__(self, training_data, printer=print):
        super().__init__()
        self.data = training_data
        self.printer = printer
        self.reported = False

    def on_epoch_end(self, epoch, logs=None):
        count, complete = self.data.skipped_files()
        if complete and not self.reported:
            self.reported = True
            if count:
                self.printer(f"skipped {count} unreadable image file(s) of {self.data.num_images}")

    def on_train_end(self, logs=None):
        count, complete = self.data.skipped_files()
        if count and not self.reported:
            self.reported = True
            self.printer(f"skipped {count} unreadable image file(s) in the files read so far")


class NonFiniteLoss(KstyleError):
    """A loss or the gradient norm became NaN or infinite; raised from inside ``fit`` to stop
    the run at once."""

    def __init__(self, step, name, value):
        label = {"loss": "total loss", "gradient": "gradient norm"}.get(name, f"{name} loss")
        super().__init__(f"the {label} became {value} at step {step}")
        self.step = step


class NonFiniteLossGuard(keras.callbacks.Callback):
    """Stops training the moment a step's loss or gradient norm is NaN or infinite.

    The compiled step has already refused to apply such a step (``StyleTransferTrainer``), so
    the weights are still the last good step's. Put this guard first among the callbacks: it
    raises ``NonFiniteLoss`` before any later callback (the checkpoint in particular) runs.
    """

    def __init__(self, initial_step=0):
        super().__init__()
        self.step = int(initial_step)

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        values = dict(self.model.last_losses)
        values["gradient"] = self.model.last_gradient_norm
        for name, variable in values.items():
            value = float(variable.numpy())
            if not math.isfinite(value):
                raise NonFiniteLoss(self.step, name, value)


class TrainingCheckpoint(keras.callbacks.Callback):
    """Saves the transform net, the optimizer state and the step every ``every`` steps.

    Keras's ``BackupAndRestore`` restores only whole epochs (it records the batch but resumes
    at the start of the epoch) and overwrites its weights file in place, so a kill during a
    save loses the backup. This callback uses TensorFlow's ``tf.train.CheckpointManager``
    instead: each checkpoint is written to temporary files that are renamed when complete, and
    the ``checkpoint`` index names the newest complete one; the previous one is kept too. The
    data order is a function of the step (``TrainingData.stream``), so the step is all a
    resumed run needs to see the batches the killed run would have seen next.

    Args:
        directory: where the checkpoints go (``<run>/checkpoints``).
        transform_net, optimizer: what is saved and restored.
        every: steps between checkpoints (0: only when asked, e.g. on an interrupt).
        initial_step: steps done before this run (the restored step when resuming).
    """

    def __init__(self, directory, transform_net, optimizer, every, initial_step=0):
        super().__init__()
        import tensorflow as tf

        self.directory = directory
        self.every = int(every)
        self.step = int(initial_step)
        self.step_variable = tf.Variable(self.step, dtype=tf.int64, trainable=False, name="step")
        self.checkpoint = tf.train.Checkpoint(
            transform_net=transform_net, optimizer=optimizer, step=self.step_variable
        )
        self.manager = tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep=2)
        self.saved_step = None

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.every > 0 and self.step % self.every == 0:
            self.save()

    def save(self) -> str:
        """Writes a checkpoint of the current step (if not written already); returns its path."""
        if self.saved_step != self.step:
            self.step_variable.assign(self.step)
            path = self.manager.save(checkpoint_number=self.step)
            # TensorFlow renames the files into place but does not flush them: a power loss
            # could leave an index that names a checkpoint whose data never reached the disk
            for name in [
                *glob.glob(f"{glob.escape(path)}.*"),
                os.path.join(self.directory, "checkpoint"),
            ]:
                flush_to_disk(name)
            flush_folder(self.directory)
            self.saved_step = self.step
        return self.manager.latest_checkpoint

    def restore(self, step: int | None = None) -> int:
        """Loads a complete checkpoint and returns its step (0 if there is none).

        ``step``: that checkpoint (the workers of a multi-worker run agree on one); None: the
        newest. The optimizer must already be built (``optimizer.build(variables)``) so that
        its slot variables exist to receive the saved values.
        """
        for leftover in glob.glob(os.path.join(self.directory, "*_temp*")):
            shutil.rmtree(leftover, ignore_errors=True)  # a save cut short by a kill
        path = self.manager.latest_checkpoint
        if step is not None and step > 0:
            path = os.path.join(self.directory, f"ckpt-{step}")
            if path not in self.manager.checkpoints:
                raise KstyleError(
                    f"the workers' last checkpoints differ and {path} is gone; "
                    "pass --restart on every worker"
                )
        if path is None or step == 0:
            return 0
        try:
            self.checkpoint.restore(path).assert_existing_objects_matched().expect_partial()
        except Exception as error:
            raise KstyleError(
                f"could not restore the checkpoint {path}: {cause_of(error)}; "
                "pass --restart to start this run over"
            ) from error
        self.step = self.saved_step = int(self.step_variable.numpy())
        return self.step


def latest_checkpoint_step(directory: str) -> int | None:
    """The step of the newest complete checkpoint in ``directory``, without loading it."""
    import tensorflow as tf

    path = tf.train.latest_checkpoint(directory) if os.path.isdir(directory) else None
    if path is None:
        return None
    return int(path.rsplit("-", 1)[-1])


class LossTensorBoard(keras.callbacks.Callback):
    """Writes each step's losses (the trainer's ``last_losses``, e.g. loss, content, style, tv) as
    TensorBoard scalars at the run's global step, every ``update_freq`` steps, and the preview
    picture (:func:`preview_picture`, as in ``preview.png``) as the image ``preview`` every
    ``preview_every`` steps and at the end of every ``fit`` (like ``TrainingMonitor``).

    Steps count on from ``initial_step`` (the checkpoint's step when resuming), so a resumed
    run, and a run made of several ``fit`` calls, continues the curves instead of writing over
    them. Each write is flushed at once: a run that is killed keeps its curves. The
    trainer's ``extra_scalars`` (a net of several styles: the style loss under the style each
    step drew) are averaged over the steps since the last write that had them.

    Args:
        log_dir: the event files' folder (``<run>/logs/train``).
        initial_step: steps done before this run (0 for a new run).
        update_freq: write the steps that are multiples of this.
        preview_every: write the preview at the steps that are multiples of this (0: never).
    """

    def __init__(self, log_dir, initial_step=0, update_freq=1, preview_every=0):
        super().__init__()
        self.log_dir = log_dir
        self.step = int(initial_step)
        self.update_freq = max(1, int(update_freq))
        self.preview_every = int(preview_every)
        self.writer = None
        self.pending = {}  # extra scalar -> [sum, count] since the last write

    def on_train_begin(self, logs=None):
        import tensorflow as tf

        if self.writer is None:
            self.writer = tf.summary.create_file_writer(self.log_dir)

    def on_train_batch_end(self, batch, logs=None):
        import tensorflow as tf

        self.step += 1
        if self.preview_every > 0 and self.step % self.preview_every == 0:
            self._write_preview()
        for name, value in self.model.extra_scalars().items():
            total = self.pending.setdefault(name, [0.0, 0])
            total[0], total[1] = total[0] + value, total[1] + 1
        if self.step % self.update_freq:
            return
        with self.writer.as_default():
            for name, variable in self.model.last_losses.items():
                tf.summary.scalar(name, float(variable.numpy()), step=self.step)
            for name, (total, count) in self.pending.items():
                tf.summary.scalar(name, total / count, step=self.step)
        self.pending = {}
        self.writer.flush()

    def _write_preview(self):
        import tensorflow as tf

        with self.writer.as_default():
            tf.summary.image("preview", preview_picture(self.model)[None], step=self.step)
        self.writer.flush()

    def on_train_end(self, logs=None):
        if self.preview_every > 0 and self.step % self.preview_every:  # not written yet
            self._write_preview()
        self.writer.close()
        self.writer = None


class ProgressLog(keras.callbacks.Callback):
    """Prints one progress line every ``every`` steps, for logs (nohup, SLURM, CI) where
    Keras's progress bar would write one per step: the step out of the total, that step's
    losses (as in ``history.csv``), steps per second, elapsed time and the time left.

    ``every`` None: a line once ``interval`` seconds have passed since the last one. The run's
    last step always gets a line. Steps per second count from the end of the first step this
    process ran (it includes tracing and compiling). ``printer`` takes each line.
    """

    interval = LOG_INTERVAL_SECONDS  # seconds between lines when ``every`` is None
    clock = staticmethod(time.monotonic)  # seconds; tests replace it

    def __init__(self, total_steps, every=None, initial_step=0, printer=print):
        super().__init__()
        self.total_steps, self.every, self.step = int(total_steps), every, int(initial_step)
        self.printer = printer
        self.start = self.first = self.last_line = None  # times; first: (step, time)

    def on_train_begin(self, logs=None):
        if self.start is None:  # not again in a later ``fit`` of the same run
            self.start = self.last_line = self.clock()

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        now = self.clock()
        if self.first is None:
            self.first = (self.step, now)
        due = self.step % self.every == 0 if self.every else now - self.last_line >= self.interval
        if due or self.step == self.total_steps:
            self.printer(self.line(now))
            self.last_line = now

    def line(self, now: float) -> str:
        """The progress line of the current step at time ``now``."""
        losses = ", ".join(
            f"{name} {float(value.numpy()):.6g}" for name, value in self.model.last_losses.items()
        )
        done = 100.0 * self.step / max(1, self.total_steps)
        text = f"step {self.step}/{self.total_steps} ({done:.0f}%): {losses}; "
        text += f"elapsed {_format_seconds(now - self.start)}"
        steps, seconds = self.step - self.first[0], now - self.first[1]
        if steps > 0 and seconds > 0:
            rate = steps / seconds
            left = _format_seconds((self.total_steps - self.step) / rate)
            text += f", {rate:.3g} steps/s, ETA {left}"
        return text


def progress_lines_wanted(verbose, log_every, stream=None) -> bool:
    """Whether a run prints :class:`ProgressLog` lines instead of Keras's progress bar.

    ``verbose`` (Keras's fit verbosity) 0: never; ``log_every`` given: always; otherwise with
    the verbosity ``"auto"`` when ``stream`` (None: stdout and stderr, where Keras's bar and
    the CLI's lines go) is not a terminal (a log file, a pipe) and no notebook kernel runs."""
    import sys

    if verbose == 0 or log_every is not None:
        return verbose != 0
    streams = (sys.stdout, sys.stderr) if stream is None else (stream,)
    terminals = all(getattr(each, "isatty", lambda: False)() for each in streams)
    interactive = terminals or "ipykernel" in sys.modules
    return verbose == "auto" and not interactive
