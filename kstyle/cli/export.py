"""``kstyle-export`` / ``python export.py``: SavedModel, TFLite and ONNX files, each verified,
or (``--format web``) a static web page that runs one or several models in the browser."""

import argparse
import functools
import sys

from kstyle.checks import check_export_options, model_file, parse_input_size
from kstyle.cli.common import OneLineErrorParser, add_option, run_command, start_command
from kstyle.cli.console import add_verbosity, program_name
from kstyle.constants import (
    DEFAULT_CALIBRATION_COUNT,
    DEFAULT_VERIFY_SIZE,
    FORMATS,
    NO_QUANTIZATION,
    QUANTIZATIONS,
)
from kstyle.errors import KstyleError
from kstyle.files import check_writable

ALL = "all"  # every format, or every quantization
STYLE_HELP = (
    "a network of several styles: export one style (an index) or blend (e.g. 0:0.5,3:0.5) of "
    "it; without it, every export takes a second input, style"
)
WEB = "web"  # a static site (kstyle.export.web), not one of the artifacts ``all`` writes


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The parser of ``kstyle export``; ``prog`` names the command in its usage (default: as
    typed)."""
    parser = OneLineErrorParser(
        prog=prog or program_name("kstyle-export"),
        description="Export a trained transform network (uint8 RGB in, uint8 RGB out, any "
        "H x W) and verify each file against the Keras model on a held-out photo. Exits "
        "non-zero when a fidelity bar is missed.",
    )
    add = functools.partial(add_option, parser)
    add(
        "model",
        nargs="+",
        doc="a model.keras file or a training run directory (--format web: several, or a "
        "folder of runs, for one page with a style picker)",
    )
    add("--style", default=None, doc=STYLE_HELP)
    add(
        "--format",
        default=ALL,
        choices=(*FORMATS, ALL, WEB),
        doc="what to write (web: a static page that stylizes photos and the webcam in the "
        "browser; docs/web.md)",
    )
    add("--output", default="export", doc="output directory")
    add(
        "--quantize",
        default=NO_QUANTIZATION,
        choices=(*QUANTIZATIONS, ALL),
        doc="TFLite quantization (all: one file for each)",
    )
    add(
        "--input-size",
        type=parse_input_size,
        doc="fixed N x N or HxW input (e.g. 720x1280): static shapes, which some runtimes need "
        "and which keep LiteRT's XNNPACK on the whole graph (the fastest TFLite)",
        default_text="dynamic H, W",
    )
    add(
        "--calibration-data",
        doc="folder of representative photos for --quantize int8 (required for int8)",
    )
    add(
        "--calibration-count",
        type=int,
        default=DEFAULT_CALIBRATION_COUNT,
        doc="calibration images to use",
    )
    add(
        "--verify-size",
        type=int,
        default=DEFAULT_VERIFY_SIZE,
        doc="height of the held-out verification photo (its width is about 1.25x)",
    )
    add_verbosity(parser)
    return parser


def _chosen(args) -> tuple[tuple, tuple]:
    """The formats and the quantizations that ``args`` ask for (``all`` spelt out)."""
    formats = FORMATS if args.format == ALL else (args.format,)
    return formats, QUANTIZATIONS if args.quantize == ALL else (args.quantize,)


def check_arguments(args) -> None:
    """Checks what can be checked before TensorFlow is imported: the options, the model file
    (for one model) and, by a real write, the output folder.

    Raises:
        KstyleError, OSError: one line each.
    """
    if args.format == WEB:
        if args.quantize != NO_QUANTIZATION or args.input_size or args.calibration_data:
            raise KstyleError(
                f"--format {WEB} writes fp32 ONNX for any size; drop --quantize, --input-size "
                "and --calibration-data"
            )
        if args.style is not None:
            raise KstyleError(
                f"--format {WEB} gives a net of several styles a style picker and a mix "
                "slider; drop --style"
            )
        check_export_options((), (), None, None, args.calibration_count, args.verify_size)
        check_writable(args.output)  # the site is written beside it, then renamed
        return
    if len(args.model) > 1:
        raise KstyleError(f"several models need --format {WEB}; export one at a time")
    formats, quantizations = _chosen(args)
    check_export_options(
        formats,
        quantizations,
        args.input_size,
        args.calibration_data,
        args.calibration_count,
        args.verify_size,
    )
    model_file(args.model[0], "kstyle export")
    check_writable(args.output, folder=True)


def main_with_args(argv=None, prog=None, from_shell=None) -> int:
    """Exports as ``argv`` (None: the command line) says; 1 when a file missed its bar.
    ``from_shell`` (default: ``argv`` is None) marks a command typed in a shell."""
    from_shell = argv is None if from_shell is None else from_shell
    args = build_parser(prog).parse_args(argv)
    check_arguments(args)
    from kstyle.lock import output_lock

    # one kstyle process writes an output at a time (a site is built aside, then renamed)
    with output_lock(args.output, folder=args.format != WEB):
        return _export(args, from_shell)


def _export(args, from_shell) -> int:
    """:func:`main_with_args` once its checks passed and this process holds the output."""
    logger = start_command(args, None, from_shell)
    from kstyle.smoke import smoke_notes

    for note in smoke_notes(args.model):
        logger.info(f"note: {note}")
    if args.format == WEB:
        from kstyle.export.web import build_site, live_hint

        manifest = build_site(args.model, args.output, verify_size=args.verify_size)
        hint = live_hint(manifest)
        if hint:
            logger.info(f"note: {hint}")
        return 0
    from kstyle.export import export

    formats, quantizations = _chosen(args)
    results = export(
        args.model[0],
        args.output,
        formats=formats,
        quantizations=quantizations,
        input_size=args.input_size,
        calibration_data=args.calibration_data,
        calibration_count=args.calibration_count,
        verify_size=args.verify_size,
        style=args.style,
    )
    failed = [result for result in results if not result.passed]
    for result in failed:
        logger.error(f"{result.path} missed its bar ({result.bar}): {result.shortfall}")
    return 1 if failed else 0


def main(argv=None, prog=None, from_shell=None) -> int:
    """Console entry point; returns the exit status."""
    return run_command(main_with_args, argv, prog=prog, from_shell=from_shell)


if __name__ == "__main__":
    sys.exit(main())
