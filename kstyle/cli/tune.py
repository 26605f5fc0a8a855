"""``kstyle tune``: measure the ways kstyle can stylize and train on this machine and keep the
fastest whose results match the default's, for ``kstyle stylize`` and ``kstyle train``."""

import argparse
import os
import sys
import tempfile
import time

from kstyle.checks import model_file
from kstyle.cli.common import OneLineErrorParser, add_option, run_command, start_command
from kstyle.cli.console import add_verbosity, program_name
from kstyle.errors import KstyleError
from kstyle.presets import DEFAULT_ARCH, PRESETS
from kstyle.tuning import accepted

TASKS = ("stylize", "train", "all")
PRECISION_NAMES = {"off": "float32", "bfloat16": "bfloat16"}
MAX_SIDE = 4096  # a 4096² test picture through every path already takes minutes


def on_off(flag) -> str:
    """``on`` or ``off``."""
    return "on" if flag else "off"


PADDINGS = ("zeros", "reflect")


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The parser of ``kstyle tune``."""
    parser = OneLineErrorParser(
        prog=prog or program_name("kstyle tune"),
        description="Time kstyle's candidate paths on this machine (TensorFlow with and without "
        "oneDNN, XLA, the fused graph, LiteRT; float32 and bfloat16 training), check each "
        "against the default path's result, and keep the fastest in kstyle's cache folder. "
        "kstyle stylize and kstyle train then use it on this CPU with these library versions "
        "(-v says so; kstyle info lists the choices).",
    )
    add_option(parser, "--task", choices=TASKS, default="all", doc="what to tune")
    add_option(
        parser,
        "--model",
        doc="a model.keras file or run directory: tune stylizing for its network",
        default_text="an untrained net of --arch",
    )
    add_option(parser, "--arch", choices=tuple(PRESETS), default=DEFAULT_ARCH, doc="network preset")
    add_option(
        parser, "--padding", choices=PADDINGS, default="zeros", doc="convolution padding of --arch"
    )
    add_option(
        parser,
        "--sizes",
        default="256,512",
        doc="square image sides to time stylizing at, comma-separated; an image is stylized "
        "on the choice of the nearest size",
    )
    add_option(
        parser, "--image-size", type=int, default=128, doc="training image side to time a step at"
    )
    add_option(parser, "--batch-size", type=int, default=4, doc="training batch to time a step at")
    add_verbosity(parser)
    return parser


def parse_sizes(text: str) -> list[int]:
    """``--sizes``: comma-separated square sides, each from 16 to :data:`MAX_SIDE`.

    Raises:
        KstyleError: not such a list.
    """
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 16 or max(sizes) > MAX_SIDE:
        raise KstyleError(
            f"--sizes must be comma-separated sides from 16 to {MAX_SIDE}, got {text!r}"
        )
    return sorted(set(sizes))


def check_arguments(args) -> tuple:
    """The sizes and the model file (None: ``--arch``'s untrained net), checked before
    TensorFlow loads.

    Raises:
        KstyleError: one line each.
    """
    sizes = parse_sizes(args.sizes)
    for flag, value in (("--image-size", args.image_size), ("--batch-size", args.batch_size)):
        if value < 1 or (flag == "--image-size" and value < 32):
            raise KstyleError(f"{flag} is too small: {value}")
    from kstyle.files import check_writable
    from kstyle.tune_store import store_path

    check_writable(store_path())  # before minutes of measuring, not after
    return sizes, (model_file(args.model, "--model") if args.model else None)


def untrained_net_file(arch: str, padding: str, folder: str) -> str:
    """A ``.keras`` file of ``arch`` with random instance-norm parameters (a trained net's
    arithmetic; its store identity is every ``arch`` net's) in ``folder``."""
    import keras
    import numpy as np

    from kstyle.transform_net import build_transform_net

    keras.utils.set_random_seed(0)
    net = build_transform_net(arch, padding=padding)
    rng = np.random.default_rng(0)
    for layer in net.layers:
        if isinstance(layer, keras.layers.GroupNormalization):
            gamma, beta = layer.get_weights()
            layer.set_weights(
                [gamma + rng.uniform(0, 1, gamma.shape), rng.normal(0, 0.3, beta.shape)]
            )
    path = os.path.join(folder, f"{arch}.keras")
    net.save(path)
    return path


def stylize_lines(choice: dict) -> list[str]:
    """What ``kstyle tune`` prints of a stylize measurement: a row per candidate and size."""
    lines = []
    for row in sorted(choice["rows"], key=lambda r: (r["pixels"], r.get("seconds", 1e9))):
        side = f"{round(row['pixels'] ** 0.5)}²"
        where = "" if row["onednn"] is None else f", oneDNN {on_off(row['onednn'])}"
        if "error" in row:
            lines.append(f"  {side} {row['path']}{where}: could not run ({row['error']})")
            continue
        verdict = "ok" if accepted(row) else "REJECTED: its output differs"
        lines.append(
            f"  {side} {row['path']}{where}: {row['seconds']:.4f} s "
            f"(first call {row['first']:.2f} s), max difference "
            f"{row.get('difference')} level(s), {verdict}"
        )
    return lines


def train_lines(choice: dict) -> list[str]:
    """What ``kstyle tune`` prints of a training measurement: a row per candidate."""
    lines = []
    for row in choice["rows"]:
        name = f"{PRECISION_NAMES[row['precision']]}, XLA {on_off(row['xla'])}"
        name += f", oneDNN {on_off(row['onednn'])}"
        if "error" in row:
            lines.append(f"  {name}: could not run ({row['error']})")
            continue
        difference = row.get("difference")
        shown = "n/a" if difference is None else f"{difference:.1e}"
        timed = "" if row["timed"] > 1 else " (stopped early: slower)"
        lines.append(f"  {name}: {row['seconds']:.3f} s/step{timed}, loss difference {shown}")
    return lines


def seconds_text(seconds, unit="s") -> str:
    """``1.234 s``, or ``? s`` for a time a hand-edited store left out."""
    return f"{seconds:.3f} {unit}" if isinstance(seconds, int | float) else f"? {unit}"


def choice_line(task: str, choice: dict) -> str:
    """One line saying what a stored ``choice`` of ``task`` does."""
    if task == "stylize":
        sizes = "; ".join(
            f"{round(size['pixels'] ** 0.5)}²: {size['path']} {seconds_text(size.get('seconds'))}"
            + (
                f" (default {seconds_text(size['default_seconds'])})"
                if size.get("default_seconds")
                else ""
            )
            for size in choice["sizes"]
        )
        return f"oneDNN {on_off(choice['onednn'])}; {sizes}"
    parts = [
        f"{PRECISION_NAMES[precision]}: oneDNN {on_off(best['onednn'])}, "
        f"XLA {on_off(best['xla'])}, {seconds_text(best.get('seconds'), 's/step')}"
        for precision, best in choice["by_precision"].items()
    ]
    default = f"default {seconds_text(choice.get('default_seconds'), 's/step')}"
    auto = PRECISION_NAMES[choice["precision"]]
    return f"{'; '.join(parts)} ({default}); --mixed-precision auto: {auto}"


def _arch_label(args) -> str:
    return f"{args.arch} ({args.padding} padding)"


def main_with_args(argv=None, prog=None, from_shell=None) -> int:
    """Tunes as ``argv`` (None: the command line) says and stores the choices."""
    from kstyle.tune_store import TunedStore

    from_shell = argv is None if from_shell is None else from_shell
    args = build_parser(prog).parse_args(argv)
    sizes, model = check_arguments(args)
    logger = start_command(args, None, from_shell)
    store, started = TunedStore.read(), time.monotonic()
    if store.problem:
        logger.warning(f"replacing {store.path}: {store.problem}")
    if args.task in ("stylize", "all"):
        tune_stylizing(args, sizes, model, store, logger)
    if args.task in ("train", "all"):
        tune_training(args, store, logger)
    print(f"stored in {store.path} ({time.monotonic() - started:.0f} s in all)")
    return 0


def tune_stylizing(args, sizes, model, store, logger) -> None:
    """Measures the stylize paths for ``model`` (None: ``--arch``'s net), prints what was
    measured and stores the choice."""
    from kstyle.tune_store import network_id
    from kstyle.tuning import tune_stylize

    started = time.monotonic()
    with tempfile.TemporaryDirectory() as folder:
        path = model or untrained_net_file(args.arch, args.padding, folder)
        label = f"stylize {os.path.abspath(model) if model else _arch_label(args)}"
        choice = tune_stylize(path, sizes, log=logger.info)
        print(f"{label}:", *stylize_lines(choice) if choice else [], sep="\n")
        if choice is None:
            raise KstyleError("no stylize path ran at every size; nothing stored")
        store.put("stylize", network_id(path), choice, label)
    print(f"chosen: {choice_line('stylize', choice)} ({time.monotonic() - started:.0f} s)")


def tune_training(args, store, logger) -> None:
    """Measures the training steps of ``--arch``, prints them and stores the choice."""
    from kstyle.tuning import train_job, tune_train

    started, job = time.monotonic(), train_job(args.arch, args.padding)
    shape = args.image_size, args.batch_size
    choice = tune_train(args.arch, args.padding, *shape, log=logger.info)
    label = f"{job} ({args.image_size}², batch {args.batch_size})"
    print(f"{label}:", *train_lines(choice) if choice else [], sep="\n")
    if choice is None:
        raise KstyleError("the default training step did not run; nothing stored")
    store.put("train", job, choice, label)
    print(f"chosen: {choice_line('train', choice)} ({time.monotonic() - started:.0f} s)")


def main(argv=None, prog=None, from_shell=None) -> int:
    """Console entry point; returns the exit status."""
    return run_command(main_with_args, argv, prog=prog, from_shell=from_shell)


if __name__ == "__main__":
    sys.exit(main())
