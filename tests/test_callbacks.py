"""The training callbacks on a real (tiny) trainer: history CSV, figures, atomic writes, the
NaN guard, checkpoints, the TensorBoard scalars and previews, progress lines and the stop
request."""

import csv
import os
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import random_image, tensorboard_images, tensorboard_scalars
from keras import ops
from PIL import Image

from kstyle.callbacks import (
    LossTensorBoard,
    NonFiniteLoss,
    NonFiniteLossGuard,
    ProgressLog,
    TrainingCheckpoint,
    TrainingMonitor,
    latest_checkpoint_step,
    progress_lines_wanted,
    save_model_atomically,
    write_history_atomically,
)
from kstyle.errors import KstyleError
from kstyle.trainer import StyleTransferTrainer
from kstyle.transform_net import build_transform_net


def make_trainer(loss_net, kind=StyleTransferTrainer, seed=0):
    keras.utils.set_random_seed(seed)
    style = random_image(32, 32, seed=7).astype("float32")
    trainer = kind(build_transform_net(), loss_net, style, image_size=32)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    trainer.optimizer.build(trainer.transform_net.trainable_variables)
    return trainer


def fit(trainer, steps, callbacks, seed=0):
    """``steps`` training steps on random 2-image batches, in one epoch."""
    rng = np.random.default_rng(seed)
    batches = rng.uniform(0, 255, (steps, 2, 32, 32, 3)).astype("float32")
    trainer.fit(
        tf.data.Dataset.from_tensor_slices(batches),
        epochs=1,
        steps_per_epoch=steps,
        callbacks=callbacks,
        shuffle=False,
        verbose=0,
    )


class Recorder(keras.callbacks.Callback):
    """Keeps every step's ``last_losses`` as floats."""

    def __init__(self):
        super().__init__()
        self.steps = []

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append({k: float(v.numpy()) for k, v in self.model.last_losses.items()})


@pytest.fixture(scope="module")
def trainer(loss_net):
    return make_trainer(loss_net)


