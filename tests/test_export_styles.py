"""Exports of a net of N styles with a second input, ``style`` (issue 22, step 4): every format
against Keras for single styles and blends, per-image styles in a batch, the sidecar's
contract, and int8 calibration over every style. Nets are untrained, with random style tables
(tests/test_multi_style.py), images 32-48 px."""

import json

import numpy as np
import pytest
from conftest import max_level_diff, random_image
from test_multi_style import multi_net

from kstyle.export.calibration import calibration_samples
from kstyle.export.verify import Runner

VECTORS = ([1, 0, 0], [0, 0, 1], [0.3, 0, 0.7])  # two styles and a blend


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A 3-style ``tiny`` net (random tables) exported as SavedModel, fp32 TFLite and ONNX."""
    from kstyle.export import export

    folder = tmp_path_factory.mktemp("export_styles")
    net = multi_net("tiny", styles=3, seed=3)
    net.save(folder / "model.keras")
    formats = ("saved_model", "tflite", "onnx")
    results = export(str(folder / "model.keras"), str(folder / "out"), formats=formats,
                     verify_size=32, printer=lambda *_: None)  # fmt: skip
    return net, folder / "out", results


FILES = [("saved_model", "saved_model"), ("tflite", "model.tflite"), ("onnx", "model.onnx")]


@pytest.mark.numeric
@pytest.mark.parametrize("fmt, file", FILES)
def test_each_format_takes_the_style_input_and_matches_keras(exported, fmt, file, bars):
    from kstyle.inference import stylize_array

    net, folder, results = exported
    assert all(result.passed for result in results), [result.line() for result in results]
    runner = Runner(fmt, str(folder / file))
    image = random_image(36, 45, seed=5)  # sides that need padding
    outputs = []
    for vector in VECTORS:
        output = runner(image, vector)
        reference = stylize_array(net, image, style=vector)
        bars.at_most(f"{fmt} {vector} vs Keras (levels)", max_level_diff(output, reference), 1)
        outputs.append(output)
    # the style input is read: each vector gives its own picture
    assert (
        max_level_diff(outputs[0], outputs[1]) > 20 and max_level_diff(outputs[0], outputs[2]) > 5
    )


def test_a_batch_takes_one_style_per_image(exported):
    """SavedModel and ONNX take a batch: each image its own style vector."""
    import onnxruntime
    import tensorflow as tf

    _, folder, _ = exported
    images = np.stack([random_image(32, 32, seed=s) for s in (1, 2)])
    styles = np.asarray([VECTORS[0], VECTORS[2]], np.float32)
    serve = tf.saved_model.load(str(folder / "saved_model")).signatures["serving_default"]
    both = serve(image=tf.constant(images), style=tf.constant(styles))["stylized"].numpy()
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"))
    onnx_both = session.run(None, {"image": images, "style": styles})[0]
    for index in range(2):
        alone = serve(image=tf.constant(images[index : index + 1]),
                      style=tf.constant(styles[index : index + 1]))["stylized"].numpy()  # fmt: skip
        np.testing.assert_array_equal(both[index], alone[0])
        assert max_level_diff(onnx_both[index], alone[0]) <= 1


def test_a_style_that_does_not_fit_the_file_is_a_one_line_error(exported, export_run, tmp_path):
    from kstyle.errors import KstyleError
    from kstyle.export import export

    _, folder, _ = exported
    image = random_image(16, 16, seed=1)
    for fmt, file in FILES:
        runner = Runner(fmt, str(folder / file))
        assert runner.styles == 3
        for style in (None, np.eye(2), np.ones(200)):
            with pytest.raises(KstyleError) as error:
                runner(image, style)
            assert "takes 3 style weights" in str(error.value)
            assert "\n" not in str(error.value)
    (result,) = export(str(export_run / "run"), str(tmp_path), formats=("tflite",),
                       verify_size=16, printer=lambda *_: None)  # fmt: skip
    one = Runner("tflite", result.path)
    assert one.styles is None
    with pytest.raises(KstyleError, match="takes no style vector, got 3 weight"):
        one(image, [1, 0, 0])


def test_the_sidecars_describe_the_style_input(exported):
    _, folder, _ = exported
    for sidecar, batch in (("model.tflite.json", 1), ("model.onnx.json", None),
                           ("saved_model/kstyle.json", None)):  # fmt: skip
        contract = json.loads((folder / sidecar).read_text())
        assert contract["input"]["name"] == "image"
        style = contract["style_input"]
        assert style["name"] == "style" and style["dtype"] == "float32"
        assert style["shape"] == [batch, 3]
        assert style["styles"] == ["style 0", "style 1", "style 2"]  # no run: no names recorded
        assert "style_vector" not in contract


def test_one_style_nets_export_without_a_style_input(export_run, tmp_path):
    from kstyle.export import export

    (result,) = export(str(export_run / "run"), str(tmp_path), formats=("onnx",), verify_size=16,
                       printer=lambda *_: None)  # fmt: skip
    assert result.passed
    contract = json.loads((tmp_path / "model.onnx.json").read_text())
    assert "style_input" not in contract
    import onnx

    assert [tensor.name for tensor in onnx.load(tmp_path / "model.onnx").graph.input] == ["image"]


def test_calibration_covers_every_style():
    images = [np.full((4, 4, 3), k, np.uint8) for k in range(5)]
    assert calibration_samples(images) == [(image, None) for image in images]
    three = calibration_samples(images, 3)
    assert [int(np.argmax(style)) for _, style in three] == [0, 1, 2, 0, 1]
    assert [int(image[0, 0, 0]) for image, _ in three] == [0, 1, 2, 3, 4]
    # fewer images than styles: images repeat until every style has one
    eight = calibration_samples(images[:2], 4)
    assert [int(np.argmax(style)) for _, style in eight] == [0, 1, 2, 3]
    assert [int(image[0, 0, 0]) for image, _ in eight] == [0, 1, 0, 1]
    assert all(np.sum(style) == 1 for _, style in eight)


@pytest.mark.numeric
def test_int8_calibration_over_every_style_keeps_a_loud_style(tmp_path, bars):
    """Style 2's scales are 4 times the others: calibrated on style 0 alone (the bug this
    guards against), its activations overflow their int8 ranges."""
    from kstyle.export import int8
    from kstyle.export.calibration import calibration_samples
    from kstyle.export.writer import tflite_bytes
    from kstyle.images import psnr
    from kstyle.inference import stylize_array
    from kstyle.style_tables import style_tables

    net = multi_net("tiny", styles=3, seed=0)
    for scale, _ in style_tables(net).values():
        kernel = scale.kernel.numpy()
        kernel[2] *= 4
        scale.kernel.assign(kernel)
    calibration = [random_image(48, 48, seed=s) for s in range(12)]
    image = random_image(48, 60, seed=40)

    def style_two_psnr(samples):
        int8.calibration_samples = samples
        try:
            path = tmp_path / "model_int8.tflite"
            path.write_bytes(tflite_bytes(net, "int8", calibration_images=calibration))
        finally:
            int8.calibration_samples = calibration_samples
        output = Runner("tflite", str(path))(image, [0, 0, 1])
        return psnr(output, stylize_array(net, image, style=[0, 0, 1]))

    every = style_two_psnr(calibration_samples)
    first_only = style_two_psnr(
        lambda images, n: [(i, np.eye(n, dtype=np.float32)[0]) for i in images]
    )
    bars.at_least(
        "int8 style 2: every style calibrated over style 0 only (dB)", every - first_only, 3
    )


def test_the_style_count_is_read_from_the_file_without_loading_it(exported, export_run, tmp_path):
    from kstyle.checks import archived_style_count

    _, folder, _ = exported
    assert archived_style_count(str(folder.parent / "model.keras")) == 3
    assert archived_style_count(str(export_run / "run" / "model.keras")) == 1
    (tmp_path / "bytes.keras").write_bytes(b"not a zip")
    assert archived_style_count(str(tmp_path / "bytes.keras")) == 1  # loading it says why
    assert archived_style_count(str(tmp_path / "missing.keras")) == 1
