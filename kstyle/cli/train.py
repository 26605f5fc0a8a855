"""``kstyle-train`` / ``python train.py``: train a transform network for one style image or
several, or add styles to a trained one."""

import argparse
import dataclasses
import os
import sys
import typing

from kstyle.add_style_config import AddedStyles, AddStyleConfig
from kstyle.cli.common import OneLineErrorParser, add_option, run_command, start_command
from kstyle.cli.console import add_verbosity, program_name
from kstyle.config import TrainConfig, flag_of
from kstyle.errors import KstyleError
from kstyle.files import check_writable, list_image_files
from kstyle.tune_store import TunedStore

DEMO_OPTIONS = dict(image_size=128, steps=112, plot_every=10)
DEMO_OUTPUT = os.path.join("runs", "demo")  # --demo's run directory without --output


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The parser of ``kstyle train``: one option per :class:`TrainConfig` field (its default,
    help and choices), ``--demo``, ``-q`` and ``-v``; ``prog`` names the command in its usage
    (default: as typed)."""
    parser = OneLineErrorParser(
        prog=prog or program_name("kstyle-train"),
        description="Train a fast style-transfer network (Johnson et al. 2016) on COCO or a "
        "folder of images. Defaults are the reference example's.",
    )
    add_config_options(parser, TrainConfig)
    add_config_options(parser, AddedStyles)
    parser.add_argument(
        "--demo",
        action="store_true",
        help="train on a demo set made from matplotlib's sample photos with a generated style "
        f"image ({', '.join(f'{k}={v}' for k, v in DEMO_OPTIONS.items())}), then stylize a photo",
    )
    add_verbosity(parser)
    return parser


def add_config_options(parser, config_class) -> None:
    """One option per field of ``config_class`` (a config class of any kind) that has
    ``option()`` metadata: its default, help and choices."""
    for field in dataclasses.fields(config_class):
        if "doc" not in field.metadata:  # not a command-line option
            continue
        kind = _value_type(field.type)
        options = {"action": "store_true"} if kind is bool else {"type": kind}
        if field.metadata.get("many"):
            options["action"] = "append"
        if field.metadata["choices"] is not None:
            options["choices"] = field.metadata["choices"]
        add_option(
            parser,
            flag_of(field.name),
            dest=field.name,
            doc=field.metadata["doc"],
            default=None if field.default is dataclasses.MISSING else field.default,
            default_text=field.metadata["default_text"],
            **options,
        )


def _value_type(annotation) -> type:
    """The type of a field's values: ``int`` for ``int | None``, ``str`` for ``str`` and for
    ``list[str] | None``."""
    kind = next(
        kind for kind in typing.get_args(annotation) or (annotation,) if kind is not type(None)
    )
    return typing.get_args(kind)[0] if typing.get_origin(kind) is list else kind


def given_on_command_line(argv, name) -> bool:
    """Whether the user gave option ``name`` on the command line."""
    flag = flag_of(name)
    return any(arg == flag or arg.startswith(flag + "=") for arg in argv)


def config_of(options: dict, demo: bool = False):
    """The config of the parsed ``options``: an :class:`AddStyleConfig` with ``--add-style``
    or ``--from``, else a :class:`TrainConfig`; each refuses the other's options.

    Raises:
        KstyleError: options of both kinds, or ``--demo`` with ``--add-style``.
    """
    adding = options["add_style"] is not None or options["from_run"] is not None
    kind = AddStyleConfig if adding else TrainConfig
    names = {field.name for field in dataclasses.fields(kind)}
    foreign = [name for name, value in options.items() if name not in names and value]
    if adding and (demo or foreign):
        clash = "--demo" if demo else flag_of(foreign[0])
        raise KstyleError(f"{clash} does not go with --add-style / --from")
    return kind(**{name: value for name, value in options.items() if name in names})


def check_config(config, demo: bool = False) -> None:
    """Checks what can be checked before TensorFlow is imported: the option values
    (:meth:`TrainConfig.validate`), the style image (unless ``demo`` makes one), the
    ``--data`` folder and, by a real write, the run directory's folder.

    Raises:
        KstyleError, OSError: one line each.
    """
    config.validate()
    if not demo and not config.style_files():
        raise KstyleError("--style is required (or use --demo)")
    if config.style_files() or not demo:  # --demo makes its style image later
        config.check_inputs()  # reads the style images (also one given with --demo)
    if config.data:
        list_image_files(config.data, config.fraction)  # it exists and holds images
    check_writable(config.resolved_output(), folder=True)


def main_with_args(argv=None, prog=None, from_shell=None) -> int:
    """Trains as ``argv`` (None: the command line) says; a KstyleError reports bad input.
    ``from_shell`` (default: ``argv`` is None) marks a command typed in a shell. The run
    directory is this process's (``kstyle.run_dir.own_run_dir``) before TensorFlow loads."""
    from_shell = argv is None if from_shell is None else from_shell
    arguments = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(prog).parse_args(arguments)
    from kstyle.run_dir import own_run_dir

    if args.demo:
        args.output = args.output or DEMO_OUTPUT
    options = {k: v for k, v in vars(args).items() if k not in ("demo", "quiet", "verbose")}
    if args.quiet:
        options["verbose"] = 0  # no Keras progress bar either
    config = config_of(options, demo=args.demo)
    check_config(config, demo=args.demo)
    with own_run_dir(config.resolved_output()):  # before the demo set is written into it
        return _train(args, arguments, options, from_shell)


