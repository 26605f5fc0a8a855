"""The export command's library: every fp32 format written, verified and described, at any
size; bad input fails with one clear line."""

import json

import numpy as np
import pytest
from conftest import (
    assert_one_line_error,
    max_level_diff,
    random_image,
    run_in_process,
    write_image_folder,
)

from kstyle.errors import KstyleError
from kstyle.export import Runner, export, tflite_bytes
from kstyle.export.writer import artifact_name, load_calibration_images
from kstyle.inference import stylize_array


@pytest.mark.numeric
def test_all_fp32_formats_match_keras_and_write_metadata(export_run, export_net, tmp_path, bars):
    results = export(
        str(export_run / "run"), str(tmp_path), verify_size=32, printer=lambda *_: None
    )
    assert [(r.format, r.quantize) for r in results] == [
        ("saved_model", None),
        ("tflite", "none"),
        ("onnx", None),
    ]
    for result in results:
        # 1 level: float rounding at a .5 boundary (conftest.max_level_diff)
        quantity = f"{result.format} fp32 vs Keras, held-out 32 px (levels)"
        bars.at_most(quantity, result.max_abs_diff, 1)
        assert result.passed, result.line()
        assert result.size_bytes > 4 * 1_679_235 * 0.9  # the weights are in the file
    for name in ("saved_model/kstyle.json", "model.tflite.json", "model.onnx.json"):
        assert (tmp_path / name).is_file()
    metadata = json.loads((tmp_path / "model.tflite.json").read_text())
    assert metadata["style"] == "style.png" and metadata["quantization"] == "none"
    assert metadata["smoke_test"] is True  # export_run trained with --vgg-weights random
    assert metadata["input"]["shape"] == [1, None, None, 3]
    assert metadata["input"]["dtype"] == metadata["output"]["dtype"] == "uint8"
    # odd sizes come back at their own size through every format
    image = random_image(33, 47, seed=4)
    reference = stylize_array(export_net, image)
    for fmt, path in (
        ("saved_model", "saved_model"),
        ("tflite", "model.tflite"),
        ("onnx", "model.onnx"),
    ):
        runner = Runner(fmt, str(tmp_path / path))
        output = runner(image)
        assert output.shape == (33, 47, 3) and output.dtype == np.uint8
        # 1 level: float rounding at a .5 boundary (conftest.max_level_diff)
        bars.at_most(f"{fmt} fp32 vs Keras, 33x47 (levels)", max_level_diff(output, reference), 1)
    # every format names its output as the sidecars say
    onnx_output = runner.session.get_outputs()[0].name
    sidecar = json.loads((tmp_path / "model.onnx.json").read_text())
    assert onnx_output == sidecar["output"]["name"] == metadata["output"]["name"] == "stylized"


@pytest.mark.numeric
def test_the_tiny_preset_exports_to_onnx(tiny_run, tmp_path, bars):
    """``train --arch tiny`` trained a few steps: its depthwise convolutions in ONNX, within 1
    level of the Keras model, at odd sizes too (the variant tests check the serving model and
    fp32 TFLite on the tiny preset)."""
    from kstyle.transform_net import build_transform_net, load_transform_net

    net = load_transform_net(str(tiny_run / "run"))
    assert json.loads((tiny_run / "run" / "config.json").read_text())["arch"] == "tiny"
    assert net.count_params() == build_transform_net("tiny").count_params()
    (result,) = export(
        str(tiny_run / "run"), str(tmp_path), ("onnx",), verify_size=32, printer=print
    )
    # 1 level: float rounding at a .5 boundary (conftest.max_level_diff)
    bars.at_most("onnx fp32 vs Keras, tiny, held-out 32 px (levels)", result.max_abs_diff, 1)
    assert result.passed, result.line()
    image = random_image(33, 47, seed=4)
    output = Runner("onnx", str(tmp_path / "model.onnx"))(image)
    assert output.shape == image.shape
    # 1 level: float rounding at a .5 boundary (conftest.max_level_diff)
    difference = max_level_diff(output, stylize_array(net, image))
    bars.at_most("onnx fp32 vs Keras, tiny, 33x47 (levels)", difference, 1)


