"""Export: every format reproduces the Keras model, at any size, and bad input fails cleanly."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import random_image, write_image_folder
from PIL import Image

from kstyle.export import Runner, export, serving_archive, tflite_bytes, verify
from kstyle.export.verify import PSNR_BARS, held_out_image
from kstyle.images import psnr
from kstyle.inference import stylize_array
from kstyle.transform_net import load_transform_net

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A run directory whose net trained a few steps, so activations are realistic."""
    from kstyle.run import TrainConfig, train

    base = tmp_path_factory.mktemp("export")
    data = base / "data"
    write_image_folder(str(data), count=8, size=(48, 48))
    style = base / "style.png"
    Image.fromarray(random_image(48, 48, seed=77)).save(style)
    train(
        TrainConfig(
            style=str(style),
            data=str(data),
            output=str(base / "run"),
            image_size=32,
            batch_size=2,
            steps=6,
            vgg_weights="random",
            plot_every=0,
            seed=0,
            verbose=0,
        ),
        printer=lambda *_: None,
    )
    return base


@pytest.fixture(scope="module")
def net(trained_run):
    return load_transform_net(str(trained_run / "run"))


def test_all_fp32_formats_match_keras_and_write_metadata(trained_run, net, tmp_path):
    results = export(
        str(trained_run / "run"), str(tmp_path), verify_size=32, printer=lambda *_: None
    )
    assert [(r.format, r.quantize) for r in results] == [
        ("saved_model", None),
        ("tflite", "none"),
        ("onnx", None),
    ]
    for result in results:
        assert result.passed and result.max_abs_diff <= 1, result.line()
        assert result.size_bytes > 4 * 1_679_235 * 0.9  # the weights are in the file
    for name in ("saved_model/kstyle.json", "model.tflite.json", "model.onnx.json"):
        assert (tmp_path / name).is_file()
    assert '"style": "style.png"' in (tmp_path / "model.tflite.json").read_text()
    # odd sizes come back at their own size through every format
    image = random_image(33, 47, seed=4)
    reference = stylize_array(net, image)
    for fmt, path in (
        ("saved_model", "saved_model"),
        ("tflite", "model.tflite"),
        ("onnx", "model.onnx"),
    ):
        output = Runner(fmt, str(tmp_path / path))(image)
        assert output.shape == (33, 47, 3) and output.dtype == np.uint8
        assert np.abs(output.astype(int) - reference).max() <= 1, fmt


