"""Full-integer TFLite: the graph rewrites find what they change by structure (on every variant
net), keep the float function, and the int8 file meets its bar. The int8 study's alternatives
(bench/int8_variants.py) are checked here too: the study's numbers rest on them."""

import logging
import os
import sys

import keras
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter
from conftest import ROOT, VARIANT_NORMS, build_variant, max_level_diff, random_image, renamed
from PIL import Image

from kstyle import internals
from kstyle.errors import KstyleError
from kstyle.export import Runner, export_model, tflite_bytes, verify
from kstyle.export.calibration import calibration_samples, depthwise_pointwise, output_ranges
from kstyle.export.int8 import (
    TANH_CLIP,
    ClippedTanh,
    ClippedTanhToPixels,
    equalized_export_model,
    int8_flatbuffer,
)
from kstyle.export.serving import ChannelEpsilonInstanceNorm
from kstyle.export.verify import held_out_image
from kstyle.export.writer import load_calibration_images
from kstyle.graph import Graph
from kstyle.images import psnr
from kstyle.inference import stylize_array
from kstyle.transform_net import TanhToPixels, load_transform_net, pixels_output

sys.path.insert(0, os.path.join(ROOT, "bench"))
from int8_stream import residual_stream  # noqa: E402  (bench/)
from int8_variants import variant_flatbuffer, variant_model  # noqa: E402  (bench/)

RESIDUAL_BLOCKS = {"seed": 5, "renamed": 5, "slim3": 3, "reflect": 5, "tiny": 3, "tiny_reflect": 3}
# live's skip add joins the 1/4-resolution stem to the up path: its adds carry tensors of two
# channel counts, which is no single stream to rescale
RESIDUAL_BLOCKS.update(live=None, live_reflect=None)


def _inner(serving):
    (inner,) = [layer for layer in serving.layers if isinstance(layer, keras.Model)]
    return inner


def save_photo_crops(folder, count, smallest, seed):
    """Saves ``count`` random square crops (``smallest`` to all of the shorter side) of
    matplotlib's second sample photo into ``folder`` (the held-out portrait is the first)."""
    from kstyle.demo import sample_photo_paths

    with Image.open(sample_photo_paths()[1]) as photo:
        photo = photo.convert("RGB")
    width, height = photo.size
    rng = np.random.default_rng(seed)
    for index in range(count):
        side = int(min(width, height) * rng.uniform(smallest, 1.0))
        left, top = rng.integers(0, width - side + 1), rng.integers(0, height - side + 1)
        photo.crop((left, top, left + side, top + side)).save(folder / f"photo{index:02d}.png")


@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    """Representative photos: crops of matplotlib's second sample photo (the held-out portrait
    is the first) and a few smooth random images, loaded at 32 x 32."""
    folder = tmp_path_factory.mktemp("calibration")
    save_photo_crops(folder, count=12, smallest=0.3, seed=0)
    for index in range(4):
        Image.fromarray(random_image(40, 40, seed=index)).save(folder / f"random{index}.png")
    return load_calibration_images(str(folder), count=16, size=32)


@pytest.mark.numeric
@pytest.mark.parametrize("names", ["trained", "renamed"])
def test_int8_is_integer_and_meets_its_bar(export_net, calibration, tmp_path, names, bars):
    """The trained seed net, and the same net with every layer renamed: the rewrites find the
    norms' convolutions and the output layer by structure."""
    net = export_net if names == "trained" else renamed(export_net)
    path = tmp_path / "model_int8.tflite"
    path.write_bytes(tflite_bytes(net, "int8", calibration_images=calibration))
    interpreter = Interpreter(model_path=str(path))
    tensors = {d["index"]: d for d in interpreter.get_tensor_details()}
    convs = [op for op in internals.tflite_ops(interpreter) if op["op_name"] == "CONV_2D"]
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
    # the export's own 30 dB int8 bar; measured 37.2-41.4 dB here and 32.5-35.7 dB on the
    # held-out portrait below, over train seeds 0-2 and CPU paths
    # (docs/performance.md#numeric-bars); at 32 px the equalization is worth only 2-3 dB:
    # test_int8_meets_its_bar_at_256 checks it
    bars.at_least(
        "int8 PSNR, seed net, random 32x36 (dB)", psnr(output, stylize_array(net, image)), 30.0
    )
    result = verify("tflite", str(path), net, held_out_image(32, 32), quantize="int8")
    bars.at_least("int8 PSNR, seed net, held-out 32 px (dB)", result.psnr_db, 30.0)
    assert result.passed, result.line()


