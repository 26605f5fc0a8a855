"""Everything that can be checked before work is checked before work: each bad value, model
file and output of every command is one ``error:`` line and exit status 2, in under a second,
without TensorFlow imported; and what the line says (the kind of a model file, the user's
output path, whole words)."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, assert_one_line_error, random_image, write_image_folder
from PIL import Image

from kstyle.checks import model_file
from kstyle.cli.common import os_error_line
from kstyle.errors import KstyleError, cause_of, shortened
from kstyle.files import StagedOutput, check_writable
from kstyle.images import save_image

# Runs in a fresh interpreter: for each case of the JSON list in argv[1] (a command module and
# its arguments), calls the command's main() as a shell would (from_shell=True, so a check that
# came after start_command would import TensorFlow), with stderr captured, and prints per case
# the exit status, stderr, the seconds main() took, and whether TensorFlow (or Keras) was
# imported by then. The command's module is imported before the clock starts: its import
# (numpy, Pillow) is the same whatever the arguments, and on a loaded machine alone can take a
# second; what the clock measures is the checks.
CALL_MAINS = """
import contextlib, importlib, io, json, sys, time

results = []
for module, argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    main = importlib.import_module(module).main
    start = time.perf_counter()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv, prog=module, from_shell=True)
        except SystemExit as done:
            code = done.code
    heavy = sorted(m for m in ("tensorflow", "keras") if m in sys.modules)
    results.append([code, err.getvalue(), time.perf_counter() - start, heavy])
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def read_only_folder(tmp_path_factory):
    """A folder that no write succeeds in, whoever runs the tests: a read-only tmpfs mount
    (root can mount one), else a folder without write permission (for others), else skip."""
    folder = tmp_path_factory.mktemp("ro")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        folder.chmod(0o555)
        if os.access(folder, os.W_OK):  # root without the right to mount
            pytest.skip("needs a read-only folder: root that may mount, or a non-root user")
    yield folder
    if mounted.returncode == 0:
        subprocess.run(["umount", str(folder)], check=True)
    else:
        folder.chmod(0o755)


