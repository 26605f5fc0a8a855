"""The command-line tools, run as a user runs them: in a subprocess, checking files and exits."""

import csv
import json
import os
import platform
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import assert_one_line_error, random_image, run
from PIL import Image


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One real training run through train.py on a tiny folder with one broken file."""
    base = tmp_path_factory.mktemp("cli")
    data = base / "data"
    data.mkdir()
    for index in range(8):
        Image.fromarray(random_image(36, 44, seed=index)).save(data / f"{index}.jpg")
    (data / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    style = base / "style.png"
    Image.fromarray(random_image(48, 48, seed=50)).save(style)
    out = base / "run"
    result = run(
        "train.py",
        "--style",
        style,
        "--data",
        data,
        "--output",
        out,
        "--vgg-weights",
        "random",
        "--image-size",
        32,
        "--batch-size",
        2,
        "--epochs",
        1,
        "--plot-every",
        2,
        "--seed",
        1,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


def test_train_writes_a_complete_run_dir(trained_run):
    out, result = trained_run
    for name in ("model.keras", "config.json", "history.csv", "losses.png", "preview.png"):
        assert (out / name).is_file(), name
    assert any((out / "logs").rglob("*tfevents*"))
    config = json.loads((out / "config.json").read_text())
    assert config["image_size"] == 32 and config["content_weight"] == 1e-4
    assert config["style_weight"] == 3e-8 and config["total_steps"] == 4
    assert set(config["versions"]) >= {"kstyle", "tensorflow", "keras"}
    with open(out / "history.csv") as file:
        rows = list(csv.DictReader(file))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    preview = Image.open(out / "preview.png")
    assert preview.size == (32 * 2 + 8, 32)
    assert "skipped 1 unreadable image file(s) of 9" in result.stdout
    assert "4/4" in result.stdout  # Keras progress bar with step/total


def test_stylize_cli_file_and_folder(trained_run, tmp_path):
    out, _ = trained_run
    source = tmp_path / "photo.jpg"
    Image.fromarray(random_image(33, 47, seed=3)).save(source)
    result = run("stylize.py", "--model", out, source, "--output", tmp_path / "styled.png")
    assert result.returncode == 0, result.stderr[-2000:]
    assert Image.open(tmp_path / "styled.png").size == (47, 33)
    folder = tmp_path / "many"
    folder.mkdir()
    for index in range(2):
        Image.fromarray(random_image(20, 28, seed=index)).save(folder / f"{index}.png")
    (folder / "bad.png").write_text("nope")
    result = run(
        "stylize.py",
        "--model",
        out / "model.keras",
        folder,
        "--output",
        tmp_path / "styled",
        "--max-size",
        16,
        "--side-by-side",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "skipped" in result.stderr and "bad.png" in result.stderr
    sizes = sorted(Image.open(p).size for p in (tmp_path / "styled").iterdir())
    assert sizes == [(16 * 2 + 8, 11)] * 2


def test_bad_inputs_give_one_line_errors(tmp_path, image_folder, style_file):
    assert_one_line_error(
        run("train.py", "--style", tmp_path / "missing.jpg", "--data", image_folder),
        "image not found",
    )
    (tmp_path / "empty").mkdir()
    assert_one_line_error(
        run("train.py", "--style", style_file, "--data", tmp_path / "empty"), "no images"
    )
    assert_one_line_error(
        run("train.py", "--style", style_file, "--data", image_folder, "--image-size", 30),
        "multiple of 4",
    )
    assert_one_line_error(
        run(
            "train.py",
            "--style",
            style_file,
            "--data",
            image_folder,
            "--vgg-weights",
            tmp_path / "none.h5",
            "--output",
            tmp_path / "run",
        ),
        "weights file not found",
    )
    assert_one_line_error(
        run(
            "stylize.py",
            "--model",
            tmp_path / "x.keras",
            style_file,
            "--output",
            tmp_path / "o.png",
        ),
        "model not found",
    )


def test_offline_imagenet_download_fails_with_guidance(tmp_path, image_folder, style_file):
    blackhole = "http://127.0.0.1:9"  # nothing listens there: the download fails at once
    env = {
        "KERAS_HOME": str(tmp_path / "keras_home"),
        "HTTPS_PROXY": blackhole,
        "HTTP_PROXY": blackhole,
        "https_proxy": blackhole,
        "http_proxy": blackhole,
        "NO_PROXY": "",
        "no_proxy": "",
    }
    result = run(
        "train.py",
        "--style",
        style_file,
        "--data",
        image_folder,
        "--output",
        tmp_path / "run",
        env=env,
    )
    line = assert_one_line_error(result, "--vgg-weights PATH", "--vgg-weights random")
    assert str(tmp_path / "keras_home" / "models" / "vgg16_weights_tf_dim_ordering") in line


def test_help_states_every_default():
    result = run("train.py", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for fragment in (
        "--epochs EPOCHS passes over the content images (default: 2)",
        "(default: 4)",
        "(default: 256)",
        "(default: 0.001)",
        "(default: 0.9)",
        "(default: 0.999)",
        "(default: 0.0001)",
        "(default: 3e-08)",
        "(default: 0.0)",
        "(default: 1.0)",
        "(default: imagenet)",
        "(default: zeros)",
        "(default: 10)",
    ):
        assert fragment in text, fragment


@pytest.mark.parametrize("command", ["kstyle-train", "kstyle-stylize"])
def test_console_scripts_are_installed(command):
    path = shutil.which(command) or os.path.join(os.path.dirname(sys.executable), command)
    result = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and command in result.stdout


def test_demo_runs_and_ends_with_a_stylized_picture(tmp_path):
    out = tmp_path / "demo"
    result = run(
        "train.py",
        "--demo",
        "--vgg-weights",
        "random",
        "--steps",
        2,
        "--image-size",
        32,
        "--output",
        out,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    picture = Image.open(out / "stylized.png")
    assert picture.size[0] > 2 * 400  # the full-size sample photo, input | output
    assert len(os.listdir(out / "demo_data" / "content")) == 64


def test_onednn_preference_by_task_and_cpu(tmp_path):
    from kstyle.cli.common import cpu_flags, preferred_onednn

    avx2, avx512 = {"sse4_2", "avx2", "fma"}, {"sse4_2", "avx2", "fma", "avx512f"}
    assert preferred_onednn("train", avx2) is True
    assert preferred_onednn("train", avx512) is True
    assert preferred_onednn("stylize", avx2) is False
    assert preferred_onednn("stylize", avx512) is True
    assert preferred_onednn("stylize", {"neon", "asimd"}) is None
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse4_2 avx2 fma\nbugs\t\t: none\n")
    assert cpu_flags(str(cpuinfo)) == {"fpu", "sse4_2", "avx2", "fma"}
    assert cpu_flags(str(tmp_path / "missing")) == set()


@pytest.mark.skipif(
    sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"),
    reason="TensorFlow builds with oneDNN on x86-64 Linux",
)
@pytest.mark.parametrize("task, wanted", [("train", True), ("stylize", False)])
def test_commands_restart_with_the_faster_onednn_setting(task, wanted):
    """On an AVX2-only CPU training wants oneDNN on and stylizing wants it off: whichever of
    the two differs from TensorFlow's default here makes the process start again with the
    variable set, and the process that goes on has the wanted setting."""
    code = (
        "import os\n"
        "import kstyle.cli.common as common\n"
        "from tensorflow.python.util import _pywrap_util_port as port\n"
        "variable = os.environ.get('TF_ENABLE_ONEDNN_OPTS')\n"
        "print('onednn', port.IsMklEnabled(), variable, flush=True)\n"
        "common.cpu_flags = lambda: {'avx2', 'fma'}\n"
        f"common.use_fastest_onednn({task!r}, None)\n"
        "print('continued', flush=True)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**env, "TF_CPP_MIN_LOG_LEVEL": "2"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    states = [line for line in result.stdout.splitlines() if line.startswith("onednn")]
    assert states[-1].split()[1] == str(wanted), result.stdout
    assert len(states) in (1, 2) and result.stdout.split()[-1] == "continued"
    if len(states) == 2:  # restarted: the variable says so, and it did not restart again
        assert states[0].split()[1] == str(not wanted)
        assert states[1].split()[2] == ("1" if wanted else "0")


def test_onednn_restart_only_from_a_command_line(monkeypatch):
    from tensorflow.python.util import _pywrap_util_port

    import kstyle.cli.common as common

    restarts = []
    monkeypatch.setattr(common.os, "execv", lambda *args: restarts.append(args))
    monkeypatch.setattr(common, "cpu_flags", lambda: {"avx2", "fma"})
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    # the task whose wanted setting differs from this process's
    task = "stylize" if _pywrap_util_port.IsMklEnabled() else "train"
    common.use_fastest_onednn(task, ["--model", "m"])  # called from Python with arguments
    assert restarts == []
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")  # the user's own choice
    common.use_fastest_onednn(task, None)
    assert restarts == []
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS")
    common.use_fastest_onednn(task, None)
    assert restarts == [(sys.executable, [sys.executable, *sys.orig_argv[1:]])]
    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == ("0" if task == "stylize" else "1")


@pytest.mark.parametrize("program", ["-", ""])
def test_onednn_restart_needs_a_command_that_can_run_again(monkeypatch, program):
    """A program read from stdin (``-``) or typed at a prompt cannot be started again."""
    import kstyle.cli.common as common

    restarts = []
    monkeypatch.setattr(common.os, "execv", lambda *args: restarts.append(args))
    monkeypatch.setattr(common, "cpu_flags", lambda: {"avx2", "fma"})
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    monkeypatch.setattr(sys, "argv", [program])
    for task in ("train", "stylize"):  # one of the two wants a restart on any x86 CPU
        common.use_fastest_onednn(task, None)
    assert restarts == []
    assert "TF_ENABLE_ONEDNN_OPTS" not in os.environ
