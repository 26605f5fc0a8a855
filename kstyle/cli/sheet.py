"""``kstyle sheet``: one photo in every style of a network, and a few blends, on one page."""

import sys

from kstyle.checks import check_max_size, model_file
from kstyle.cli.common import OneLineErrorParser, add_option, run_command, start_command
from kstyle.cli.console import add_verbosity, program_name
from kstyle.images import check_output_image


def build_parser(prog: str | None = None):
    """The parser of ``kstyle sheet``."""
    parser = OneLineErrorParser(
        prog=prog or program_name("kstyle sheet"),
        description="Write a contact sheet: a photo in every style of a network of several "
        "styles and a few two-style blends, each labelled with the style's name.",
    )
    add_option(parser, "photo", doc="the photo to stylize")
    add_option(parser, "--model", required=True, doc="a model.keras file or a run directory")
    add_option(parser, "--output", default="sheet.png", doc="the sheet's image file")
    add_option(parser, "--blends", type=int, default=3, doc="half-and-half blends of neighbours")
    add_option(
        parser, "--max-size", type=int, default=512, doc="shrink the photo's longer side to this"
    )
    add_verbosity(parser)
    return parser


def main_with_args(argv=None, prog=None, from_shell=None) -> int:
    """Writes the sheet that ``argv`` asks for."""
    from_shell = argv is None if from_shell is None else from_shell
    args = build_parser(prog).parse_args(argv)
    check_output_image(args.output)
    check_max_size(args.max_size)
    model_file(args.model, "--model")
    start_command(args, "stylize", from_shell)
    from kstyle.images import load_image, save_image
    from kstyle.sheet import contact_sheet
    from kstyle.smoke import recorded_style_names
    from kstyle.transform_net import load_transform_net

    photo = load_image(args.photo, max_size=args.max_size)
    net = load_transform_net(args.model)
    names = recorded_style_names(args.model)
    save_image(contact_sheet(net, photo, names, max(0, args.blends)), args.output)
    print(f"wrote {args.output}")
    return 0


def main(argv=None, prog=None, from_shell=None) -> int:
    """Console entry point; returns the exit status."""
    return run_command(main_with_args, argv, prog=prog, from_shell=from_shell)


if __name__ == "__main__":
    sys.exit(main())
