"""``kstyle-train`` / ``python train.py``: train a transform network for one style image."""

import argparse
import os
import sys

from kstyle.cli.common import OneLineErrorParser, run_command, use_fastest_onednn

DEMO_OPTIONS = dict(image_size=128, steps=112, epochs=100, plot_every=10)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="kstyle-train",
        description="Train a fast style-transfer network (Johnson et al. 2016) on COCO or a "
        "folder of images. Defaults are the reference example's.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--style", help="style image (required unless --demo)")
    add(
        "--data",
        default=None,
        help="folder of content images, searched recursively; default: the tfds dataset",
    )
    add("--tfds-name", default="coco/2014", help="tfds dataset used when --data is not given")
    add("--tfds-split", default="train", help="tfds split")
    add("--tfds-data-dir", default=None, help="tfds data directory (tfds default if unset)")
    add("--output", default=None, help="run directory (default: runs/<style name>)")
    add("--epochs", type=int, default=2, help="passes over the content images")
    add("--batch-size", type=int, default=4, help="images per step")
    add("--image-size", type=int, default=256, help="content images are resized to this square")
    add(
        "--style-size",
        type=int,
        default=None,
        help="style image is resized to this square (default: --image-size)",
    )
    add("--learning-rate", type=float, default=1e-3, help="Adam learning rate")
    add("--beta1", type=float, default=0.9, help="Adam beta_1 (gradient decay)")
    add("--beta2", type=float, default=0.999, help="Adam beta_2 (squared-gradient decay)")
    add("--content-weight", type=float, default=1e-4, help="weight of the relu3_3 content loss")
    add("--style-weight", type=float, default=3e-8, help="weight of the Gram style loss")
    add("--tv-weight", type=float, default=0.0, help="weight of the total-variation loss")
    add(
        "--fraction",
        type=float,
        default=1.0,
        help="keep the first floor(N*fraction) content images",
    )
    add("--steps", type=int, default=None, help="stop after this many steps (quick runs)")
    add(
        "--vgg-weights",
        default="imagenet",
        help="imagenet (Keras download and cache), a weights file PATH, or random "
        "(untrained loss net: offline smoke runs only)",
    )
    add(
        "--padding",
        choices=("zeros", "reflect"),
        default="zeros",
        help="convolution padding of the transform net",
    )
    add(
        "--plot-every",
        type=int,
        default=10,
        help="refresh losses.png and preview.png every N steps (0: only at the end)",
    )
    add(
        "--seed",
        type=int,
        default=None,
        help="random seed for weights and shuffling (default: drawn, and recorded in "
        "config.json so that a resumed run keeps its data order)",
    )
    add(
        "--checkpoint-every",
        type=int,
        default=500,
        help="write a checkpoint (weights, optimizer, step) every N steps; rerunning the same "
        "command resumes from the last one (0: only on Ctrl-C or SIGTERM)",
    )
    add(
        "--restart",
        action="store_true",
        help="start over: delete the run's model, history, checkpoints and logs in --output",
    )
    add(
        "--mixed-precision",
        choices=("off", "float16", "bfloat16"),
        default="off",
        help="compute in float16 (with loss scaling) or bfloat16; variables, losses and Grams "
        "stay float32",
    )
    add(
        "--jit-compile",
        choices=("auto", "on", "off"),
        default="auto",
        help="XLA-compile the train step (auto: Keras's choice, XLA on GPUs)",
    )
    add(
        "--strategy",
        choices=("auto", "default", "mirrored", "multiworker", "tpu"),
        default="auto",
        help="tf.distribute strategy (auto: multiworker if TF_CONFIG lists several tasks, "
        "mirrored on several GPUs, else default); --batch-size is the global batch",
    )
    add(
        "--cache",
        action="store_true",
        help="decode the images once, up front, and keep them in memory as uint8 "
        "(N x image-size² x 3 bytes); default: decode every epoch",
    )
    add(
        "--demo",
        action="store_true",
        help="train on a demo set made from matplotlib's sample photos with a generated style "
        f"image ({', '.join(f'{k}={v}' for k, v in DEMO_OPTIONS.items())}), then stylize a photo",
    )
    return parser


def _explicit(parser, argv, name) -> bool:
    """Whether the user gave option ``name`` on the command line."""
    flag = "--" + name.replace("_", "-")
    return any(arg == flag or arg.startswith(flag + "=") for arg in argv)


def main_with_args(argv=None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(arguments)
    use_fastest_onednn("train", argv)
    from kstyle.errors import KstyleError
    from kstyle.run import TrainConfig, train

    options = {k: v for k, v in vars(args).items() if k != "demo"}
    if args.demo:
        from kstyle.demo import prepare_demo

        output = args.output or os.path.join("runs", "demo")
        demo = prepare_demo(os.path.join(output, "demo_data"))
        options["output"] = output
        options["style"] = args.style or demo["style"]
        options["data"] = args.data or demo["data"]
        for name, value in DEMO_OPTIONS.items():
            if not _explicit(parser, arguments, name):
                options[name] = value
    if not options["style"]:
        raise KstyleError("--style is required (or use --demo)")
    options = {k.replace("-", "_"): v for k, v in options.items()}
    summary = train(TrainConfig(**options))
    if summary.get("finished_before"):
        return 0
    losses = {k: float("nan") if v is None else v for k, v in summary["losses"].items()}
    print(
        f"done: {summary['steps']} steps, last loss {losses['loss']:.4g} "
        f"(content {losses['content']:.4g}, style {losses['style']:.4g}); "
        f"model: {summary['model_path']}"
    )
    if args.demo:
        from kstyle.stylize_files import stylize

        target = os.path.join(summary["run_dir"], "stylized.png")
        stylize(summary["transform_net"], demo["photo"], target, show_input=True)
        print(f"stylized picture (input | output): {target}")
    return 0


def main(argv=None) -> int:
    """Console entry point; returns the exit status."""
    return run_command(main_with_args, argv)


if __name__ == "__main__":
    sys.exit(main())
