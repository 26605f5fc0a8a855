"""Style networks in exported formats as distillation teachers, whoever made them.

``kstyle distill --teacher`` takes a TensorFlow SavedModel folder, a LiteRT ``.tflite`` file
or an ``.onnx`` file next to kstyle's own runs. :func:`kstyle.teacher_runtimes.open_teacher`
reads the file's conventions and returns a :class:`FileTeacher`, a callable from kstyle's
pictures to the teacher's: float32 (B, H, W, 3) RGB in [0, 255] in and out, whatever the file
takes. This module holds the conventions; :mod:`kstyle.teacher_runtimes` the runtimes.

What is read from the file (:class:`ImageConvention`):

* the image input: the one input of rank 4 with 3 channels, first (NCHW) or last (NHWC);
  every other input is an extra input that ``--teacher-input NAME=VALUES`` must fill;
* its dtype: uint8 (values in [0, 255]) or float (16, 32 or 64 bits), whose range the file
  cannot tell: ``--teacher-range 0-1`` or ``0-255`` says it (a kstyle export's sidecar does
  too; its tensors are uint8);
* a fixed batch (images then go through one at a time) and a fixed or free spatial size;
* the output: the first output, an image of the input's size, in either layout (read from
  the array it returns), uint8 or float in the same range as a float input.

The teacher's outputs are clipped to [0, 255]: the picture a user of the teacher sees.
The runtimes are the ``[export]`` extra's (ONNX Runtime, LiteRT); a SavedModel needs only
TensorFlow. Nothing here imports TensorFlow until a SavedModel is opened.
"""

import dataclasses
import json
import os
import threading
import time

import numpy as np

from kstyle.errors import KstyleError
from kstyle.extras import require

TEACHER_RANGES = {"0-1": 1.0, "0-255": 255.0}  # --teacher-range: the value of white
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
PROBE_SIDE = 64  # the probe image's side for a teacher of free size
RANGE_OPTION = "--teacher-range"
INPUT_OPTION = "--teacher-input"


def teacher_format(path: str) -> str | None:
    """The exported format of teacher ``path``: ``saved_model`` (a folder holding
    saved_model.pb), ``tflite`` or ``onnx`` (by the file's extension); None for anything
    else (a kstyle run directory or ``.keras`` file, which :mod:`kstyle.transform_net` loads)."""
    if os.path.isdir(path):
        found = any(os.path.isfile(os.path.join(path, name)) for name in SAVED_MODEL_FILES)
        return "saved_model" if found else None
    return {".tflite": "tflite", ".onnx": "onnx"}.get(os.path.splitext(path)[1].lower())


def parse_teacher_inputs(values) -> dict:
    """``{name: float64 array}`` of ``--teacher-input NAME=VALUES`` options: VALUES is a
    comma-separated list of numbers or the path of a ``.npy`` file.

    Raises:
        KstyleError: a value without ``=``, a name given twice, numbers that do not parse, or
            a ``.npy`` file that cannot be read.
    """
    parsed = {}
    for value in values or ():
        name, equals, numbers = value.partition("=")
        name = name.strip()
        if not equals or not name or not numbers.strip():
            raise KstyleError(f"{INPUT_OPTION} takes NAME=VALUES (e.g. style=0,1,0), got {value!r}")
        if name in parsed:
            raise KstyleError(f"{INPUT_OPTION} {name} is given twice")
        parsed[name] = _input_values(name, numbers.strip())
    return parsed


def _input_values(name: str, numbers: str) -> np.ndarray:
    if numbers.lower().endswith(".npy"):
        try:
            return np.asarray(np.load(numbers, allow_pickle=False), np.float64)
        except (OSError, ValueError) as error:
            raise KstyleError(f"{INPUT_OPTION} {name}: cannot read {numbers}: {error}") from error
    try:
        return np.array([float(number) for number in numbers.split(",")], np.float64)
    except ValueError as error:
        raise KstyleError(
            f"{INPUT_OPTION} {name}: not a comma-separated list of numbers: {numbers!r}"
        ) from error


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """One input or output as the file declares it: ``shape`` has None for a free size."""

    name: str
    dtype: str  # a NumPy dtype name
    shape: tuple

    def text(self) -> str:
        dims = "×".join("?" if size is None else str(size) for size in self.shape)
        return f"{self.name} ({self.dtype} {dims or 'scalar'})"