@pytest.mark.numeric
def test_the_live_preset_exports_at_a_fixed_height_and_width(live_run, tmp_path, bars):
    """``train --arch live`` trained a few steps, exported for a fixed 32x48 input (what a
    webcam or a video frame is): the sidecars name the shape and the net's size multiple (8),
    fp32 TFLite and ONNX within 1 level (int8: test_export_int8.test_int8_live_preset)."""
    from kstyle.transform_net import load_transform_net

    results = export(
        str(live_run / "run"), str(tmp_path / "out"), ("tflite", "onnx"),
        input_size=(32, 48), printer=print,
    )  # fmt: skip
    for result in results:
        sidecar = json.loads(open(f"{result.path}.json").read())
        assert sidecar["input"]["shape"][1:] == [32, 48, 3]
        assert sidecar["input"]["min_size"] == 8
        # 1 level: float rounding at a .5 boundary (conftest.max_level_diff)
        bars.at_most("fp32 exports vs Keras, live, fixed 32x48 (levels)", result.max_abs_diff, 1)
    fp32 = results[0]
    net = load_transform_net(str(live_run / "run"))
    image = random_image(32, 48, seed=2)
    output = Runner("tflite", fp32.path)(image)
    assert max_level_diff(output, stylize_array(net, image)) <= 1


def test_artifact_names():
    assert [
        artifact_name("saved_model"),
        artifact_name("tflite", "none"),
        artifact_name("tflite", "int8"),
        artifact_name("onnx"),
    ] == ["saved_model", "model.tflite", "model_int8.tflite", "model.onnx"]


def test_calibration_images_are_loaded_at_the_asked_size(tmp_path):
    write_image_folder(str(tmp_path / "photos"), count=3, size=(40, 48))
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"not an image")
    images = load_calibration_images(str(tmp_path / "photos"), count=5, size=16)
    assert len(images) == 3
    assert all(image.shape == (16, 16, 3) and image.dtype == np.uint8 for image in images)
    assert all(image.std() > 10 for image in images)  # resized content, not a fill
    (tmp_path / "unreadable").mkdir()
    (tmp_path / "unreadable" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(KstyleError, match="no readable calibration images"):
        load_calibration_images(str(tmp_path / "unreadable"))
    with pytest.raises(KstyleError, match="--calibration-data"):
        load_calibration_images(None)


def test_tflite_bytes_refuses_bad_options(export_net):
    with pytest.raises(KstyleError, match="unknown quantization 'int4'"):
        tflite_bytes(export_net, "int4")
    with pytest.raises(KstyleError, match="--calibration-data"):
        tflite_bytes(export_net, "int8")


def test_bad_input_gives_one_line_errors(export_run, tmp_path):
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"not a keras file")
    model = export_run / "run"
    cases = [
        ((tmp_path / "missing.keras",), "model not found"),
        ((model, "--format", "pdf"), "invalid choice"),
        ((model, "--format", "tflite", "--quantize", "int8"), "--calibration-data"),
        (
            (model, "--format", "tflite", "--quantize", "int8", "--calibration-data", "nowhere"),
            "not found",
        ),
        ((corrupt,), "could not load model"),
    ]
    for args, fragment in cases:
        result = run_in_process("export.py", *args, "--output", tmp_path / "out")
        assert_one_line_error(result, fragment)


def test_a_missed_bar_keeps_the_previous_file_and_the_failure_beside_it(
    export_run, export_net, tmp_path, monkeypatch
):
    from kstyle.export import writer
    from kstyle.transform_net import build_transform_net

    run_dir, quiet = str(export_run / "run"), dict(verify_size=32, printer=lambda *_: None)
    (good,) = export(run_dir, str(tmp_path), formats=("tflite",), **quiet)
    assert good.passed and good.path == str(tmp_path / "model.tflite")
    before = {
        name: (tmp_path / name).read_bytes() for name in ("model.tflite", "model.tflite.json")
    }
    other = build_transform_net()  # another net's file cannot meet the bar
    monkeypatch.setattr(writer, "tflite_bytes", lambda *args: tflite_bytes(other))
    (bad,) = export(run_dir, str(tmp_path), formats=("tflite",), **quiet)
    assert not bad.passed and bad.path == str(tmp_path / "model.tflite.failed")
    assert {name: (tmp_path / name).read_bytes() for name in before} == before
    assert (tmp_path / "model.tflite.failed").stat().st_size > 1_000_000
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "model.tflite",
        "model.tflite.failed",
        "model.tflite.json",
    ]  # no temporary file left
    monkeypatch.undo()
    (again,) = export(run_dir, str(tmp_path), formats=("tflite",), **quiet)
    assert again.passed and not (tmp_path / "model.tflite.failed").exists()  # made good
