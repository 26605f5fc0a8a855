"""Serving artifacts for a trained transform net: SavedModel, TFLite and ONNX, each verified.

Every artifact has the same contract: uint8 RGB ``[batch, H, W, 3]`` in, uint8 RGB of the same
shape out, for any H and W of at least 4 pixels (the graph reflect-pads to a multiple of 4 and
crops back, exactly as ``kstyle.stylize_array`` does). A JSON sidecar next to each file records
the model's name, style and this contract.

``export_model`` builds that contract as a Keras model. It clones the transform net with the same
weights but with two TFLite-friendly substitutions that do not change the output: nearest
upsampling by ``tf.image.resize`` instead of ``UpSampling2D`` (whose ``tf.repeat`` loses the
static channel count that the TFLite converter needs), and a reshape after the dynamic padding
for the same reason.
"""

import dataclasses
import itertools
import json
import os
import shutil
import statistics
import time

import keras
import numpy as np
import tensorflow as tf

from kstyle.errors import KstyleError
from kstyle.stylize import SIZE_MULTIPLE

FORMATS = ("saved_model", "tflite", "onnx")
QUANTIZATIONS = ("none", "float16", "dynamic", "int8")
# Minimum PSNR (dB) of each TFLite quantization against the Keras model; fp32 formats instead
# must stay within 1 uint8 level everywhere.
PSNR_BARS = {"float16": 40.0, "dynamic": 30.0, "int8": 30.0}
MAX_ABS_DIFF_BAR = 1


@keras.saving.register_keras_serializable(package="kstyle")
class PadToMultiple(keras.layers.Layer):
    """uint8 or float (B, H, W, 3) -> float32, reflect-padded at the bottom and right to
    multiples of ``multiple``. H and W must be at least ``multiple`` pixels."""

    def __init__(self, multiple=SIZE_MULTIPLE, **kwargs):
        super().__init__(**kwargs)
        self.multiple = int(multiple)

    def call(self, images):
        images = tf.cast(images, tf.float32)
        shape = tf.shape(images)
        # (m - h % m) % m, not (-h) % m: ONNX's Mod would take the sign of a negative operand
        pad_h = (self.multiple - shape[1] % self.multiple) % self.multiple
        pad_w = (self.multiple - shape[2] % self.multiple) % self.multiple
        padded = tf.pad(images, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]], mode="REFLECT")
        # an explicit channel count: dynamic padding would otherwise lose it in TFLite
        return tf.reshape(padded, [shape[0], shape[1] + pad_h, shape[2] + pad_w, 3])

    def compute_output_spec(self, images):
        return keras.KerasTensor((images.shape[0], None, None, 3), dtype="float32")

    def get_config(self):
        return {**super().get_config(), "multiple": self.multiple}


@keras.saving.register_keras_serializable(package="kstyle")
class CropToPixels(keras.layers.Layer):
    """Crops ``padded`` (B, H', W', 3) to the size of ``reference`` and rounds to uint8."""

    def call(self, padded, reference):
        shape = tf.shape(reference)
        cropped = padded[:, : shape[1], : shape[2], :]
        return tf.cast(tf.clip_by_value(tf.round(cropped), 0.0, 255.0), tf.uint8)

    def compute_output_shape(self, padded_shape, reference_shape):
        return reference_shape

    def compute_output_spec(self, padded, reference):
        return keras.KerasTensor(reference.shape, dtype="uint8")


@keras.saving.register_keras_serializable(package="kstyle")
class NearestUpsample2x(keras.layers.Layer):
    """Nearest-neighbour x2 upsampling through ``tf.image.resize``: equal to UpSampling2D(2)."""

    def call(self, inputs):
        shape = tf.shape(inputs)
        return tf.image.resize(inputs, (2 * shape[1], 2 * shape[2]), method="nearest")

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        double = lambda size: None if size is None else 2 * size  # noqa: E731
        return (batch, double(height), double(width), channels)


def _export_layer(layer):
    if isinstance(layer, keras.layers.UpSampling2D):
        return NearestUpsample2x(name=layer.name)
    return layer.__class__.from_config(layer.get_config())


