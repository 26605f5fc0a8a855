"""Scaling out and precision: MirroredStrategy equivalence, multi-worker, mixed precision."""

import csv
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from conftest import random_image, write_image_folder
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MIRRORED_SCRIPT = """
import json, sys
sys.path.insert(0, {root!r})
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
import numpy as np

from kstyle.loss_net import build_loss_net
from kstyle.trainer import StyleTransferTrainer
from kstyle.transform_net import build_transform_net

LEARNING_RATE = 1e3
rng = np.random.default_rng(0)
batch = rng.uniform(0, 255, (4, 32, 32, 3)).astype("float32")
style = rng.uniform(0, 255, (32, 32, 3)).astype("float32")
keras.utils.set_random_seed(1)
initial = build_transform_net().get_weights()
loss_weights = build_loss_net(None).get_weights()


def one_step(strategy):
    with strategy.scope():
        loss_net = build_loss_net(None)
        loss_net.set_weights(loss_weights)
        net = build_transform_net()
        net.set_weights(initial)
        trainer = StyleTransferTrainer(net, loss_net, style, image_size=32)
        # plain SGD: the update is proportional to the gradient, so a wrong scale shows
        trainer.compile(optimizer=keras.optimizers.SGD(learning_rate=LEARNING_RATE))
    trainer.fit(tf.data.Dataset.from_tensors(batch), epochs=1, steps_per_epoch=1, verbose=0)
    return float(trainer.last_losses["loss"].numpy()), net.get_weights()


mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
single_loss, single_weights = one_step(tf.distribute.get_strategy())
mirrored_loss, mirrored_weights = one_step(mirrored)
changed = max(float(np.abs(a - b).max()) for a, b in zip(single_weights, initial))
print(json.dumps({{
    "replicas": mirrored.num_replicas_in_sync,
    "single_loss": single_loss,
    "mirrored_loss": mirrored_loss,
    "max_weight_diff": max(
        float(np.abs(a - b).max()) for a, b in zip(single_weights, mirrored_weights)
    ),
    "max_change": changed,
}}))
"""


