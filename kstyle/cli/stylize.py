"""``kstyle-stylize`` / ``python stylize.py``: stylize an image or a folder with a trained net."""

import argparse
import os
import sys

from kstyle.checks import (
    check_max_pixels,
    check_max_size,
    check_strength,
    check_tile,
    check_work_dir,
    model_file,
    stylize_jobs,
)
from kstyle.cli.common import OneLineErrorParser, add_option, run_command, start_command
from kstyle.cli.console import add_verbosity, program_name
from kstyle.constants import SIZE_MULTIPLE, VIDEO_EXTENSIONS
from kstyle.images import DEFAULT_MAX_PIXELS
from kstyle.memory import DEFAULT_MAX_MEMORY, parse_memory
from kstyle.tune_store import TunedStore
from kstyle.tuning import stylize_choice

DEFAULT_MAX_MEMORY_TEXT = f"{DEFAULT_MAX_MEMORY / 2**30:g}GB"  # parse_memory reads it back


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The parser of ``kstyle stylize``; ``prog`` names the command in its usage (default: as
    typed)."""
    parser = OneLineErrorParser(
        prog=prog or program_name("kstyle-stylize"),
        description="Stylize images with a trained transform network. The output keeps the "
        "input's size unless --max-size shrinks it.",
    )
    add_option(
        parser,
        "input",
        doc=f"an image file, a video ({' '.join(VIDEO_EXTENSIONS)}), or a folder of images",
    )
    add_option(parser, "--model", required=True, doc="a model.keras file or a run directory")
    add_option(
        parser,
        "--style",
        doc="for a network of several styles: a style index (e.g. 2) or a blend of "
        "index:weight pairs (e.g. 0:0.5,3:0.5); kstyle info MODEL lists the styles",
        default=None,
        default_text="style 0",
    )
    add_option(
        parser,
        "--output",
        required=True,
        doc="output image file (PNG, JPEG, ...) for an image, video file for a video, "
        "output folder for a folder",
    )
    add_option(
        parser,
        "--max-size",
        type=int,
        doc="shrink inputs so that the longer side is at most this many pixels",
        default_text="keep the size",
    )
    parser.add_argument(
        "--side-by-side", action="store_true", help="write input | output side by side"
    )
    parser.add_argument(
        "--preserve-color",
        action="store_true",
        help="keep the input's colours and take only the stylized luminance (YCbCr)",
    )
    add_option(
        parser,
        "--strength",
        type=float,
        default=1.0,
        doc="blend of stylized and input: 1 is full style, 0 returns the input unchanged "
        "(applied after --preserve-color)",
    )
    add_option(
        parser,
        "--tile",
        type=int,
        doc=f"stylize in tiles of this many pixels (a multiple of {SIZE_MULTIPLE}; 0: never tile)",
        default_text="tile only images that would exceed --max-memory",
    )
    add_option(
        parser,
        "--max-memory",
        default=DEFAULT_MAX_MEMORY_TEXT,
        doc="memory budget of the network pass, e.g. 4GB or 512MB; larger images are tiled",
        default_text=DEFAULT_MAX_MEMORY_TEXT,
    )
    add_option(
        parser,
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        doc="refuse images (and video frames) with more pixels, a decompression-bomb guard "
        "(0: no limit)",
        default_text=f"{DEFAULT_MAX_PIXELS}, Pillow's limit",
    )
    add_option(
        parser,
        "--work-dir",
        doc="folder for the temporary files of tiled images (up to about 192 bytes per pixel; "
        "on a tmpfs they count as memory)",
        default_text="the system's temporary folder",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="hide the progress bar (video, tiles)"
    )
    add_verbosity(parser)
    return parser


def check_arguments(args) -> tuple[int, str]:
    """Checks every value and path of ``args`` that can be checked before TensorFlow is
    imported: the option ranges, the input, the outputs (their types, and a real write into
    their folder) and the model file. Returns the memory budget in bytes and what the run
    writes: the output file of an image or a video, None for a folder (``args.output``).

    Raises:
        KstyleError, OSError: one line each (see :func:`kstyle.checks.stylize_jobs`).
    """
    check_strength(args.strength)
    check_max_size(args.max_size)
    max_memory = parse_memory(args.max_memory)
    check_max_pixels(args.max_pixels)
    check_tile(args.tile)
    check_work_dir(args.work_dir)
    _, jobs = stylize_jobs(args.input, args.output)
    model_file(args.model, "--model")
    return max_memory, (None if os.path.isdir(args.input) else jobs[0][1])


def main_with_args(argv=None, prog=None, from_shell=None) -> int:
    """Stylizes as ``argv`` (None: the command line) says; 1 when every input failed.
    ``from_shell`` (default: ``argv`` is None) marks a command typed in a shell."""
    from_shell = argv is None if from_shell is None else from_shell
    args = build_parser(prog).parse_args(argv)
    max_memory, target = check_arguments(args)
    from kstyle.lock import output_lock

    # one kstyle process writes an output at a time: the file, or the folder of a folder
    with output_lock(target or args.output, folder=target is None):
        store = TunedStore.read()
        choice = stylize_choice(model_file(args.model, "--model"), store)
        onednn = None if choice is None else choice["onednn"]
        logger = start_command(args, "stylize", from_shell, onednn)
        use_tuned_choice(choice, store, logger, args.model)
        try:
            written, failed = _stylize(args, max_memory, logger)
        finally:  # the choice is this command's: later calls in this process run the default
            use_tuned_choice(None)
    for source, reason in failed:
        logger.warning(f"skipped {source}: {reason}")
    print(
        f"wrote {len(written)} file(s)"
        + (f": {written[0]}" if len(written) == 1 else f" under {args.output}")
    )
    return 1 if failed and not written else 0


def _stylize(args, max_memory, logger):
    """The stylizing itself: ``(written, failed)`` of :func:`kstyle.stylize_files.stylize`."""
    from kstyle.smoke import smoke_note
    from kstyle.stylize_files import stylize
    from kstyle.transform_net import load_transform_net

    if note := smoke_note(args.model):
        logger.info(f"note: {note}")
    return stylize(
        load_transform_net(args.model),
        args.input,
        args.output,
        max_size=args.max_size,
        show_input=args.side_by_side,
        preserve_colors=args.preserve_color,
        strength=args.strength,
        tile=args.tile,
        max_memory=max_memory,
        max_pixels=args.max_pixels,
        progress=not (args.no_progress or args.quiet),
        work_dir=args.work_dir,
        style=args.style,
    )


def use_tuned_choice(choice, store=None, logger=None, model=None) -> None:
    """Stylizes on ``choice`` (``kstyle tune``'s, for this machine and ``model``'s network; None:
    the default path), saying so with ``-v``; warns about a ``store`` that cannot be used."""
    from kstyle.cli.tune import choice_line
    from kstyle.stylize_paths import use_choice

    if store is None:
        use_choice(choice)
        return
    if line := store.problem_line():
        logger.warning(line)
    if choice is None:
        logger.debug(
            f"stylizing on the default path: no choice of kstyle tune in {store.path} for this "
            f"network on this machine (kstyle tune --task stylize --model {model} measures it)"
        )
    else:
        described = choice_line("stylize", choice)
        logger.debug(f"stylizing on the choice of kstyle tune in {store.path}: {described}")
    use_choice(choice)


def main(argv=None, prog=None, from_shell=None) -> int:
    """Console entry point; returns the exit status."""
    return run_command(main_with_args, argv, prog=prog, from_shell=from_shell)


if __name__ == "__main__":
    sys.exit(main())