def export_model(transform_net, input_size=None, batch_size=None):
    """The uint8-in, uint8-out serving model of ``transform_net`` (same weights).

    Args:
        transform_net: a trained transform net (float RGB [0, 255] in and out).
        input_size: None for any H, W; an int N for a fixed N x N input.
        batch_size: None for any batch; an int for a fixed batch (TFLite uses 1).

    Returns:
        A ``keras.Model`` from uint8 (B, H, W, 3) to uint8 (B, H, W, 3).
    """
    clone = keras.models.clone_model(transform_net, clone_function=_export_layer)
    clone.set_weights(transform_net.get_weights())
    images = keras.Input(
        shape=(input_size, input_size, 3), batch_size=batch_size, dtype="uint8", name="image"
    )
    padded = PadToMultiple(name="pad_to_multiple")(images)
    stylized = clone(padded)
    outputs = CropToPixels(name="stylized")(stylized, images)
    return keras.Model(images, outputs, name=f"{transform_net.name}_uint8")


def serving_archive(transform_net, directory, input_size=None, batch_size=None) -> str:
    """Writes the uint8 serving model as a SavedModel with a ``serving_default`` signature.

    The signature takes ``image``: uint8 [batch, H, W, 3] and returns ``{"stylized": uint8
    [batch, H, W, 3]}``. Keras's ExportArchive tracks the weights, so converters freeze them.
    """
    model = export_model(transform_net, input_size=input_size, batch_size=batch_size)
    spec = tf.TensorSpec([batch_size, input_size, input_size, 3], tf.uint8, name="image")
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serving_default", lambda image: {"stylized": model(image)}, input_signature=[spec]
    )
    archive.write_out(directory, verbose=False)
    return directory


# Ops of the instance norms (mean, variance, rsqrt, scale and shift) and of the residual adds:
# int8 activations cannot hold the variance's range, so these stay float in "int8" models.
INT8_FLOAT_OPS = ("MEAN", "SQUARED_DIFFERENCE", "RSQRT", "SUB", "MUL", "ADD")


def tflite_bytes(transform_net, quantize="none", input_size=None, calibration_images=None):
    """Converts the serving model to a TFLite flatbuffer (batch 1, uint8 in and out).

    Args:
        quantize: ``none`` (fp32), ``float16`` (fp16 weights), ``dynamic`` (int8 weights,
            dynamic-range activations) or ``int8`` (integer convolutions and activations
            calibrated on ``calibration_images``; the instance-norm arithmetic stays float).
        input_size: None for a dynamic H, W (resize the input tensor before use), or N.
        calibration_images: uint8 (H, W, 3) arrays, required for ``int8``.
    """
    import tempfile

    if quantize not in QUANTIZATIONS:
        raise KstyleError(f"unknown quantization {quantize!r}; use one of {QUANTIZATIONS}")
    if quantize == "int8" and not calibration_images:
        raise KstyleError("--quantize int8 needs --calibration-data DIR (representative photos)")
    with tempfile.TemporaryDirectory() as directory:
        serving_archive(transform_net, directory, input_size=input_size, batch_size=1)
        converter = tf.lite.TFLiteConverter.from_saved_model(directory)
        if quantize == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif quantize == "dynamic":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        elif quantize == "int8":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]

            def representative():
                for image in calibration_images:
                    yield [image[None]]

            converter.representative_dataset = representative
            debugger = tf.lite.experimental.QuantizationDebugger(
                converter=converter,
                debug_dataset=lambda: itertools.islice(representative(), 1),
                debug_options=tf.lite.experimental.QuantizationDebugOptions(
                    denylisted_ops=list(INT8_FLOAT_OPS)
                ),
            )
            return debugger.get_nondebug_quantized_model()
        return converter.convert()


def load_calibration_images(folder, count=100, size=256):
    """The first ``count`` images under ``folder`` as (size, size, 3) uint8 arrays.

    Raises:
        KstyleError: the folder is missing or holds no readable image.
    """
    from kstyle.data import list_image_files
    from kstyle.stylize import load_image

    if folder is None:
        raise KstyleError("--quantize int8 needs --calibration-data DIR (representative photos)")
    images = []
    for path in list_image_files(folder):
        try:
            image = load_image(path)
        except KstyleError:
            continue
        resized = tf.image.resize(image, (size, size), antialias=True)
        images.append(np.clip(np.round(resized.numpy()), 0, 255).astype(np.uint8))
        if len(images) == count:
            break
    if not images:
        raise KstyleError(f"no readable calibration images in {folder}")
    return images


