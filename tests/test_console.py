"""The console: commands named as typed, -q/-v, kstyle's own lines only, logging."""

import os
import re
import subprocess
import sys
import warnings

import pytest
from conftest import ROOT, random_image

from kstyle.cli import console

# A TensorFlow C++ log line ("I0000 00:00:17.. 123 port.cc:153] ...") or absl's pre-init notice.
TENSORFLOW_LOG_LINE = re.compile(r"^[IWEF]\d{4} .*\.cc:\d+\]|absl::InitializeLog")


def run_default(script, *args, **kwargs):
    """``run`` with the environment a user has: TF_CPP_MIN_LOG_LEVEL unset."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run(
        [sys.executable, *script, *map(str, args)],
        capture_output=True,
        text=True,
        env={**env, **kwargs.pop("env", {})},
        cwd=kwargs.pop("cwd", ROOT),
        timeout=600,
    )


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    from PIL import Image

    path = tmp_path_factory.mktemp("photo") / "photo.png"
    Image.fromarray(random_image(36, 44)).save(path)
    return path


def test_help_is_exactly_the_parsers_help():
    from kstyle.cli.train import build_parser

    result = run_default([os.path.join(ROOT, "train.py"), "--help"])
    assert result.returncode == 0 and result.stderr == ""
    expected = build_parser("train.py").format_help()
    assert result.stdout.splitlines() == expected.splitlines()


def test_a_bad_argument_is_one_line_and_nothing_else():
    result = run_default([os.path.join(ROOT, "train.py"), "--image-size", "big"])
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: argument --image-size: invalid int value: 'big' (see train.py --help)"
    ]


@pytest.mark.parametrize("level", [None, "1", "2", "3"])
def test_stylizing_one_image_prints_only_its_result(level, saved_model_path, photo, tmp_path):
    """Whatever TF_CPP_MIN_LOG_LEVEL the user set (None: unset), TensorFlow's start-up lines
    stay off the console: stderr is empty."""
    target = tmp_path / "out.png"
    args = ["--model", saved_model_path, photo, "--output", target]
    env = {} if level is None else {"TF_CPP_MIN_LOG_LEVEL": level}
    result = run_default([os.path.join(ROOT, "stylize.py"), *args], env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr == ""
    assert result.stdout.splitlines() == [f"wrote 1 file(s): {target}"]


@pytest.mark.parametrize("shown_by", [["-v"], {"TF_CPP_MIN_LOG_LEVEL": "0"}])
def test_verbose_or_level_0_shows_tensorflows_lines(shown_by, saved_model_path, photo, tmp_path):
    target = tmp_path / "out.png"
    args = ["--model", saved_model_path, photo, "--output", target]
    if isinstance(shown_by, dict):
        result = run_default([os.path.join(ROOT, "stylize.py"), *args], env=shown_by)
    else:
        result = run_default([os.path.join(ROOT, "stylize.py"), *args, *shown_by])
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == [f"wrote 1 file(s): {target}"]
    lines = result.stderr.splitlines()
    assert any(TENSORFLOW_LOG_LINE.search(line) for line in lines), result.stderr
    assert any("absl::InitializeLog" in line for line in lines), result.stderr


def test_int8_export_prints_only_its_result(export_run, tmp_path):
    """The int8 export's converter lines (``fully_quantize: ...``) and the deprecation warning
    of TFLite's quantization debugger stay off the console."""
    from conftest import write_image_folder

    write_image_folder(str(tmp_path / "calibration"), count=16, size=(48, 48))
    output = tmp_path / "export"
    result = run_default(
        [os.path.join(ROOT, "export.py"), export_run / "run"],
        "--format", "tflite", "--quantize", "int8", "--calibration-data", tmp_path / "calibration",
        "--calibration-count", 16, "--verify-size", 64, "--output", output,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    # the run is a --vgg-weights random one: its smoke note is the one line kstyle says
    model = export_run / "run" / "model.keras"
    assert result.stderr == (
        f"note: untrained loss network: smoke test only ({model}); the model learned no style\n"
    )
    (line,) = result.stdout.splitlines()
    assert line.startswith("tflite (int8) ") and line.endswith(" ok")
    assert (output / "model_int8.tflite").is_file()


def test_converter_lines_show_with_verbose(export_net, capfd):
    """What the int8 test above hides is there to hide: with -v (show_everything) the
    calibrator's lines reach stderr."""
    from kstyle import quiet
    from kstyle.export.int8 import int8_flatbuffer

    images = [random_image(32, 32, seed=seed) for seed in range(2)]
    quiet.show_everything()
    try:
        with warnings.catch_warnings():  # the debugger's deprecation warning: not asserted here
            warnings.simplefilter("ignore")
            int8_flatbuffer(export_net, images)
    finally:
        quiet.show_everything(False)
    assert "fully_quantize: 0, inference_type: 6" in capfd.readouterr().err


def test_quiet_training_prints_its_result_only(tmp_path, image_folder, style_file):
    result = run_default(
        [os.path.join(ROOT, "train.py"), "-q"],
        "--style", style_file, "--data", image_folder, "--output", tmp_path / "run",
        "--vgg-weights", "random", "--steps", 2, "--image-size", 32, "--batch-size", 2,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr == ""
    assert len(result.stdout.splitlines()) == 1 and result.stdout.startswith("done: 2 steps")


@pytest.mark.parametrize(
    "command, typed",
    [
        (["train.py"], "train.py"),
        (["-m", "kstyle", "train"], "python -m kstyle train"),
        (["-m", "kstyle", "stylize"], "python -m kstyle stylize"),
    ],
)
def test_usage_names_the_command_as_typed(command, typed):
    if command[0].endswith(".py"):
        command = [os.path.join(ROOT, command[0])]
    result = run_default([*command, "--no-such-option"])
    assert result.returncode == 2
    assert result.stderr.strip().endswith(f"(see {typed} --help)"), result.stderr
    usage = run_default([*command, "--help"]).stdout
    assert usage.startswith(f"usage: {typed} "), usage[:200]


def test_program_name(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/opt/venv/bin/kstyle-train", "--help"])
    assert console.program_name("x") == "kstyle-train"
    monkeypatch.setattr(sys, "argv", ["/repo/kstyle/__main__.py"])
    assert console.program_name("x") == "python -m kstyle"
    monkeypatch.setattr(sys, "argv", ["-c"])
    assert console.program_name("kstyle-export") == "kstyle-export"


def test_log_levels_and_format(capsys):
    logger = console.setup_logging()
    logger.debug("hidden")
    logger.info("shown")
    logger.warning("careful")
    console.setup_logging(quiet=True)
    logger.info("hidden too")
    logger.error("bad")
    console.setup_logging(verbose=True)
    logger.debug("details")
    assert capsys.readouterr().err.splitlines() == [
        "shown", "warning: careful", "error: bad", "details"
    ]  # fmt: skip
    assert len([h for h in logger.handlers if isinstance(h, console._StderrHandler)]) == 1
    console.setup_logging()
