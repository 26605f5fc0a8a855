"""The options of a distillation run (``kstyle distill``; the trainer: :mod:`kstyle.distill`).

No TensorFlow at import, as in :mod:`kstyle.config`.
"""

import dataclasses
import os
import typing

from kstyle.checks import archived_style_count
from kstyle.config import RunOptions, option
from kstyle.errors import KstyleError
from kstyle.files import file_sha256
from kstyle.presets import PRESETS
from kstyle.smoke import is_smoke_test, model_file_of, recorded_style_names

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
        doc="the trained transform net to reproduce: a run directory or a .keras file "
        "(required; read only)",
        keep=True,
    )
    perceptual_weight: float = option(
        0.0,
        doc="weight of a relu3_3 feature loss between student and teacher outputs, added to "
        "the pixel loss (needs the VGG-16 weights of --vgg-weights; 0: off, no VGG built)",
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
        path = teacher_model_file(self.teacher)
        if os.path.realpath(os.path.dirname(path)) == os.path.realpath(self.resolved_output()):
            raise KstyleError(
                f"--output {self.resolved_output()} holds the teacher {path}; the student "
                "needs a run directory of its own"
            )

    def check_inputs(self) -> None:
        """Raises KstyleError when the teacher is missing or not a transform net (one that
        ``--output`` would write is :meth:`validate`'s)."""
        load_teacher(self.teacher)

    def uses_loss_net(self) -> bool:
        """Whether the run builds the VGG-16 loss network: only for the perceptual term."""
        return self.perceptual_weight > 0

    def smoke_test_cause(self) -> str | None:
        """Why the student is a smoke test: its teacher is one (``kstyle.smoke``), or its
        perceptual term uses an untrained loss network; None for a real run."""
        if is_smoke_test(self.teacher):
            return f"its teacher {teacher_model_file(self.teacher)} is a smoke test's model"
        return super().smoke_test_cause()

    def recorded_inputs(self) -> dict:
        """The teacher's model file and its SHA-256 (hex), for ``config.json`` and
        ``summary.json``; a resumed run must find the same file. A teacher of several styles
        adds their names (``style_names``), which the student keeps."""
        path = teacher_model_file(self.teacher)
        recorded = {"teacher_model": os.path.abspath(path), "teacher_sha256": file_sha256(path)}
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
        """The run directory: ``output``, or ``runs/<teacher name>-<arch>``."""
        if self.output:
            return self.output
        path = os.path.normpath(self.teacher)
        name = os.path.splitext(os.path.basename(path))[0]
        if name == "model":  # runs/NAME/model.keras
            name = os.path.basename(os.path.dirname(path)) or name
        return os.path.join("runs", f"{name}-{self.arch}")


def teacher_model_file(teacher: str) -> str:
    """The model file of ``teacher``: ``teacher/model.keras`` for a run directory, else
    ``teacher`` itself."""
    return model_file_of(teacher)


def teacher_style_count(teacher: str) -> int:
    """How many styles ``teacher``'s net holds, read from its file without loading it
    (:func:`kstyle.checks.archived_style_count`)."""
    return archived_style_count(teacher_model_file(teacher))


def load_teacher(teacher: str):
    """The teacher's transform net, frozen (``trainable`` False).

    Raises:
        KstyleError: nothing there, or not a loadable transform net (one line, naming
            ``--teacher``).
    """
    from kstyle.transform_net import load_transform_net

    try:
        model = load_transform_net(teacher)
    except KstyleError as error:
        raise KstyleError(f"--teacher: {error}") from error
    model.trainable = False
    return model