def held_out_image(height=256, width=256) -> np.ndarray:
    """A real photo for verification, never used for calibration: matplotlib's sample portrait,
    resized to (height, width, 3) uint8."""
    from PIL import Image

    from kstyle.demo import sample_photo_paths

    with Image.open(sample_photo_paths()[0]) as photo:
        resized = photo.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
    return np.asarray(resized, dtype=np.uint8)


class Runner:
    """Runs one exported artifact on a (H, W, 3) uint8 image and returns the uint8 result."""

    def __init__(self, fmt, path):
        self.format = fmt
        if fmt == "saved_model":
            self.function = tf.saved_model.load(path).signatures["serving_default"]
        elif fmt == "tflite":
            from ai_edge_litert.interpreter import Interpreter

            self.interpreter = Interpreter(model_path=path, num_threads=os.cpu_count())
            self.input = self.interpreter.get_input_details()[0]
            self.output = self.interpreter.get_output_details()[0]
            self.shape = None
        elif fmt == "onnx":
            import onnxruntime

            onnxruntime.set_default_logger_severity(3)
            self.session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
            self.input_name = self.session.get_inputs()[0].name
        else:
            raise KstyleError(f"unknown format {fmt!r}; use one of {FORMATS}")

    def __call__(self, image: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(image[None], dtype=np.uint8)
        if self.format == "saved_model":
            return self.function(image=tf.constant(batch))["stylized"].numpy()[0]
        if self.format == "onnx":
            return self.session.run(None, {self.input_name: batch})[0][0]
        if self.shape != batch.shape:
            if -1 in self.input["shape_signature"]:
                self.interpreter.resize_tensor_input(self.input["index"], batch.shape)
            self.interpreter.allocate_tensors()
            self.shape = batch.shape
        self.interpreter.set_tensor(self.input["index"], batch)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output["index"])[0]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 images in dB (inf when equal)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


@dataclasses.dataclass
class Verification:
    """How one artifact compares with the Keras model on a held-out image."""

    format: str
    quantize: str | None
    path: str
    size_bytes: int
    max_abs_diff: int
    psnr_db: float
    latency_ms: float
    bar: str
    shortfall: str | None  # None when the bar is met

    @property
    def passed(self) -> bool:
        return self.shortfall is None

    def line(self) -> str:
        """One human-readable line for the export log."""
        name = self.format + (f" ({self.quantize})" if self.quantize else "")
        status = "ok" if self.passed else f"FAILED: {self.shortfall}"
        return (
            f"{name:<20} {self.size_bytes / 1e6:7.2f} MB  max|diff| {self.max_abs_diff:3d}  "
            f"PSNR {self.psnr_db:6.1f} dB  {self.latency_ms:8.1f} ms  [{self.bar}] {status}"
        )


def directory_size(path: str) -> int:
    """Bytes in a file, or in all files under a directory."""
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(path)
        for name in names
    )


def verify(fmt, path, transform_net, image, quantize=None, repeats=5) -> Verification:
    """Runs the artifact on ``image`` and checks it against ``stylize_array`` of the Keras net.

    Bars: fp32 formats within 1 uint8 level everywhere; TFLite float16 PSNR >= 40 dB,
    dynamic-range and int8 PSNR >= 30 dB.
    """
    from kstyle.stylize import stylize_array

    reference = stylize_array(transform_net, image)
    runner = Runner(fmt, path)
    output = runner(image)
    if output.shape != reference.shape:
        raise KstyleError(f"{path} returned shape {output.shape}, expected {reference.shape}")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        runner(image)
        times.append(time.perf_counter() - start)
    max_abs = int(np.abs(output.astype(np.int16) - reference.astype(np.int16)).max())
    quality = psnr(output, reference)
    if quantize in PSNR_BARS:
        bar = f"PSNR >= {PSNR_BARS[quantize]:g} dB"
        missing = PSNR_BARS[quantize] - quality
        shortfall = None if missing <= 0 else f"PSNR {quality:.1f} dB is {missing:.1f} dB short"
    else:
        bar = f"max|diff| <= {MAX_ABS_DIFF_BAR}"
        over = max_abs - MAX_ABS_DIFF_BAR
        shortfall = None if over <= 0 else f"max|diff| {max_abs} is {over} level(s) over"
    return Verification(
        fmt,
        quantize,
        path,
        directory_size(path),
        max_abs,
        quality,
        1000 * statistics.median(times),
        bar,
        shortfall,
    )


