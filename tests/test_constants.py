"""The shared constants are what the library really does."""


def test_the_constants_the_commands_offer_match_the_library():
    """The commands take choices and defaults from kstyle.constants (no TensorFlow there);
    they must be what the library really does."""
    import inspect

    from kstyle import constants
    from kstyle.export import export
    from kstyle.graph import size_multiple
    from kstyle.transform_net import build_transform_net

    assert constants.PADDINGS == ("zeros", "reflect")
    for padding in constants.PADDINGS:
        net = build_transform_net(padding=padding)
        assert size_multiple(net) == constants.SIZE_MULTIPLE == 4  # read from the graph
    assert constants.DEFAULT_TFDS_NAME == "coco/2014"
    # every format has its own file, and every quantization its own TFLite file
    from kstyle.export.writer import artifact_name, tflite_bytes

    names = [artifact_name(fmt) for fmt in constants.FORMATS]
    names += [artifact_name("tflite", q) for q in constants.QUANTIZATIONS[1:]]
    assert names == [
        "saved_model",
        "model.tflite",
        "model.onnx",
        "model_float16.tflite",
        "model_dynamic.tflite",
        "model_int8.tflite",
    ]
    from kstyle.errors import KstyleError

    try:
        tflite_bytes(build_transform_net(), "int4")
    except KstyleError as error:  # the library refuses what the constants do not offer
        assert all(q in str(error) for q in constants.QUANTIZATIONS)
    else:
        raise AssertionError("an unknown quantization was accepted")
    defaults = {k: v.default for k, v in inspect.signature(export).parameters.items()}
    assert defaults["calibration_count"] == 100 and defaults["verify_size"] == 256
    assert defaults["quantizations"] == ("none",) and defaults["formats"] == constants.FORMATS
