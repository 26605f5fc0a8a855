"""The private TensorFlow / LiteRT internals kstyle still needs, each in one place.

Each function says why no public API serves; ``tests/test_internals.py`` fails with a message
naming the function to change when an internal moves.
"""


def tflite_ops(interpreter) -> list[dict]:
    """Every op of the model a LiteRT ``Interpreter`` holds, in model order: dicts with
    ``op_name`` (e.g. ``"CONV_2D"``), ``inputs`` and ``outputs`` (tensor indices, as in
    ``interpreter.get_tensor_details()``).
    """
    # LiteRT's Interpreter lists tensors (get_tensor_details) but not ops, and
    # tf.lite.experimental.Analyzer only prints text; _get_ops_details is the listing
    # TensorFlow's own QuantizationDebugger reads.
    return interpreter._get_ops_details()


def strategy_supports_no_merge_call() -> bool:
    """Whether the current ``tf.distribute`` strategy updates variables without a
    ``merge_call`` (collective strategies), so a ``tf.cond`` around ``apply_gradients`` may
    run in the replica context; otherwise the cond has to run in the cross-replica context.
    """
    import tensorflow as tf

    # No public API tells the two apart; Keras's own LossScaleOptimizer picks its update path
    # with this same call for the same reason (a cond that skips a non-finite step).
    return bool(tf.__internal__.distribute.strategy_supports_no_merge_call())