@pytest.fixture(scope="module")
def exported_files(tmp_path_factory):
    """Real exported models of a small Keras net: ``model.tflite`` (LiteRT's converter),
    ``model.onnx`` (Keras's ONNX export) and a ``saved_model`` folder."""
    import keras
    import tensorflow as tf

    folder = tmp_path_factory.mktemp("exported")
    inputs = keras.Input((8, 8, 3))
    net = keras.Model(inputs, keras.layers.Conv2D(3, 3, padding="same")(inputs))
    net(np.zeros((1, 8, 8, 3), np.float32))
    (folder / "model.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(net).convert())
    net.export(str(folder / "saved_model"), format="tf_saved_model", verbose=False)
    pytest.importorskip("tf2onnx")
    net.export(str(folder / "model.onnx"), format="onnx", verbose=False)
    return folder


@pytest.fixture(scope="module")
def files(tmp_path_factory, saved_model_path, exported_files, read_only_folder):
    """Inputs for the commands: a photo, a data folder, good and bad model files, and places
    where no output can go."""
    folder = tmp_path_factory.mktemp("inputs")
    photo = folder / "photo.png"
    Image.fromarray(random_image(16, 16, seed=1)).save(photo)
    write_image_folder(str(folder / "data"), count=2, size=(36, 36))
    (folder / "clip.mp4").write_bytes(b"only its name matters here")
    (folder / "fake.keras").write_bytes(b"not a zip\n")  # 10 bytes
    with open(saved_model_path, "rb") as model, open(folder / "broken.keras", "wb") as broken:
        broken.write(model.read(os.path.getsize(saved_model_path) // 2))  # cut short
    paths = {
        "photo": photo,
        "data": folder / "data",
        "clip": folder / "clip.mp4",
        "model": saved_model_path,
        "fake": folder / "fake.keras",
        "broken": folder / "broken.keras",
        "tflite": exported_files / "model.tflite",
        "onnx": exported_files / "model.onnx",
        "saved_model": exported_files / "saved_model",
        "ro": read_only_folder,
        "under_a_file": photo / "out",  # a file where a folder must go
    }
    return {name: str(path) for name, path in paths.items()}


# (command module, arguments with {placeholders} from ``files``, fragments of the error line)
STYLIZE = ["{photo}", "--model", "{model}", "--output"]
TRAIN = ["--style", "{photo}", "--data", "{data}", "--vgg-weights", "random", "--output"]
DISTILL = ["--teacher", "{model}", "--data", "{data}", "--vgg-weights", "random", "--output"]
EXPORT = ["{model}", "--format", "tflite", "--output"]
CASES = [
    ("stylize", [*STYLIZE, "o.png", "--strength", "2"], ["--strength must be between 0 and 1"]),
    ("stylize", [*STYLIZE, "o.png", "--max-size", "2"], ["--max-size must be at least 4"]),
    ("stylize", [*STYLIZE, "o.png", "--tile", "6"], ["--tile must be a multiple of 4"]),
    ("stylize", [*STYLIZE, "o.png", "--max-memory", "4XB"], ["memory size '4XB'"]),
    ("stylize", [*STYLIZE, "o.png", "--max-pixels", "-1"], ["--max-pixels must be 0"]),
    ("stylize", [*STYLIZE, "o.png", "--work-dir", "{photo}.gone"], ["--work-dir", "not a folder"]),
    ("stylize", [*STYLIZE, "o.png", "--work-dir", "{ro}"], ["{ro}"]),
    ("stylize", [*STYLIZE, "out.gif2"], ["unknown output image type .gif2 for out.gif2"]),
    ("stylize", [*STYLIZE, "{ro}/out.png"], ["{ro}/out.png"]),
    ("stylize", [*STYLIZE, "{ro}"], ["{ro}/photo.png"]),
    ("stylize", [*STYLIZE, "{under_a_file}/o.png"], ["not a folder", "{under_a_file}/o.png"]),
    ("stylize", ["{clip}", "--model", "{model}", "--output", "o.png"], ["needs a video output"]),
    ("stylize", ["{photo}.gone", "--model", "{model}", "--output", "o.png"], ["input not found"]),
    ("stylize", ["{data}", "--model", "{model}", "--output", "{data}/out"], ["overlap"]),
    ("stylize", ["{data}", "--model", "{model}", "--output", "{ro}/out"], ["{ro}/out"]),
    ("stylize", [*STYLIZE[:2], "{fake}", "--output", "o.png"], ["not a Keras model file"]),
    ("stylize", [*STYLIZE[:2], "{broken}", "--output", "o.png"], ["cut short or damaged"]),
    ("stylize", [*STYLIZE[:2], "{tflite}", "--output", "o.png"], ["is a TFLite model"]),
    ("stylize", [*STYLIZE[:2], "{onnx}", "--output", "o.png"], ["is an ONNX model"]),
    ("stylize", [*STYLIZE[:2], "{saved_model}", "--output", "o.png"], ["SavedModel folder"]),
    ("stylize", [*STYLIZE[:2], "{photo}.keras", "--output", "o.png"], ["model not found"]),
    ("train", [*TRAIN, "run", "--image-size", "130"], ["--image-size must be a multiple of 4"]),
    ("train", [*TRAIN, "run", "--batch-size", "0"], ["--batch-size must be positive"]),
    ("train", [*TRAIN, "run", "--style-weight", "-1"], ["--style-weight must not be negative"]),
    ("train", ["--data", "{data}"], ["--style is required"]),
    ("train", [*TRAIN, "run", "--style", "{photo}.gone"], ["image not found"]),
    ("train", [*TRAIN, "{ro}/run"], ["{ro}/run"]),
    ("train", [*TRAIN, "run", "--data", "{photo}.gone"], ["folder not found: {photo}.gone"]),
    ("train", [*TRAIN, "run", "--data", "{ro}"], ["no images in {ro}"]),
    ("train", ["--demo", "--style", "{photo}.gone", "--output", "demo"], ["image not found"]),
    ("distill", [*DISTILL, "run", "--steps", "-1"], ["--steps must be positive"]),
    ("distill", [*DISTILL, "run", "--teacher", "{tflite}"], ["--teacher", "--teacher-range 0-1"]),
    ("distill", [*DISTILL, "run", "--teacher", "{photo}.onnx"], ["--teacher", "model not found"]),
    ("distill", [*DISTILL, "run", "--teacher-range", "0-1"], ["is for a SavedModel, .tflite"]),
    ("distill", [*DISTILL, "{ro}/run"], ["{ro}/run"]),
    ("distill", [*DISTILL, "run", "--data", "{photo}.gone"], ["folder not found"]),
    ("export", [*EXPORT, "x", "--verify-size", "2"], ["--verify-size must be at least 4"]),
    ("export", [*EXPORT, "x", "--input-size", "2"], ["--input-size must be at least 4"]),
    (
        "export",
        [*EXPORT, "x", "--input-size", "720x2"],
        ["--input-size must be at least 4, got 720x2"],
    ),
    ("export", [*EXPORT, "x", "--input-size", "720x"], ["--input-size", "N or HxW", "'720x'"]),
    ("train", [*TRAIN, "run", "--arch", "live", "--image-size", "36"], ["multiple of 8"]),
    ("export", [*EXPORT, "x", "--calibration-count", "0"], ["--calibration-count must be"]),
    ("export", [*EXPORT, "x", "--quantize", "int8"], ["needs --calibration-data"]),
    ("export", [*EXPORT, "x", "--format", "web", "--quantize", "int8"], ["drop --quantize"]),
    ("export", [*EXPORT, "{ro}/export"], ["{ro}/export"]),
    ("export", [*EXPORT, "{ro}/site", "--format", "web"], ["{ro}/site"]),
    ("export", ["{onnx}", "--output", "x"], ["is an ONNX model", "kstyle export takes"]),
    ("serve", ["{model}", "--port", "70000"], ["--port must be between 0 and 65535"]),
    ("serve", ["{model}", "--output", "{ro}/site"], ["{ro}/site"]),
]


def without(environment, name) -> dict:
    """A copy of ``environment`` without the variable ``name``."""
    return {key: value for key, value in environment.items() if key != name}


@pytest.fixture(scope="module")
def precheck_results(files, tmp_path_factory):
    """Every case of :data:`CASES` run in one fresh interpreter (its working directory a new
    folder): ``[exit status, stderr, seconds, heavy modules imported]`` per case."""
    cases = [
        (f"kstyle.cli.{command}", [arg.format(**files) for arg in argv])
        for command, argv, _ in CASES
    ]
    result = subprocess.run(
        [sys.executable, "-c", CALL_MAINS, json.dumps(cases)],
        capture_output=True,
        text=True,
        cwd=tmp_path_factory.mktemp("cwd"),
        # without TF_CPP_MIN_LOG_LEVEL, a command from a shell imports TensorFlow as soon as
        # start_command runs: a check after it would show as TensorFlow imported
        env={**without(os.environ, "TF_CPP_MIN_LOG_LEVEL"), "PYTHONPATH": ROOT},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.parametrize("index", range(len(CASES)), ids=[" ".join(c[1][-2:]) for c in CASES])
def test_each_mistake_is_one_line_in_under_a_second_without_tensorflow(
    index, precheck_results, files
):
    code, stderr, seconds, heavy = precheck_results[index]
    fragments = [fragment.format(**files) for fragment in CASES[index][2]]
    result = subprocess.CompletedProcess(CASES[index][1], code, "", stderr)
    line = assert_one_line_error(result, *fragments)
    assert ".kstyle-" not in line and not line.endswith(("…", "-"))
    assert heavy == [], f"{CASES[index][0]} imported {heavy} before saying: {line}"
    assert seconds < 1.0, (seconds, line)


def test_the_checks_create_nothing(files, tmp_path):
    """The write probe leaves no file behind and makes no folder, as the cases above ran."""
    target = tmp_path / "new" / "deeper" / "out.png"
    check_writable(str(target))
    check_writable(str(tmp_path / "run"), folder=True)
    assert os.listdir(tmp_path) == []
    assert os.listdir(files["ro"]) == []


def test_model_files_are_told_apart_by_their_bytes(files, tmp_path):
    assert model_file(files["model"]) == files["model"]
    assert model_file(os.path.dirname(files["model"])) == files["model"]  # its run directory
    cases = {
        files["fake"]: "not a Keras model file (a .keras file is a zip archive; this 10-byte",
        files["broken"]: "the file is cut short or damaged",
        files["tflite"]: "is a TFLite model, an exported model: kstyle takes",
        files["onnx"]: "is an ONNX model, an exported model",
        files["saved_model"]: "is a TensorFlow SavedModel folder, an exported model",
        f"{files['saved_model']}/saved_model.pb": "is the graph of a TensorFlow SavedModel",
        f"{files['photo']}.keras": "model not found",
        os.path.dirname(files["tflite"]): "no model.keras in run directory",
    }
    for path, fragment in cases.items():
        with pytest.raises(KstyleError) as raised:
            model_file(path)
        assert fragment in str(raised.value) and path in str(raised.value), str(raised.value)
    # a folder of exported files says what it holds; a zip that is not a Keras model
    assert "it holds exported models" in _error(os.path.dirname(files["tflite"]))
    shutil.make_archive(str(tmp_path / "notes"), "zip", os.path.dirname(files["photo"]))
    os.rename(tmp_path / "notes.zip", tmp_path / "notes.keras")
    assert "no config.json" in _error(str(tmp_path / "notes.keras"))
    shutil.copy(files["model"], tmp_path / "model.bin")
    assert "named *.keras; rename it" in _error(str(tmp_path / "model.bin"))
    # the ONNX check is the extension plus the first byte: another .onnx file is foreign
    (tmp_path / "text.onnx").write_text("hello")
    assert "not a Keras model file" in _error(str(tmp_path / "text.onnx"))


def _error(path) -> str:
    with pytest.raises(KstyleError) as raised:
        model_file(path)
    return str(raised.value)


def test_a_failed_write_names_the_users_path_not_a_temporary_one(files, tmp_path):
    """Past the probe (a library call, a folder that turned read-only), the error of the
    atomic write names the output, whatever step failed."""
    target = os.path.join(files["ro"], "out.png")
    with pytest.raises(OSError) as raised:
        save_image(random_image(8, 8), target)
    assert raised.value.filename == target
    assert os_error_line(raised.value) in (
        f"read-only file system: {target}",
        f"no permission for {target}: Permission denied",
    )
    # a failure inside the block, naming the temporary file, is renamed too
    with pytest.raises(OSError) as raised, StagedOutput(str(tmp_path / "a.png")) as staged:
        os.rmdir(staged.temporary)  # ENOTDIR, naming the temporary
    assert raised.value.filename == str(tmp_path / "a.png")
    assert os.listdir(tmp_path) == []


def test_shortened_cuts_at_a_sentence_else_between_words():
    keras_message = (
        "File format not supported: filepath=export/model.tflite. Keras 3 only supports V3 "
        "`.keras` files and legacy H5 format files (`.h5` extension). Note that the legacy "
        "SavedModel format is not supported by `load_model()` in Keras 3."
    )
    assert shortened(keras_message, 200) == (
        "File format not supported: filepath=export/model.tflite. Keras 3 only supports V3 "
        "`.keras` files and legacy H5 format files (`.h5` extension)."
    )
    assert shortened(keras_message, 80) == (
        "File format not supported: filepath=export/model.tflite."
    )
    words = "the quick brown fox jumps over the lazy dog " * 3
    assert shortened(words, 30) == "the quick brown fox jumps…"  # 26 characters
    assert shortened("short. enough", 20) == "short. enough"
    assert shortened("/a/very/long/path/without/spaces.keras is bad", 10) == (
        "/a/very/long/path/without/spaces.keras…"
    )
    long_error = ValueError("x" * 10 + " " + "word " * 100)
    cut = cause_of(long_error, limit=60)
    assert len(cut) <= 60 and cut.endswith("word…"), cut


def test_a_tensorflow_write_on_a_full_disk_names_the_users_path(tmp_path):
    """TensorFlow's own writes (a SavedModel's) raise its errors, not OSError; one into a staged
    output is the OSError it stands for, naming the output, so the command's line does too."""
    import tensorflow as tf

    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)])
    if mounted.returncode != 0:
        pytest.skip("needs root to mount a tiny tmpfs")
    target = str(disk / "saved_model")
    try:
        with pytest.raises(OSError) as raised, StagedOutput(target, folder=True) as staged:
            tf.io.write_file(f"{staged.temporary}/data", tf.constant(b"x" * 200_000))
        assert raised.value.filename == target
        assert os_error_line(raised.value) == (
            f"no space left on the disk of {target}: No space left on device"
        )
        assert os.listdir(disk) == []
    finally:
        subprocess.run(["umount", str(disk)], check=True)
