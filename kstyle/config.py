"""The options of a training run, each written once: its default, its help, its choices.

:class:`RunOptions` holds every kind of run's options, a config class per kind adds its
own: :class:`TrainConfig` (style training, with :class:`StyleOptions`) here,
``kstyle.distill_config.DistillConfig`` for distillation. ``kstyle.run.train`` takes any of
them; each command's parser is generated from the fields (``kstyle.cli.train``), and
``validate`` checks the same choices the parser offers. This module does not import
TensorFlow, so ``--help`` stays quick.
"""

import abc
import dataclasses
import math
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
    STYLE_SCHEDULE_RULE,
    STYLE_WEIGHT,
    TV_WEIGHT,
)
from kstyle.distribute import JIT_COMPILE, MIXED_PRECISION, STRATEGIES
from kstyle.errors import KstyleError
from kstyle.extras import install_command
from kstyle.files import file_stem, image_files_of, unique_names
from kstyle.images import DEFAULT_MAX_PIXELS
from kstyle.presets import DEFAULT_ARCH, PRESETS, size_multiple_of


def option(
    default=dataclasses.MISSING, *, doc, default_text=None, choices=None, keep=False, many=False
):
    """A ``TrainConfig`` field that is also a command-line option.

    Args:
        default: the field's default (none: a required field).
        doc: the option's help, without its default.
        default_text: the default in words, for a default that is not a value (None, off).
        choices: the values the option takes (None: any value of the field's type).
        keep: a resumed run must have the same value (it defines what the run computes).
        many: the option may be given several times; the field is the list of its values.
    """
    metadata = {"doc": doc, "default_text": default_text, "choices": choices, "keep": keep}
    metadata["many"] = many
    return dataclasses.field(default=default, metadata=metadata)


# Fields whose flag is not their name's: ``from`` is a keyword in Python.
_FLAGS = {"from_run": "--from"}


def flag_of(name: str) -> str:
    """The command-line flag of the field ``name``, e.g. ``--batch-size``."""
    return _FLAGS.get(name) or "--" + name.replace("_", "-")


STYLE_TASK = "style"  # the kind of run TrainConfig describes (kstyle.tasks builds its trainer)


@dataclasses.dataclass
class StyleLossOptions:
    """The options of the style loss, which the style-training kinds have (the defaults are
    the reference example's)."""

    style_size: int | None = option(
        None, doc="style image is resized to this square", default_text="--image-size", keep=True
    )
    content_weight: float = option(
        CONTENT_WEIGHT, doc="weight of the relu3_3 content loss", keep=True
    )
    style_weight: float = option(STYLE_WEIGHT, doc="weight of the Gram style loss", keep=True)
    tv_weight: float = option(TV_WEIGHT, doc="weight of the total-variation loss", keep=True)

    def resolved_style_size(self) -> int:
        """The style images' side: ``style_size``, or ``image_size``."""
        return self.style_size or self.image_size

    def check_style_loss(self) -> None:
        """Raises KstyleError for style-loss option values that cannot work."""
        if self.style_size is not None and self.style_size <= 0:
            raise KstyleError(f"--style-size must be positive, got {self.style_size}")
        for name in ("content_weight", "style_weight", "tv_weight"):
            value = getattr(self, name)
            if value < 0:
                raise KstyleError(f"{flag_of(name)} must not be negative, got {value}")


@dataclasses.dataclass
class StyleImages:
    """The style images of a style-training run."""

    style: list[str] | None = option(
        None,
        doc="style image, or a folder of style images; give it several times to train one "
        "network for all of them (required unless --demo)",
        keep=True,
        many=True,
    )


@dataclasses.dataclass
class StyleOptions(StyleLossOptions, StyleImages):
    """Style training's own options: the style images (first), then the style loss's."""


