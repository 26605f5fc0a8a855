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
    assert constants.FORMATS == ("saved_model", "tflite", "onnx")
    assert constants.QUANTIZATIONS == ("none", "float16", "dynamic", "int8")
    defaults = {k: v.default for k, v in inspect.signature(export).parameters.items()}
    assert defaults["calibration_count"] == 100 and defaults["verify_size"] == 256
    assert defaults["quantizations"] == ("none",) and defaults["formats"] == constants.FORMATS