def test_tflite_norms_are_four_dimensional(net):
    """The instance norms reach TFLite as 4-D moments (XNNPACK runs them), not through
    GroupNormalization's dynamic 5-D reshapes, which split XNNPACK's graph at every norm."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=tflite_bytes(net, "none"))
    tensors = {detail["index"]: detail for detail in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()  # no public op listing in LiteRT 2.3
    means = [op for op in ops if op["op_name"] == "MEAN"]
    assert len(means) == 2 * 15  # a mean and a variance per instance norm
    assert all(len(tensors[op["inputs"][0]]["shape_signature"]) == 4 for op in means)
    assert sum(op["op_name"] == "RESHAPE" for op in ops) <= 1  # the input padding's only


def test_saved_model_loads_where_kstyle_cannot_be_imported(net, tmp_path):
    path = serving_archive(net, str(tmp_path / "sm"))
    code = (
        "import sys; sys.modules['kstyle'] = None\n"
        "import numpy as np, tensorflow as tf\n"
        f"fn = tf.saved_model.load({path!r}).signatures['serving_default']\n"
        "x = np.random.default_rng(0).integers(0, 256, (2, 21, 30, 3), dtype=np.uint8)\n"
        "y = fn(image=tf.constant(x))['stylized']\n"
        "print(y.shape, y.dtype.name)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("(2, 21, 30, 3) uint8")
    layer = keras.layers.TFSMLayer(path, call_endpoint="serving_default")
    image = random_image(24, 28, seed=1)
    output = layer(tf.constant(image[None]))["stylized"].numpy()[0]
    assert np.abs(output.astype(int) - stylize_array(net, image)).max() <= 1


@pytest.mark.parametrize("quantize", ["float16", "dynamic"])
def test_quantized_tflite_meets_its_bar(net, tmp_path, quantize):
    path = tmp_path / f"model_{quantize}.tflite"
    path.write_bytes(tflite_bytes(net, quantize))
    result = verify("tflite", str(path), net, held_out_image(32, 41), quantize=quantize)
    assert result.passed and result.psnr_db >= PSNR_BARS[quantize], result.line()
    assert result.size_bytes < (0.6 if quantize == "float16" else 0.35) * 4 * 1_679_235


def test_int8_is_integer_and_meets_its_bar(net, tmp_path):
    from kstyle.demo import sample_photo_paths
    from kstyle.export.int8 import load_calibration_images

    # representative photos: crops of matplotlib's second sample photo (the held-out portrait
    # is the first) and a few smooth random images
    folder = tmp_path / "calibration"
    folder.mkdir()
    with Image.open(sample_photo_paths()[1]) as photo:
        photo = photo.convert("RGB")
    width, height = photo.size
    rng = np.random.default_rng(0)
    for index in range(12):
        side = int(min(width, height) * rng.uniform(0.3, 1.0))
        left, top = rng.integers(0, width - side + 1), rng.integers(0, height - side + 1)
        photo.crop((left, top, left + side, top + side)).save(folder / f"photo{index:02d}.png")
    for index in range(4):
        Image.fromarray(random_image(40, 40, seed=index)).save(folder / f"random{index}.png")
    images = load_calibration_images(str(folder), count=16, size=32)
    path = tmp_path / "model_int8.tflite"
    path.write_bytes(tflite_bytes(net, "int8", calibration_images=images))
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    tensors = {d["index"]: d for d in interpreter.get_tensor_details()}
    convs = [op for op in interpreter._get_ops_details() if op["op_name"] == "CONV_2D"]
    # all 16 convolutions (3 down, 10 residual, 2 up, 1 out) take int8 kernels and inputs
    assert len(convs) == 16
    for op in convs:
        image_in, kernel = (tensors[index] for index in op["inputs"][:2])
        assert kernel["dtype"] == np.int8 and image_in["dtype"] == np.int8, kernel["name"]
    # the output convolution (3 channels) is calibrated on pre-tanh activations clipped to
    # [-4, 4]: its int8 range spans at most 8
    (out,) = [op for op in convs if tensors[op["inputs"][1]]["shape"][0] == 3]
    scale, _ = tensors[out["outputs"][0]]["quantization"]
    assert 0 < scale * 255 <= 8.0 + 1e-3
    image = random_image(32, 36, seed=9)
    output = Runner("tflite", str(path))(image)
    assert output.shape == image.shape
    assert psnr(output, stylize_array(net, image)) >= PSNR_BARS["int8"]
    result = verify("tflite", str(path), net, held_out_image(32, 32), quantize="int8")
    assert result.passed and result.psnr_db >= PSNR_BARS["int8"], result.line()


def test_equalized_export_model_is_the_same_function(net):
    """Without clipping, rescaling the convolutions before the norms changes nothing."""
    from kstyle.export import export_model
    from kstyle.export.int8 import equalized_export_model

    images = [random_image(32, 32, seed=index) for index in range(3)]
    image = random_image(28, 36, seed=5)
    reference = export_model(net)(image[None]).numpy()[0]
    for exponent in (0.0, 1.0):
        model = equalized_export_model(
            net, images, batch_size=None, stream_exponent=exponent, by="mixed"
        )
        output = model(image[None]).numpy()[0]
        assert np.abs(output.astype(int) - reference).max() <= 1, exponent


def test_fixed_input_size(net, tmp_path):
    path = tmp_path / "fixed.tflite"
    path.write_bytes(tflite_bytes(net, "none", input_size=32))
    from ai_edge_litert.interpreter import Interpreter

    detail = Interpreter(model_path=str(path)).get_input_details()[0]
    assert list(detail["shape"]) == [1, 32, 32, 3] and -1 not in detail["shape_signature"]
    image = random_image(32, 32, seed=3)
    assert (
        np.abs(Runner("tflite", str(path))(image).astype(int) - stylize_array(net, image)).max()
        <= 1
    )


def test_a_missed_bar_is_reported_with_its_shortfall(net, tmp_path):
    keras.utils.set_random_seed(123)
    from kstyle.transform_net import build_transform_net

    other = serving_archive(build_transform_net(), str(tmp_path / "other"))
    result = verify("saved_model", other, net, held_out_image(32, 32))
    assert not result.passed and "level(s) over" in result.shortfall
    assert "FAILED" in result.line()


def run_export(*args):
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "export.py"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )


def test_bad_input_gives_one_line_errors(trained_run, tmp_path):
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"not a keras file")
    cases = [
        ((tmp_path / "missing.keras",), "model not found"),
        ((trained_run / "run", "--format", "pdf"), "invalid choice"),
        ((trained_run / "run", "--format", "tflite", "--quantize", "int8"), "--calibration-data"),
        (
            (
                trained_run / "run",
                "--format",
                "tflite",
                "--quantize",
                "int8",
                "--calibration-data",
                tmp_path / "nowhere",
            ),
            "not found",
        ),
        ((corrupt,), "could not load model"),
    ]
    for args, fragment in cases:
        result = run_export(*args, "--output", tmp_path / "out")
        assert result.returncode == 2, (args, result.stderr[-1500:])
        assert "Traceback" not in result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and fragment in errors[0], (args, result.stderr[-1500:])