@dataclasses.dataclass(frozen=True)
class ImageConvention:
    """How a teacher takes its images: ``scale`` is the value of white (1 or 255), ``batch``
    a fixed batch size (None: free), ``size`` the fixed (H, W) (None where free)."""

    name: str
    dtype: str
    layout: str  # "NHWC" or "NCHW"
    scale: float
    batch: int | None
    size: tuple

    def tensor(self, images: np.ndarray) -> np.ndarray:
        """kstyle's float32 (B, H, W, 3) pictures in [0, 255] as the teacher takes them."""
        values = images * (self.scale / 255.0)
        if self.layout == "NCHW":
            values = values.transpose(0, 3, 1, 2)
        if self.dtype == "uint8":
            values = np.clip(np.rint(values), 0, 255)
        return np.ascontiguousarray(values, self.dtype)

    def text(self) -> str:
        size = "any size" if self.size == (None, None) else "×".join(map(str, self.size))
        value_range = f"[0, {self.scale:g}]"
        return f"{self.dtype} {self.layout} in {value_range}, {size}"


def image_convention(info: TensorInfo, value_range: str | None, path: str) -> ImageConvention:
    """The :class:`ImageConvention` of the image input ``info`` of teacher ``path``; a float
    input's range is ``value_range`` (a :data:`TEACHER_RANGES` key).

    Raises:
        KstyleError: a float input and no range, or a dtype that is not uint8 or float.
    """
    layout = "NHWC" if info.shape[3] == 3 else "NCHW"
    height, width = info.shape[1:3] if layout == "NHWC" else info.shape[2:4]
    return ImageConvention(
        name=info.name,
        dtype=info.dtype,
        layout=layout,
        scale=value_scale(info, value_range, path),
        batch=info.shape[0],
        size=(height, width),
    )


def value_scale(info: TensorInfo, value_range: str | None, path: str) -> float:
    """The value of white in tensor ``info``: 255 for uint8, ``value_range``'s for a float."""
    if info.dtype == "uint8":
        return 255.0
    if not info.dtype.startswith("float"):
        raise KstyleError(
            f"{path}: {info.text()} holds {info.dtype} values; a teacher takes and returns "
            "uint8 or float images (a fully quantized int8 model is not supported)"
        )
    if value_range is None:
        raise KstyleError(
            f"{path}: {info.text()} is a float image and the file does not tell its range: give "
            f"{RANGE_OPTION} 0-1 or 0-255"
        )
    return TEACHER_RANGES[value_range]


def split_inputs(inputs, path: str):
    """``(image input, extra inputs)`` of a teacher's declared ``inputs``.

    Raises:
        KstyleError: no input of rank 4 with 3 channels (naming a 4-D input's channel count
            when there is one), or several.
    """
    images = [
        info for info in inputs if len(info.shape) == 4 and 3 in (info.shape[1], info.shape[3])
    ]
    if len(images) != 1:
        listed = ", ".join(info.text() for info in inputs) or "none"
        if not images:
            four = [info for info in inputs if len(info.shape) == 4]
            if four:
                known = [size for size in (four[0].shape[1], four[0].shape[3]) if size is not None]
                channels = min(known) if known else None
                raise KstyleError(
                    f"{path}: not an RGB image model: its image input {four[0].text()} has "
                    f"{channels if channels is not None else 'a free number of'} channels, not 3"
                )
            raise KstyleError(
                f"{path}: not an image model: no input is (B, H, W, 3) or (B, 3, H, W); its "
                f"inputs: {listed}"
            )
        raise KstyleError(f"{path}: more than one input looks like an image: {listed}")
    return images[0], [info for info in inputs if info is not images[0]]


def extra_feeds(extras, given: dict, path: str) -> dict:
    """``{name: array}`` for each extra input: the ``--teacher-input`` values, shaped as the
    input (its free first dimension 1) and cast to its dtype.

    Raises:
        KstyleError: an extra input without values, values for no input, or a count that does
            not fill the input.
    """
    names = {info.name for info in extras}
    unknown = sorted(set(given) - names)
    if unknown:
        takes = ", ".join(info.text() for info in extras) or "no extra inputs"
        raise KstyleError(f"{path} has no input {unknown[0]!r} ({INPUT_OPTION}); it takes {takes}")
    feeds = {}
    for info in extras:
        if info.name not in given:
            raise KstyleError(
                f"{path} also takes {info.text()}: give its values with {INPUT_OPTION} "
                f"{info.name}=V1,V2,..."
            )
        shape = tuple(
            1 if size is None and axis == 0 else size for axis, size in enumerate(info.shape)
        )
        values = given[info.name]
        if None in shape[1:] or int(np.prod(shape)) != values.size:
            raise KstyleError(
                f"{INPUT_OPTION} {info.name}: {values.size} value(s) do not fill {info.text()}"
            )
        try:
            feeds[info.name] = values.reshape(shape).astype(info.dtype)
        except TypeError as error:
            raise KstyleError(f"{path}: {info.text()} takes values kstyle cannot give") from error
    return feeds


