"""``kstyle info``: what kstyle runs on: versions, extras, CPU features, the oneDNN choice,
GPUs, and whether the VGG-16 weights are cached."""

import argparse
import os
import platform
import sys

from kstyle.cli.common import (
    ONEDNN_VARIABLE,
    OneLineErrorParser,
    preferred_onednn,
    run_command,
    start_command,
    tensorflow_onednn_default,
)
from kstyle.cli.console import add_verbosity, program_name
from kstyle.machine import CPU_FEATURES, cpu_flags, cpu_model, version_of

# Distributions of each extra, as pip names them.
EXTRA_PACKAGES = {
    "export": ("ai-edge-litert", "onnxruntime", "tf2onnx"),
    "video": ("imageio", "imageio-ffmpeg"),
    "coco": ("tensorflow-datasets", "importlib_resources"),
}


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The parser of ``kstyle info``."""
    parser = OneLineErrorParser(
        prog=prog or program_name("kstyle info"),
        description="Print kstyle's version and what it runs on: Python, TensorFlow, Keras, "
        "the installed extras, CPU features, oneDNN, GPUs, and the VGG-16 weights cache; "
        "or, given a model, its styles.",
    )
    parser.add_argument(
        "model",
        nargs="?",
        help="a model.keras file or a run directory: print its styles (index and name) and "
        "size instead",
    )
    add_verbosity(parser)
    return parser


def _onednn_line(flags) -> str:
    def state(on):
        return "unknown" if on is None else "on" if on else "off"

    choices = {task: preferred_onednn(task, flags) for task in ("train", "stylize")}
    if ONEDNN_VARIABLE in os.environ:
        return f"{ONEDNN_VARIABLE}={os.environ[ONEDNN_VARIABLE]} (set by you; kstyle keeps it)"
    return (
        f"train {state(choices['train'])}, stylize {state(choices['stylize'])} "
        f"(kstyle's choice for this CPU; TensorFlow's default: "
        f"{state(tensorflow_onednn_default(flags))})"
    )


def tuned_lines(store=None) -> list[str]:
    """``kstyle info``'s lines on the choices of ``kstyle tune`` stored for this machine."""
    from kstyle.cli.tune import choice_line
    from kstyle.machine import machine_record
    from kstyle.tune_store import TunedStore

    store = TunedStore.read() if store is None else store
    if line := store.problem_line():
        return [f"tuned paths: {line}"]
    machine = machine_record()
    mine = [entry for entry in store.entries if entry["machine"] == machine]
    if not mine:
        return [f"tuned paths: none for this machine in {store.path} (kstyle tune measures them)"]
    return [f"tuned paths ({store.path}):"] + [
        f"  {entry.get('label', entry['job'])} ({entry.get('tuned_at', 'undated')}): "
        f"{choice_line(entry['task'], entry['choice'])}"
        for entry in mine
    ]


def info_lines() -> list[str]:
    """The lines ``kstyle info`` prints."""
    import keras
    import tensorflow as tf

    from kstyle import __version__
    from kstyle.coco import FOLDER as COCO_FOLDER
    from kstyle.coco import default_data_dir
    from kstyle.loss_net import keras_cache_path

    lines = [
        f"kstyle {__version__} ({os.path.dirname(os.path.dirname(os.path.abspath(__file__)))})",
        f"python {platform.python_version()} ({sys.executable})",
        f"tensorflow {tf.__version__}, keras {keras.__version__} "
        f"(backend {keras.backend.backend()}), numpy {version_of('numpy')}",
    ]
    for extra, packages in EXTRA_PACKAGES.items():
        versions = {name: version_of(name) for name in packages}
        missing = [name for name, version in versions.items() if version is None]
        if missing:
            lines.append(f'extra {extra}: not installed (pip install "kstyle[{extra}]")')
        else:
            found = ", ".join(f"{name} {version}" for name, version in versions.items())
            lines.append(f"extra {extra}: {found}")
    flags = cpu_flags()
    features = [feature for feature in CPU_FEATURES if feature in flags]
    lines.append(
        f"cpu: {cpu_model()}, {platform.machine()}, {os.cpu_count()} logical cores; "
        f"features: {' '.join(features) or 'none of ' + ' '.join(CPU_FEATURES)}"
    )
    lines.append(f"oneDNN: {_onednn_line(flags)}")
    lines += tuned_lines()
    gpus = tf.config.list_physical_devices("GPU")
    lines.append(f"gpus: {', '.join(gpu.name for gpu in gpus) if gpus else 'none seen'}")
    vgg = keras_cache_path()
    if os.path.isfile(vgg):
        lines.append(f"vgg16 weights: {vgg} (cached, {os.path.getsize(vgg) / 1e6:.1f} MB)")
    else:
        lines.append(
            f"vgg16 weights: {vgg} (not cached: the first training run downloads them, ~58 MB)"
        )
    coco = os.path.join(default_data_dir(), COCO_FOLDER)
    there = "downloaded" if os.path.isdir(coco) else "not there: training without --data fetches it"
    lines.append(f"coco train2014 images: {coco} ({there})")
    return lines


def main_with_args(argv=None, prog=None, from_shell=None) -> int:
    """Prints :func:`info_lines` to stdout."""
    from_shell = argv is None if from_shell is None else from_shell
    args = build_parser(prog).parse_args(argv)
    start_command(args, None, from_shell)
    print("\n".join(model_lines(args.model) if args.model else info_lines()))
    return 0


def model_lines(model: str) -> list[str]:
    """The lines ``kstyle info MODEL`` prints: the model's file, parameters and styles."""
    from kstyle.checks import model_file
    from kstyle.smoke import is_smoke_test, recorded_style_names

    path = model_file(model)
    from kstyle.style_tables import style_count
    from kstyle.transform_net import load_transform_net

    net = load_transform_net(path)
    count = style_count(net)
    names = recorded_style_names(model)
    if names is None or len(names) != count:
        names = [None] * count
    note = " (smoke test: its loss network was untrained)" if is_smoke_test(model) else ""
    lines = [f"{path}: {count} style(s), {net.count_params():,} parameters{note}"]
    lines += [f"style {index}: {name or '(no name recorded)'}" for index, name in enumerate(names)]
    return lines


def main(argv=None, prog=None, from_shell=None) -> int:
    """Console entry point; returns the exit status."""
    return run_command(main_with_args, argv, prog=prog, from_shell=from_shell)


if __name__ == "__main__":
    sys.exit(main())
