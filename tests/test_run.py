"""kstyle.run and kstyle.schedule: the fit schedule, the step count and its line, and
train's four phases run one by one.

The kill, NaN and signal paths of a whole ``train.py`` run are in test_resume.py.
"""

import csv
import dataclasses
import json
import os

import pytest
from conftest import tensorboard_scalars

from kstyle.callbacks import (
    LossTensorBoard,
    NonFiniteLossGuard,
    ProgressLog,
    SaveTransformNet,
    SkippedFilesReport,
    TrainingCheckpoint,
    TrainingMonitor,
)
from kstyle.errors import KstyleError
from kstyle.run import TrainConfig, build_run, finish_run, fit_run, open_run, train
from kstyle.schedule import FitCall, fit_schedule, steps_line, total_steps_of
from kstyle.stopping import StopRequest


@pytest.mark.parametrize(
    "start, total, per_epoch, calls",
    [
        (0, 10, 5, [FitCall(0, 0, 2, 5)]),  # whole epochs: one call
        (0, 12, 5, [FitCall(0, 0, 2, 5), FitCall(10, 2, 3, 2)]),  # --steps ends mid-epoch
        (7, 20, 5, [FitCall(7, 1, 2, 3), FitCall(10, 2, 4, 5)]),  # resumed mid-epoch
        (7, 9, 5, [FitCall(7, 1, 2, 2)]),  # resumed and ending in the same epoch
        (3, 4, 5, [FitCall(3, 0, 1, 1)]),
        (5, 5, 5, []),  # resumed at the very end
    ],
)
def test_fit_schedule(start, total, per_epoch, calls):
    schedule = fit_schedule(start, total, per_epoch)
    assert schedule == calls
    steps = sum((call.epochs - call.initial_epoch) * call.steps_per_epoch for call in schedule)
    assert steps == total - start  # every step once


def test_total_steps_of():
    assert total_steps_of(5, None, None) == 10  # the reference's 2 epochs
    assert total_steps_of(5, 3, None) == 15
    assert total_steps_of(16, None, 60) == 60  # --steps alone: as many epochs as it needs
    assert total_steps_of(16, None, 10) == 10
    assert total_steps_of(5, 2, 7) == 7  # both: whichever stops first
    assert total_steps_of(5, 2, 30) == 10
    assert TrainConfig(style="s").epochs is None  # TrainConfig() keeps the 2 epochs


@pytest.mark.parametrize(
    "epochs, steps, line",
    [
        (None, None, None),  # the epochs alone say it
        (3, None, None),
        (None, 60, "--steps 60 on 16 steps per epoch: 4 epochs (the last one partial)"),
        (None, 64, "--steps 64 on 16 steps per epoch: 4 epochs"),
        (None, 10, "--steps 10 on 16 steps per epoch: 1 epoch (partial)"),
        (
            2,
            60,
            "--steps 60 on 16 steps per epoch: --epochs 2 stops first, after 32 steps",
        ),
        (
            5,
            60,
            "--steps 60 on 16 steps per epoch stops before --epochs 5 (80 steps): 4 epochs "
            "(the last one partial)",
        ),
        (2, 32, "--steps 32 on 16 steps per epoch: 2 epochs, as many as --epochs 2"),
    ],
)
def test_steps_line_says_how_long_the_run_is(epochs, steps, line):
    assert steps_line(16, epochs, steps) == line


SMOKE_NOTE = "untrained loss network: smoke test only"


def small_config(style_file, image_folder, output, **changes):
    options = dict(
        style=style_file,
        data=image_folder,
        output=str(output),
        vgg_weights="random",
        image_size=32,
        batch_size=2,
        steps=6,
        epochs=3,
        plot_every=2,
        checkpoint_every=2,
        seed=5,
        verbose=0,
    )
    return TrainConfig(**{**options, **changes})


def history_steps(run_dir):
    with open(os.path.join(run_dir, "history.csv"), newline="") as file:
        return [int(row["step"]) for row in csv.DictReader(file)]