class FileTeacher:
    """A teacher in an exported format: call it on kstyle pictures (float32 (B, H, W, 3) in
    [0, 255]) for the teacher's (the same, clipped to [0, 255]). Calls are serialized (LiteRT
    interpreters are not thread-safe) and timed: ``seconds`` and ``calls`` add up every call
    (the input pipeline's, :meth:`probe` aside).

    Subclasses open one format: :meth:`load` returns the declared inputs and outputs,
    :meth:`run` runs one batch of feeds and returns the first output.
    """

    format_name = ""

    def __init__(self, path: str, value_range: str | None = None, inputs: dict | None = None):
        self.path = path
        declared_inputs, declared_outputs = self.load()
        if not declared_outputs:
            raise KstyleError(f"{path}: the model has no outputs")
        image, extras = split_inputs(declared_inputs, path)
        self.image = image_convention(image, value_range, path)
        self.extras = extras
        self.feeds = extra_feeds(extras, inputs or {}, path)
        self.output = declared_outputs[0]
        self.output_scale = value_scale(self.output, value_range, path)
        self.seconds, self.calls = 0.0, 0
        self._lock = threading.Lock()

    def load(self):
        """Opens the file; returns ``(inputs, outputs)`` as lists of :class:`TensorInfo`."""
        raise NotImplementedError

    def run(self, feeds: dict) -> np.ndarray:
        """The first output for ``feeds`` (``{input name: array}``)."""
        raise NotImplementedError

    @property
    def side(self) -> int | None:
        """The side of the square images the teacher takes; None when it takes any size.

        Raises:
            KstyleError: a fixed size that is not square, or only one side fixed.
        """
        height, width = self.image.size
        if height is None and width is None:
            return None
        if height != width:
            raise KstyleError(
                f"{self.path} takes only {height or '?'}×{width or '?'} images; kstyle distills "
                "on square crops"
            )
        return height

    def __call__(self, images) -> np.ndarray:
        images = np.asarray(images, np.float32)
        with self._lock:
            start = time.perf_counter()
            pictures = self.picture(self.raw(images), images.shape)
            self.seconds += time.perf_counter() - start
            self.calls += 1
        return pictures

    def raw(self, images: np.ndarray) -> np.ndarray:
        """The first output for kstyle pictures ``images``, in the teacher's own units and
        layout: in batches of a fixed batch size (the last one padded with copies of its last
        image, which are dropped), else all at once."""
        step = self.image.batch or len(images)
        parts = []
        for at in range(0, len(images), step):
            chunk = images[at : at + step]
            padding = np.repeat(chunk[-1:], step - len(chunk), axis=0)
            parts.append(self.run_feeds(np.concatenate([chunk, padding]))[: len(chunk)])
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def run_feeds(self, images: np.ndarray) -> np.ndarray:
        """:meth:`run` on ``images`` and the extra inputs (repeated along a free batch).

        Raises:
            KstyleError: the runtime's error, in one line.
        """
        feeds = {self.image.name: self.image.tensor(images)}
        for info in self.extras:
            values = self.feeds[info.name]
            free_batch = bool(info.shape) and info.shape[0] is None
            feeds[info.name] = np.repeat(values, len(images), 0) if free_batch else values
        try:
            return np.asarray(self.run(feeds))
        except Exception as error:  # each runtime raises its own kinds
            raise KstyleError(f"{self.path}: the teacher failed: {first_line(error)}") from error

    def picture(self, output: np.ndarray, shape) -> np.ndarray:
        """The teacher's ``output`` as kstyle's float32 (B, H, W, 3) picture in [0, 255] for
        input pictures of ``shape``.

        Raises:
            KstyleError: not an image of the input's size (saying what it returned), or not
                finite.
        """
        batch, height, width, _ = shape
        if output.shape == (batch, height, width, 3):
            values = output
        elif output.shape == (batch, 3, height, width):
            values = output.transpose(0, 2, 3, 1)
        else:
            raise KstyleError(
                f"{self.path} returned {self.output.name} of shape {output.shape} "
                f"({output.dtype}) for {batch} image(s) of {height}×{width}: not an image of the "
                "input's size"
            )
        values = values.astype(np.float32) * np.float32(255.0 / self.output_scale)
        if not np.all(np.isfinite(values)):
            raise KstyleError(f"{self.path} returned values that are not finite")
        return np.clip(values, 0.0, 255.0)

    def probe(self, side: int | None = None) -> dict:
        """Runs a probe image (a smooth colour ramp) of ``side`` (the teacher's own for a
        fixed size; default :data:`PROBE_SIDE`) through the teacher and returns what it
        found: the output's range in the teacher's units, and a ``hint`` when that range
        does not fit the value range in use (None otherwise).

        Raises:
            KstyleError: as :meth:`picture` and :meth:`run_feeds`.
        """
        side = self.side or side or PROBE_SIDE
        ramp = np.linspace(0.0, 255.0, side, dtype=np.float32)
        channels = np.broadcast_arrays(ramp[:, None], ramp[None, :], 255.0 - ramp[:, None])
        probe = np.stack(channels, -1)[None]
        raw = self.raw(probe)
        self.picture(raw, probe.shape)
        low, high = float(np.min(raw)), float(np.max(raw))
        hint = None
        if self.output_scale == 255.0 and high <= 1.5 and self.output.dtype != "uint8":
            hint = f"its outputs lie in [{low:.3g}, {high:.3g}]: is {RANGE_OPTION} 0-1 meant?"
        elif self.output_scale == 1.0 and high > 2.0:
            hint = f"its outputs reach {high:.4g}: is {RANGE_OPTION} 0-255 meant?"
        return {"output_min": low, "output_max": high, "hint": hint}

    def describe(self) -> str:
        """One line: the format, the image convention and the extra inputs."""
        extras = "".join(
            f", {name} = {shown_values(values)}" for name, values in self.feeds.items()
        )
        return f"{self.format_name} teacher, {self.image.text()}{extras}"


