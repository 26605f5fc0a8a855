"""``kstyle-stylize`` / ``python stylize.py``: stylize an image or a folder with a trained net."""

import argparse
import sys

from kstyle.cli.common import run_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kstyle-stylize",
        description="Stylize images with a trained transform network. The output keeps the "
        "input's size unless --max-size shrinks it.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("input", help="an image file, or a folder of images (recursive)")
    parser.add_argument("--model", required=True, help="a model.keras file or a run directory")
    parser.add_argument(
        "--output",
        required=True,
        help="output image file (PNG, JPEG, ...) for a file input; output folder for a folder",
    )
    parser.add_argument(
        "--max-size",
        type=int,
        default=None,
        help="shrink inputs so that the longer side is at most this many pixels (default: keep)",
    )
    parser.add_argument(
        "--side-by-side", action="store_true", help="write input | output side by side"
    )
    return parser


def main_with_args(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from kstyle.errors import KstyleError
    from kstyle.stylize import load_transform_net, stylize

    if args.max_size is not None and args.max_size < 4:
        raise KstyleError(f"--max-size must be at least 4, got {args.max_size}")
    model = load_transform_net(args.model)
    written, failed = stylize(
        model, args.input, args.output, max_size=args.max_size, show_input=args.side_by_side
    )
    for source, reason in failed:
        print(f"skipped {source}: {reason}", file=sys.stderr)
    print(
        f"wrote {len(written)} image(s)"
        + (f": {written[0]}" if len(written) == 1 else f" under {args.output}")
    )
    return 1 if failed and not written else 0


def main(argv=None) -> int:
    """Console entry point; returns the exit status."""
    return run_command(main_with_args, argv)


if __name__ == "__main__":
    sys.exit(main())