def test_the_phases_of_a_new_run(tmp_path, image_folder, style_file):
    output = tmp_path / "run"
    config = small_config(style_file, image_folder, output)
    run = open_run(config)
    assert (run.run_dir, run.finished, run.previous, run.data_seed) == (str(output), None, None, 5)
    assert not output.exists()  # nothing is written before the data and models are built

    lines = []
    build_run(run, printer=lines.append)
    assert (run.data.steps_per_epoch, run.total_steps, run.start_step) == (4, 6, 0)
    assert lines == [
        "--steps 6 on 4 steps per epoch stops before --epochs 3 (12 steps): 2 epochs (the "
        "last one partial)",
        f"training on 8 images from {image_folder}: 6 steps on default strategy "
        f"(1 replica(s)), run directory {output}",
        f"note: {SMOKE_NOTE} (--vgg-weights random); the model learns no style",
    ]
    saved = json.loads((output / "config.json").read_text())
    assert (saved["total_steps"], saved["steps_per_epoch"], saved["data_seed"]) == (6, 4, 5)
    assert (saved["epochs"], saved["steps"], saved["epochs_used"]) == (3, 6, 2)
    assert saved["style_size_used"] == 32 and saved["batch_size"] == 2
    kinds = [type(callback) for callback in run.callbacks]
    assert kinds == [
        NonFiniteLossGuard,
        TrainingMonitor,
        LossTensorBoard,
        TrainingCheckpoint,
        SaveTransformNet,
        SkippedFilesReport,
        StopRequest,
    ]  # fmt: skip  (history and curves before the checkpoint, the stop last)

    fit_run(run)
    assert history_steps(output) == [1, 2, 3, 4, 5, 6]
    assert run.checkpoint.manager.latest_checkpoint.endswith("ckpt-6")

    summary = finish_run(run)
    assert (summary["steps"], summary["resumed_from"], summary["finished_before"]) == (6, 0, False)
    with open(output / "history.csv", newline="") as file:
        last = list(csv.DictReader(file))[-1]
    assert summary["losses"] == {name: float(last[name]) for name in summary["losses"]}
    saved = json.loads((output / "summary.json").read_text())
    assert (saved["steps"], saved["smoke_test"], saved["note"]) == (6, True, SMOKE_NOTE)
    assert not (output / "checkpoints").exists()
    scalars = tensorboard_scalars(output / "logs" / "train")
    assert [step for step, _ in scalars["loss"]] == [2, 4, 6]
    assert scalars["loss"][-1][1] == pytest.approx(summary["losses"]["loss"], rel=1e-6)

    again = open_run(config)  # a finished run is found, and nothing more is done
    assert again.finished["steps"] == 6 and again.previous is None
    lines = []
    result = train(config, printer=lines.append)
    assert result["finished_before"] is True and result["steps"] == 6
    assert lines[0].startswith(f"{output} holds a finished run (6 steps, {SMOKE_NOTE}; model: ")
    restarted = open_run(dataclasses.replace(config, restart=True))
    assert restarted.finished is None and sorted(os.listdir(output)) == []


def test_the_phases_of_a_resumed_run(tmp_path, image_folder, style_file):
    output = tmp_path / "run"
    config = small_config(style_file, image_folder, output)
    killed = open_run(config)
    build_run(killed, printer=lambda line: None)
    killed.total_steps = 3  # as if killed after step 3: the checkpoint of step 2 is the last
    fit_run(killed)
    assert killed.checkpoint.manager.latest_checkpoint.endswith("ckpt-2")

    with pytest.raises(KstyleError, match="started with --batch-size 2 \\(now 4\\)"):
        open_run(dataclasses.replace(config, batch_size=4))
    slower = dataclasses.replace(config, learning_rate=5e-4, verbose="auto", log_every=3)
    run = open_run(slower)
    assert run.previous["data_seed"] == 5 and run.data_seed == 5
    lines = []
    build_run(run, printer=lines.append)
    assert run.start_step == 2
    assert lines == [
        "learning rate changed from 0.001 to 0.0005 for the rest of the run",
        f"resuming {output} at step 2 of 6 (epoch 1, batch 2) from its last checkpoint",
        f"note: {SMOKE_NOTE} (--vgg-weights random); the model learns no style",
    ]
    assert isinstance(run.callbacks[-2], ProgressLog) and run.verbose == 0  # lines, no bar
    assert float(run.trainer.optimizer.learning_rate.numpy()) == pytest.approx(5e-4)
    fit_run(run)
    summary = finish_run(run)
    assert (summary["steps"], summary["resumed_from"]) == (6, 2)
    assert history_steps(output) == [1, 2, 3, 4, 5, 6]  # step 3 of the killed run redone once
    assert [line.split(" (")[0] for line in lines[3:]] == ["step 3/6", "step 6/6"]  # --log-every
    steps = [step for step, _ in tensorboard_scalars(output / "logs" / "train")["loss"]]
    assert steps == [2, 4, 6]


def test_the_data_comes_from_the_folder_else_tfds_else_the_coco_download(
    tmp_path, monkeypatch, image_folder
):
    import socket

    from kstyle.run import build_training_data

    with socket.socket() as probe:  # every host resolves to a port that refuses connections
        probe.bind(("127.0.0.1", 0))
        refused = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", probe.getsockname())]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: refused)
    config = TrainConfig(style="s.png", data=image_folder, tfds_name="coco/2014", batch_size=2)
    data = build_training_data(config, seed=1)  # --data wins
    assert data.description == f"8 images from {image_folder}"
    tfds_dir, coco_dir = str(tmp_path / "tfds"), str(tmp_path / "coco")
    config = dataclasses.replace(config, data=None, tfds_data_dir=tfds_dir, data_dir=coco_dir)
    with pytest.raises(KstyleError, match=f"into {tfds_dir} \\(--tfds-data-dir\\)"):
        build_training_data(config, seed=1)
    with pytest.raises(KstyleError, match=f"images into {coco_dir} \\(--data-dir\\)"):
        build_training_data(dataclasses.replace(config, tfds_name=None), seed=1)
