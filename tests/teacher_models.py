"""Small teachers in exported formats whose pictures are known exactly, for the tests of
``kstyle.teacher_files`` and ``kstyle distill --teacher FILE``.

Each computes, in its own units (white = ``scale``): out_c = x_c · GAINS[c] + OFFSET · scale,
optionally times an extra input, so that a wrong layout, channel order, range or dtype
shows in the values. :func:`expected` is the same in kstyle's units.
"""

import numpy as np

GAINS = np.array([0.5, 1.0, 0.25], np.float32)  # per channel: a channel mix-up shows
OFFSET = 0.125  # of white: a range mix-up shows


def expected(images, factor=1.0):
    """The pictures every test teacher returns for kstyle pictures ``images`` (B, H, W, 3) in
    [0, 255], times ``factor`` (the extra input's value), clipped to [0, 255]."""
    values = (np.asarray(images, np.float32) * GAINS + OFFSET * 255.0) * factor
    return np.clip(values, 0.0, 255.0)


def sample_pictures(count=2, height=16, width=24, seed=0):
    """kstyle pictures whose every value is a multiple of 4, so that the test teachers'
    uint8 results are exact."""
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 64, (count, height, width, 3)) * 4).astype(np.float32)


def onnx_teacher(path, dtype="float32", layout="NCHW", scale=1.0, shape=None, extra=None,
                 halve=False, channels=3):  # fmt: skip
    """Writes an ONNX test teacher to ``path``. ``shape``: the image input's (None entries
    free; default all free but the channels); ``extra``: ``(name, shape)`` of an extra
    float32 input that multiplies the picture; ``halve``: a 2×2 max pool after it, so that
    the output is half the input's size; ``channels``: the image input's channel count."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    element = {"float32": TensorProto.FLOAT, "uint8": TensorProto.UINT8,
               "float16": TensorProto.FLOAT16}[dtype]  # fmt: skip
    channel_axis = 1 if layout == "NCHW" else 3
    if shape is None:
        shape = [None, channels, None, None] if layout == "NCHW" else [None, None, None, channels]
    dims = [name if size is None else size for name, size in zip("bhwc", shape, strict=True)]
    broadcast = [1, 1, 1, 1]
    broadcast[channel_axis] = channels
    gains = numpy_helper.from_array(np.resize(GAINS, channels).reshape(broadcast), "gains")
    offset = numpy_helper.from_array(np.array(OFFSET * scale, np.float32), "offset")
    nodes = [
        helper.make_node("Cast", ["image"], ["real"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["real", "gains"], ["scaled"]),
        helper.make_node("Add", ["scaled", "offset"], ["picture"]),
    ]
    inputs = [helper.make_tensor_value_info("image", element, dims)]
    last = "picture"
    if extra is not None:
        name, extra_shape = extra
        inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, extra_shape))
        nodes.append(helper.make_node("Mul", [last, name], ["weighted"]))
        last = "weighted"
    if halve:
        if layout == "NHWC":
            raise ValueError("halve needs NCHW")
        nodes.append(helper.make_node("MaxPool", [last], ["pooled"], kernel_shape=[2, 2],
                                      strides=[2, 2]))  # fmt: skip
        last = "pooled"
    if dtype == "uint8":
        nodes.append(helper.make_node("Clip", [last, "low", "high"], ["clipped"]))
        nodes.append(helper.make_node("Round", ["clipped"], ["rounded"]))
        nodes.append(helper.make_node("Cast", ["rounded"], ["stylized"], to=TensorProto.UINT8))
    else:
        nodes.append(helper.make_node("Cast", [last], ["stylized"], to=element))
    bounds = [
        numpy_helper.from_array(np.array(v, np.float32), n)
        for n, v in (("low", 0.0), ("high", 255.0))
    ]
    output = helper.make_tensor_value_info("stylized", element, None)
    graph = helper.make_graph(nodes, "teacher", inputs, [output], [gains, offset, *bounds])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


def _tf_teacher(dtype, layout, scale, shape, extra):
    """The test teacher as a ``tf.function`` with its input signature (the output: a dict
    with ``stylized``)."""
    import tensorflow as tf

    broadcast = [1, 3, 1, 1] if layout == "NCHW" else [1, 1, 1, 3]
    gains = tf.constant(GAINS.reshape(broadcast))
    specs = [tf.TensorSpec(shape, tf.as_dtype(dtype), name="image")]
    if extra is not None:
        specs.append(tf.TensorSpec(extra[1], tf.float32, name=extra[0]))

    @tf.function(input_signature=specs)
    def teacher(image, *weights):
        picture = tf.cast(image, tf.float32) * gains + OFFSET * scale
        if weights:
            picture = picture * weights[0]
        if dtype == "uint8":
            picture = tf.cast(tf.round(tf.clip_by_value(picture, 0.0, 255.0)), tf.uint8)
        return {"stylized": tf.cast(picture, tf.as_dtype(dtype))}

    return teacher


def tflite_teacher(path, dtype="float32", layout="NHWC", scale=255.0, shape=None, extra=None):
    """Writes a TFLite test teacher to ``path`` (arguments as :func:`onnx_teacher`'s; the
    extra input, when there is one, has a fixed shape)."""
    import tensorflow as tf

    shape = shape or ([1, 3, None, None] if layout == "NCHW" else [1, None, None, 3])
    teacher = _tf_teacher(dtype, layout, scale, shape, extra)
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [teacher.get_concrete_function()], teacher
    )
    with open(path, "wb") as file:
        file.write(converter.convert())
    return str(path)


def saved_model_teacher(path, dtype="float32", layout="NHWC", scale=1.0, shape=None, extra=None):
    """Writes a SavedModel test teacher to the folder ``path`` (arguments as
    :func:`onnx_teacher`'s)."""
    import tensorflow as tf

    shape = shape or ([None, 3, None, None] if layout == "NCHW" else [None, None, None, 3])
    module = tf.Module()
    module.teacher = _tf_teacher(dtype, layout, scale, shape, extra)
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.teacher})
    return str(path)
