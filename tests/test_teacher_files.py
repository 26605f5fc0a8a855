"""Teachers in exported formats (``kstyle.teacher_files``): each convention read from the file
and followed, and a one-line error for each bad teacher. The teachers are tiny known
functions (``teacher_models``), so every picture is compared value by value."""

import os
import sys

import numpy as np
import pytest
from teacher_models import (
    expected,
    onnx_teacher,
    sample_pictures,
    saved_model_teacher,
    tflite_teacher,
)

from kstyle.errors import KstyleError
from kstyle.files import folder_sha256
from kstyle.teacher_files import parse_teacher_inputs, teacher_format
from kstyle.teacher_runtimes import open_teacher

BUILDERS = {"onnx": onnx_teacher, "tflite": tflite_teacher, "saved_model": saved_model_teacher}
SUFFIXES = {"onnx": ".onnx", "tflite": ".tflite", "saved_model": ""}

# format, dtype, layout, white in the teacher's units, --teacher-range
CONVENTIONS = [
    ("onnx", "float32", "NCHW", 1.0, "0-1"),
    ("onnx", "uint8", "NHWC", 255.0, None),
    ("onnx", "float16", "NCHW", 255.0, "0-255"),
    ("onnx", "float32", "NHWC", 255.0, "0-255"),
    ("tflite", "float32", "NHWC", 255.0, "0-255"),
    ("tflite", "uint8", "NHWC", 255.0, None),
    ("tflite", "float32", "NCHW", 1.0, "0-1"),
    ("saved_model", "float32", "NHWC", 1.0, "0-1"),
    ("saved_model", "uint8", "NCHW", 255.0, None),
]


def build(tmp_path, fmt, name="teacher", **options):
    return BUILDERS[fmt](tmp_path / f"{name}{SUFFIXES[fmt]}", **options)


@pytest.mark.parametrize("fmt,dtype,layout,scale,value_range", CONVENTIONS)
def test_each_convention_is_read_from_the_file_and_followed(
    tmp_path, fmt, dtype, layout, scale, value_range
):
    path = build(tmp_path, fmt, dtype=dtype, layout=layout, scale=scale)
    assert teacher_format(path) == fmt
    teacher = open_teacher(path, value_range)
    assert (teacher.image.dtype, teacher.image.layout, teacher.image.scale) == (
        dtype, layout, scale,
    )  # fmt: skip
    assert teacher.side is None  # any size
    images = sample_pictures(count=2, height=16, width=24)
    pictures = teacher(images)
    assert pictures.dtype == np.float32 and pictures.shape == images.shape
    want = expected(images)
    if dtype == "uint8":  # the teacher rounds its own output
        want = np.round(want)
    tolerance = 0.13 if dtype == "float16" else 1e-3  # float16 keeps 11 bits of 255
    np.testing.assert_allclose(pictures, want, atol=tolerance)
    assert teacher.calls == 1 and teacher.seconds > 0


def test_outputs_are_clipped_to_the_picture_range(tmp_path):
    teacher = open_teacher(build(tmp_path, "onnx", extra=("gain", [None, 1, 1, 1])), "0-1",
                           {"gain": np.array([4.0])})  # fmt: skip
    images = sample_pictures()
    pictures = teacher(images)
    np.testing.assert_allclose(pictures, expected(images, 4.0), atol=1e-3)
    assert pictures.max() == 255.0 and (expected(images) * 4.0).max() > 255.0


def test_a_fixed_size_and_batch_run_image_by_image(tmp_path):
    path = build(tmp_path, "onnx", shape=[1, 3, 32, 32])
    teacher = open_teacher(path, "0-1")
    assert (teacher.side, teacher.image.batch) == (32, 1)
    images = sample_pictures(count=3, height=32, width=32, seed=1)
    np.testing.assert_allclose(teacher(images), expected(images), atol=1e-3)
    # a fixed batch of 2 for 3 images: the last batch is padded and the padding dropped
    pairs = open_teacher(build(tmp_path, "onnx", name="pairs", shape=[2, 3, None, None]), "0-1")
    np.testing.assert_allclose(pairs(images), expected(images), atol=1e-3)
    with pytest.raises(KstyleError, match=r"takes only 32×48 images; kstyle distills on square"):
        open_teacher(build(tmp_path, "onnx", name="oblong", shape=[1, 3, 32, 48]), "0-1")


