"""The options of a distillation run (``kstyle distill``; the trainer: :mod:`kstyle.distill`).

No TensorFlow at import, as in :mod:`kstyle.config`.
"""

import dataclasses
import functools
import hashlib
import os
import typing

import numpy as np

from kstyle.checks import archived_style_count
from kstyle.config import RunOptions, option
from kstyle.errors import KstyleError
from kstyle.files import file_sha256, folder_sha256
from kstyle.presets import PRESETS
from kstyle.smoke import is_smoke_test, model_file_of, recorded_style_names
from kstyle.teacher_files import (
    INPUT_OPTION,
    RANGE_OPTION,
    TEACHER_RANGES,
    external_data_files,
    parse_teacher_inputs,
    sidecar_path,
    sidecar_smoke_test,
    teacher_format,
)

DISTILL_TASK = "distill"  # the kind of run DistillConfig describes


@dataclasses.dataclass
class DistillConfig(RunOptions):
    """A distillation run's options: every run's (the data, steps, optimizer, checkpoints,
    ...), the teacher and the perceptual weight; no style loss. ``kstyle distill`` generates
    its options from these fields, like ``kstyle train``. The trainer is ``kstyle.distill``'s.
    """

    TASK: typing.ClassVar[str] = DISTILL_TASK

    output: str | None = option(
        None, doc="the student's run directory", default_text="runs/<teacher name>-<arch>"
    )
    teacher: str | None = option(
        None,
        doc="the style network to reproduce (required; read only): a kstyle run directory or "
        ".keras file, or any image-to-image network as a SavedModel folder, .tflite or .onnx "
        "file (docs/training.md#distillation)",
        keep=True,
    )
    teacher_range: str | None = option(
        None,
        doc="the value range of a SavedModel, .tflite or .onnx teacher's float images, which "
        "the file cannot tell (uint8 images are 0-255)",
        default_text="a kstyle sidecar's",
        choices=tuple(TEACHER_RANGES),
        keep=True,
    )
    teacher_input: list[str] | None = option(
        None,
        doc="NAME=VALUES: the values of an extra input of a SavedModel, .tflite or .onnx "
        "teacher (comma-separated numbers, or a .npy file), e.g. style=0,0,1 to distill one "
        "style of a multi-style network",
        default_text="none",
        keep=True,
        many=True,
    )
    perceptual_weight: float = option(
        0.0,
        doc="weight of a relu3_3 feature loss between student and teacher outputs, added to "
        "the pixel loss (needs the VGG-16 weights of --vgg-weights; 0: off, no VGG built)",
        keep=True,
    )
    texture_weight: float = option(
        0.0,
        doc="weight of a texture term: the Gram matrices of the student's and the teacher's "
        "pictures at the style layers, per image, so that the student keeps the teacher's "
        "strokes (needs the VGG-16 weights of --vgg-weights; 0: off, docs/training.md)",
        keep=True,
    )
    arch: str = option(  # the student: a slim preset by default, unlike style training
        "tiny",
        doc="the student's transform net preset (docs/presets.md)",
        choices=PRESETS.keys(),  # a live view: a preset registered later is a choice too
        keep=True,
    )

    def validate(self) -> None:
        """Raises KstyleError for option values that cannot work, and for an ``--output`` that
        holds the teacher (it would be written)."""
        super().validate()
        if not self.teacher:
            raise KstyleError("--teacher is required: the run directory or .keras file to distill")
        if self.perceptual_weight < 0:
            raise KstyleError(f"--perceptual-weight must not be negative: {self.perceptual_weight}")
        if not 0 <= self.texture_weight < float("inf"):
            raise KstyleError(
                f"--texture-weight must be finite and not negative: {self.texture_weight}"
            )
        if teacher_format(self.teacher) is None:
            given = RANGE_OPTION if self.teacher_range else INPUT_OPTION
            if self.teacher_range or self.teacher_input:
                raise KstyleError(
                    f"{given} is for a SavedModel, .tflite or .onnx teacher; {self.teacher} is "
                    "a kstyle model, which needs none"
                )
        parse_teacher_inputs(self.teacher_input)
        path = teacher_model_file(self.teacher)
        output = os.path.realpath(self.resolved_output())
        if output in (os.path.realpath(os.path.dirname(path)), os.path.realpath(path)):
            raise KstyleError(
                f"--output {self.resolved_output()} holds the teacher {path}; the student "
                "needs a run directory of its own"
            )

    def check_inputs(self) -> None:
        """Raises KstyleError when the teacher is missing or not a transform net, when an
        exported teacher fails its probe image, or when it takes a fixed size other than
        ``image_size`` (one that ``--output`` would write is :meth:`validate`'s)."""
        if not teacher_format(self.teacher):
            load_teacher(self.teacher)
            return
        side = self.opened_teacher().side
        if side is not None and side != self.image_size:
            raise KstyleError(
                f"--teacher {self.teacher} takes only {side}×{side} images: give --image-size "
                f"{side} (the command line does when --image-size is not given)"
            )

    @functools.cached_property
    def _opened_teacher(self):
        return load_teacher(self.teacher, self.teacher_range, self.teacher_input)

    def opened_teacher(self):
        """The exported teacher (:class:`kstyle.teacher_files.FileTeacher`), opened and
        probed once per config: :meth:`check_inputs` opens it before the strategy's scope
        is entered, and the trainer takes the same one."""
        return self._opened_teacher

    def options_of_older_runs(self) -> dict:
        """Every run's, and: distillations before ``--texture-weight`` had no texture term."""
        return {**super().options_of_older_runs(), "texture_weight": 0.0}

    def uses_loss_net(self) -> bool:
        """Whether the run builds the VGG-16 loss network: only for the perceptual term."""
        return self.perceptual_weight > 0 or self.texture_weight > 0

    def tuned_job(self) -> None:
        """None: a distillation step (the teacher's pictures against the student's) is not the
        style trainer's step that ``kstyle tune`` measures, so its choice does not apply."""
        return None

    def smoke_test_cause(self) -> str | None:
        """Why the student is a smoke test: its teacher is one (``kstyle.smoke``), or its
        perceptual term uses an untrained loss network; None for a real run."""
        if is_smoke_test(self.teacher) or sidecar_smoke_test(self.teacher):
            return f"its teacher {teacher_model_file(self.teacher)} is a smoke test's model"
        return super().smoke_test_cause()

    def recorded_inputs(self) -> dict:
        """The teacher's model file and its SHA-256 (hex), for ``config.json`` and
        ``summary.json``; a resumed run must find the same file. A teacher of several styles
        adds their names (``style_names``), which the student keeps."""
        path = teacher_model_file(self.teacher)
        digest = folder_sha256(path) if os.path.isdir(path) else file_sha256(path)
        recorded = {"teacher_model": os.path.abspath(path), "teacher_sha256": digest}
        if teacher_format(self.teacher):
            recorded |= exported_teacher_record(self.teacher, self.teacher_input)
        return {**recorded, **self.model_marks()}

    def model_marks(self) -> dict:
        """``style_names`` of a teacher of several styles (as its file or run records them,
        else ``style K``), so that the student's file names them as the teacher's does."""
        count = teacher_style_count(self.teacher)
        if count == 1:
            return {}
        names = recorded_style_names(self.teacher)
        names = names if names and len(names) == count else [f"style {k}" for k in range(count)]
        return {"style_names": names}

    def resolved_options(self) -> dict:
        """``style_vectors`` for a teacher of several styles: how each image's style vector
        is drawn (:data:`kstyle.constants.DISTILL_STYLE_RULE`)."""
        from kstyle.constants import DISTILL_STYLE_RULE

        return (
            {"style_vectors": DISTILL_STYLE_RULE} if teacher_style_count(self.teacher) > 1 else {}
        )

    def resolved_output(self) -> str:
        """The run directory: ``output``, or ``runs/<teacher name>-<arch>``: the teacher
        file's stem, or for kstyle's own file names its folder's name (``runs/NAME/model.keras``
        gives NAME; ``exports/NAME/model.onnx`` NAME-model-onnx, so that each exported file
        of one net has a run of its own)."""
        if self.output:
            return self.output
        path = os.path.normpath(self.teacher)
        base = os.path.basename(path)
        name = os.path.splitext(base)[0]
        if name in ("model", "saved_model") or name.startswith("model_"):
            folder = os.path.basename(os.path.dirname(path))
            exported = f"-{base.replace('.', '-')}" if teacher_format(self.teacher) else ""
            name = f"{folder}{exported}" if folder else name
        return os.path.join("runs", f"{name}-{self.arch}")


