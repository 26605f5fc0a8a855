"""``kstyle-export`` / ``python export.py``: SavedModel, TFLite and ONNX files, each verified."""

import argparse
import sys

from kstyle.cli.common import OneLineErrorParser, run_command

FORMAT_CHOICES = ("saved_model", "tflite", "onnx", "all")
QUANTIZE_CHOICES = ("none", "float16", "dynamic", "int8", "all")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="kstyle-export",
        description="Export a trained transform network (uint8 RGB in, uint8 RGB out, any "
        "H x W) and verify each file against the Keras model on a held-out photo. Exits "
        "non-zero when a fidelity bar is missed.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("model", help="a model.keras file or a training run directory")
    add("--format", default="all", choices=FORMAT_CHOICES, help="what to write")
    add("--output", default="export", help="output directory")
    add(
        "--quantize",
        default="none",
        choices=QUANTIZE_CHOICES,
        help="TFLite quantization (all: one file for each)",
    )
    add(
        "--input-size",
        type=int,
        default=None,
        help="fixed N x N input for runtimes that need static shapes (default: dynamic H, W)",
    )
    add(
        "--calibration-data",
        default=None,
        help="folder of representative photos for --quantize int8 (required for int8)",
    )
    add("--calibration-count", type=int, default=100, help="calibration images to use")
    add(
        "--verify-size",
        type=int,
        default=256,
        help="height of the held-out verification photo (its width is about 1.25x)",
    )
    return parser


def main_with_args(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from kstyle.errors import KstyleError
    from kstyle.export import FORMATS, QUANTIZATIONS, export

    if args.calibration_count < 1:
        raise KstyleError(f"--calibration-count must be positive, got {args.calibration_count}")
    if args.verify_size < 4:
        raise KstyleError(f"--verify-size must be at least 4, got {args.verify_size}")
    formats = FORMATS if args.format == "all" else (args.format,)
    quantizations = QUANTIZATIONS if args.quantize == "all" else (args.quantize,)
    results = export(
        args.model,
        args.output,
        formats=formats,
        quantizations=quantizations,
        input_size=args.input_size,
        calibration_data=args.calibration_data,
        calibration_count=args.calibration_count,
        verify_size=args.verify_size,
    )
    failed = [result for result in results if not result.passed]
    for result in failed:
        print(
            f"error: {result.path} missed its bar ({result.bar}): {result.shortfall}",
            file=sys.stderr,
        )
    return 1 if failed else 0


def main(argv=None) -> int:
    """Console entry point; returns the exit status."""
    return run_command(main_with_args, argv)


if __name__ == "__main__":
    sys.exit(main())