def _train(args, arguments, options, from_shell) -> int:
    """:func:`main_with_args` once its checks passed and this process owns the run directory;
    ``options`` are the :class:`TrainConfig` fields as given."""
    store = TunedStore.read()
    tuned = tuned_options(options, args.demo, store)
    logger = start_command(args, "train", from_shell, None if tuned is None else tuned["onednn"])
    if line := store.problem_line():
        logger.warning(line)
    logger.debug(tuned_line(tuned, options, store.path))
    from kstyle.run import train

    if args.demo:
        from kstyle.demo import prepare_demo

        demo = prepare_demo(os.path.join(args.output, "demo_data"))
        options["style"] = args.style or [demo["style"]]
        options["data"] = args.data or demo["data"]
        for name, value in DEMO_OPTIONS.items():
            if not given_on_command_line(arguments, name):
                options[name] = value
    # progress lines and messages go to stderr through logging; results to stdout
    summary = train(config_of(options, args.demo), printer=logger.info, hard_stop=True)
    if summary.get("finished_before"):  # the message said why; the result line says where
        print(f"done before: {summary.get('steps')} steps; model: {summary.get('model_path')}")
        return 0
    losses = {k: float("nan") if v is None else v for k, v in summary["losses"].items()}
    note = f" ({summary['note']})" if summary.get("note") else ""  # a smoke test's
    print(
        f"done: {summary['steps']} steps, last loss {losses['loss']:.4g} "
        f"(content {losses['content']:.4g}, style {losses['style']:.4g}); "
        f"model: {summary['model_path']}{note}"
    )
    if args.demo:
        from kstyle.stylize_files import stylize

        target = os.path.join(summary["run_dir"], "stylized.png")
        stylize(summary["transform_net"], demo["photo"], target, show_input=True)
        print(f"stylized picture (input | output): {target}")
    return 0


def tuned_options(options: dict, demo: bool, store) -> dict | None:
    """Resolves ``options``' ``auto`` precision and XLA from ``store``'s training choice for
    this machine (:func:`kstyle.tuning.apply_tuned_training`); returns that choice or None."""
    from kstyle.tuning import apply_tuned_training

    config = config_of(options, demo)
    tuned = apply_tuned_training(config, store)
    options["mixed_precision"], options["jit_compile"] = config.mixed_precision, config.jit_compile
    return tuned


def tuned_line(tuned: dict | None, options: dict, path: str) -> str:
    """The ``-v`` line saying how the training step runs and whether ``kstyle tune`` chose."""
    from kstyle.cli.tune import seconds_text

    precision = "float32" if options["mixed_precision"] == "off" else options["mixed_precision"]
    if tuned is None:
        return (
            f"training in {precision} as kstyle's defaults say: no choice of kstyle tune in "
            f"{path} for this net and precision on this machine (kstyle tune --task train "
            "measures it)"
        )
    onednn, xla = ("on" if tuned[key] else "off" for key in ("onednn", "xla"))
    return (
        f"training in {precision} on the choice of kstyle tune in {path}: oneDNN {onednn}, "
        f"XLA {xla} ({seconds_text(tuned.get('seconds'), 's/step')} measured)"
    )


def main(argv=None, prog=None, from_shell=None) -> int:
    """Console entry point; returns the exit status."""
    return run_command(main_with_args, argv, prog=prog, from_shell=from_shell)


if __name__ == "__main__":
    sys.exit(main())