@pytest.mark.numeric
def test_int8_tiny_preset(tiny_run, calibration, tmp_path, caplog, bars):
    """The tiny preset's depthwise and 1x1 convolutions are all int8; every norm's 1x1
    convolution is equalized (none is logged as left out), and the file stays near the
    export's 30 dB bar on the held-out portrait at 32 px.

    The bar is set from measurement (bench/bar_margins.py, docs/performance.md#numeric-bars):
    this 6-step net's weights depend on the training kernels (Adam's first steps move each
    weight by about the learning rate, whatever the sign of a near-zero gradient), and its int8
    PSNR measured 28.8-31.1 dB over train seeds 0-2 and the CPU paths tried (oneDNN AVX-512,
    AVX2, AVX512_CORE, no oneDNN; LiteRT on 1 and 2 threads), and 29.4 dB on the Intel Xeon of
    issue 20, under the old 29.5 dB bar: 28 dB keeps 0.8 dB under the lowest. Without the
    equalization before the norms these nets measured 25.5-29.6 dB, so the bar catches that on
    two of three (test_int8_meets_its_bar_at_256 checks the equalization's gain on one net,
    which catches it on all); without the depthwise balance, 27.9-29.7 dB, 0.8-1.8 dB under
    the same net with it but inside the nets' spread, so the balance is checked directly
    (test_each_depthwise_output_is_balanced_to_the_square_root_of_its_extent)."""
    net = load_transform_net(str(tiny_run / "run"))
    with caplog.at_level(logging.WARNING, logger="kstyle.export.int8"):
        flatbuffer = tflite_bytes(net, "int8", calibration_images=calibration)
    assert "not equalized" not in caplog.text
    # calibration is deterministic (no sampling, no shuffle; a folder's images in sorted
    # order): the same net and images give the same file, byte for byte
    assert tflite_bytes(net, "int8", calibration_images=calibration) == flatbuffer
    interpreter = Interpreter(model_content=flatbuffer)
    tensors = {d["index"]: d for d in interpreter.get_tensor_details()}
    ops = internals.tflite_ops(interpreter)
    convs = [op for op in ops if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    assert len(convs) == 2 + 2 * 10  # 7x7 in and out; a depthwise and a 1x1 per 3x3 conv
    for op in convs:
        image_in, kernel = (tensors[index] for index in op["inputs"][:2])
        assert kernel["dtype"] == np.int8 and image_in["dtype"] == np.int8, kernel["name"]
    path = tmp_path / "tiny_int8.tflite"
    path.write_bytes(flatbuffer)
    image = held_out_image(32, 32)
    quality = psnr(Runner("tflite", str(path))(image), stylize_array(net, image))
    bars.at_least("int8 PSNR, tiny preset, held-out 32 px (dB)", quality, 28.0)


@pytest.mark.numeric
def test_int8_live_preset(live_run, calibration, tmp_path, caplog, bars):
    """The live preset at a fixed 32x32 input: every convolution int8, the pixel shuffle one
    DEPTH_TO_SPACE, every norm but the stem's equalized (the stem reads the image: left out by
    design, with no warning), and over the export's 30 dB bar on the held-out portrait."""
    net = load_transform_net(str(live_run / "run"))
    with caplog.at_level(logging.WARNING, logger="kstyle.export.int8"):
        flatbuffer = tflite_bytes(net, "int8", (32, 32), calibration_images=calibration)
    assert "not equalized" not in caplog.text
    interpreter = Interpreter(model_content=flatbuffer)
    tensors = {d["index"]: d for d in interpreter.get_tensor_details()}
    ops = internals.tflite_ops(interpreter)
    convs = [op for op in ops if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    assert len(convs) == 2 + 2 * 10  # stem and out; a depthwise and a 1x1 per separable conv
    for op in convs:
        image_in, kernel = (tensors[index] for index in op["inputs"][:2])
        assert kernel["dtype"] == np.int8 and image_in["dtype"] == np.int8, kernel["name"]
    assert [op["op_name"] for op in ops].count("DEPTH_TO_SPACE") == 1
    path = tmp_path / "live_int8.tflite"
    path.write_bytes(flatbuffer)
    image = held_out_image(32, 32)
    quality = psnr(Runner("tflite", str(path))(image), stylize_array(net, image))
    bars.at_least("int8 PSNR, live preset, held-out 32 px (dB)", quality, 30.0)


@pytest.mark.numeric
def test_equalized_export_model_is_the_same_function(variant_net, request, bars):
    """Without clipping the norms' inputs, rescaling the convolutions before the norms (and the
    residual stream) changes nothing but float rounding: within 1 level before quantization."""
    kind = request.node.callspec.params["variant_net"]
    stream = residual_stream(Graph(variant_net))
    blocks = RESIDUAL_BLOCKS[kind]
    # the adds and down3's ReLU carry the stream; down3's norm and each block's second norm
    # write it; each block's first convolution and up1's read it
    if blocks is None:
        assert stream is None
    else:
        assert [len(stream.tensors), len(stream.writers), len(stream.readers)] == [blocks + 1] * 3
    images = [random_image(32, 32, seed=index) for index in range(3)]
    image = random_image(28, 36, seed=5)
    reference = stylize_array(variant_net, image)
    gammas = {
        layer.name: layer.get_weights()[0]
        for layer in variant_net.layers
        if isinstance(layer, keras.layers.GroupNormalization)
    }
    for exponent in (0.0, 1.0):
        model = variant_model(
            variant_net, images, batch_size=None, stream_exponent=exponent, by="mixed"
        )
        inner = _inner(model)
        norms = [layer for layer in inner.layers if isinstance(layer, ChannelEpsilonInstanceNorm)]
        assert len(norms) == VARIANT_NORMS[kind]
        # every norm equalized but the first (its convolution reads the image: by design)
        assert [len(set(norm.epsilons)) > 1 for norm in norms] == [False] + [True] * (
            len(norms) - 1
        )
        kinds = [type(layer) for layer in inner.layers]
        # the output's tanh clips its input (found by structure, also in the renamed net)
        assert kinds.count(ClippedTanh) == 1 and keras.layers.Activation not in kinds
        rescaled = [
            norm.name for norm in norms if not np.allclose(norm.get_weights()[0], gammas[norm.name])
        ]
        assert len(rescaled) == (blocks + 1 if exponent and blocks else 0)
        # 1 level: float rounding at a .5 boundary (conftest.max_level_diff)
        difference = max_level_diff(model(image[None]).numpy()[0], reference)
        bars.at_most("equalized vs Keras, float (levels)", difference, 1)


def _depthwise_extents(graph, images):
    """Each balanceable depthwise convolution's per-channel extent (largest magnitude) over
    ``images``, in graph order."""
    outputs = [node.output for node, _ in depthwise_pointwise(graph)]
    lows, highs, *_ = output_ranges(graph, outputs, calibration_samples(images))
    return [np.maximum(np.abs(low), np.abs(high)) for low, high in zip(lows, highs, strict=True)]


@pytest.mark.numeric
@pytest.mark.parametrize("kind", ["tiny", "tiny_reflect", "live"])
def test_each_depthwise_output_is_balanced_to_the_square_root_of_its_extent(kind, bars):
    """The balance of kstyle.export.calibration multiplies depthwise output channel c by
    ``extent_c ** -0.5`` (and the 1x1 kernel's input channel c by the inverse), so on the
    calibration images every channel's extent becomes the square root of what it was. Checked
    here directly: the int8 PSNR cannot show it (bench/bar_margins.py: the balance moves the
    tiny preset's PSNR by less than the 6-step net varies between CPU paths)."""
    net = build_variant(kind)
    images = [random_image(32, 32, seed=index) for index in range(3)]
    # "mixed": no clip before the norms, so the depthwise inputs are the net's own
    model = variant_model(net, images, batch_size=None, by="mixed")
    before = _depthwise_extents(Graph(net), images)
    after = _depthwise_extents(Graph(_inner(model)), images)
    assert len(before) == len(after) == 10  # a depthwise/1x1 pair per 3x3 convolution
    for unbalanced, balanced in zip(before, after, strict=True):
        # extents far from 1, so an unbalanced output (or another exponent) fails the check
        assert np.abs(np.log(unbalanced)).max() > 0.3, unbalanced
        # float rounding only (the same images through a rescaled, equal function): at most
        # 0.3 % of the tolerance on every CPU path; the balance off uses 600 times it
        quantity = "balanced depthwise extents vs sqrt(unbalanced)"
        bars.close(quantity, balanced, np.sqrt(unbalanced), rtol=1e-3, atol=1e-6)


def _small_net(kind):
    """1x1 conv -> conv -> norm -> ReLU -> conv -> output, with one thing the int8 rewrites
    cannot use (or ``tanh_to_pixels``: the older output layer). The 1x1 conv reads the image,
    so that the norm's conv is one the rewrites would otherwise equalize."""
    keras.utils.set_random_seed(5)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 1, name="image_conv")(inputs)
    x = keras.layers.Conv2D(6, 3, padding="same", name="first_conv")(x)
    if kind == "relu_before_norm":
        x = keras.layers.ReLU()(x)
    groups = 2 if kind == "group_norm" else -1
    y = keras.layers.GroupNormalization(
        groups=groups, epsilon=1e-5, center=kind != "scale_only", name="the_norm"
    )(x)
    if kind == "conv_read_twice":
        y = keras.layers.Add(name="the_add")([x, y])  # the conv's output also reaches the add
    x = keras.layers.Conv2D(3, 3, padding="same")(keras.layers.ReLU()(y))
    if kind == "no_tanh":
        outputs = keras.layers.Rescaling(255.0)(keras.layers.Activation("sigmoid")(x))
    elif kind == "tanh_to_pixels":
        outputs = TanhToPixels()(x)
    else:
        outputs = pixels_output(x)
    return keras.Model(inputs, outputs)


@pytest.mark.numeric
@pytest.mark.parametrize(
    "kind, message",
    [
        ("relu_before_norm", "instance norm 'the_norm' is not equalized: its input comes from"),
        ("conv_read_twice", "instance norm 'the_norm' is not equalized: the output of"),
        ("conv_read_twice", "residual stream is not rescaled: add 'the_add' reads 'first_conv'"),
        ("scale_only", "instance norm 'the_norm' is not equalized: the norm has a learned scale"),
        ("no_tanh", "has no tanh output layer, so no pre-tanh clip"),
    ],
)
def test_what_the_rewrites_cannot_use_is_logged_and_left_alone(kind, message, caplog, bars):
    net = _small_net(kind)
    images = [random_image(16, 16, seed=index) for index in range(2)]
    with caplog.at_level(logging.WARNING, logger="kstyle.export.int8"):
        model = variant_model(net, images, batch_size=None, stream_exponent=1.0)
    assert any(message in record.getMessage() for record in caplog.records), caplog.text
    image = random_image(20, 24, seed=1)
    reference = export_model(net)(image[None]).numpy()[0]
    # 1 level: float rounding at a .5 boundary (conftest.max_level_diff)
    difference = max_level_diff(model(image[None]).numpy()[0], reference)
    bars.at_most("equalized vs serving model, small net (levels)", difference, 1)


@pytest.mark.numeric
@pytest.mark.parametrize(
    "kind, clipped, pixels",
    [("built_in", ClippedTanh, False), ("tanh_to_pixels", ClippedTanhToPixels, True)],
)
def test_the_output_tanh_of_new_and_older_nets_is_clipped(kind, clipped, pixels, caplog, bars):
    net = _small_net(kind)
    images = [random_image(16, 16, seed=index) for index in range(2)]
    with caplog.at_level(logging.WARNING, logger="kstyle.export.int8"):
        model = equalized_export_model(net, images, batch_size=None)
    assert "pre-tanh clip" not in caplog.text
    (layer,) = [layer for layer in _inner(model).layers if isinstance(layer, clipped)]
    assert type(layer) is clipped and layer.clip == TANH_CLIP
    ends = np.tanh([-TANH_CLIP, TANH_CLIP])
    expected = 127.5 * (ends + 1) if pixels else ends
    np.testing.assert_allclose(layer(np.array([[-50.0, 50.0]], "float32"))[0], expected, atol=1e-4)
    image = random_image(20, 24, seed=1)
    reference = export_model(net)(image[None]).numpy()[0]
    # 1 level: float rounding at a .5 boundary (conftest.max_level_diff)
    difference = max_level_diff(model(image[None]).numpy()[0], reference)
    bars.at_most("equalized vs serving model, small net (levels)", difference, 1)


def test_a_group_norm_that_is_not_instance_norm_is_refused():
    images = [random_image(16, 16, seed=0)]
    with pytest.raises(KstyleError, match="'the_norm' is a GroupNormalization with 2 groups"):
        equalized_export_model(_small_net("group_norm"), images)
    with pytest.raises(KstyleError, match="unknown equalization 'median'"):
        variant_model(_small_net("no_tanh"), images, by="median")


@pytest.mark.numeric
def test_the_study_s_defaults_are_kstyle_s_recipe():
    """bench/int8_variants.py with its defaults writes kstyle's own int8 file, byte for byte
    (the study's figures compare against the recipe export.py ships)."""
    net = build_variant("tiny")
    images = [random_image(16, 16, seed=index) for index in range(2)]
    assert variant_flatbuffer(net, images) == int8_flatbuffer(net, images)


def test_float_convs_stay_float():
    """``float_convs`` (a study option) re-quantizes through the debugger's public ``options``:
    the named convolution keeps float weights, every other one is int8."""
    net = build_variant("slim3")
    images = [random_image(16, 16, seed=index) for index in range(2)]
    interpreter = Interpreter(
        model_content=variant_flatbuffer(net, images, float_convs=["out_conv"])
    )
    tensors = {d["index"]: d for d in interpreter.get_tensor_details()}
    kernels = [
        tensors[op["inputs"][1]]
        for op in internals.tflite_ops(interpreter)
        if op["op_name"] == "CONV_2D"
    ]
    floats = [kernel["shape"][0] for kernel in kernels if kernel["dtype"] == np.float32]
    assert len(kernels) == 12 and floats == [3]  # out_conv: 3 output channels


@pytest.mark.numeric
def test_int8_meets_its_bar_at_256(export_net, tmp_path, bars):
    """The issue's size: calibrated on 256² crops, checked on the held-out portrait at 256²,
    against the same conversion without the equalization before the norms.

    Bars from measurement (bench/bar_margins.py, docs/performance.md#numeric-bars): this
    6-step net's int8 PSNR measured 28.7-31.9 dB over train seeds 0-2 and CPU paths (20-step
    nets with 100 calibration images measure 34.5-35.4 dB, docs/int8.md), so the absolute bar
    is 27.5 dB, not the export's 30. The equalization gained 2.4-3.7 dB on those nets
    (no equalization: 26.4-28.5 dB), so a gain under 1.5 dB fails: that catches the
    equalization switched off or broken on every net measured, which the absolute bar cannot."""
    folder = tmp_path / "calibration"
    folder.mkdir()
    save_photo_crops(folder, count=8, smallest=0.4, seed=1)
    calibration = load_calibration_images(str(folder), count=8, size=256)
    image = held_out_image(256, 256)
    reference = stylize_array(export_net, image)
    flatbuffers = {
        "recipe": tflite_bytes(export_net, "int8", calibration_images=calibration),
        "unequalized": variant_flatbuffer(export_net, calibration, equalize=False),
    }
    quality = {}
    for name, flatbuffer in flatbuffers.items():
        path = tmp_path / f"{name}.tflite"
        path.write_bytes(flatbuffer)
        quality[name] = psnr(Runner("tflite", str(path))(image), reference)
    bars.at_least("int8 PSNR, seed net, held-out 256 px (dB)", quality["recipe"], 27.5)
    gain = quality["recipe"] - quality["unequalized"]
    bars.at_least("int8 PSNR gain of the equalization, seed net, 256 px (dB)", gain, 1.5)
