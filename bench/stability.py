"""Temporal stability of each preset on synthetic clips (a benchmark, not a test; issue 23).

    python bench/stability.py --steps 100 --size 128 --stability-weights 0,0.001

For each preset (``--arch``) and each ``--stability-weights`` value, a net is trained ``--steps``
steps at ``--size``² on
bench/distill_content.py's training content with scikit-image's brick texture as the style
(``--vgg-weights``, default ``random``: no ImageNet weights here, so the nets' styles are
random-feature textures; say so with the numbers), or taken from ``--runs NAME=RUN,...``. Each
net stylizes the clips of :mod:`kstyle.stability` (pan, zoom, rotation, static scene with
sensor noise; ``--frames`` frames at ``--clip`` (H, W)) made from bench/distill_content.py's
held-out photos, and the table gives, per preset and motion, the temporal error of the inputs
and of the outputs (dB; higher is steadier) and the ratio of their MSEs (how much the net
amplifies change), and the same for the outputs smoothed by an exponential moving average
(``--keep``), the remedy users know. A strip of frames (inputs, outputs, smoothed) is saved
as ``--strip`` to look at, and a second table gives each run's final content, style and
weighted stability losses (each the mean of its last 20 steps: the cost of the term) and its
seconds per step after 10 warm-up steps.

Prints Markdown (and writes it to ``--write``) with the machine's CPU flags and load.
"""