@pytest.mark.parametrize("fmt", ["onnx", "tflite", "saved_model"])
def test_extra_inputs_take_the_given_values(tmp_path, fmt):
    shape = [1, 1, 1, 1] if fmt == "tflite" else [None, 1, 1, 1]
    path = build(tmp_path, fmt, extra=("gain", shape), scale=255.0)
    images = sample_pictures(count=2)
    for values, factor in (([0.5], 0.5), ([0.25], 0.25)):
        teacher = open_teacher(path, "0-255", parse_teacher_inputs([f"gain={values[0]}"]))
        np.testing.assert_allclose(teacher(images), expected(images, factor), atol=1e-3)
    np.save(tmp_path / "gain.npy", np.array([[[[0.75]]]]))
    from_file = parse_teacher_inputs([f"gain={tmp_path / 'gain.npy'}"])
    teacher = open_teacher(path, "0-255", from_file)
    np.testing.assert_allclose(teacher(images), expected(images, 0.75), atol=1e-3)


def test_teacher_input_values_parse_or_say_why():
    parsed = parse_teacher_inputs(["style=0, 0.5,1", "b=-2e-1"])
    assert list(parsed) == ["style", "b"]
    np.testing.assert_array_equal(parsed["style"], [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(parsed["b"], [-0.2])
    assert parse_teacher_inputs(None) == {}
    for bad, fragment in (
        (["style"], "takes NAME=VALUES"),
        (["=1"], "takes NAME=VALUES"),
        (["style="], "takes NAME=VALUES"),
        (["style=1,x"], "not a comma-separated list of numbers"),
        (["a=1", "a=2"], "a is given twice"),
        (["a=/nowhere/a.npy"], "cannot read /nowhere/a.npy"),
    ):
        with pytest.raises(KstyleError, match=fragment):
            parse_teacher_inputs(bad)


def test_a_range_that_does_not_fit_the_outputs_gives_a_hint(tmp_path):
    # outputs in [0, 1] whatever the input, as a network ending in a sigmoid gives
    unit = build(tmp_path, "onnx", name="unit", scale=1.0, extra=("gain", [None, 1, 1, 1]))
    squashed = {"gain": np.array([1 / 255])}
    assert "is --teacher-range 0-1 meant" in open_teacher(unit, "0-255", squashed).probe()["hint"]
    assert open_teacher(unit, "0-1", {"gain": np.array([1.0])}).probe()["hint"] is None
    levels = build(tmp_path, "onnx", name="levels", scale=255.0)
    assert "is --teacher-range 0-255 meant" in open_teacher(levels, "0-1").probe()["hint"]


def test_a_kstyle_sidecar_gives_the_range(tmp_path):
    path = build(tmp_path, "onnx", scale=255.0)
    with pytest.raises(KstyleError, match="give --teacher-range 0-1 or 0-255"):
        open_teacher(path)
    (tmp_path / "teacher.onnx.json").write_text('{"input": {"range": [0, 255]}}')
    images = sample_pictures()
    np.testing.assert_allclose(open_teacher(path)(images), expected(images), atol=1e-3)


def one_line(function, *fragments):
    with pytest.raises(KstyleError) as caught:
        function()
    message = str(caught.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_bad_teachers_are_one_line_errors(tmp_path):
    from onnx import TensorProto, helper

    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08not really a model")
    one_line(lambda: open_teacher(str(junk)), "junk.onnx", "not a model ONNX Runtime can load")
    fake = tmp_path / "fake.tflite"
    fake.write_bytes(b"\x00" * 64)
    one_line(lambda: open_teacher(str(fake)), "fake.tflite", "not a model LiteRT can load")
    empty = tmp_path / "empty_saved_model"
    empty.mkdir()
    (empty / "saved_model.pb").write_bytes(b"junk")
    one_line(lambda: open_teacher(str(empty)), "not a SavedModel TensorFlow can load")
    one_line(lambda: open_teacher(str(tmp_path / "missing.onnx")), "model not found")
    one_line(lambda: open_teacher(str(tmp_path)), "is not a SavedModel folder, a .tflite")
    # not an image model: a vector in, a vector out
    vector = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "vector",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 8])],
    )  # fmt: skip
    model = helper.make_model(vector, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    import onnx

    onnx.save(model, str(tmp_path / "vector.onnx"))
    one_line(lambda: open_teacher(str(tmp_path / "vector.onnx"), "0-1"), "not an image model",
             "x (float32 ?×8)")  # fmt: skip
    rgba = build(tmp_path, "onnx", name="rgba", channels=4)
    one_line(lambda: open_teacher(rgba, "0-1"), "not an RGB image model", "has 4 channels")
    halves = build(tmp_path, "onnx", name="halves", halve=True)
    one_line(lambda: open_teacher(halves, "0-1"), "returned stylized of shape (1, 3, 32, 32)",
             "1 image(s) of 64×64: not an image of the input's size")  # fmt: skip
    plain = build(tmp_path, "onnx", name="plain")
    one_line(lambda: open_teacher(plain), "float image", "give --teacher-range 0-1 or 0-255")
    one_line(lambda: open_teacher(plain, "0-1", {"style": np.ones(2)}), "has no input 'style'",
             "it takes no extra inputs")  # fmt: skip
    extra = build(tmp_path, "onnx", name="extra", extra=("gain", [None, 1, 1, 1]))
    one_line(lambda: open_teacher(extra, "0-1"), "also takes gain (float32 ?×1×1×1)",
             "--teacher-input gain=")  # fmt: skip
    one_line(lambda: open_teacher(extra, "0-1", {"gain": np.ones(3)}),
             "3 value(s) do not fill gain")  # fmt: skip


def test_a_missing_runtime_names_the_extra(tmp_path, monkeypatch):
    path = build(tmp_path, "onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    one_line(lambda: open_teacher(path, "0-1"), "'onnxruntime'", "pip install", "[export]")
    tflite = build(tmp_path, "tflite")
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    one_line(lambda: open_teacher(tflite, "0-255"), "ai_edge_litert", "pip install")


def test_a_folder_hash_changes_with_any_file(tmp_path):
    folder = tmp_path / "model"
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"graph")
    (folder / "variables" / "v.data").write_bytes(b"weights")
    first = folder_sha256(str(folder))
    assert folder_sha256(str(folder)) == first and len(first) == 64
    (folder / "variables" / "v.data").write_bytes(b"weightz")
    changed = folder_sha256(str(folder))
    os.rename(folder / "variables" / "v.data", folder / "variables" / "w.data")
    renamed = folder_sha256(str(folder))
    (folder / "extra").write_bytes(b"")
    added = folder_sha256(str(folder))
    assert len({first, changed, renamed, added}) == 4


def test_the_log_line_says_what_was_read(tmp_path):
    from kstyle.teacher_files import shown_values

    teacher = open_teacher(build(tmp_path, "onnx", extra=("gain", [None, 1, 1, 1])), "0-1",
                           {"gain": np.array([0.5])})  # fmt: skip
    assert teacher.describe() == "ONNX teacher, float32 NCHW in [0, 1], any size, gain = [0.5]"
    assert shown_values(np.eye(26)[19]) == "26 values, non-zero: [19] 1"
    assert shown_values(np.zeros(9)) == "9 values, non-zero: none"
    assert shown_values(np.arange(100.0)) == "100 values from 0 to 99"


def test_external_weights_are_found_and_scalar_extras_taken(tmp_path):
    import onnx

    from kstyle.teacher_files import external_data_files

    path = build(tmp_path, "onnx")
    assert external_data_files(path) == []
    model = onnx.load(path)
    onnx.save_model(model, str(tmp_path / "big.onnx"), save_as_external_data=True,
                    location="big.data", size_threshold=0)  # fmt: skip
    assert external_data_files(str(tmp_path / "big.onnx")) == [str(tmp_path / "big.data")]
    images = sample_pictures()
    np.testing.assert_allclose(open_teacher(str(tmp_path / "big.onnx"), "0-1")(images),
                               expected(images), atol=1e-3)  # fmt: skip
    # an extra input of rank 0 (a strength, say) takes one value
    scalar = open_teacher(build(tmp_path, "onnx", name="scalar", extra=("gain", [])), "0-1",
                          {"gain": np.array([0.5])})  # fmt: skip
    np.testing.assert_allclose(scalar(images), expected(images, 0.5), atol=1e-3)
