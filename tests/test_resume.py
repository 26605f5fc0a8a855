"""Training that survives kills: resume from checkpoints, atomic writes, the NaN guard.

Every run here is a ``train.py`` command on a tiny folder (32 px, random VGG-16): a subprocess
where it is killed or signalled, and wherever its losses are compared with another
subprocess's (the same oneDNN setting); else its ``main`` in this process.
"""

import csv
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import (
    checkpoint_step,
    kill_after_checkpoint,
    random_image,
    run_in_process,
    tensorboard_scalars,
    write_image_folder,
)
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 24


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    base = tmp_path_factory.mktemp("resume")
    write_image_folder(str(base / "data"), count=10, size=(36, 44))
    Image.fromarray(random_image(40, 40, seed=99)).save(base / "style.png")
    return base


def command(inputs, output, *extra, steps=STEPS):
    return [
        sys.executable, os.path.join(ROOT, "train.py"),
        "--style", str(inputs / "style.png"), "--data", str(inputs / "data"),
        "--output", str(output), "--vgg-weights", "random", "--image-size", "32",
        "--batch-size", "2", "--steps", str(steps), "--checkpoint-every", "2",
        "--plot-every", "0", "--seed", "1", "--epochs", "10", *extra,
    ]  # fmt: skip


def run(args, **kwargs):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=600, **kwargs)


def in_process(args):
    """A :func:`command` run by ``train.py``'s ``main`` in this process."""
    return run_in_process("train.py", *args[2:])


def history(run_dir):
    with open(os.path.join(run_dir, "history.csv"), newline="") as file:
        return [(int(row["step"]), float(row["loss"])) for row in csv.DictReader(file)]


def weights(model_path):
    from kstyle.transform_net import load_transform_net

    return load_transform_net(str(model_path)).get_weights()


@pytest.fixture(scope="module")
def uninterrupted(inputs):
    output = inputs / "uninterrupted"
    result = run(command(inputs, output))
    assert result.returncode == 0, result.stderr[-3000:]
    return output


