"""The options of a training run, each written once: its default, its help, its choices.

``TrainConfig`` is what ``kstyle.run.train`` takes; ``kstyle-train``'s parser is generated
from its fields (``kstyle.cli.train``), and ``validate`` checks the same choices the parser
offers. This module does not import TensorFlow, so ``--help`` stays quick.
"""

import dataclasses
import os
import typing

from kstyle.coco import DATA_DIR_HELP
from kstyle.constants import (
    BATCH_SIZE,
    CONTENT_WEIGHT,
    DEFAULT_TFDS_NAME,
    EPOCHS,
    IMAGE_SIZE,
    LOG_INTERVAL_SECONDS,
    PADDINGS,
    SIZE_MULTIPLE,
    STYLE_WEIGHT,
    TV_WEIGHT,
)
from kstyle.distribute import JIT_COMPILE, MIXED_PRECISION, STRATEGIES
from kstyle.errors import KstyleError
from kstyle.extras import install_command
from kstyle.files import file_sha256
from kstyle.images import DEFAULT_MAX_PIXELS
from kstyle.presets import DEFAULT_ARCH, PRESETS, size_multiple_of
from kstyle.smoke import is_smoke_test, model_file_of


def option(default=dataclasses.MISSING, *, doc, default_text=None, choices=None, keep=False):
    """A ``TrainConfig`` field that is also a command-line option.

    Args:
        default: the field's default (none: a required field).
        doc: the option's help, without its default.
        default_text: the default in words, for a default that is not a value (None, off).
        choices: the values the option takes (None: any value of the field's type).
        keep: a resumed run must have the same value (it defines what the run computes).
    """
    metadata = {"doc": doc, "default_text": default_text, "choices": choices, "keep": keep}
    return dataclasses.field(default=default, metadata=metadata)


def flag_of(name: str) -> str:
    """The command-line flag of the field ``name``, e.g. ``--batch-size``."""
    return "--" + name.replace("_", "-")


# The kinds of training run (``kstyle.tasks`` builds each one's trainer).
STYLE_TASK = "style"
DISTILL_TASK = "distill"