import argparse
import os
import subprocess
import sys

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _train(args, arch, weight) -> str:
    """A run of ``arch`` with ``--stability-weight weight`` in ``--work`` (a finished run is
    reused)."""
    import distill_content as content  # bench/
    from PIL import Image

    data = os.path.join(args.work, "train")
    content.write_training_content(data, 32, 96, args.size, 0)
    style = os.path.join(args.work, "brick.png")
    if not os.path.exists(style):
        Image.fromarray(content.square_photo(content.load_photo("skimage", "brick.png"), 256)).save(
            style
        )
    run = os.path.join(args.work, f"{arch}_{weight:g}")
    command = [sys.executable, "-m", "kstyle", "train", "--style", style, "--data", data,
               "--output", run, "--arch", arch, "--image-size", str(args.size), "--steps",
               str(args.steps), "--vgg-weights", args.vgg_weights, "--seed", "1",
               "--stability-weight", str(weight), "--plot-every", "0", "-q"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(result.stderr[-3000:])
    return run


def _clips(args):
    import distill_content as content  # bench/

    from kstyle.stability import MOTIONS, synthetic_clip

    clips = []
    for index, held in enumerate(content.HELD_OUT_PHOTOS[: args.photos]):
        photo = np.asarray(content.load_photo(*held).convert("RGB"))
        for motion in MOTIONS:
            clips.append(synthetic_clip(photo, motion, args.frames, args.clip, seed=index))
    return clips


def _row(arch, motion, results) -> str:
    """One table row: the means over the photos' clips of one motion."""
    mean = lambda key, part: np.mean([r[part][key] for r in results])  # noqa: E731
    ratios = [r["ratio"] for r in results if r["ratio"] is not None]
    ratio = f"{np.mean(ratios):.1f}" if ratios else "–"
    smooth = [r["smoothed"] for r in results]
    smoothed_ratios = [s["ratio"] for s in smooth if s["ratio"] is not None]
    smoothed_ratio = f"{np.mean(smoothed_ratios):.1f}" if smoothed_ratios else "–"
    return (f"| {arch} | {motion} | {mean('db', 'input'):.1f} | {mean('db', 'output'):.1f} | "
            f"{ratio} | {np.mean([s['db'] for s in smooth]):.1f} | {smoothed_ratio} |")  # fmt: skip


def _costs(name, run) -> str:
    """A row of the training losses at the end of ``run``: each the mean of its last 20
    steps in ``history.csv``."""
    import csv

    with open(os.path.join(run, "history.csv"), newline="") as file:
        every = list(csv.DictReader(file))
    rows = every[-20:]
    mean = lambda key: np.mean([float(r[key]) for r in rows]) if key in rows[0] else 0.0  # noqa: E731
    seconds = [float(r["seconds"]) for r in every]
    warm = len(seconds) > 11  # after 10 warm-up steps
    per_step = (seconds[-1] - seconds[9]) / (len(seconds) - 10) if warm else float("nan")
    return (f"| {name} | {mean('content'):.4g} | {mean('style'):.4g} | "
            f"{mean('stability'):.4g} | {per_step:.3f} |")  # fmt: skip


def _strip(path, rows) -> None:
    """Saves rows of frames (each a list of (H, W, 3) uint8) as one PNG, 4 px apart."""
    from PIL import Image

    height, width = rows[0][0].shape[:2]
    columns = max(len(row) for row in rows)
    sheet = Image.new("RGB", (columns * (width + 4) - 4, len(rows) * (height + 4) - 4), "white")
    for r, row in enumerate(rows):
        for c, frame in enumerate(row):
            sheet.paste(Image.fromarray(frame), (c * (width + 4), r * (height + 4)))
    sheet.save(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="johnson,slim,tiny,live")
    parser.add_argument("--runs", default="", help="NAME=RUN,... to measure instead of training")
    parser.add_argument("--stability-weights", default="0,1")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--vgg-weights", default="random")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--clip", type=int, nargs=2, default=(128, 160), metavar=("H", "W"))
    parser.add_argument("--photos", type=int, default=3)
    parser.add_argument("--keep", type=float, default=0.5)
    parser.add_argument("--work", default=os.path.join("runs", "bench_stability"))
    parser.add_argument("--strip", default=os.path.join("runs", "bench_stability", "strip.png"))
    parser.add_argument("--write", default=None)
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from multi_style import _versions, load_line  # bench/
    from realtime import machine_line  # bench/

    from kstyle.inference import stylize_array
    from kstyle.stability import moving_average, stability, temporal_error
    from kstyle.transform_net import load_transform_net

    os.makedirs(args.work, exist_ok=True)
    given = dict(item.split("=", 1) for item in args.runs.split(",") if item)
    clips = _clips(args)
    lines = [machine_line([_versions()]), load_line(), ""]
    lines += [f"nets: {args.steps} steps at {args.size}², style scikit-image's brick, loss net "
              f"{args.vgg_weights}; clips: {args.frames} frames at {args.clip[1]}x{args.clip[0]} "
              f"of {args.photos} held-out photos per motion; smoothing keeps {args.keep}", "",
              "| preset | motion | input dB | output dB | output / input MSE | smoothed dB | "
              "smoothed / input MSE |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    strip, costs = [], []
    nets = given or {
        f"{arch} λ={weight}": (arch, float(weight))
        for arch in args.arch.split(",")
        for weight in args.stability_weights.split(",")
    }
    for name, run in nets.items():
        run = run if isinstance(run, str) else _train(args, *run)
        costs.append(_costs(name, run))
        net = load_transform_net(run)
        by_motion = {}
        for clip in clips:
            result = stability(lambda frame, net=net: stylize_array(net, frame), clip)
            smoothed = moving_average(result["outputs"], args.keep)
            error = temporal_error(smoothed, clip)
            ratio = None if result["input"]["mse"] == 0 else error["mse"] / result["input"]["mse"]
            result["smoothed"] = {**error, "ratio": ratio}
            by_motion.setdefault(clip.motion, []).append(result)
            if clip is clips[len(clips) // 2 - 1]:  # one clip per preset in the strip
                pixels = np.clip(np.round(smoothed), 0, 255).astype(np.uint8)
                strip += [list(clip.frames[:4]), list(result["outputs"][:4]), list(pixels[:4])]
        for motion, results in by_motion.items():
            lines.append(_row(name, motion, results))
            print(lines[-1], file=sys.stderr, flush=True)
    _strip(args.strip, strip)
    lines += ["", "| net | content loss | style loss | stability term (weighted) | s/step |",
              "|---|---|---|---|---|", *costs]  # fmt: skip
    lines += [
        "",
        f"strip: {args.strip} (per preset: input, output, smoothed; 4 frames)",
        load_line(),
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        with open(args.write, "w") as file:
            file.write(text + "\n")


if __name__ == "__main__":
    main()