def history_rows(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def test_history_csv_has_every_step_and_a_resumed_run_continues_it(trainer, tmp_path):
    monitor, recorder = TrainingMonitor(str(tmp_path), total_steps=5, plot_every=2), Recorder()
    fit(trainer, 5, [monitor, recorder])
    rows = history_rows(tmp_path / "history.csv")
    assert [int(row["step"]) for row in rows] == [1, 2, 3, 4, 5]
    assert {row["epoch"] for row in rows} == {"1"}
    for row, seen in zip(rows, recorder.steps, strict=True):
        for name in ("loss", "content", "style", "tv"):
            assert float(row[name]) == seen[name], name
    seconds = [float(row["seconds"]) for row in rows]
    assert seconds == sorted(seconds) and seconds[0] >= 0
    assert Image.open(tmp_path / "preview.png").size == (32 * 2 + 8, 32)
    assert Image.open(tmp_path / "losses.png").size == (700, 400)
    assert "iteration 5/5 (100.0%)" in monitor.title()

    with open(tmp_path / "history.csv", "a") as file:
        file.write("6,1,0.5")  # a line cut short by a kill
    resumed, recorder = TrainingMonitor(str(tmp_path), 9, plot_every=0, initial_step=3), Recorder()
    fit(trainer, 2, [resumed, recorder])
    again = history_rows(tmp_path / "history.csv")
    assert [int(row["step"]) for row in again] == [1, 2, 3, 4, 5]
    assert again[:3] == rows[:3]  # the curve up to the checkpoint is kept as it was
    assert [float(row["loss"]) for row in again[3:]] == [s["loss"] for s in recorder.steps]
    assert float(again[3]["seconds"]) >= float(rows[2]["seconds"])  # the clock continues

    quiet = tmp_path / "plot_every_0"
    quiet.mkdir()
    once = TrainingMonitor(str(quiet), total_steps=4, plot_every=0)
    fit(trainer, 2, [once])  # half the run: no figures yet
    assert not (quiet / "losses.png").exists() and not (quiet / "preview.png").exists()
    fit(trainer, 2, [once], seed=1)  # the end of the run: both, once
    assert (quiet / "losses.png").is_file() and (quiet / "preview.png").is_file()


class FailingSave:
    def save(self, path):
        with open(path, "wb") as file:
            file.write(b"half a model")
        raise OSError("disk full")


def test_writes_are_atomic(tmp_path):
    target = tmp_path / "model.keras"
    target.write_bytes(b"the previous model")
    with pytest.raises(OSError, match="disk full"):
        save_model_atomically(FailingSave(), str(target))
    assert target.read_bytes() == b"the previous model"
    history = tmp_path / "history.csv"
    history.write_text("the previous history\n")
    good = {"step": 1, "epoch": 1, "loss": 1.0, "content": 0.5, "style": 0.5, "tv": 0.0}
    with pytest.raises(KeyError):
        write_history_atomically([good, {"step": 2}], str(history), tuple(good))
    assert history.read_text() == "the previous history\n"
    assert sorted(os.listdir(tmp_path)) == ["history.csv", "model.keras"]  # no leftovers


class Diverging(StyleTransferTrainer):
    """A trainer whose total loss is NaN from its third step on."""

    def compute_losses(self, content_batch, stylized, styles=None):
        total, parts = super().compute_losses(content_batch, stylized)
        blown = ops.cast(self.optimizer.iterations, "float32") >= 2.0
        return ops.where(blown, float("nan"), total), parts


def test_the_nan_guard_stops_before_later_callbacks_see_the_step(loss_net):
    trainer = make_trainer(loss_net, Diverging)
    after = Recorder()
    with pytest.raises(NonFiniteLoss, match="the total loss became nan at step 13") as caught:
        fit(trainer, 5, [NonFiniteLossGuard(initial_step=10), after])
    assert caught.value.step == 13
    assert len(after.steps) == 2  # the broken third step never reached the next callback


def test_checkpoints_restore_weights_optimizer_and_step(trainer, loss_net, tmp_path):
    directory = str(tmp_path / "checkpoints")
    net = trainer.transform_net
    checkpoint = TrainingCheckpoint(directory, net, trainer.optimizer, every=2, initial_step=0)
    iterations = int(trainer.optimizer.iterations.numpy())
    fit(trainer, 5, [checkpoint])
    assert latest_checkpoint_step(directory) == 4
    path = checkpoint.save()  # the step a stop happens at
    assert path.endswith("ckpt-5") and latest_checkpoint_step(directory) == 5
    assert checkpoint.save() == path  # once per step
    os.makedirs(os.path.join(directory, "ckpt-9_temp"))  # a save cut short by a kill

    fresh = make_trainer(loss_net, seed=1)
    restored = TrainingCheckpoint(directory, fresh.transform_net, fresh.optimizer, every=2)
    assert restored.restore() == 5
    assert not os.path.exists(os.path.join(directory, "ckpt-9_temp"))
    for mine, theirs in zip(fresh.transform_net.get_weights(), net.get_weights(), strict=True):
        np.testing.assert_array_equal(mine, theirs)
    assert int(fresh.optimizer.iterations.numpy()) == iterations + 5
    assert restored.restore(4) == 4  # the one before is kept too
    with pytest.raises(KstyleError, match="last checkpoints differ"):
        restored.restore(2)
    assert latest_checkpoint_step(str(tmp_path / "none")) is None


def test_tensorboard_scalars_are_each_steps_losses_at_the_global_step(trainer, tmp_path):
    log_dir = str(tmp_path / "logs" / "train")
    board, recorder = LossTensorBoard(log_dir, update_freq=2), Recorder()
    fit(trainer, 3, [board, recorder])
    fit(trainer, 2, [board, recorder], seed=1)  # a second fit call of the same run
    scalars = tensorboard_scalars(log_dir)
    assert set(scalars) == {"loss", "content", "style", "tv"}
    for name, points in scalars.items():
        assert [step for step, _ in points] == [2, 4]
        for step, value in points:
            assert value == pytest.approx(recorder.steps[step - 1][name], rel=1e-6), name

    # a run resumed from its checkpoint at step 5 goes on at step 6, not at 1
    resumed, recorder = LossTensorBoard(log_dir, initial_step=5, update_freq=2), Recorder()
    fit(trainer, 4, [resumed, recorder], seed=2)
    points = tensorboard_scalars(log_dir)["loss"]
    assert [step for step, _ in points] == [2, 4, 6, 8]
    assert points[2][1] == pytest.approx(recorder.steps[0]["loss"], rel=1e-6)
    assert points[3][1] == pytest.approx(recorder.steps[2]["loss"], rel=1e-6)


class PreviewRecorder(keras.callbacks.Callback):
    """Keeps every step's preview content and output as uint8 arrays."""

    def __init__(self):
        super().__init__()
        self.steps = []

    def on_train_batch_end(self, batch, logs=None):
        pictures = (self.model.preview_input.numpy(), self.model.preview_output.numpy())
        self.steps.append(tuple(np.clip(np.round(p), 0, 255).astype(np.uint8) for p in pictures))


def test_tensorboard_previews_are_the_preview_pictures_at_the_plot_cadence(trainer, tmp_path):
    log_dir = str(tmp_path / "logs" / "train")
    board = LossTensorBoard(log_dir, update_freq=2, preview_every=2)
    recorder = PreviewRecorder()
    fit(trainer, 3, [board, recorder])
    fit(trainer, 2, [board, recorder], seed=1)  # a second fit call of the same run
    previews = tensorboard_images(log_dir)["preview"]
    # every 2 steps, and at the end of each fit call (step 3: not a multiple of 2)
    assert [step for step, _ in previews] == [2, 3, 4, 5]
    for step, picture in previews:
        content, output = recorder.steps[step - 1]
        assert picture.shape == (32, 32 * 2 + 8, 3) and picture.dtype == np.uint8
        np.testing.assert_array_equal(picture[:, :32], content)
        np.testing.assert_array_equal(picture[:, -32:], output)
    assert not np.array_equal(previews[0][1], previews[-1][1])  # the net changed in between
    assert [step for step, _ in tensorboard_scalars(log_dir)["loss"]] == [2, 4]

    quiet = str(tmp_path / "quiet")
    fit(trainer, 2, [LossTensorBoard(quiet, update_freq=1, preview_every=0)])
    assert tensorboard_images(quiet) == {}  # --plot-every 0: preview.png is not written either


class FakeClock:
    """Seconds that move on by the given amounts, one per call."""

    def __init__(self, *steps):
        self.now, self.steps = 0.0, list(steps)

    def __call__(self):
        self.now += self.steps.pop(0)
        return self.now


def test_progress_lines_every_n_steps_hold_each_steps_losses(trainer):
    lines, recorder = [], Recorder()
    log = ProgressLog(total_steps=7, every=2, initial_step=2, printer=lines.append)
    log.clock = FakeClock(0, 10, 1, 1, 1, 1)  # train begin, then steps 3 to 7
    fit(trainer, 5, [log, recorder])
    assert [line.split(":")[0] for line in lines] == [
        "step 4/7 (57%)", "step 6/7 (86%)", "step 7/7 (100%)",  # and the run's last step
    ]  # fmt: skip
    for line, step in zip(lines, (4, 6, 7), strict=True):
        seen = recorder.steps[step - 3]
        for name in ("loss", "content", "style", "tv"):
            value = float(line.split(f" {name} ")[1].split(",")[0].split(";")[0])
            assert value == pytest.approx(seen[name], rel=1e-5), (name, line)
    # the first step (3, at 10 s) traced and compiled: the rate counts the steps after it
    assert lines[0].endswith("; elapsed 0:00:11, 1 steps/s, ETA 0:00:03"), lines[0]
    assert lines[2].endswith("; elapsed 0:00:14, 1 steps/s, ETA 0:00:00"), lines[2]


def test_progress_lines_without_n_come_every_interval(trainer):
    lines = []
    log = ProgressLog(total_steps=6, printer=lines.append)
    log.interval = 30
    log.clock = FakeClock(0, 40, 10, 10, 5, 20, 5)  # train begin, then steps 1 to 6
    fit(trainer, 6, [log])
    # 40 s (step 1); 25 s later not yet (step 4); 45 s after step 1 (step 5); the last step
    assert [line.split(" (")[0] for line in lines] == ["step 1/6", "step 5/6", "step 6/6"]
    assert "steps/s" not in lines[0]  # one step: no rate yet
    assert lines[1].endswith("elapsed 0:01:25, 0.0889 steps/s, ETA 0:00:11"), lines[1]


class Stream:
    def __init__(self, terminal):
        self.terminal = terminal

    def isatty(self):
        return self.terminal


@pytest.mark.parametrize(
    "verbose, log_every, terminal, wanted",
    [
        ("auto", None, False, True),  # a log: lines instead of Keras's bar
        ("auto", None, True, False),  # a terminal: Keras's bar
        ("auto", 5, True, True),  # --log-every asks for lines everywhere
        (0, 5, False, False),  # a quiet library call stays quiet
        (0, None, False, False),
        (1, None, False, False),  # Keras's own verbosity, asked for explicitly
        (2, 3, True, True),
    ],
)
def test_progress_lines_are_for_logs_unless_asked_for(
    verbose, log_every, terminal, wanted, monkeypatch
):
    # no notebook kernel here, even when an earlier test (the notebook's) imported ipykernel
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    assert progress_lines_wanted(verbose, log_every, Stream(terminal)) is wanted


def test_plotting_leaves_the_callers_matplotlib_backend_alone(tmp_path):
    """A notebook's inline backend must survive a training run's losses.png."""
    import subprocess
    import sys

    script = (
        "import matplotlib; matplotlib.use('svg')\n"
        "from kstyle.callbacks import plot_losses\n"
        "rows = [{'step': s, 'loss': 1.0 / s, 'content': 0.5 / s, 'style': 0.5 / s}"
        " for s in (1, 2, 3)]\n"
        f"plot_losses(rows, {str(tmp_path / 'losses.png')!r})\n"
        "print(matplotlib.get_backend())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "svg"
    assert (tmp_path / "losses.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
