"""Each private TensorFlow / LiteRT internal that kstyle.internals wraps still exists and still
gives what kstyle reads from it: a failure here names the function to change."""

import keras
import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from kstyle import internals


def test_tflite_ops_lists_every_op_with_its_tensors():
    assert hasattr(Interpreter, "_get_ops_details"), (
        "LiteRT's Interpreter no longer has _get_ops_details; "
        "kstyle.internals.tflite_ops must change"
    )
    inputs = keras.Input((8, 8, 3), batch_size=1)
    outputs = keras.layers.ReLU()(keras.layers.Conv2D(5, 3, padding="same")(inputs))
    model = keras.Model(inputs, outputs)
    flatbuffer = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    interpreter = Interpreter(model_content=flatbuffer)
    tensors = {detail["index"]: detail for detail in interpreter.get_tensor_details()}
    ops = internals.tflite_ops(interpreter)
    message = "LiteRT's op details changed shape; kstyle.internals.tflite_ops must change"
    assert all({"op_name", "inputs", "outputs"} <= set(op) for op in ops), message
    (conv,) = [op for op in ops if op["op_name"] == "CONV_2D"]  # the ReLU is fused into it
    image, kernel = (tensors[index] for index in conv["inputs"][:2])
    assert list(image["shape"]) == [1, 8, 8, 3] and list(kernel["shape"]) == [5, 3, 3, 3], message
    (output,) = conv["outputs"]
    assert tensors[output]["dtype"] == np.float32, message


def test_strategy_supports_no_merge_call_tells_the_strategies_apart():
    assert hasattr(tf.__internal__.distribute, "strategy_supports_no_merge_call"), (
        "tf.__internal__.distribute.strategy_supports_no_merge_call is gone; "
        "kstyle.internals.strategy_supports_no_merge_call must change (see kstyle.trainer)"
    )
    assert internals.strategy_supports_no_merge_call() is True  # the default strategy
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        assert internals.strategy_supports_no_merge_call() is False
