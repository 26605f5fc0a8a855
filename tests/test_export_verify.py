"""Checking artifacts: each runner reproduces the Keras model, quantized files meet their PSNR
bars, and a missed bar is reported with its shortfall."""

import keras
import pytest
from conftest import max_level_diff

from kstyle.errors import KstyleError
from kstyle.export import Runner, serving_archive, tflite_bytes, verify
from kstyle.export.verify import held_out_image


@pytest.mark.numeric
@pytest.mark.parametrize("quantize, bar_db", [("float16", 40.0), ("dynamic", 30.0)])
def test_quantized_tflite_meets_its_bar(export_net, tmp_path, quantize, bar_db, bars):
    path = tmp_path / f"model_{quantize}.tflite"
    path.write_bytes(tflite_bytes(export_net, quantize))
    result = verify("tflite", str(path), export_net, held_out_image(32, 41), quantize=quantize)
    # the export's own bars; measured 58.6-61.1 dB (float16) and 37.9-41.3 dB (dynamic) over
    # train seeds 0-2 and CPU paths (docs/performance.md#numeric-bars)
    bars.at_least(f"{quantize} PSNR, seed net, held-out 32x41 (dB)", result.psnr_db, bar_db)
    assert result.passed, result.line()
    assert f"PSNR >= {bar_db:g} dB" in result.line()
    # fp16 weights are half the fp32 file, int8 weights a quarter
    assert result.size_bytes < (0.6 if quantize == "float16" else 0.35) * 4 * 1_679_235


def test_a_missed_bar_is_reported_with_its_shortfall(export_net, tmp_path):
    keras.utils.set_random_seed(123)
    from kstyle.transform_net import build_transform_net

    other = serving_archive(build_transform_net(), str(tmp_path / "other"))
    image = held_out_image(32, 32)
    result = verify("saved_model", other, export_net, image)
    assert not result.passed and "level(s) over" in result.shortfall
    assert result.max_abs_diff > 1 and "FAILED" in result.line()
    quantized = verify("saved_model", other, export_net, image, quantize="float16")
    assert not quantized.passed and quantized.psnr_db < 40.0
    assert quantized.shortfall == f"PSNR {quantized.psnr_db:.1f} dB is " + (
        f"{40.0 - quantized.psnr_db:.1f} dB short"
    )


def test_runner_refuses_an_unknown_format(tmp_path):
    with pytest.raises(KstyleError, match="unknown format 'pdf'"):
        Runner("pdf", str(tmp_path / "model.pdf"))


def test_held_out_image_is_a_photo_of_the_asked_size():
    image = held_out_image(20, 33)
    assert image.shape == (20, 33, 3) and image.dtype.name == "uint8"
    assert image.std() > 20  # a photo, not a flat fill


@pytest.mark.numeric
def test_tflite_runner_takes_a_thread_count(export_net, tmp_path, bars):
    from kstyle.inference import stylize_array

    path = tmp_path / "model.tflite"
    path.write_bytes(tflite_bytes(export_net))
    one = Runner("tflite", str(path), num_threads=1)
    image = held_out_image(32, 36)
    single, every = one(image), Runner("tflite", str(path))(image)
    # one thread computes what every core does, and both what the Keras model does
    bars.at_most("fp32 TFLite 1 thread vs every core (levels)", max_level_diff(single, every), 1)
    # 1 level: float rounding at a .5 boundary (conftest.max_level_diff)
    keras_diff = max_level_diff(single, stylize_array(export_net, image))
    bars.at_most("fp32 TFLite 1 thread vs Keras (levels)", keras_diff, 1)