def exported_teacher_record(teacher: str, inputs) -> dict:
    """What else defines an exported teacher's pictures, for ``config.json``: the SHA-256
    of its kstyle sidecar (which may give its range; None without one), of the files its
    ``.onnx`` keeps its weights in, and of the ``--teacher-input`` values (as float64, by
    name), so that a resumed run refuses a changed one."""
    sidecar = sidecar_path(teacher)
    values = hashlib.sha256()
    for name, array in sorted(parse_teacher_inputs(inputs).items()):
        values.update(name.encode() + b"\0" + np.ascontiguousarray(array).tobytes())
    return {
        "teacher_sidecar_sha256": file_sha256(sidecar) if os.path.isfile(sidecar) else None,
        "teacher_data_sha256": [file_sha256(path) for path in external_data_files(teacher)],
        "teacher_input_sha256": values.hexdigest() if inputs else None,
    }


def teacher_model_file(teacher: str) -> str:
    """The model file of ``teacher``: ``teacher/model.keras`` for a run directory, else
    ``teacher`` itself (a SavedModel folder included)."""
    return teacher if teacher_format(teacher) else model_file_of(teacher)


def teacher_style_count(teacher: str) -> int:
    """How many styles ``teacher``'s net holds, read from its file without loading it
    (:func:`kstyle.checks.archived_style_count`); 1 for an exported teacher, whose extra
    inputs ``--teacher-input`` fixes."""
    if teacher_format(teacher):
        return 1
    return archived_style_count(teacher_model_file(teacher))


def load_teacher(teacher: str, value_range: str | None = None, inputs=None):
    """The teacher: a kstyle transform net, frozen (``trainable`` False), or for a
    SavedModel, ``.tflite`` or ``.onnx`` file a :class:`kstyle.teacher_files.FileTeacher`
    checked on a probe image (``value_range`` and ``inputs``: ``--teacher-range`` and the
    ``--teacher-input`` values as given).

    Raises:
        KstyleError: nothing there, or not a loadable transform net or image model (one line,
            naming ``--teacher``).
    """
    from kstyle.teacher_runtimes import open_teacher

    try:
        if teacher_format(teacher):
            return open_teacher(teacher, value_range, parse_teacher_inputs(inputs))
        from kstyle.transform_net import load_transform_net

        model = load_transform_net(teacher)
    except KstyleError as error:
        raise KstyleError(f"--teacher: {error}") from error
    model.trainable = False
    return model
