"""The runtimes of exported teachers (:mod:`kstyle.teacher_files`): ONNX Runtime for
``.onnx``, LiteRT for ``.tflite`` (both from the ``[export]`` extra) and TensorFlow for a
SavedModel folder, each a :class:`kstyle.teacher_files.FileTeacher` that reads its file's
declared inputs and outputs; and :func:`open_teacher`, which picks one by the file.
"""

import contextlib
import os

import numpy as np

from kstyle.errors import KstyleError
from kstyle.extras import require
from kstyle.quiet import filtered_stderr
from kstyle.teacher_files import (
    FileTeacher,
    TensorInfo,
    first_line,
    sidecar_range,
    teacher_format,
)


class OnnxTeacher(FileTeacher):
    """An ``.onnx`` teacher, run by ONNX Runtime on the CPU (its threads do not spin, since
    the training step shares the cores)."""

    format_name = "ONNX"
    DTYPES = {
        "tensor(float)": "float32",
        "tensor(float16)": "float16",
        "tensor(double)": "float64",
        "tensor(uint8)": "uint8",
        "tensor(int8)": "int8",
        "tensor(int32)": "int32",
        "tensor(int64)": "int64",
        "tensor(int16)": "int16",
        "tensor(uint16)": "uint16",
        "tensor(bool)": "bool",
    }

    def load(self):
        onnxruntime = require("onnxruntime", "export")
        onnxruntime.set_default_logger_severity(3)
        options = onnxruntime.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = onnxruntime.InferenceSession(
                self.path, options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # ONNX Runtime raises its own exception kinds
            raise KstyleError(
                f"{self.path}: not a model ONNX Runtime can load: {first_line(error)}"
            ) from error

        def info(tensor):
            shape = tuple(size if isinstance(size, int) else None for size in tensor.shape or ())
            return TensorInfo(tensor.name, self.DTYPES.get(tensor.type, tensor.type), shape)

        return [info(t) for t in self.session.get_inputs()], [
            info(t) for t in self.session.get_outputs()
        ]

    def run(self, feeds):
        return self.session.run([self.output.name], feeds)[0]


class TfliteTeacher(FileTeacher):
    """A ``.tflite`` teacher, run by LiteRT (resized for each batch shape when its size is
    free)."""

    format_name = "TFLite"

    def load(self):
        interpreter = require("ai_edge_litert.interpreter", "export")
        try:
            self.interpreter = interpreter.Interpreter(
                model_path=self.path, num_threads=os.cpu_count()
            )
        except Exception as error:  # LiteRT raises ValueError or RuntimeError
            raise KstyleError(
                f"{self.path}: not a model LiteRT can load: {first_line(error)}"
            ) from error
        self.shapes = {}

        def info(detail):
            shape = tuple(None if size < 0 else int(size) for size in detail["shape_signature"])
            return TensorInfo(detail["name"], np.dtype(detail["dtype"]).name, shape)

        self.details = {d["name"]: d for d in self.interpreter.get_input_details()}
        outputs = self.interpreter.get_output_details()
        self.output_index = outputs[0]["index"] if outputs else None
        return [info(d) for d in self.details.values()], [info(d) for d in outputs]

    def run(self, feeds):
        shapes = {name: array.shape for name, array in feeds.items()}
        # LiteRT announces its XNNPACK delegate when it first applies it
        with filtered_stderr() if not self.shapes else contextlib.nullcontext():
            if shapes != self.shapes:
                for name, shape in shapes.items():
                    self.interpreter.resize_tensor_input(self.details[name]["index"], shape)
                self.interpreter.allocate_tensors()
                self.shapes = shapes
            for name, array in feeds.items():
                self.interpreter.set_tensor(self.details[name]["index"], array)
            self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output_index)


class SavedModelTeacher(FileTeacher):
    """A TensorFlow SavedModel teacher: its ``serving_default`` signature (or its only one),
    run eagerly."""

    format_name = "SavedModel"

    def load(self):
        import tensorflow as tf

        try:
            signatures = tf.saved_model.load(self.path).signatures
        except Exception as error:  # TensorFlow raises several kinds for a damaged folder
            raise KstyleError(
                f"{self.path}: not a SavedModel TensorFlow can load: {first_line(error)}"
            ) from error
        if not signatures:
            raise KstyleError(f"{self.path}: the SavedModel has no serving signature")
        key = "serving_default" if "serving_default" in signatures else sorted(signatures)[0]
        self.function = signatures[key]

        def info(name, spec):
            shape = tuple(spec.shape.as_list()) if spec.shape.rank is not None else ()
            return TensorInfo(name, spec.dtype.name, shape)

        inputs = self.function.structured_input_signature[1]
        outputs = self.function.structured_outputs
        return [info(n, s) for n, s in sorted(inputs.items())], [
            info(n, s) for n, s in sorted(outputs.items())
        ]

    def run(self, feeds):
        return self.function(**feeds)[self.output.name].numpy()


TEACHER_CLASSES = {"onnx": OnnxTeacher, "tflite": TfliteTeacher, "saved_model": SavedModelTeacher}


def open_teacher(
    path: str, value_range: str | None = None, inputs: dict | None = None
) -> FileTeacher:
    """The :class:`FileTeacher` of the exported teacher ``path``, checked on a probe image.
    ``value_range`` (a :data:`kstyle.teacher_files.TEACHER_RANGES` key) is a float image's
    range, else the one a kstyle sidecar next to the file records; ``inputs`` the extra
    inputs' values (:func:`kstyle.teacher_files.parse_teacher_inputs`).

    Raises:
        KstyleError: nothing there, not a model, a missing runtime, conventions it cannot
            follow, or a probe that does not come back as an image of its size (one line).
    """
    fmt = teacher_format(path)
    if fmt is None:
        raise KstyleError(f"{path} is not a SavedModel folder, a .tflite file or a .onnx file")
    if not os.path.exists(path):
        raise KstyleError(f"model not found: {path}")
    teacher = TEACHER_CLASSES[fmt](path, value_range or sidecar_range(path), inputs)
    teacher.probe()
    return teacher