@dataclasses.dataclass
class RunOptions(abc.ABC):
    """The options every kind of training run has (the data, steps, optimizer, network,
    checkpoints, ...), and what a kind must say of its inputs; a config class per kind adds
    its own options and names its kind in ``TASK``."""

    TASK: typing.ClassVar[str]

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
    # --learning-rate may change on resume: a run resumed after a NaN needs a lower one
    learning_rate: float = option(1e-3, doc="Adam learning rate")
    stability_weight: float = option(
        0.0,
        doc="weight of a temporal-stability term: the outputs for each image and for it moved "
        "a few pixels with sensor noise must agree (steadier video; docs/training.md). 0: off",
        keep=True,
    )
    beta1: float = option(0.9, doc="Adam beta_1 (gradient decay)", keep=True)
    beta2: float = option(0.999, doc="Adam beta_2 (squared-gradient decay)", keep=True)
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
        "stay float32; auto: bfloat16 where kstyle tune measured a training step faster on "
        "this machine, else off (a resumed run keeps its own; distill: off)",
        choices=(*MIXED_PRECISION, "auto"),
        keep=True,
    )
    jit_compile: str = option(
        "auto",
        doc="XLA-compile the train step (auto: as kstyle tune measured on this machine, else "
        "Keras's choice, XLA on GPUs)",
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

    @abc.abstractmethod
    def resolved_output(self) -> str:
        """The run directory: ``output``, or one named after the run's input."""

    @abc.abstractmethod
    def check_inputs(self) -> None:
        """Raises KstyleError when an input file is missing or unreadable, so a run fails
        before it builds anything."""

    @abc.abstractmethod
    def uses_loss_net(self) -> bool:
        """Whether the run builds the VGG-16 loss network."""

    def recorded_inputs(self) -> dict:
        """What ``config.json`` and ``summary.json`` record about the inputs besides the options
        (a resumed run must find the same): nothing unless a kind says otherwise."""
        return {}

    def adopt_older_record(self, saved: dict) -> None:
        """Brings ``saved`` (an older run's ``config.json``) to today's form of its options,
        in place: nothing unless a kind says otherwise."""
        return None

    def model_marks(self) -> dict:
        """What the model file records about itself beside the smoke-test mark (see
        :func:`kstyle.smoke.mark_model_file`): nothing unless a kind says otherwise."""
        return {}

    def resolved_options(self) -> dict:
        """What ``config.json`` records of options whose value the run derives (e.g.
        ``style_size_used``): nothing unless a kind says otherwise."""
        return {}

    def tuned_job(self) -> str | None:
        """The training job whose ``kstyle tune`` choice applies to this run (its step is
        the style trainer's of ``arch`` and ``padding``), or None for a kind whose step tune
        does not measure."""
        from kstyle.tuning import train_job

        return train_job(self.arch, self.padding)

    def smoke_test_cause(self) -> str | None:
        """Why the run is a smoke test (its model learns no style), in words for its note:
        ``--vgg-weights random`` (an untrained loss network); None for a real run."""
        if self.uses_loss_net() and self.vgg_weights == "random":
            return "--vgg-weights random"
        return None

    def options_of_older_runs(self) -> dict:
        """The values of options that runs recorded before the option existed had (an option
        an older run lacks otherwise takes the value given now): runs before
        ``--stability-weight`` had no stability term."""
        return {"stability_weight": 0.0}

    def validate(self) -> None:
        """Raises KstyleError for option values that cannot work."""
        positive = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "image_size": self.image_size,
            "learning_rate": self.learning_rate,
            "steps": self.steps,
            "log_every": self.log_every,
        }
        for name, value in positive.items():
            if value is not None and value <= 0:
                raise KstyleError(f"{flag_of(name)} must be positive, got {value}")
        if self.max_pixels < 0:
            raise KstyleError(f"--max-pixels must not be negative, got {self.max_pixels}")
        if not (math.isfinite(self.stability_weight) and self.stability_weight >= 0):
            raise KstyleError(
                f"--stability-weight must be a finite number, not negative, got "
                f"{self.stability_weight}"
            )
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
        smallest = multiple * (3 if self.padding == "reflect" else 2)
        if self.stability_weight and self.image_size < smallest:  # the term's crop is m smaller
            raise KstyleError(
                f"--stability-weight needs --image-size at least {smallest} for --arch "
                f"{self.arch} (the term stylizes a crop {multiple} px smaller), got "
                f"{self.image_size}"
            )
        if self.checkpoint_every < 0:
            raise KstyleError(f"--checkpoint-every must not be negative: {self.checkpoint_every}")
        for field in dataclasses.fields(self):
            choices = field.metadata.get("choices")
            value = getattr(self, field.name)
            if choices is not None and value not in choices and value != field.default:
                raise KstyleError(
                    f"{flag_of(field.name)} must be one of {', '.join(choices)}, got {value!r}"
                )