@dataclasses.dataclass
class TrainConfig:
    """Every option of a style-training run; the defaults are the reference example's."""

    TASK: typing.ClassVar[str] = STYLE_TASK

    style: str = option(doc="style image (required unless --demo)", keep=True)
    data: str | None = option(
        None,
        doc="folder of content images, searched recursively",
        default_text="the COCO 2014 train images, fetched once into --data-dir",
        keep=True,
    )
    data_dir: str | None = option(
        None,
        doc="where the COCO 2014 train images are downloaded (a 13.5 GB zip, resumed if cut "
        "short, checksum-verified) and extracted once (13.5 GB) when neither --data nor "
        "--tfds-name is given; later runs reuse them",
        default_text=DATA_DIR_HELP,
    )
    tfds_name: str | None = option(
        None,
        doc=f"train on this tensorflow-datasets dataset instead, e.g. {DEFAULT_TFDS_NAME} "
        f"(every split, prepared by tfds; needs {install_command('coco')})",
        default_text="none",
        keep=True,
    )
    tfds_split: str = option("train", doc="tfds split (with --tfds-name)", keep=True)
    tfds_data_dir: str | None = option(
        None, doc="tfds data directory (with --tfds-name)", default_text="tfds's own"
    )
    output: str | None = option(None, doc="run directory", default_text="runs/<style name>")
    epochs: int | None = option(
        None,
        doc="passes over the content images (with --steps: whichever stops first)",
        default_text=f"{EPOCHS}, or as many as --steps needs",
        keep=True,
    )
    batch_size: int = option(BATCH_SIZE, doc="images per step", keep=True)
    image_size: int = option(
        IMAGE_SIZE,
        doc=f"content images are resized to this square, a multiple of {SIZE_MULTIPLE}",
        keep=True,
    )
    style_size: int | None = option(
        None, doc="style image is resized to this square", default_text="--image-size", keep=True
    )
    # --learning-rate may change on resume: a run resumed after a NaN needs a lower one
    learning_rate: float = option(1e-3, doc="Adam learning rate")
    beta1: float = option(0.9, doc="Adam beta_1 (gradient decay)", keep=True)
    beta2: float = option(0.999, doc="Adam beta_2 (squared-gradient decay)", keep=True)
    content_weight: float = option(
        CONTENT_WEIGHT, doc="weight of the relu3_3 content loss", keep=True
    )
    style_weight: float = option(STYLE_WEIGHT, doc="weight of the Gram style loss", keep=True)
    tv_weight: float = option(TV_WEIGHT, doc="weight of the total-variation loss", keep=True)
    fraction: float = option(1.0, doc="keep the first floor(N*fraction) content images", keep=True)
    steps: int | None = option(
        None,
        doc="train this many steps: the content images repeat for as many epochs as that "
        "needs (the last one may be partial)",
        default_text="the steps of --epochs",
        keep=True,
    )
    vgg_weights: str = option(
        "imagenet",
        doc="imagenet (Keras download and cache), a weights file PATH, or random "
        "(untrained loss net: offline smoke runs only)",
        keep=True,
    )
    arch: str = option(
        DEFAULT_ARCH,
        doc=f"transform net preset ({DEFAULT_ARCH}: the reference net; the others are slimmer "
        "and faster; docs/presets.md has their parameters and FLOPs)",
        choices=PRESETS.keys(),  # a live view: a preset registered later is a choice too
        keep=True,
    )
    padding: str = option(
        "zeros", doc="convolution padding of the transform net", choices=PADDINGS, keep=True
    )
    plot_every: int = option(
        10,
        doc="refresh losses.png and preview.png (and TensorBoard's preview image) every N steps "
        "(0: the PNGs only at the end of the run, no TensorBoard preview)",
    )
    log_every: int | None = option(
        None,
        doc="print a progress line (step, losses, steps/s, ETA) every N steps instead of "
        "Keras's progress bar",
        default_text=f"Keras's bar in a terminal; when stdout is not one (a log: nohup, "
        f"SLURM, CI), a line every {LOG_INTERVAL_SECONDS} s or so",
    )
    seed: int | None = option(
        None,
        doc="random seed for weights and shuffling",
        default_text="drawn, and recorded in config.json so that a resumed run keeps its "
        "data order",
        keep=True,
    )
    verbose: int | str = "auto"  # Keras's fit verbosity (0: no progress lines); not an option
    checkpoint_every: int = option(
        500,
        doc="write a checkpoint (weights, optimizer, step) every N steps; rerunning the same "
        "command resumes from the last one (0: only on Ctrl-C or SIGTERM)",
    )
    restart: bool = option(
        False,
        doc="start over: delete the run's model, history, checkpoints and logs in --output",
    )
    mixed_precision: str = option(
        "off",
        doc="compute in float16 (with loss scaling) or bfloat16; variables, losses and Grams "
        "stay float32",
        choices=tuple(MIXED_PRECISION),
        keep=True,
    )
    jit_compile: str = option(
        "auto",
        doc="XLA-compile the train step (auto: Keras's choice, XLA on GPUs)",
        choices=tuple(JIT_COMPILE),
    )
    strategy: str = option(
        "auto",
        doc="tf.distribute strategy (auto: multiworker if TF_CONFIG lists several tasks, "
        "mirrored on several GPUs, else default); --batch-size is the global batch",
        choices=STRATEGIES,
    )
    cache: bool = option(
        False,
        doc="decode the images once, up front, and keep them in memory as uint8 "
        "(N x image-size² x 3 bytes)",
        default_text="decode every epoch",
        keep=True,
    )
    max_pixels: int = option(
        DEFAULT_MAX_PIXELS,
        doc="skip training images whose header declares more pixels (a decompression-bomb "
        "guard; they are counted like unreadable files, never decoded; 0: no limit)",
        default_text=f"{DEFAULT_MAX_PIXELS}, Pillow's limit",
        keep=True,
    )

    def resolved_output(self) -> str:
        """The run directory: ``output``, or ``runs/<style file name without extension>``."""
        if self.output:
            return self.output
        return os.path.join("runs", os.path.splitext(os.path.basename(self.style))[0])

    def check_inputs(self) -> None:
        """Raises KstyleError when an input file is missing or unreadable (the style image), so
        a run fails before it builds anything."""
        from kstyle.images import load_image

        load_image(self.style)

    def uses_loss_net(self) -> bool:
        """Whether the run builds the VGG-16 loss network (style training always does)."""
        return True

    def recorded_inputs(self) -> dict:
        """What ``config.json`` and ``summary.json`` record about the inputs besides the options
        (a resumed run must find the same): nothing for style training."""
        return {}

    def smoke_test_cause(self) -> str | None:
        """Why the run is a smoke test (its model learns no style), in words for its note:
        ``--vgg-weights random`` (an untrained loss network); None for a real run."""
        return "--vgg-weights random" if self.vgg_weights == "random" else None

    def options_of_older_runs(self) -> dict:
        """The options that runs recorded before the option existed had: style runs started
        before ``--arch`` trained the seed net."""
        return {"arch": DEFAULT_ARCH}

    def resolved_style_size(self) -> int:
        """The style image's side: ``style_size``, or ``image_size``."""
        return self.style_size or self.image_size

    def validate(self) -> None:
        """Raises KstyleError for option values that cannot work."""
        positive = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "image_size": self.image_size,
            "learning_rate": self.learning_rate,
            "style_size": self.style_size,
            "steps": self.steps,
            "log_every": self.log_every,
        }
        for name, value in positive.items():
            if value is not None and value <= 0:
                raise KstyleError(f"{flag_of(name)} must be positive, got {value}")
        for name in ("content_weight", "style_weight", "tv_weight", "max_pixels"):
            value = getattr(self, name)
            if value < 0:
                raise KstyleError(f"{flag_of(name)} must not be negative, got {value}")
        if not 0.0 < self.fraction <= 1.0:
            raise KstyleError(f"--fraction must be in (0, 1], got {self.fraction}")
        if not (0.0 <= self.beta1 < 1.0 and 0.0 <= self.beta2 < 1.0):
            raise KstyleError("--beta1 and --beta2 must be in [0, 1)")
        multiple = size_multiple_of(self.arch)
        if self.image_size % multiple:
            raise KstyleError(
                f"--image-size must be a multiple of {multiple} for --arch {self.arch}, "
                f"got {self.image_size}"
            )
        if self.checkpoint_every < 0:
            raise KstyleError(f"--checkpoint-every must not be negative: {self.checkpoint_every}")
        for field in dataclasses.fields(self):
            choices = field.metadata.get("choices")
            value = getattr(self, field.name)
            if choices is not None and value not in choices:
                raise KstyleError(
                    f"{flag_of(field.name)} must be one of {', '.join(choices)}, got {value!r}"
                )