def test_a_killed_run_resumes_where_it_stopped(inputs, uninterrupted):
    output = inputs / "killed"
    args = command(inputs, output)
    killed_at = kill_after_checkpoint(args, output, at_least=6)
    assert 6 <= killed_at < STEPS
    result = run(args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resuming {output} at step {killed_at}" in result.stderr
    rows = history(output)
    assert [step for step, _ in rows] == list(range(1, STEPS + 1))  # none repeated or missing
    # same optimizer state and data order: the very losses of the uninterrupted run
    reference = dict(history(uninterrupted))
    for step, loss in rows:
        assert loss == pytest.approx(reference[step], rel=1e-4), step
    # TensorBoard's curve goes on from the checkpoint's step, with the same values
    scalars = tensorboard_scalars(output / "logs" / "train")["loss"]
    assert {step for step, _ in scalars} == set(range(1, STEPS + 1))
    for step, loss in scalars:
        assert loss == pytest.approx(reference[step], rel=1e-4), step
    for mine, theirs in zip(
        weights(output / "model.keras"), weights(uninterrupted / "model.keras"), strict=True
    ):
        # same kernels, same steps from the same state (see test_distill's resume)
        np.testing.assert_allclose(mine, theirs, rtol=1e-3, atol=1e-5)
    assert not os.path.exists(output / "checkpoints")  # finished: model.keras is the result
    again = in_process(args)  # a finished run is reported and left alone
    assert again.returncode == 0 and "holds a finished run" in again.stderr
    assert again.stdout.startswith("done before: ")  # the result line, also under -q
    assert history(output) == rows


KILL_DURING_SAVE = """
import copy, os, signal, sys
sys.path.insert(0, {root!r})
import tensorflow as tf
from kstyle.cli.train import main

write = tf.train.Checkpoint._write

def dying_write(self, prefix, options=None):
    if prefix.endswith("ckpt-6"):  # write this checkpoint's files, cut one short, then die
        unrecorded = copy.copy(options)
        unrecorded.experimental_write_callbacks = None  # the index update comes after a write
        write(self, prefix, options=unrecorded)
        data = [name for name in os.listdir(os.path.dirname(prefix)) if ".data-" in name
                and name.startswith("ckpt-6")][0]
        full = os.path.join(os.path.dirname(prefix), data)
        with open(full, "r+b") as file:
            file.truncate(os.path.getsize(full) // 2)
        os.kill(os.getpid(), signal.SIGKILL)
    return write(self, prefix, options=options)

tf.train.Checkpoint._write = dying_write
sys.exit(main(sys.argv[1:]))
"""


def test_a_kill_during_a_checkpoint_write_loses_nothing_but_that_interval(inputs, uninterrupted):
    output = inputs / "killed_in_write"
    args = command(inputs, output)
    dying = run([sys.executable, "-c", KILL_DURING_SAVE.format(root=ROOT), *args[2:]])
    assert dying.returncode == -signal.SIGKILL, dying.stderr[-3000:]
    assert checkpoint_step(output) == 4  # the index still names the last complete checkpoint
    result = run(args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"at step 4 of {STEPS}" in result.stderr
    assert [step for step, _ in history(output)] == list(range(1, STEPS + 1))
    reference = dict(history(uninterrupted))
    assert all(loss == pytest.approx(reference[step], rel=1e-4) for step, loss in history(output))


def test_restart_and_changed_options(inputs):
    output = inputs / "changed"
    args = command(inputs, output, steps=40)
    kill_after_checkpoint(args, output, at_least=2)
    changed = in_process([*args, "--batch-size", "4"])
    assert changed.returncode == 2 and "Traceback" not in changed.stderr
    assert "--batch-size 2 (now 4)" in changed.stderr and "--restart" in changed.stderr
    restarted = in_process([*command(inputs, output, steps=3), "--restart"])
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    assert "resuming" not in restarted.stderr
    assert [step for step, _ in history(output)] == [1, 2, 3]


def test_a_non_finite_loss_stops_with_the_step_and_keeps_the_checkpoint(inputs, monkeypatch):
    import tensorflow as tf

    from kstyle.trainer import StyleTransferTrainer

    compute_losses = StyleTransferTrainer.compute_losses

    def diverging(self, content_batch, stylized, styles=None):  # blows up at the 6th step
        total, parts = compute_losses(self, content_batch, stylized, styles)
        blown = tf.cast(self.optimizer.iterations, tf.float32) >= 5.0
        total = tf.where(blown, tf.constant(float("nan")), total)
        return total, parts

    monkeypatch.setattr(StyleTransferTrainer, "compute_losses", diverging)
    output = inputs / "nan"
    result = in_process(command(inputs, output, "--checkpoint-every", "1"))
    assert result.returncode == 3, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert "the total loss became nan at step 6" in errors[0], errors[0]
    assert "last good checkpoint" in errors[0] and "ckpt-5" in errors[0]
    assert checkpoint_step(output) == 5  # the last good step, never the bad one
    from kstyle.transform_net import build_transform_net

    net = build_transform_net()
    checkpoint = tf.train.Checkpoint(transform_net=net)
    checkpoint.restore(tf.train.latest_checkpoint(output / "checkpoints")).expect_partial()
    assert all(np.isfinite(w).all() for w in net.get_weights())
    assert [step for step, _ in history(output)] == [1, 2, 3, 4, 5]


def test_sigterm_checkpoints_the_current_step_and_the_run_resumes(inputs):
    output = inputs / "terminated"
    # 40 steps: room for a late poll under load before the run would end by itself
    args = command(inputs, output, "--checkpoint-every", "1000", steps=40)  # no periodic one
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    history_path = output / "history.csv"
    deadline = time.monotonic() + 300
    while not (history_path.exists() and len(history_path.read_text().splitlines()) > 3):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: SIGTERM after "), errors
    stopped_at = int(errors[0].split("after ")[1].split(" steps")[0])
    assert checkpoint_step(output) == stopped_at
    assert [step for step, _ in history(output)] == list(range(1, stopped_at + 1))
    result = in_process(args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"at step {stopped_at} of 40" in result.stderr
    assert [step for step, _ in history(output)] == list(range(1, 41))


def test_an_infinite_gradient_with_a_finite_loss_stops_with_finite_weights(inputs, monkeypatch):
    import tensorflow as tf

    from kstyle.trainer import StyleTransferTrainer

    compute_losses = StyleTransferTrainer.compute_losses

    @tf.custom_gradient
    def bomb(x):  # the identity, with an infinite gradient
        return tf.identity(x), lambda upstream: upstream + float("inf")

    def exploding(self, content_batch, stylized, styles=None):  # finite loss, infinite gradient
        total, parts = compute_losses(self, content_batch, stylized, styles)
        blown = self.optimizer.iterations >= 1  # from the second step on
        # adds 0 to the loss and inf to the gradient; a cond, so that only the taken branch
        # (not a tf.where's other one) reaches the gradient
        total = tf.cond(blown, lambda: total + 0.0 * tf.reduce_sum(bomb(stylized)), lambda: total)
        return total, parts

    monkeypatch.setattr(StyleTransferTrainer, "compute_losses", exploding)
    output = inputs / "exploding"
    result = in_process(command(inputs, output, "--checkpoint-every", "1"))
    assert result.returncode == 3, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "the gradient norm became" in errors[0], result.stderr[-3000:]
    assert "at step 2" in errors[0] and "ckpt-1" in errors[0], errors[0]
    # the guard checks the losses first: naming the gradient means step 2's loss was finite
    assert [step for step, _ in history(output)] == [1]  # the broken step is not recorded
    from kstyle.transform_net import build_transform_net

    net = build_transform_net()
    checkpoint = tf.train.Checkpoint(transform_net=net)
    checkpoint.restore(tf.train.latest_checkpoint(output / "checkpoints")).expect_partial()
    saved = weights(output / "model.keras")
    assert all(np.isfinite(w).all() for w in net.get_weights())
    assert all(np.isfinite(w).all() for w in saved)
    # model.keras holds the weights of step 1: the broken step 2 was never applied
    for restored, kept in zip(net.get_weights(), saved, strict=True):
        np.testing.assert_array_equal(restored, kept)


BLOCKING_PIPELINE = """
import os, sys, time
sys.path.insert(0, {root!r})
import tensorflow as tf
from kstyle.cli.train import main
from kstyle.data import TrainingData

stream = TrainingData.stream
marker = {marker!r}

def blocking(self, start_step=0, input_context=None):  # 3 batches, then a pipeline that hangs
    def hang():
        open(marker, "w").close()
        while True:
            time.sleep(1)
        yield
    first = stream(self, start_step, input_context).take(3)
    spec = first.element_spec
    return first.concatenate(tf.data.Dataset.from_generator(hang, output_signature=spec))

TrainingData.stream = blocking
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_ends_a_run_whose_pipeline_blocks_within_10_seconds(inputs, tmp_path):
    output, marker = inputs / "blocked", tmp_path / "blocking"
    args = command(inputs, output, "--checkpoint-every", "2")
    script = BLOCKING_PIPELINE.format(root=ROOT, marker=str(marker))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.Popen(
        [sys.executable, "-c", script, *args[2:]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.05)
    time.sleep(1.0)  # the main thread is now waiting in TensorFlow for a batch that never comes
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        _, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("SIGTERM did not end a run whose input pipeline blocks")
    assert time.monotonic() - sent <= 10.0
    assert process.returncode == 130 and "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "SIGTERM: no step ended within" in errors[0], errors
    assert "ckpt-2" in errors[0]
    assert checkpoint_step(output) == 2  # the last checkpoint is intact and still the newest
    result = in_process(command(inputs, output, "--checkpoint-every", "2"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "at step 2 of 24" in result.stderr
