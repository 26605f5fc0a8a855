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

from kstyle.constants import LOG_INTERVAL_SECONDS
from kstyle.errors import KstyleError, cause_of
from kstyle.files import atomic_output, flush_folder, flush_to_disk
from kstyle.images import save_image, side_by_side, to_uint8
from kstyle.smoke import mark_model_file


def save_model_atomically(model, path: str, marks: dict | None = None) -> None:
    """``model.save(path)`` through a temporary file, so ``path`` is always a whole model, with
    ``marks`` (``{"smoke_test": False}``: :func:`kstyle.smoke.mark_model_file`) in it."""
    with atomic_output(path) as temporary:
        model.save(temporary)
        if marks is not None:
            mark_model_file(temporary, marks)


def plot_losses(rows, path: str, title: str = "", names=("content", "style", "loss")) -> None:
    """Losses ``names`` (``loss``: the total) against iteration, as a PNG (atomically). Drawn
    on a figure of its own (no pyplot), so the caller's matplotlib backend (a notebook's inline
    figures) is left as it is."""
    from matplotlib.figure import Figure

    steps = [row["step"] for row in rows]
    figure = Figure(figsize=(7, 4), dpi=100)
    axis = figure.subplots()
    for name in names:
        label = "total" if name == "loss" else name
        axis.plot(steps, [row[name] for row in rows], label=label, linewidth=1)
    axis.set_xlabel("iteration")
    axis.set_ylabel("loss")
    if rows and min(row["loss"] for row in rows) > 0:
        axis.set_yscale("log")
    axis.grid(True, alpha=0.3)
    axis.legend()
    axis.set_title(title, fontsize=9)
    figure.tight_layout()
    with atomic_output(path) as temporary:
        figure.savefig(temporary, format="png")


def read_history(path: str, last_step: int) -> list[dict]:
    """The rows of ``history.csv`` (columns: its header's) up to step ``last_step``, parsed."""
    rows = []
    with open(path, newline="") as file:
        for row in (reader := csv.DictReader(file)):
            try:
                parsed = {field: float(row[field]) for field in reader.fieldnames}
            except (KeyError, TypeError, ValueError):  # a line cut short by a kill
                continue
            parsed["step"], parsed["epoch"] = int(parsed["step"]), int(parsed["epoch"])
            if parsed["step"] <= last_step:
                rows.append(parsed)
    return rows


def write_history_atomically(rows, path: str, fields) -> None:
    """Writes ``history.csv``: ``rows``' ``fields``, through a temporary file and a rename."""
    with atomic_output(path) as temporary, open(temporary, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(fields)
        for row in rows:
            writer.writerow([row[field] for field in fields])


def preview_picture(trainer):
    """The trainer's last preview (``preview_panels``: first content image | its stylization,
    or input | teacher | student) side by side, as one (H, kW + 8(k - 1), 3) uint8 picture:
    what ``preview.png`` and TensorBoard's ``preview`` image show."""
    picture, *rest = (to_uint8(panel.numpy()) for panel in trainer.preview_panels())
    for panel in rest:
        picture = side_by_side(picture, panel)
    return picture


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
        self.fields = ("step", "epoch", *self.model.loss_names, "seconds")
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
        values = {name: float(v.numpy()) for name, v in self.model.last_losses.items()}
        row = {"step": self.step, "epoch": self.epoch, **values}
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
    them. Each write is flushed at once: a run that is killed keeps its curves.

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

    def on_train_begin(self, logs=None):
        import tensorflow as tf

        if self.writer is None:
            self.writer = tf.summary.create_file_writer(self.log_dir)

    def on_train_batch_end(self, batch, logs=None):
        import tensorflow as tf

        self.step += 1
        if self.preview_every > 0 and self.step % self.preview_every == 0:
            self._write_preview()
        if self.step % self.update_freq:
            return
        with self.writer.as_default():
            for name, variable in self.model.last_losses.items():
                tf.summary.scalar(name, float(variable.numpy()), step=self.step)
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
