"""The serving model (uint8 in and out, any size) and its plain conversions reproduce the
Keras model on every variant net."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
from conftest import VARIANT_NORMS, build_variant, max_level_diff, random_image

from kstyle import internals
from kstyle.export import Runner, export_model, serving_archive, tflite_bytes
from kstyle.export.serving import ChannelEpsilonInstanceNorm, NearestUpsample2x
from kstyle.inference import stylize_array
from kstyle.transform_net import pixels_output

# instance norms per variant net: 3 down, 2 per residual block, 2 up


def _kind(request):
    return request.node.callspec.params["variant_net"]


def _inner(serving):
    """The transform net inside a serving model (between the padding and the crop)."""
    (inner,) = [layer for layer in serving.layers if isinstance(layer, keras.Model)]
    return inner


@pytest.mark.numeric
def test_serving_model_matches_stylize_array(variant_net, request, bars):
    serving = export_model(variant_net)
    kinds = [type(layer) for layer in _inner(serving).layers]
    assert kinds.count(ChannelEpsilonInstanceNorm) == VARIANT_NORMS[_kind(request)]
    assert keras.layers.GroupNormalization not in kinds
    for height, width in ((33, 47), (16, 13)):  # odd sizes (16: live_reflect mirrors 2 rows at 1/8)
        image = random_image(height, width, seed=height)
        output = serving(image[None]).numpy()[0]
        assert output.dtype == np.uint8 and output.shape == image.shape
        # 1 level: float rounding at a .5 boundary (conftest.max_level_diff)
        difference = max_level_diff(output, stylize_array(variant_net, image))
        bars.at_most("serving model vs Keras, variant nets (levels)", difference, 1)


@pytest.mark.numeric
def test_fp32_tflite_matches_stylize_array_with_four_dimensional_norms(
    variant_net, request, tmp_path, bars
):
    """The instance norms reach TFLite as 4-D moments (XNNPACK runs them), not through
    GroupNormalization's dynamic 5-D reshapes, which split XNNPACK's graph at every norm."""
    flatbuffer = tflite_bytes(variant_net, "none")
    interpreter = Interpreter(model_content=flatbuffer)
    tensors = {detail["index"]: detail for detail in interpreter.get_tensor_details()}
    ops = internals.tflite_ops(interpreter)
    means = [op for op in ops if op["op_name"] == "MEAN"]
    assert len(means) == 2 * VARIANT_NORMS[_kind(request)]  # a mean and a variance per norm
    assert all(len(tensors[op["inputs"][0]]["shape_signature"]) == 4 for op in means)
    assert sum(op["op_name"] == "RESHAPE" for op in ops) <= 1  # the input padding's only
    path = tmp_path / "model.tflite"
    path.write_bytes(flatbuffer)
    runner = Runner("tflite", str(path))
    for height, width in ((32, 40), (21, 30)):
        image = random_image(height, width, seed=width)
        output = runner(image)
        assert output.shape == image.shape
        # 1 level: float rounding at a .5 boundary (conftest.max_level_diff)
        difference = max_level_diff(output, stylize_array(variant_net, image))
        bars.at_most("fp32 TFLite vs Keras, variant nets (levels)", difference, 1)


@pytest.mark.numeric
def test_fixed_input_size(export_net, tmp_path, bars):
    path = tmp_path / "fixed.tflite"
    path.write_bytes(tflite_bytes(export_net, "none", input_size=32))
    detail = Interpreter(model_path=str(path)).get_input_details()[0]
    assert list(detail["shape"]) == [1, 32, 32, 3] and -1 not in detail["shape_signature"]
    image = random_image(32, 32, seed=3)
    output = Runner("tflite", str(path))(image)
    # 1 level: float rounding at a .5 boundary (conftest.max_level_diff)
    difference = max_level_diff(output, stylize_array(export_net, image))
    bars.at_most("fp32 TFLite, fixed 32 px input, vs Keras (levels)", difference, 1)


@pytest.mark.numeric
def test_a_fixed_height_and_width_leave_no_dynamic_shapes(tmp_path, bars):
    """A fixed H x W (``--input-size 40x56``) of the live preset: no shape arithmetic, pad or
    crop in the graph (dynamic shapes keep LiteRT's XNNPACK off everything after them), and
    the same pixels as Keras."""
    net = build_variant("live")
    path = tmp_path / "fixed.tflite"
    path.write_bytes(tflite_bytes(net, "none", input_size=(40, 56)))
    interpreter = Interpreter(model_path=str(path))
    detail = interpreter.get_input_details()[0]
    assert list(detail["shape_signature"]) == [1, 40, 56, 3]
    ops = {op["op_name"] for op in internals.tflite_ops(interpreter)}
    assert not ops & {"SHAPE", "MIRROR_PAD", "PAD", "STRIDED_SLICE", "FLOOR_MOD"}, ops
    assert "DEPTH_TO_SPACE" in ops and "TRANSPOSE" not in ops  # the runtime's own shuffle
    image = random_image(40, 56, seed=3)
    difference = max_level_diff(Runner("tflite", str(path))(image), stylize_array(net, image))
    bars.at_most("fp32 TFLite, fixed 40x56 input, live, vs Keras (levels)", difference, 1)


def test_saved_model_loads_where_kstyle_cannot_be_imported(export_net, tmp_path):
    path = serving_archive(export_net, str(tmp_path / "sm"))
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
    # 1 level: float rounding at a .5 boundary (conftest.max_level_diff)
    assert max_level_diff(output, stylize_array(export_net, image)) <= 1


@pytest.mark.parametrize("upsampling", ["bilinear", "nearest"])
def test_only_layers_it_reproduces_are_substituted(upsampling):
    """A group norm with fewer groups than channels stays a GroupNormalization, and only a
    nearest x2 upsampling becomes NearestUpsample2x: the serving model is the same function."""
    keras.utils.set_random_seed(4)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same")(inputs)
    x = keras.layers.GroupNormalization(groups=2, name="group_norm")(x)
    x = keras.layers.GroupNormalization(groups=-1, name="instance_norm")(x)
    x = keras.layers.UpSampling2D(2, interpolation=upsampling)(x)
    x = keras.layers.Conv2D(3, 5, padding="same")(x)
    net = keras.Model(inputs, pixels_output(x))
    for layer in net.layers:  # non-trivial norm parameters, so a wrong norm shows
        if isinstance(layer, keras.layers.GroupNormalization):
            gamma, beta = layer.get_weights()
            layer.set_weights([gamma * 3.0, beta + np.linspace(-1, 1, beta.size)])
    inner = _inner(export_model(net))
    kinds = {layer.name: type(layer) for layer in inner.layers}
    assert kinds["group_norm"] is keras.layers.GroupNormalization
    assert kinds["instance_norm"] is ChannelEpsilonInstanceNorm
    assert (NearestUpsample2x in kinds.values()) == (upsampling == "nearest")
    image = random_image(32, 36, seed=2)
    expected = np.clip(np.round(net(image[None].astype("float32")).numpy()[0]), 0, 255)
    output = export_model(net)(image[None]).numpy()[0]
    # 1 level: float rounding at a .5 boundary (conftest.max_level_diff)
    assert max_level_diff(output, expected.astype(np.uint8)) <= 1
