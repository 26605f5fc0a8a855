"""``kstyle`` (and ``python -m kstyle``): one command, with ``train``, ``distill``, ``stylize``,
``sheet``, ``export``, ``serve``, ``tune`` and ``info`` under it. Each subcommand is also its
own script (``train.py``, ``kstyle-train``, ...)."""

import argparse
import importlib
import sys

from kstyle.cli.common import OneLineErrorParser
from kstyle.cli.console import program_name

# subcommand -> (its module, what it does)
COMMANDS = {
    "train": ("kstyle.cli.train", "train a transform network for one style image or several"),
    "distill": ("kstyle.cli.distill", "train a small student net to reproduce a trained one"),
    "stylize": ("kstyle.cli.stylize", "stylize images, folders and videos with a trained net"),
    "sheet": ("kstyle.cli.sheet", "a photo in every style of a network, and blends, on one page"),
    "export": ("kstyle.cli.export", "write verified SavedModel, TFLite and ONNX files"),
    "serve": ("kstyle.cli.serve", "serve a web page that stylizes photos and the webcam"),
    "tune": ("kstyle.cli.tune", "measure the fastest paths on this machine and keep them"),
    "info": ("kstyle.cli.info", "versions, CPU features, oneDNN, tuned paths, GPUs and caches"),
}


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The parser of ``kstyle``: ``--version`` and a subcommand with its own arguments."""
    from kstyle import __version__

    parser = OneLineErrorParser(
        prog=prog or program_name("kstyle"),
        description="Fast neural style transfer (Johnson et al. 2016) for Keras 3. "
        "Run 'COMMAND --help' for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n"
        + "\n".join(f"  {name:<9} {what}" for name, (_, what) in COMMANDS.items()),
    )
    parser.add_argument("--version", action="version", version=f"kstyle {__version__}")
    parser.add_argument(
        "command", choices=list(COMMANDS), metavar="COMMAND", help="one of the commands below"
    )
    parser.add_argument("arguments", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def main(argv=None) -> int:
    """Console entry point of ``kstyle``; returns the subcommand's exit status."""
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    return module.main(
        args.arguments, prog=f"{parser.prog} {args.command}", from_shell=argv is None
    )


if __name__ == "__main__":
    sys.exit(main())
