"""Callbacks that show and keep a run's progress: per-step CSV, loss curves, previews, saving.

Every file is written atomically (temporary file, then rename), so a crash or kill never
leaves a half-written CSV, PNG or model behind.
"""

import csv
import os
import time

import keras
import numpy as np

from kstyle.trainer import LOSS_NAMES

HISTORY_FIELDS = ("step", "epoch", *LOSS_NAMES, "seconds")


def atomic_path(path: str) -> str:
    """A temporary path next to ``path`` with the same extension, for write-then-rename."""
    directory, name = os.path.split(path)
    return os.path.join(directory, f".{name}.tmp{os.path.splitext(name)[1]}")


def save_model_atomically(model, path: str) -> None:
    """``model.save(path)`` through a temporary file, so ``path`` is always a whole model."""
    temporary = atomic_path(path)
    model.save(temporary)
    os.replace(temporary, path)


def plot_losses(rows, path: str, title: str = "") -> None:
    """Content, style and total loss against iteration, as a PNG (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [row["step"] for row in rows]
    figure, axis = plt.subplots(figsize=(7, 4), dpi=100)
    for name, label in (("content", "content"), ("style", "style"), ("loss", "total")):
        axis.plot(steps, [row[name] for row in rows], label=label, linewidth=1)
    axis.set_xlabel("iteration")
    axis.set_ylabel("loss")
    if rows and min(row["loss"] for row in rows) > 0:
        axis.set_yscale("log")
    axis.grid(True, alpha=0.3)
    axis.legend()
    axis.set_title(title, fontsize=9)
    figure.tight_layout()
    temporary = atomic_path(path)
    figure.savefig(temporary, format="png")
    plt.close(figure)
    os.replace(temporary, path)


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
        self.start_time = time.monotonic()
        if self.step == 0 or not os.path.exists(self.history_path):  # a new run: new history
            with open(self.history_path, "w", newline="") as file:
                csv.writer(file).writerow(HISTORY_FIELDS)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        values = {name: float(v.numpy()) for name, v in self.model.last_losses.items()}
        row = {"step": self.step, "epoch": self.epoch, **values}
        row["seconds"] = round(time.monotonic() - self.start_time, 3)
        self.rows.append(row)
        with open(self.history_path, "a", newline="") as file:
            csv.writer(file).writerow([row[field] for field in HISTORY_FIELDS])
        if self.plot_every > 0 and self.step % self.plot_every == 0:
            self.write_figures()

    def on_train_end(self, logs=None):
        if self.rows and self.plot_every > 0:
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
        from kstyle.stylize import save_image, side_by_side

        plot_losses(self.rows, self.losses_path, self.title())
        content = np.clip(np.round(self.model.preview_input.numpy()), 0, 255).astype(np.uint8)
        output = np.clip(np.round(self.model.preview_output.numpy()), 0, 255).astype(np.uint8)
        save_image(side_by_side(content, output), self.preview_path)


class StopAfterSteps(keras.callbacks.Callback):
    """Stops ``fit`` once ``max_steps`` training steps have run in total."""

    def __init__(self, max_steps, initial_step=0):
        super().__init__()
        self.max_steps = int(max_steps)
        self.step = int(initial_step)

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step >= self.max_steps:
            self.model.stop_training = True


class SaveTransformNet(keras.callbacks.Callback):
    """Saves the transform net (alone) to ``path`` atomically at the end of every epoch."""

    def __init__(self, path):
        super().__init__()
        self.path = path

    def on_epoch_end(self, epoch, logs=None):
        save_model_atomically(self.model.transform_net, self.path)


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