@dataclasses.dataclass
class TrainConfig(RunOptions, StyleOptions):
    """Every option of a style-training run: the style loss's (first) and every run's; the
    defaults are the reference example's."""

    TASK: typing.ClassVar[str] = STYLE_TASK

    def __post_init__(self):
        if isinstance(self.style, str):  # one style image, as the library's callers give it
            self.style = [self.style]

    def resolved_output(self) -> str:
        """The run directory: ``output``, or ``runs/<name>``: the style's file name without
        extension (a folder's name for one folder; ``<first>-and-<N-1>-more`` for N)."""
        if self.output:
            return self.output
        names = [file_stem(path) for path in dict.fromkeys(self.style or ())]
        if len(names) > 1:
            return os.path.join("runs", f"{names[0]}-and-{len(names) - 1}-more")
        return os.path.join("runs", names[0] if names else "style")

    def style_files(self) -> list[str]:
        """The style images, in order (:func:`kstyle.files.image_files_of` of ``--style``)."""
        return image_files_of(self.style)

    def style_names(self) -> list[str]:
        """A name per style image (:func:`kstyle.files.unique_names`)."""
        return unique_names(self.style_files())

    def check_inputs(self) -> None:
        """Raises KstyleError when there is no style image, or one is missing or unreadable,
        so a run fails before it builds anything."""
        from kstyle.images import load_image

        if not self.style_files():
            raise KstyleError("--style is required: a style image, or a folder of them")
        for path in self.style_files():
            load_image(path)

    def recorded_inputs(self) -> dict:
        """The style images (``style_files``) and their names (``style_names``); a resumed
        run must find the same files."""
        return {"style_files": self.style_files(), "style_names": self.style_names()}

    def model_marks(self) -> dict:
        """``style_names`` for a net of several styles, so that its file names them."""
        names = self.style_names()
        return {"style_names": names} if len(names) > 1 else {}

    def adopt_older_record(self, saved: dict) -> None:
        """A run recorded before several styles has one ``style`` path, not a list."""
        if isinstance(saved.get("style"), str):
            saved["style"] = [saved["style"]]

    def uses_loss_net(self) -> bool:
        """Whether the run builds the VGG-16 loss network (style training always does)."""
        return True

    def resolved_options(self) -> dict:
        """``style_size_used``: the style images' side (:meth:`resolved_style_size`); with
        several styles, ``style_schedule``: which style each step draws."""
        resolved = {"style_size_used": self.resolved_style_size()}
        if len(self.style_files()) > 1:
            resolved["style_schedule"] = STYLE_SCHEDULE_RULE
        return resolved

    def options_of_older_runs(self) -> dict:
        """The options that runs recorded before the option existed had: every run's, and
        style runs started before ``--arch`` trained the seed net."""
        return {**super().options_of_older_runs(), "arch": DEFAULT_ARCH}

    def validate(self) -> None:
        """Raises KstyleError for option values that cannot work."""
        super().validate()
        self.check_style_loss()


def resume_keys(config) -> tuple:
    """The options of ``config`` (a config class or instance of any kind) that define what a
    run computes: a resumed run must have the same ones."""
    return tuple(field.name for field in dataclasses.fields(config) if field.metadata.get("keep"))


# The options that define what a style-training run computes.
RESUME_KEYS = resume_keys(TrainConfig)