def test_one_mirrored_step_equals_one_single_device_step():
    result = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT.format(root=ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    assert report["mirrored_loss"] == pytest.approx(report["single_loss"], rel=1e-5)
    assert report["max_change"] > 1e-4  # the step did move the weights
    # one step, two replicas against one: the same kernels, gradients summed in another order
    # (float rounding); a gradient scaled wrong (summed, not averaged, over the replicas) is
    # off by the whole step, which is over 1e-4 (max_change above)
    assert report["max_weight_diff"] <= 1e-5, report


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("localhost", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def test_two_workers_train_to_identical_weights(tmp_path):
    """Two workers (no --seed: they must still draw the same data seed) end with the same
    weights; with --seed, their per-step losses equal one process on the same global batch."""
    write_image_folder(str(tmp_path / "data"), count=8, size=(36, 44))
    Image.fromarray(random_image(40, 40, seed=99)).save(tmp_path / "style.png")
    workers = [f"localhost:{port}" for port in free_ports(2)]
    output = tmp_path / "run"
    args = [
        sys.executable, os.path.join(ROOT, "train.py"),
        "--style", str(tmp_path / "style.png"), "--data", str(tmp_path / "data"),
        "--output", str(output), "--vgg-weights", "random", "--image-size", "32",
        "--batch-size", "4", "--steps", "2", "--plot-every", "0",
        "--strategy", "multiworker",
    ]  # fmt: skip
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_CONFIG": json.dumps(tf_config)}
        processes.append(
            subprocess.Popen(
                args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
            )
        )
    outputs = [process.communicate(timeout=600) for process in processes]
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr[-3000:]
    assert "MultiWorkerMirroredStrategy (2 replica(s))" in "".join(outputs[0])  # a message
    from kstyle.transform_net import load_transform_net

    chief = load_transform_net(str(output / "model.keras")).get_weights()
    other = load_transform_net(str(output / "worker-1" / "model.keras")).get_weights()
    for mine, theirs in zip(chief, other, strict=True):
        np.testing.assert_array_equal(mine, theirs)
    with open(output / "summary.json") as file:
        assert json.load(file)["steps"] == 2
    seeds = []
    for run_dir in (output, output / "worker-1"):
        with open(run_dir / "config.json") as file:
            seeds.append(json.load(file)["data_seed"])
    assert seeds[0] == seeds[1]  # no --seed: the workers still shuffle alike
    # the same run with a seed, in two workers and in one process: the same global batches
    seeded = [*args[:-2], "--seed", "5", "--steps", "3", "--checkpoint-every", "0"]
    seeded[seeded.index("--output") + 1] = str(tmp_path / "two")
    processes, workers = [], [f"localhost:{port}" for port in free_ports(2)]
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_CONFIG": json.dumps(tf_config)}
        processes.append(subprocess.Popen([*seeded, "--strategy", "multiworker"], env=env))
    single = [*seeded, "--strategy", "default"]
    single[single.index("--output") + 1] = str(tmp_path / "one")
    assert subprocess.run(single, capture_output=True, timeout=600).returncode == 0
    assert all(process.wait(timeout=600) == 0 for process in processes)
    losses = []
    for run_dir in (tmp_path / "two", tmp_path / "one"):
        with open(run_dir / "history.csv", newline="") as file:
            losses.append([float(row["loss"]) for row in csv.DictReader(file)])
    assert len(losses[0]) == 3
    # the same kernels in each worker process; only the all-reduce's summation order differs
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-4)


MULTI_WORKER_MODE = """
import sys
sys.path.insert(0, {root!r})
import tensorflow as tf
from kstyle.distribute import in_multi_worker_mode

one_worker = tf.distribute.MultiWorkerMirroredStrategy()  # TF_CONFIG lists this task alone
print(in_multi_worker_mode(one_worker), in_multi_worker_mode(tf.distribute.get_strategy()),
      in_multi_worker_mode(tf.distribute.MirroredStrategy()))
"""


def test_one_process_is_not_multi_worker_mode():
    """Two workers are (test_two_workers_train_to_identical_weights: their seeds agree)."""
    (port,) = free_ports(1)
    tf_config = {
        "cluster": {"worker": [f"localhost:{port}"]},
        "task": {"type": "worker", "index": 0},
    }
    result = subprocess.run(
        [sys.executable, "-c", MULTI_WORKER_MODE.format(root=ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_CONFIG": json.dumps(tf_config)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["False", "False", "False"]


@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
def test_mixed_precision_trains_with_float32_variables(tmp_path, precision):
    import keras

    from kstyle.run import TrainConfig, train

    write_image_folder(str(tmp_path / "data"), count=6, size=(36, 44))
    Image.fromarray(random_image(40, 40, seed=98)).save(tmp_path / "style.png")
    summary = train(
        TrainConfig(
            style=str(tmp_path / "style.png"),
            data=str(tmp_path / "data"),
            output=str(tmp_path / "run"),
            vgg_weights="random",
            image_size=32,
            batch_size=2,
            steps=3,
            plot_every=0,
            seed=4,
            verbose=0,
            mixed_precision=precision,
        ),
        printer=lambda *_: None,
    )
    assert summary["steps"] == 3
    assert all(np.isfinite(value) for value in summary["losses"].values())
    net = summary["transform_net"]
    assert {v.dtype for v in net.weights} == {"float32"}
    computing = (keras.layers.Conv2D, keras.layers.GroupNormalization)  # not the float32 output
    compute = {
        layer.dtype_policy.compute_dtype for layer in net.layers if isinstance(layer, computing)
    }
    assert compute == {precision}  # the run really computed in reduced precision
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    from kstyle.transform_net import load_transform_net

    saved = load_transform_net(str(tmp_path / "run" / "model.keras"))
    assert {layer.dtype_policy.name for layer in saved.layers[1:]} == {"float32"}