def resume_keys(config) -> tuple:
    """The options of ``config`` (a ``TrainConfig`` or a subclass's) that define what a run
    computes: a resumed run must have the same ones."""
    return tuple(field.name for field in dataclasses.fields(config) if field.metadata.get("keep"))


# The options that define what a style-training run computes.
RESUME_KEYS = resume_keys(TrainConfig)


# TrainConfig's options that only style training uses: ``kstyle distill`` does not offer them.
STYLE_ONLY = ("style", "style_size", "content_weight", "style_weight", "tv_weight")


@dataclasses.dataclass
class DistillConfig(TrainConfig):
    """A distillation run's options: :class:`TrainConfig`'s (the data, steps, optimizer,
    checkpoints, ...) without a style image, plus the teacher and the perceptual weight.

    ``kstyle distill`` generates its options from these fields, like ``kstyle train``; the
    style-loss options (``style``, ``style_size``, the content, style and TV weights:
    :data:`STYLE_ONLY`) are not offered, as distillation does not use them. The trainer is
    ``kstyle.distill``'s.
    """

    TASK: typing.ClassVar[str] = DISTILL_TASK

    style: str | None = None  # no style image: the teacher's outputs are the targets
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

    def options_of_older_runs(self) -> dict:
        """Nothing: no option of distillation had another value before it was recorded (an
        option that an older run lacks takes the value given now, as for every kind)."""
        return {}

    def smoke_test_cause(self) -> str | None:
        """Why the student is a smoke test: its teacher is one (``kstyle.smoke``), or its
        perceptual term uses an untrained loss network; None for a real run."""
        if is_smoke_test(self.teacher):
            return f"its teacher {teacher_model_file(self.teacher)} is a smoke test's model"
        if self.uses_loss_net() and self.vgg_weights == "random":
            return "--vgg-weights random"
        return None

    def recorded_inputs(self) -> dict:
        """The teacher's model file and its SHA-256 (hex), for ``config.json`` and
        ``summary.json``; a resumed run must find the same file."""
        path = teacher_model_file(self.teacher)
        return {"teacher_model": os.path.abspath(path), "teacher_sha256": file_sha256(path)}

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
