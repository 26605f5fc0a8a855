"""The command-line tools, checking files, output and exits: in a subprocess where the process
matters (start-up, help, oneDNN, installed scripts), else their ``main`` in this process."""

import csv
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import (
    ROOT,
    assert_one_line_error,
    random_image,
    run,
    run_in_process,
    tensorboard_images,
    tensorboard_scalars,
    write_image_folder,
)
from PIL import Image

from kstyle.errors import KstyleError


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
    result = run_in_process(
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
    config = json.loads((out / "config.json").read_text())
    assert config["image_size"] == 32 and config["content_weight"] == 1e-4
    assert config["style_weight"] == 3e-8 and config["total_steps"] == 4
    assert set(config["versions"]) >= {"kstyle", "tensorflow", "keras"}
    with open(out / "history.csv") as file:
        rows = list(csv.DictReader(file))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    scalars = tensorboard_scalars(out / "logs" / "train")  # every --plot-every steps
    assert [step for step, _ in scalars["loss"]] == [2, 4]
    for name in ("loss", "content", "style", "tv"):
        for step, value in scalars[name]:
            assert value == pytest.approx(float(rows[step - 1][name]), rel=1e-6), name
    preview = Image.open(out / "preview.png")
    assert preview.size == (32 * 2 + 8, 32)
    previews = tensorboard_images(out / "logs" / "train")["preview"]  # next to the scalars
    assert [step for step, _ in previews] == [2, 4]
    np.testing.assert_array_equal(previews[-1][1], np.asarray(preview))  # input | output
    assert not np.array_equal(previews[0][1][:, -32:], previews[-1][1][:, -32:])
    assert "skipped 1 unreadable image file(s) of 9" in result.stderr  # a message, not a result
    assert "step 4/4 (100%): loss " in result.stderr  # not a terminal: progress lines


def test_stylize_cli_file_and_folder(trained_run, tmp_path):
    out, _ = trained_run
    source = tmp_path / "photo.jpg"
    Image.fromarray(random_image(33, 47, seed=3)).save(source)
    result = run_in_process(
        "stylize.py", "--model", out, source, "--output", tmp_path / "styled.png"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert Image.open(tmp_path / "styled.png").size == (47, 33)
    folder = tmp_path / "many"
    folder.mkdir()
    for index in range(2):
        Image.fromarray(random_image(20, 28, seed=index)).save(folder / f"{index}.png")
    (folder / "bad.png").write_text("nope")
    result = run_in_process(
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
        run_in_process("train.py", "--style", tmp_path / "missing.jpg", "--data", image_folder),
        "image not found",
    )
    (tmp_path / "empty").mkdir()
    assert_one_line_error(
        run_in_process("train.py", "--style", style_file, "--data", tmp_path / "empty"), "no images"
    )
    assert_one_line_error(
        run_in_process(
            "train.py", "--style", style_file, "--data", image_folder, "--image-size", 30
        ),
        "multiple of 4",
    )
    assert_one_line_error(
        run_in_process(
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
        run_in_process(
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


def help_entries(script):
    """``{option: its whole help entry}`` of ``script --help``, read with lines wide enough
    that nothing but long option names wraps."""
    result = run(script, "--help", env={"COLUMNS": "1000"})
    assert result.returncode == 0, result.stderr[-2000:]
    entries, current = {}, None
    for line in result.stdout.splitlines():
        if line.startswith("  ") and not line.startswith("   "):  # an option or an argument
            current = line.split()[0].rstrip(",")
            entries[current] = line.strip()
        elif line.startswith("   ") and current:  # its help, below a long option name
            entries[current] += " " + line.strip()
        else:
            current = None
    return entries


# Options whose help states no default: required ones, positional arguments, plain flags.
VERBOSITY = {"-q", "-v"}  # flags: off unless given
NO_DEFAULT = {
    "train.py": {"-h", "--style", "--add-style", "--from", "--restart", "--demo", *VERBOSITY},
    "stylize.py": {"-h", "input", "--model", "--output", "--side-by-side", "--preserve-color",
                   "--no-progress", *VERBOSITY},
    "export.py": {"-h", "model", "--calibration-data", "--style", *VERBOSITY},
}  # fmt: skip


def test_help_states_every_default():
    result = run("train.py", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for fragment in (
        "--epochs EPOCHS passes over the content images (with --steps: whichever stops "
        "first) (default: 2, or as many as --steps needs)",
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
        "--data DATA folder of content images, searched recursively (default: the COCO 2014 "
        "train images, fetched once into --data-dir)",
        "(default: $KERAS_HOME/datasets/coco2014, KERAS_HOME defaulting to ~/.keras)",
        "--style-size STYLE_SIZE style image is resized to this square (default: --image-size)",
        "--tfds-name TFDS_NAME train on this tensorflow-datasets dataset instead, e.g. "
        'coco/2014 (every split, prepared by tfds; needs pip install "kstyle[coco]") (default: '
        "none)",
    ):
        assert fragment in text, fragment
    for script, no_default in NO_DEFAULT.items():  # each default stated exactly once
        entries = help_entries(script)
        assert no_default <= set(entries), script
        assert len(entries) > len(no_default) + 3, script
        for name, entry in entries.items():
            assert entry.count("default:") == (name not in no_default), entry
            assert "(default: None)" not in entry and "(default: False)" not in entry, entry
    stylize = " ".join(run("stylize.py", "--help").stdout.split())
    assert "(default: 2.5GB)" in stylize
    assert "(default: 89478485, Pillow's limit)" in stylize


@pytest.mark.parametrize("script", ["train.py", "stylize.py", "export.py"])
def test_help_does_not_import_tensorflow(script):
    result = subprocess.run(
        [sys.executable, "-X", "importtime", os.path.join(ROOT, script), "--help"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    imported = {
        line.rsplit("|", 1)[-1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "kstyle.cli.common" in imported  # the import log is read right
    heavy = {name for name in imported if name.split(".")[0] in ("tensorflow", "keras")}
    assert heavy == set()


def test_the_train_parser_and_train_config_agree():
    from kstyle.cli.train import build_parser
    from kstyle.config import TrainConfig

    parser = build_parser()

    def config_of(*argv):
        options = vars(parser.parse_args(["--style", "s.png", *argv]))
        assert options.pop("demo") is False
        assert options.pop("quiet") is False and options.pop("verbose") is False
        assert options.pop("add_style") is None and options.pop("from_run") is None
        return TrainConfig(**options)

    assert config_of() == TrainConfig(style="s.png")  # every default, the same
    given = config_of(
        "--epochs", "5", "--learning-rate", "0.5", "--style-size", "64", "--restart",
        "--cache", "--padding", "reflect", "--strategy", "mirrored", "--data", "d",
    )  # fmt: skip
    assert (given.epochs, given.learning_rate, given.style_size) == (5, 0.5, 64)
    assert given.restart and given.cache and given.padding == "reflect"
    assert (given.strategy, given.data) == ("mirrored", "d")
    for flag, good, bad in (
        ("--padding", ("zeros", "reflect"), "same"),
        ("--arch", ("johnson", "slim", "tiny"), "huge"),
        ("--mixed-precision", ("off", "float16", "bfloat16"), "fp16"),
        ("--jit-compile", ("auto", "on", "off"), "yes"),
        ("--strategy", ("auto", "default", "mirrored", "multiworker", "tpu"), "gpu"),
    ):
        for value in good:
            config_of(flag, value).validate()
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(["--style", "s.png", flag, bad])
        assert exit_info.value.code == 2
        with pytest.raises(KstyleError, match=f"{flag} must be one of"):
            dataclasses.replace(
                TrainConfig(style="s.png"), **{flag[2:].replace("-", "_"): bad}
            ).validate()


def test_an_unknown_arch_is_a_one_line_error_listing_the_presets(tmp_path):
    result = run("train.py", "--style", "s.png", "--arch", "huge", cwd=str(tmp_path))
    assert_one_line_error(result, "--arch", "'huge'", "johnson", "slim", "tiny")
    assert not os.listdir(tmp_path)  # nothing written


@pytest.mark.parametrize("command", ["kstyle-train", "kstyle-stylize", "kstyle-export"])
def test_console_scripts_are_installed(command):
    path = shutil.which(command) or os.path.join(os.path.dirname(sys.executable), command)
    result = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and command in result.stdout


def test_demo_runs_and_ends_with_a_stylized_picture(tmp_path):
    out = tmp_path / "demo"
    result = run_in_process(
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
    saved = json.loads((out / "config.json").read_text())
    assert (saved["steps_per_epoch"], saved["steps"], saved["epochs"]) == (16, 2, None)
    assert saved["epochs_used"] == 1
    assert "--steps 2 on 16 steps per epoch: 1 epoch (partial)" in result.stderr


def test_the_demos_steps_are_the_epochs_it_records():
    """The demo's --steps 112 on its 64 images (16 steps per epoch) runs 7 whole epochs, and
    no --epochs caps or overstates them (config.json records what ran)."""
    from kstyle.cli.train import DEMO_OPTIONS
    from kstyle.schedule import steps_line

    assert "epochs" not in DEMO_OPTIONS
    assert (
        steps_line(16, None, DEMO_OPTIONS["steps"]) == "--steps 112 on 16 steps per epoch: 7 epochs"
    )


def test_onednn_preference_by_task_and_cpu(tmp_path):
    from kstyle.cli.common import cpu_flags, preferred_onednn, tensorflow_onednn_default

    avx2, avx512 = {"sse4_2", "avx2", "fma"}, {"sse4_2", "avx2", "fma", "avx512f"}
    assert preferred_onednn("train", avx2) is True
    assert preferred_onednn("train", avx512) is True
    assert preferred_onednn("stylize", avx2) is False
    assert preferred_onednn("stylize", avx512) is True
    assert preferred_onednn("stylize", {"neon", "asimd"}) is None
    assert tensorflow_onednn_default(avx2) is False
    assert tensorflow_onednn_default(avx512 | {"avx512vl", "avx512bw"}) is False
    for feature in ("avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16"):
        assert tensorflow_onednn_default(avx512 | {feature}) is True, feature
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse4_2 avx2 fma\nbugs\t\t: none\n")
    assert cpu_flags(str(cpuinfo)) == {"fpu", "sse4_2", "avx2", "fma"}
    assert cpu_flags(str(tmp_path / "missing")) == set()


ONEDNN_ON = "oneDNN custom operations are on"  # TensorFlow's own line, logged at import
X86_LINUX = pytest.mark.skipif(
    sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"),
    reason="TensorFlow builds with oneDNN on x86-64 Linux",
)


def python_with_tensorflow_log(code):
    """The output (stdout and TensorFlow's log, in order) of ``code`` run in a new
    interpreter with TensorFlow's info log on and ``TF_ENABLE_ONEDNN_OPTS`` unset."""
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**env, "TF_CPP_MIN_LOG_LEVEL": "0"},
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:]
    return result.stdout


def processes(output):
    """``[(the variable as it was at the start, whether TensorFlow's oneDNN was on)]`` for
    each process in ``output``, which prints ``started with VALUE`` as it starts."""
    runs = output.split("started with ")[1:]
    return [(text.split()[0], ONEDNN_ON in text) for text in runs]


@X86_LINUX
def test_tensorflows_onednn_default_is_the_rule_for_this_cpu():
    from kstyle.cli.common import cpu_flags, tensorflow_onednn_default

    output = python_with_tensorflow_log("import tensorflow")
    assert (ONEDNN_ON in output) == tensorflow_onednn_default(cpu_flags()), output[-2000:]


@X86_LINUX
@pytest.mark.parametrize("wanted", [True, False])
def test_the_setting_is_made_before_tensorflow_is_imported(wanted):
    """Where TensorFlow's default is the slower setting, kstyle sets the variable before the
    import: TensorFlow then runs with the faster one, and the process does not start again."""
    code = (
        "import os\n"
        "import kstyle.cli.common as common\n"
        f"common.preferred_onednn = lambda task, flags: {wanted}\n"
        f"common.tensorflow_onednn_default = lambda flags: {not wanted}\n"
        "common.cpu_flags = lambda: {'avx2'}\n"
        "common.os.execv = None  # a restart would fail loudly\n"
        "common.use_fastest_onednn('train', None)\n"
        "print('started with', os.environ.get('TF_ENABLE_ONEDNN_OPTS'), flush=True)\n"
        "import tensorflow\n"
    )
    output = python_with_tensorflow_log(code)
    assert processes(output) == [("1" if wanted else "0", wanted)], output[-2000:]


@X86_LINUX
@pytest.mark.parametrize("wanted", [True, False])
def test_a_program_that_imported_tensorflow_first_starts_again(wanted):
    from kstyle.cli.common import cpu_flags, tensorflow_onednn_default

    code = (
        "import os\n"
        "print('started with', os.environ.get('TF_ENABLE_ONEDNN_OPTS'), flush=True)\n"
        "import tensorflow\n"
        "import kstyle.cli.common as common\n"
        f"common.preferred_onednn = lambda task, flags: {wanted}\n"
        f"common.tensorflow_onednn_default = lambda flags: {not wanted}\n"
        "common.cpu_flags = lambda: {'avx2'}\n"
        "common.use_fastest_onednn('train', None)\n"
        "print('continued', flush=True)\n"
    )
    output = python_with_tensorflow_log(code)
    # the first run had TensorFlow's default; the second, started with the variable, the wanted
    first = ("None", tensorflow_onednn_default(cpu_flags()))
    assert processes(output) == [first, ("1" if wanted else "0", wanted)], output[-2000:]
    assert output.split()[-1] == "continued" and output.count("continued") == 1


@pytest.fixture
def avx2_only(monkeypatch):
    """An AVX2-only CPU, on which training wants oneDNN and TensorFlow leaves it off; no
    restart happens for real, and the variable is unset."""
    import kstyle.cli.common as common

    restarts = []
    monkeypatch.setattr(common.os, "execv", lambda *args: restarts.append(args))
    monkeypatch.setattr(common, "cpu_flags", lambda: {"avx2", "fma"})
    # set, then unset: monkeypatch records the variable's absence and restores it, so the value
    # use_fastest_onednn sets cannot leak into later tests' subprocesses
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "")
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS")
    return restarts


def test_onednn_is_switched_only_from_a_command_line(avx2_only, monkeypatch):
    import kstyle.cli.common as common

    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)  # as in a fresh command
    common.use_fastest_onednn("stylize", None)  # TensorFlow's default is the faster here
    assert "TF_ENABLE_ONEDNN_OPTS" not in os.environ
    common.use_fastest_onednn("train", ["--style", "s"])  # called from Python with arguments
    assert "TF_ENABLE_ONEDNN_OPTS" not in os.environ
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")  # the user's own choice
    common.use_fastest_onednn("train", None)
    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "0"
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS")
    common.use_fastest_onednn("train", None)
    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "1"
    assert avx2_only == []  # set before the import: no restart


def test_onednn_restart_when_tensorflow_was_imported_first(avx2_only):
    import tensorflow  # noqa: F401

    import kstyle.cli.common as common

    common.use_fastest_onednn("train", ["--model", "m"])  # called from Python with arguments
    assert avx2_only == [] and "TF_ENABLE_ONEDNN_OPTS" not in os.environ
    common.use_fastest_onednn("train", None)
    assert avx2_only == [(sys.executable, [sys.executable, *sys.orig_argv[1:]])]
    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "1"


@pytest.mark.parametrize("program", ["-", ""])
def test_onednn_restart_needs_a_command_that_can_run_again(avx2_only, monkeypatch, program):
    """A program read from stdin (``-``) or typed at a prompt cannot be started again."""
    import tensorflow  # noqa: F401

    import kstyle.cli.common as common

    monkeypatch.setattr(sys, "argv", [program])
    common.use_fastest_onednn("train", None)
    assert avx2_only == []
    assert "TF_ENABLE_ONEDNN_OPTS" not in os.environ


def test_operating_system_errors_are_one_line_in_every_command(tmp_path, saved_model_path):
    photo = tmp_path / "photo.png"
    Image.fromarray(random_image(16, 16, seed=1)).save(photo)
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a folder")
    stylize = ("stylize.py", "--model", saved_model_path, photo, "--output")
    # an output under a regular file, in each command
    assert_one_line_error(
        run_in_process(*stylize, blocker / "out.png"), "not a folder", str(blocker)
    )
    assert_one_line_error(  # export.py in a process of its own, as a user runs it
        run("export.py", saved_model_path, "--format", "tflite", "--output", blocker / "x"),
        "not a folder",
    )
    data = tmp_path / "data"
    write_image_folder(str(data), count=4, size=(36, 36))
    train = ("train.py", "--style", photo, "--data", data, "--vgg-weights", "random")
    train += ("--image-size", 32, "--batch-size", 2, "--steps", 1, "--output")
    assert_one_line_error(run_in_process(*train, blocker / "run"), "not a folder")
    # a folder nobody may write (as root: a path under /proc), and a name past the limit
    assert_one_line_error(
        run_in_process(*stylize, "/proc/kstyle-test/out.png"), "/proc/kstyle-test"
    )
    assert_one_line_error(
        run_in_process(*stylize, tmp_path / ("x" * 260 + ".png")), "file name too long"
    )
    # a 250-character name fits (the temporary name is short), and is written
    long_name = tmp_path / ("y" * 246 + ".png")
    assert run_in_process(*stylize, long_name).returncode == 0 and long_name.is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".kstyle-")]


def test_a_full_disk_is_one_line_and_leaves_no_partial_file(tmp_path, saved_model_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)])
    if mounted.returncode != 0:
        pytest.skip("needs root to mount a tiny tmpfs")
    try:
        photo = tmp_path / "photo.png"
        Image.fromarray(random_image(256, 256, seed=1)).save(photo)  # ~200 kB as PNG
        result = run_in_process(
            "stylize.py", "--model", saved_model_path, photo, "--output", disk / "o.png"
        )
        assert_one_line_error(result, "no space left", str(disk))
        assert os.listdir(disk) == []  # neither a partial output nor a temporary file
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_a_keras_file_that_is_not_a_transform_net_is_refused(tmp_path):
    import keras

    inputs = keras.Input((8,))
    other = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    path = tmp_path / "classifier.keras"
    other.save(path)
    photo = tmp_path / "photo.png"
    Image.fromarray(random_image(16, 16, seed=1)).save(photo)
    line = assert_one_line_error(
        run_in_process("stylize.py", "--model", path, photo, "--output", tmp_path / "o.png"),
        "is not a style transform network",
    )
    assert str(path) in line and not (tmp_path / "o.png").exists()


def test_a_folder_that_is_not_a_kstyle_run_is_refused_and_kept(tmp_path):
    foreign = tmp_path / "project"
    (foreign / "logs").mkdir(parents=True)
    (foreign / "config.json").write_text('{"learning_rate": 0.1}')
    (foreign / "logs" / "events").write_text("someone's logs")
    photo = tmp_path / "style.png"
    Image.fromarray(random_image(16, 16, seed=1)).save(photo)
    data = tmp_path / "data"
    write_image_folder(str(data), count=4, size=(36, 36))
    train = ("train.py", "--style", photo, "--data", data, "--vgg-weights", "random")
    train += ("--image-size", 32, "--batch-size", 2, "--steps", 1, "--output", foreign)
    for extra in ((), ("--restart",)):
        assert_one_line_error(run_in_process(*train, *extra), "holds no kstyle run", str(foreign))
        assert (foreign / "config.json").read_text() == '{"learning_rate": 0.1}'
        assert (foreign / "logs" / "events").read_text() == "someone's logs"
    (foreign / "config.json").unlink()  # only someone's model.keras: still not a run
    (foreign / "model.keras").write_bytes(b"someone's model")
    assert_one_line_error(run_in_process(*train, "--restart"), "holds no kstyle run")
    assert (foreign / "model.keras").read_bytes() == b"someone's model"


SMOKE_NOTE = "untrained loss network: smoke test only"


def test_a_smoke_run_says_so_and_never_passes_for_a_real_run(tmp_path):
    import keras

    data, style, out = tmp_path / "data", tmp_path / "style.png", tmp_path / "run"
    write_image_folder(str(data), count=8, size=(40, 48))  # 4 steps per epoch
    Image.fromarray(random_image(50, 40, seed=99)).save(style)
    weights = str(tmp_path / "vgg16.weights.h5")  # a real run's loss net, from a file
    keras.applications.VGG16(include_top=False, weights=None).save_weights(weights)
    train = ["train.py", "--style", style, "--data", data, "--output", out]
    train += ["--image-size", 32, "--batch-size", 2]

    smoke = run_in_process(*train, "--vgg-weights", "random", "--steps", 6, "--log-every", 2)
    assert smoke.returncode == 0, smoke.stderr[-3000:]
    assert f"note: {SMOKE_NOTE}" in smoke.stderr  # a message; the result line says it too
    assert f"({SMOKE_NOTE})" in smoke.stdout.splitlines()[-1]
    for name in ("config.json", "summary.json"):
        marks = json.loads((out / name).read_text())
        assert (marks["smoke_test"], marks["note"]) == (True, SMOKE_NOTE), name
    # not a terminal: one line every 2 steps, over both fit calls, no Keras bar
    lines = [line for line in smoke.stderr.splitlines() if line.startswith("step ")]
    assert [line.split(" (")[0] for line in lines] == ["step 2/6", "step 4/6", "step 6/6"]
    output = smoke.stdout + smoke.stderr
    assert "━" not in output and "\r" not in output
    with open(out / "history.csv") as file:
        rows = list(csv.DictReader(file))
    for line in lines:
        row = rows[int(line.split()[1].split("/")[0]) - 1]
        for name in ("loss", "content", "style", "tv"):
            value = float(line.split(f" {name} ")[1].split(",")[0].split(";")[0])
            assert value == pytest.approx(float(row[name]), rel=1e-5), (name, line)
    model_bytes = (out / "model.keras").read_bytes()

    real = run_in_process(*train, "--vgg-weights", weights, "--steps", 2)  # refused before any work
    assert_one_line_error(real, "holds a smoke-test run", "--vgg-weights random", "--restart")
    assert "training on" not in real.stdout + real.stderr
    assert (out / "model.keras").read_bytes() == model_bytes
    assert json.loads((out / "summary.json").read_text())["smoke_test"] is True

    restarted = run_in_process(*train, "--vgg-weights", weights, "--steps", 2, "--restart")
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    assert "smoke test" not in restarted.stdout + restarted.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["smoke_test"] is False and "note" not in summary and summary["steps"] == 2

    back = run_in_process(
        *train, "--vgg-weights", "random", "--steps", 2
    )  # nor the other way round
    assert_one_line_error(back, f"holds a run trained with --vgg-weights {weights}", "--restart")
    assert "nothing to do" not in back.stdout + back.stderr
