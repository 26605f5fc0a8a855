"""``kstyle``, ``python -m kstyle``, ``--version`` and ``kstyle info``."""

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT

import kstyle


def kstyle_command(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "kstyle", *map(str, args)],
        capture_output=True,
        text=True,
        env={**{k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}, **(env or {})},
        cwd=ROOT,
        timeout=600,
    )


def test_version_is_written_once_and_reported():
    with open(os.path.join(ROOT, "pyproject.toml")) as file:
        pyproject = file.read()
    assert (
        re.search(r"(?m)^version\s*=\s*\"", pyproject) is None
    )  # dynamic, from kstyle.__version__
    assert importlib.metadata.version("kstyle") == kstyle.__version__
    result = kstyle_command("--version")
    assert result.returncode == 0 and result.stdout == f"kstyle {kstyle.__version__}\n"


def test_help_lists_every_command_and_unknown_ones_are_one_line():
    result = kstyle_command("--help")
    assert result.returncode == 0 and result.stderr == ""
    listed = re.findall(r"(?m)^  (\w+) ", result.stdout.split("commands:")[1])
    assert listed == ["train", "distill", "stylize", "sheet", "export", "serve", "tune", "info"]
    bad = kstyle_command("paint")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.splitlines() == [
        "error: argument COMMAND: invalid choice: 'paint' (choose from 'train', 'distill', "
        "'stylize', 'sheet', 'export', 'serve', 'tune', 'info') (see python -m kstyle --help)"
    ]


@pytest.mark.parametrize(
    "command", ["train", "distill", "stylize", "export", "serve", "tune", "info"]
)
def test_each_subcommand_is_the_scripts_parser(command):
    module = __import__(f"kstyle.cli.{command}", fromlist=["build_parser"])
    result = kstyle_command(command, "--help")
    assert result.returncode == 0, result.stderr
    expected = module.build_parser(f"python -m kstyle {command}").format_help()
    assert result.stdout.splitlines() == expected.splitlines()


def test_the_kstyle_console_script_is_installed():
    path = shutil.which("kstyle") or os.path.join(os.path.dirname(sys.executable), "kstyle")
    result = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout == f"kstyle {kstyle.__version__}\n"


def test_info_reports_versions_and_the_vgg_cache(tmp_path):
    import keras
    import tensorflow as tf

    env = {"KERAS_HOME": str(tmp_path / "keras")}
    weights = tmp_path / "keras" / "models" / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    result = kstyle_command("info", env=env)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"kstyle {kstyle.__version__} ")
    assert f"tensorflow {tf.__version__}, keras {keras.__version__}" in result.stdout
    assert f"vgg16 weights: {weights} (not cached" in result.stdout
    assert re.search(r"(?m)^gpus: ", result.stdout) and re.search(r"(?m)^oneDNN: ", result.stdout)
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"\0" * 2_500_000)
    cached = kstyle_command("info", env=env).stdout
    assert f"vgg16 weights: {weights} (cached, 2.5 MB)" in cached
    coco = tmp_path / "keras" / "datasets" / "coco2014" / "train2014"
    assert f"coco train2014 images: {coco} (not there" in cached