def describe_model(model_path: str) -> dict:
    """Name and style of a trained model, from its run directory's config.json if present."""
    run_dir = model_path if os.path.isdir(model_path) else os.path.dirname(model_path)
    name = os.path.basename(os.path.normpath(run_dir)) or "kstyle"
    style = None
    config_path = os.path.join(run_dir, "config.json")
    if os.path.isfile(config_path):
        try:
            with open(config_path) as file:
                style = os.path.basename(json.load(file).get("style") or "") or None
        except (OSError, ValueError):
            style = None
    return {"name": name, "style": style}


def write_metadata(path: str, fmt: str, quantize, input_size, description: dict) -> str:
    """Writes the JSON sidecar ``<path>.json`` (inside the directory for a SavedModel)."""
    import kstyle

    side = None if input_size is None else int(input_size)
    metadata = {
        **description,
        "format": fmt,
        "quantization": quantize,
        "kstyle_version": kstyle.__version__,
        "input": {
            "name": "image",
            "dtype": "uint8",
            "shape": [1 if fmt == "tflite" else None, side, side, 3],
            "layout": "NHWC",
            "channels": "RGB",
            "range": [0, 255],
            "min_size": SIZE_MULTIPLE,
        },
        "output": {
            "name": "stylized",
            "dtype": "uint8",
            "shape": "same as input",
            "channels": "RGB",
            "range": [0, 255],
        },
    }
    target = os.path.join(path, "kstyle.json") if os.path.isdir(path) else f"{path}.json"
    with open(target, "w") as file:
        json.dump(metadata, file, indent=2)
    return target


def _replace(temporary: str, target: str) -> None:
    if os.path.isdir(target):
        shutil.rmtree(target)
    os.replace(temporary, target)


def export(
    model_path,
    output_dir,
    formats=FORMATS,
    quantizations=("none",),
    input_size=None,
    calibration_data=None,
    calibration_count=100,
    verify_size=256,
    printer=print,
):
    """Writes and verifies the requested artifacts; returns their ``Verification`` records.

    Files in ``output_dir``: ``saved_model/``, ``model.tflite`` (fp32) or
    ``model_<quantization>.tflite``, ``model.onnx``, each with a JSON sidecar. Every file is
    written under a temporary name and renamed once complete.
    """
    from kstyle.stylize import load_transform_net

    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise KstyleError(f"unknown format {unknown[0]!r}; use one of {', '.join(FORMATS)}, all")
    for quantize in quantizations:
        if quantize not in QUANTIZATIONS:
            raise KstyleError(f"unknown quantization {quantize!r}; use one of {QUANTIZATIONS}")
    if input_size is not None and (input_size < SIZE_MULTIPLE):
        raise KstyleError(f"--input-size must be at least {SIZE_MULTIPLE}, got {input_size}")
    calibration = None
    if "tflite" in formats and "int8" in quantizations:
        calibration = load_calibration_images(
            calibration_data, calibration_count, input_size or verify_size
        )
    transform_net = load_transform_net(model_path)
    description = {**describe_model(model_path), "source": os.path.abspath(model_path)}
    os.makedirs(output_dir, exist_ok=True)
    side = input_size or verify_size
    image = held_out_image(side, side if input_size else side + side // 4 + 1)
    results = []
    for fmt in formats:
        for quantize in quantizations if fmt == "tflite" else (None,):
            if fmt == "saved_model":
                target = os.path.join(output_dir, "saved_model")
                temporary = os.path.join(output_dir, ".saved_model.tmp")
                shutil.rmtree(temporary, ignore_errors=True)  # left by an interrupted export
                serving_archive(transform_net, temporary, input_size=input_size)
            elif fmt == "tflite":
                suffix = "" if quantize == "none" else f"_{quantize}"
                target = os.path.join(output_dir, f"model{suffix}.tflite")
                temporary = target + ".tmp"
                flatbuffer = tflite_bytes(transform_net, quantize, input_size, calibration)
                with open(temporary, "wb") as file:
                    file.write(flatbuffer)
            else:
                target = os.path.join(output_dir, "model.onnx")
                temporary = os.path.join(output_dir, ".model.tmp.onnx")
                onnx_model = export_model(transform_net, input_size=input_size)
                onnx_model(image[None])  # Keras's ONNX export needs a model that has been called
                onnx_model.export(temporary, format="onnx", verbose=False)
            _replace(temporary, target)
            write_metadata(target, fmt, quantize, input_size, description)
            result = verify(fmt, target, transform_net, image, quantize=quantize)
            printer(result.line())
            results.append(result)
    return results