def shown_values(values: np.ndarray, most: int = 8) -> str:
    """``values`` for a log line: all of them up to ``most``, else their count and the
    non-zero ones by index (a one-hot style vector reads ``26 values, non-zero: [19] 1``)."""
    flat = values.ravel()
    if flat.size <= most:
        return str([float(value) for value in flat])
    nonzero = np.flatnonzero(flat)
    if nonzero.size > most:
        return f"{flat.size} values from {flat.min():g} to {flat.max():g}"
    listed = ", ".join(f"[{index}] {flat[index]:g}" for index in nonzero) or "none"
    return f"{flat.size} values, non-zero: {listed}"


def sidecar_path(path: str) -> str:
    """Where a kstyle sidecar of the exported file ``path`` would be: ``<file>.json``, or
    ``kstyle.json`` inside a SavedModel folder."""
    return os.path.join(path, "kstyle.json") if os.path.isdir(path) else f"{path}.json"


def external_data_files(path: str) -> list:
    """The files an ``.onnx`` teacher keeps weights in beside itself (ONNX's external data,
    for models over 2 GB), sorted; [] for other teachers or a file ONNX cannot read."""
    if teacher_format(path) != "onnx":
        return []
    onnx = require("onnx", "export")
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception:  # the teacher's loader says what is wrong with it
        return []
    folder = os.path.dirname(os.path.abspath(path))
    locations = {
        entry.value
        for tensor in model.graph.initializer
        if tensor.data_location == onnx.TensorProto.EXTERNAL
        for entry in tensor.external_data
        if entry.key == "location"
    }
    return sorted(os.path.join(folder, location) for location in locations)


def sidecar(path: str) -> dict:
    """The kstyle sidecar of an exported file (:func:`sidecar_path`); {} where there is none
    or it does not read."""
    try:
        with open(sidecar_path(path)) as file:
            found = json.load(file)
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def sidecar_range(path: str) -> str | None:
    """The :data:`TEACHER_RANGES` key that a kstyle sidecar's input range says; None without."""
    value_range = (sidecar(path).get("input") or {}).get("range")
    if isinstance(value_range, list) and len(value_range) == 2 and value_range[0] == 0:
        return {1: "0-1", 255: "0-255"}.get(value_range[1])
    return None


def sidecar_smoke_test(path: str) -> bool:
    """Whether a kstyle sidecar marks the exported file ``path`` as a smoke test's."""
    return sidecar(path).get("smoke_test") is True


def first_line(error: Exception) -> str:
    """The first line of ``error``'s message (its type's name when it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
