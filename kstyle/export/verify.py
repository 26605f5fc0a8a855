"""Checking an exported artifact against the Keras model: run it (SavedModel, LiteRT, ONNX
Runtime), compare with ``stylize_array`` on a held-out photo, and time it."""

import contextlib
import dataclasses
import os
import statistics
import time

import numpy as np

from kstyle.constants import FORMATS, STYLE_INPUT
from kstyle.errors import KstyleError
from kstyle.export.serving import IMAGE_INPUT, OUTPUT_NAME
from kstyle.extras import require
from kstyle.images import psnr
from kstyle.quiet import filtered_stderr
from kstyle.style_tables import style_count

# Minimum PSNR (dB) of each TFLite quantization against the Keras model; fp32 formats instead
# must stay within 1 uint8 level everywhere.
PSNR_BARS = {"float16": 40.0, "dynamic": 30.0, "int8": 30.0}
MAX_ABS_DIFF_BAR = 1


def held_out_image(height=256, width=256) -> np.ndarray:
    """A real photo for verification, never used for calibration: matplotlib's sample portrait,
    resized to (height, width, 3) uint8."""
    from PIL import Image

    from kstyle.demo import sample_photo_paths

    with Image.open(sample_photo_paths()[0]) as photo:
        resized = photo.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
    return np.asarray(resized, dtype=np.uint8)


def checked_styles(count: int) -> list:
    """The style vectors an export of a net of ``count`` styles is verified with: None for
    one style; else each style alone and the even blend of the first two."""
    if count == 1:
        return [None]
    eye = np.eye(count, dtype=np.float32)
    return [*eye, (eye[0] + eye[1]) / 2]


def _named(details, name, path):
    """The entry of LiteRT's tensor ``details`` for the signature input ``name`` (the
    converter calls it ``serving_default_<name>:0``).

    Raises:
        KstyleError: ``path`` (the file) has no such input, or several.
    """
    found = [d for d in details if d["name"].split(":")[0].endswith(f"_{name}")]
    if len(found) != 1:
        names = ", ".join(d["name"] for d in details)
        raise KstyleError(f"{path} has no single input {name!r} (its inputs: {names})")
    return found[0]


class Runner:
    """Runs one exported artifact on a (H, W, 3) uint8 image (and, for a net of N styles, a
    style vector (N,)) and returns the uint8 result.

    ``num_threads``: LiteRT's CPU threads (None: every core); the other formats ignore it."""

    def __init__(self, fmt, path, num_threads=None):
        self.format, self.path = fmt, path
        if fmt == "saved_model":
            import tensorflow as tf

            self.function = tf.saved_model.load(path).signatures["serving_default"]
            specs = self.function.structured_input_signature[1]
            self.styles = specs[STYLE_INPUT].shape[-1] if STYLE_INPUT in specs else None
        elif fmt == "tflite":
            interpreter = require("ai_edge_litert.interpreter", "export")
            self.interpreter = interpreter.Interpreter(
                model_path=path, num_threads=num_threads or os.cpu_count()
            )
            details = self.interpreter.get_input_details()
            self.input = details[0] if len(details) == 1 else _named(details, IMAGE_INPUT, path)
            self.style = None if len(details) == 1 else _named(details, STYLE_INPUT, path)
            self.styles = None if self.style is None else int(self.style["shape"][-1])
            self.output = self.interpreter.get_output_details()[0]
            self.shape = None
        elif fmt == "onnx":
            onnxruntime = require("onnxruntime", "export")
            onnxruntime.set_default_logger_severity(3)
            self.session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
            shapes = {tensor.name: tensor.shape for tensor in self.session.get_inputs()}
            self.styles = shapes[STYLE_INPUT][-1] if STYLE_INPUT in shapes else None
        else:
            raise KstyleError(f"unknown format {fmt!r}; use one of {FORMATS}")

    def __call__(self, image: np.ndarray, style=None) -> np.ndarray:
        inputs = {IMAGE_INPUT: np.ascontiguousarray(image[None], dtype=np.uint8)}
        if (style is None) != (self.styles is None) or (
            style is not None and np.size(style) != self.styles
        ):
            wanted = "no style vector" if self.styles is None else f"{self.styles} style weights"
            got = "none" if style is None else f"{np.size(style)} weight(s)"
            raise KstyleError(f"{self.path} takes {wanted}, got {got}")
        if style is not None:
            inputs[STYLE_INPUT] = np.asarray(style, np.float32).reshape(1, -1)
        if self.format == "saved_model":
            return self.function(**inputs)[OUTPUT_NAME].numpy()[0]
        if self.format == "onnx":
            return self.session.run(None, inputs)[0][0]
        batch, first = inputs[IMAGE_INPUT], self.shape != inputs[IMAGE_INPUT].shape
        # LiteRT announces its XNNPACK delegate when it applies it, on the first call
        with filtered_stderr() if first else contextlib.nullcontext():
            if first:
                if -1 in self.input["shape_signature"]:
                    self.interpreter.resize_tensor_input(self.input["index"], batch.shape)
                self.interpreter.allocate_tensors()
                self.shape = batch.shape
            self.interpreter.set_tensor(self.input["index"], batch)
            if self.style is not None:
                self.interpreter.set_tensor(self.style["index"], inputs[STYLE_INPUT])
            self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output["index"])[0]


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
    """Runs the artifact on ``image`` and checks it against ``stylize_array`` of the Keras net;
    for a net of N styles, with each style and a blend (:func:`checked_styles`), reporting the
    worst of them.

    Bars: a quantized TFLite file (``quantize`` in :data:`PSNR_BARS`) needs at least that
    PSNR; every other artifact must stay within :data:`MAX_ABS_DIFF_BAR` uint8 levels
    everywhere.
    """
    from kstyle.inference import stylize_array

    runner = Runner(fmt, path)
    max_abs, quality = 0, np.inf
    styles = checked_styles(style_count(transform_net))
    for style in styles:
        reference = stylize_array(transform_net, image, style=style)
        output = runner(image, style)
        if output.shape != reference.shape:
            raise KstyleError(f"{path} returned shape {output.shape}, expected {reference.shape}")
        difference = np.abs(output.astype(np.int16) - reference.astype(np.int16)).max()
        max_abs, quality = max(max_abs, int(difference)), min(quality, psnr(output, reference))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        runner(image, styles[0])
        times.append(time.perf_counter() - start)
    if quantize in PSNR_BARS:
        bar = f"PSNR >= {PSNR_BARS[quantize]:g} dB"
        missing = PSNR_BARS[quantize] - quality
        shortfall = None if missing <= 0 else f"PSNR {quality:.1f} dB is {missing:.1f} dB short"
    else:
        bar = f"max|diff| <= {MAX_ABS_DIFF_BAR}"
        over = max_abs - MAX_ABS_DIFF_BAR
        shortfall = None if over <= 0 else f"max|diff| {max_abs} is {over} level(s) over"
    size = directory_size(path)
    median = 1000 * statistics.median(times)
    return Verification(fmt, quantize, path, size, max_abs, quality, median, bar, shortfall)
