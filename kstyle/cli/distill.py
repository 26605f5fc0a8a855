"""``kstyle distill``: train a small student transform net to reproduce a trained teacher."""

import argparse
import dataclasses
import os
import sys

from kstyle.checks import model_file
from kstyle.cli.common import OneLineErrorParser, run_command, start_command
from kstyle.cli.console import add_verbosity, program_name
from kstyle.cli.train import add_config_options
from kstyle.distill_config import DistillConfig, load_teacher
from kstyle.errors import KstyleError
from kstyle.files import check_writable, list_image_files
from kstyle.teacher_files import teacher_format


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The parser of ``kstyle distill``: one option per :class:`DistillConfig` field (its
    default, help and choices), ``-q`` and ``-v``; ``prog`` names the command in its usage
    (default: as typed)."""
    parser = OneLineErrorParser(
        prog=prog or program_name("kstyle distill"),
        description="Distill a trained transform net (--teacher) into a smaller student "
        "(--arch) on a folder of images (or COCO): the student learns to reproduce the "
        "teacher's pictures. Needs no VGG unless --perceptual-weight is set.",
    )
    add_config_options(parser, DistillConfig)
    add_verbosity(parser)
    return parser


def check_config(config: DistillConfig) -> None:
    """Checks what can be checked before TensorFlow is imported: the option values
    (:meth:`DistillConfig.validate`), the teacher's model file (an ONNX or TFLite teacher is
    opened and probed: its runtime needs no TensorFlow), the ``--data`` folder and, by
    a real write, the run directory's folder.

    Raises:
        KstyleError, OSError: one line each.
    """
    config.validate()
    try:
        if teacher_format(config.teacher) is None:
            model_file(config.teacher, "--teacher")
        elif not os.path.exists(config.teacher):
            raise KstyleError(f"model not found: {config.teacher}")
        elif teacher_format(config.teacher) in ("onnx", "tflite"):  # runtimes without TF
            load_teacher(config.teacher, config.teacher_range, config.teacher_input)
    except KstyleError as error:  # name the option once, whichever message it is
        message = str(error)
        raise KstyleError(message if "--teacher" in message else f"--teacher: {message}") from error
    if config.data:
        list_image_files(config.data, config.fraction)  # it exists and holds images
    check_writable(config.resolved_output(), folder=True)


def image_size_given(arguments, prog=None) -> bool:
    """Whether ``arguments`` give ``--image-size`` (abbreviated or not): parsed again with
    no default for it."""
    parser = build_parser(prog)
    parser.set_defaults(image_size=None)
    return parser.parse_args(arguments).image_size is not None


def exported_teacher_config(config: DistillConfig, size_given: bool, logger) -> DistillConfig:
    """``config`` for a SavedModel, .tflite or .onnx teacher: logs what was read from the
    file (and a hint when its outputs do not fit ``--teacher-range``), and sets the image
    size to a fixed-size teacher's unless ``size_given`` (``--image-size`` on the command
    line)."""

    teacher = load_teacher(config.teacher, config.teacher_range, config.teacher_input)
    logger.info(f"teacher: {config.teacher}: {teacher.describe()}")
    hint = teacher.probe()["hint"]
    if hint:
        logger.warning(f"note: --teacher {config.teacher}: {hint}")
    if teacher.side is not None and not size_given and teacher.side != config.image_size:
        logger.info(f"training crops of {teacher.side}×{teacher.side}, the teacher's size")
        return dataclasses.replace(config, image_size=teacher.side)
    return config


def main_with_args(argv=None, prog=None, from_shell=None) -> int:
    """Distills as ``argv`` (None: the command line) says; a KstyleError reports bad input.
    ``from_shell`` (default: ``argv`` is None) marks a command typed in a shell."""
    from_shell = argv is None if from_shell is None else from_shell
    arguments = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(prog).parse_args(arguments)
    from kstyle.run_dir import own_run_dir

    options = {k: v for k, v in vars(args).items() if k not in ("quiet", "verbose")}
    if args.quiet:
        options["verbose"] = 0  # no Keras progress bar either
    config = DistillConfig(**options)
    check_config(config)
    with own_run_dir(config.resolved_output()):  # before TensorFlow, the teacher, the data
        logger = start_command(args, "train", from_shell)  # training, for oneDNN
        from kstyle.run import train

        if teacher_format(config.teacher):
            config = exported_teacher_config(config, image_size_given(arguments, prog), logger)

        # progress lines and messages go to stderr through logging; results to stdout
        summary = train(config, printer=logger.info, hard_stop=True)
    if summary.get("finished_before"):
        return 0
    losses = {k: float("nan") if v is None else v for k, v in summary["losses"].items()}
    note = f" ({summary['note']})" if summary.get("note") else ""  # a smoke teacher's too
    print(
        f"done: {summary['steps']} steps, last loss {losses['loss']:.4g} (pixel "
        f"{losses['pixel']:.4g}, perceptual {losses['perceptual']:.4g}); student: "
        f"{summary['model_path']}{note}"
    )
    if summary.get("teacher_share") is not None:  # an exported teacher, beside the steps
        logger.info(
            f"the teacher ran {summary['teacher_seconds']:.1f} s in the input pipeline, "
            f"{summary['teacher_share']:.0%} of the training time"
        )
    return 0


def main(argv=None, prog=None, from_shell=None) -> int:
    """Console entry point; returns the exit status."""
    return run_command(main_with_args, argv, prog=prog, from_shell=from_shell)


if __name__ == "__main__":
    sys.exit(main())
