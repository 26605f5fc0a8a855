"""Many styles in one network: what they cost (a benchmark, not a test; issue 22).

    python bench/multi_style.py step --arch johnson,slim,tiny,live --size 256 --styles 1,16
    python bench/multi_style.py infer --arch johnson,live --size 512
    python bench/multi_style.py add --arch tiny --size 128 --base-steps 600 --steps 600

- ``step``: seconds per training step (batch ``--batch``, ``--size``², the loss net built with
  ``weights=None``, which costs what ImageNet's weights cost) of a net of 1 style (the seed's
  trainer) and of N styles (conditional instance norm, one style drawn per step), for each
  preset. Each configuration runs in a process of its own (``one``), ``--repeats`` times in
  alternating order, each timing ``--steps`` calls of the compiled train function that
  ``fit`` runs after two warm-up steps; the table gives the median and the ratio to 1 style.
- ``infer``: ``stylize_array`` of a one-style net, of a 16-style net with one style, and with a
  blend of two (both baked into a one-style net, :func:`kstyle.styles.styled_net`), and
  ``predict`` of the two-input 16-style net itself (what an export with a style input runs).
- ``add``: the real commands in subprocesses, on the same content and the same loss network.
  A base of the first four ``STYLES`` trains ``--base-steps``; then the new style is (a) added
  to it with ``kstyle train --add-style NEW --from BASE`` and (b) trained alone as a whole
  net, ``--steps`` steps each. Reported: seconds per step of each, and the first step at
  which the added style's style loss (mean of the last ``--window`` steps) reaches the whole
  net's final one. The content is bench/distill_content.py's training photos (crops) and
  scenes; the styles are sample textures and photos that packages ship (``STYLES``). Without
  the VGG-16 ImageNet weights (``--vgg-weights``, default ``random``) the loss network is
  untrained: its Gram matrices are random-feature texture statistics, say so with the numbers.
- ``export``: a run of several styles (``--run``; default: ``add``'s base in ``--work``,
  trained first if missing) exported with its style input as fp32 and int8 TFLite (calibrated
  on ``--calibration`` crops of bench/distill_content.py's training photos; the base is
  trained on the training photos' crops and scenes only), and per style
  and for the even blend of styles 0 and 1: the int8 PSNR against Keras on its held-out
  photos (each at ``--size``²), next to the int8 file of that style baked alone (``kstyle
  export --style``); then the median LiteRT latency (2 threads, fixed ``--size``²) of the
  style-input file with a style and with a blend, and of the baked one-style file.
- ``distill``: ``add``'s base (or ``--run``) distilled into a ``--student`` net of as many
  styles (``kstyle distill``, ``--steps`` steps at ``--size``², random style vectors and
  blends), and, for comparison, style 0 baked alone distilled into a one-style student the
  same way; each student's PSNR against its teacher per style and for the even blend of
  styles 0 and 1, on the held-out photos.

Prints Markdown with the machine's CPU flags and the load average.
"""

import argparse
import csv
import os
import statistics
import subprocess
import sys
import time

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

STYLES = (  # (package, file): style images for ``add`` (the last one is the added style)
    ("skimage", "brick.png"),
    ("skimage", "gravel.png"),
    ("skimage", "grass.png"),
    ("skimage", "ihc.png"),
    ("skimage", "hubble_deep_field.jpg"),
)


def load_line() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def _fit_seconds(trainer, data, steps):
    """Seconds per step of ``trainer``'s compiled train function on ``data`` (an iterator),
    as ``fit`` runs it, without ``fit``'s per-call set-up."""
    trainer.make_train_function()
    function = trainer.train_function
    start = time.perf_counter()
    for _ in range(steps):
        logs = function(data)
    float(logs["loss"])  # the last step has finished
    return (time.perf_counter() - start) / steps


def _trainer(arch, count, size, batch):
    import keras
    import tensorflow as tf

    from kstyle.config import TrainConfig
    from kstyle.loss_net import build_loss_net
    from kstyle.multi_style import MultiStyleTransferTrainer
    from kstyle.trainer import StyleTransferTrainer, compile_trainer
    from kstyle.transform_net import build_transform_net

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    styles = rng.uniform(0, 255, (count, size, size, 3)).astype(np.float32)
    images = tf.constant(rng.uniform(0, 255, (batch, size, size, 3)).astype(np.float32))
    net = build_transform_net(arch, num_styles=count)
    if count == 1:
        trainer = StyleTransferTrainer(net, build_loss_net(None), styles[0], image_size=size)
        data = iter(tf.data.Dataset.from_tensors(images).repeat())
    else:
        names = [str(i) for i in range(count)]
        trainer = MultiStyleTransferTrainer(
            net, build_loss_net(None), styles, names, image_size=size
        )
        data = iter(trainer.label_stream(tf.data.Dataset.from_tensors(images).repeat(), 0, 0))
    compile_trainer(trainer, TrainConfig(style="s.png", image_size=size))
    _fit_seconds(trainer, data, 2)  # trace and warm up
    return trainer, data


def _one_config(args, arch, count) -> float:
    """Seconds per step of one configuration, in a process of its own (two trainers in one
    process slow the first one built: measured, see docs/performance.md)."""
    sizes = ["--size", str(args.size), "--batch", str(args.batch), "--steps", str(args.steps)]
    command = [sys.executable, __file__, "one", "--arch", arch, "--styles", str(count), *sizes]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(result.stderr[-3000:])
    return float(result.stdout.split()[-1])


def one_config(args) -> list[str]:
    """``one``: the seconds per step of ``--arch`` with ``--styles`` styles (one number)."""
    built = _trainer(args.arch, int(args.styles), args.size, args.batch)
    return [f"{_fit_seconds(*built, args.steps):.4f}"]


def step_bench(args) -> list[str]:
    from realtime import machine_line  # bench/

    lines = [machine_line([_versions()]), load_line(), ""]
    counts = [int(c) for c in args.styles.split(",")]
    lines += ["| preset | " + " | ".join(f"{c} style(s) s/step" for c in counts) + " | ratio |"]
    lines += ["|---" * (len(counts) + 2) + "|"]
    for arch in args.arch.split(","):
        times = {count: [] for count in counts}
        for repeat in range(args.repeats):  # ABBA...: neither goes first every time
            for count in counts if repeat % 2 == 0 else counts[::-1]:
                times[count].append(_one_config(args, arch, count))
        medians = {count: statistics.median(values) for count, values in times.items()}
        ratio = medians[counts[-1]] / medians[counts[0]]
        cells = " | ".join(f"{medians[c]:.3f}" for c in counts)
        lines.append(f"| {arch} | {cells} | {ratio:.3f}× |")
        print(lines[-1], file=sys.stderr, flush=True)
    lines.append(load_line())
    return lines


def _versions():
    import keras
    import tensorflow as tf
    from realtime import _onednn_setting  # bench/

    return {"versions": f"TF {tf.__version__}, Keras {keras.__version__}",
            "onednn": _onednn_setting()}  # fmt: skip


def _timed(functions, repeats) -> list[float]:
    """The median seconds of each function, called in turn ``repeats`` times after two
    warm-up rounds (no function always goes first on a warm machine)."""
    values = [[] for _ in functions]
    for round_ in range(repeats + 2):
        for index, function in enumerate(functions):
            start = time.perf_counter()
            function()
            if round_ >= 2:
                values[index].append(time.perf_counter() - start)
    return [statistics.median(times) for times in values]


def _cases(plain, multi, image):
    """The four timed calls of :func:`infer_bench`."""
    from kstyle.inference import stylize_array

    vector = np.eye(16, dtype=np.float32)[3:4]
    return [
        lambda: stylize_array(plain, image),
        lambda: stylize_array(multi, image, style=3),
        lambda: stylize_array(multi, image, style="3:0.5,7:0.5"),
        lambda: multi.predict([image[None].astype(np.float32), vector], verbose=0),
    ]


def infer_bench(args) -> list[str]:
    import keras
    from realtime import machine_line  # bench/

    from kstyle.transform_net import build_transform_net

    lines = [machine_line([_versions()]), load_line(), ""]
    lines += ["| preset | one-style net | 16 styles: style 3 | 16 styles: blend 3+7 | "
              "two-input net, predict |", "|---|---|---|---|---|"]  # fmt: skip
    image = np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), np.uint8)
    for arch in args.arch.split(","):
        keras.utils.set_random_seed(0)
        plain, multi = build_transform_net(arch), build_transform_net(arch, num_styles=16)
        seconds = _timed(_cases(plain, multi, image), args.repeats)
        lines.append(f"| {arch} | " + " | ".join(f"{1000 * s:.1f} ms" for s in seconds) + " |")
        print(lines[-1], file=sys.stderr, flush=True)
    lines.append(load_line())
    return lines


def _train(args, *options):
    command = [sys.executable, "-m", "kstyle", "train", "--data", args.data, "--image-size",
               str(args.size), "--batch-size", "4", "--vgg-weights", args.vgg_weights,
               "--plot-every", "0", "--seed", "1", "-q", *options]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(result.stderr[-3000:])


def _history(run):
    with open(os.path.join(run, "history.csv"), newline="") as file:
        rows = list(csv.DictReader(file))
    return [float(r["style"]) for r in rows], [float(r["seconds"]) for r in rows]


def _train_base(args) -> list:
    """Trains ``add``'s base (``--work``/base: the first four :data:`STYLES`, ``--base-steps``
    steps) on bench/distill_content.py's training content; returns the style files."""
    import distill_content as content  # bench/
    from PIL import Image

    if "," in args.arch:
        raise SystemExit("error: add and export take one preset: --arch tiny, for example")
    os.makedirs(args.work, exist_ok=True)
    args.data = os.path.join(args.work, "train")
    content.write_training_content(args.data, 32, 96, args.size, 0)
    styles = []
    for package, name in STYLES:
        path = os.path.join(args.work, f"style_{os.path.splitext(name)[0]}.png")
        if not os.path.exists(path):
            Image.fromarray(content.square_photo(content.load_photo(package, name), 256)).save(path)
        styles.append(path)
    _train(args, "--output", os.path.join(args.work, "base"), "--steps", str(args.base_steps),
           "--arch", args.arch, *[a for s in styles[:-1] for a in ("--style", s)])  # fmt: skip
    return styles


def add_bench(args) -> list[str]:
    from realtime import machine_line  # bench/

    styles = _train_base(args)
    base, added, whole = (os.path.join(args.work, name) for name in ("base", "added", "whole"))
    arch = ["--arch", args.arch]
    _train(args, "--output", added, "--steps", str(args.steps), "--add-style", styles[-1],
           "--from", base)  # fmt: skip
    _train(args, "--output", whole, "--steps", str(args.steps), *arch, "--style", styles[-1])
    (add_loss, add_time), (whole_loss, whole_time) = _history(added), _history(whole)
    smooth = lambda values: np.convolve(values, np.ones(args.window) / args.window, "valid")  # noqa: E731
    target = smooth(whole_loss)[-1]
    reached = np.nonzero(smooth(add_loss) <= target)[0]
    first = int(reached[0]) + args.window if reached.size else None
    per_step = lambda seconds: (seconds[-1] - seconds[9]) / (len(seconds) - 10)  # noqa: E731
    lines = [machine_line([_versions()]), load_line(), ""]
    lines += [f"loss network: {args.vgg_weights}; {args.arch} at {args.size}², batch 4; "
              f"base: {len(styles) - 1} styles, {args.base_steps} steps", "",
              "| run | s/step | final style loss (mean of last "
              f"{args.window}) | steps to the whole net's final style loss |",
              "|---|---|---|---|",
              f"| whole net, new style alone | {per_step(whole_time):.3f} | {target:.4g} | "
              f"{len(whole_loss)} |",
              f"| add the style to the base | {per_step(add_time):.3f} | "
              f"{smooth(add_loss)[-1]:.4g} | {first if first else 'not reached'} |"]  # fmt: skip
    lines.append(load_line())
    return lines


def _litert(flatbuffer, image, vector=None):
    """A call of the LiteRT file ``flatbuffer`` (2 threads) on ``image`` (H, W, 3) uint8, with
    the style ``vector`` when the file takes one."""
    import tempfile

    from kstyle.export.verify import Runner

    with tempfile.NamedTemporaryFile(suffix=".tflite", delete=False) as file:
        file.write(flatbuffer)
    runner = Runner("tflite", file.name, num_threads=2)
    os.unlink(file.name)
    return lambda: runner(image, vector)


def _export_rows(net, calibration, photos, size):
    """The int8 PSNR rows of :func:`export_bench` and the files for its timings."""
    from kstyle.export.verify import checked_styles
    from kstyle.export.writer import tflite_bytes
    from kstyle.images import psnr
    from kstyle.inference import stylize_array
    from kstyle.style_tables import style_count
    from kstyle.styles import bake_style

    shared = tflite_bytes(net, "int8", size, calibration)
    rows = []
    for vector in checked_styles(style_count(net)):
        alone = tflite_bytes(bake_style(net, vector), "int8", size, calibration)
        mine, baked = [], []
        for photo in photos:
            reference = stylize_array(net, photo, style=vector)
            mine.append(psnr(_litert(shared, photo, vector)(), reference))
            baked.append(psnr(_litert(alone, photo)(), reference))
        name = " + ".join(f"{w:g}·style {k}" for k, w in enumerate(vector) if w)
        rows.append(f"| {name} | {np.mean(mine):.1f} ({min(mine):.1f}) | "
                    f"{np.mean(baked):.1f} ({min(baked):.1f}) |")  # fmt: skip
    return rows


def export_bench(args) -> list[str]:
    import distill_content as content  # bench/
    from realtime import machine_line  # bench/

    from kstyle.export.writer import tflite_bytes
    from kstyle.style_tables import style_count
    from kstyle.styles import bake_style
    from kstyle.transform_net import load_transform_net

    run = args.run or os.path.join(args.work, "base")
    if not args.run and not os.path.exists(os.path.join(run, "model.keras")):
        _train_base(args)
    net = load_transform_net(run)
    if style_count(net) == 1:
        raise SystemExit(f"error: {run} holds one style; export compares the styles of a net")
    rng = np.random.default_rng(0)
    calibration, per_photo = [], args.calibration // len(content.TRAIN_PHOTOS) + 1
    for package, name in content.TRAIN_PHOTOS:
        photo = content.load_photo(package, name)
        calibration += content.photo_crops(photo, per_photo, args.size, rng)
    calibration = calibration[:: max(1, len(calibration) // args.calibration)][: args.calibration]
    photos = [content.square_photo(content.load_photo(*held), args.size)
              for held in content.HELD_OUT_PHOTOS]  # fmt: skip
    lines = [machine_line([_versions()]), load_line(), ""]
    lines += [f"run {run}; int8 PSNR against Keras, mean (worst) over "
              f"{len(photos)} held-out photos at {args.size}²", "",
              "| style | one file with the style input | that style baked alone |",
              "|---|---|---|"]  # fmt: skip
    lines += _export_rows(net, calibration, photos, args.size)
    count = net.inputs[1].shape[-1]
    one, blend = np.eye(count, dtype=np.float32)[1], np.eye(count, dtype=np.float32)[:2].mean(0)
    shared = tflite_bytes(net, "none", args.size)
    alone = tflite_bytes(bake_style(net, one), "none", args.size)
    image = photos[0]
    seconds = _timed([_litert(shared, image, one), _litert(shared, image, blend),
                      _litert(alone, image)], args.repeats)  # fmt: skip
    lines += ["", "| fp32 TFLite, 2 threads | style input, style 1 | style input, blend 0+1 | "
              "style 1 baked alone |", "|---|---|---|---|",
              "| ms | " + " | ".join(f"{1000 * s:.2f}" for s in seconds) + " |"]  # fmt: skip
    lines.append(load_line())
    return lines


def _distill(args, teacher, output):
    command = [sys.executable, "-m", "kstyle", "distill", "--teacher", teacher, "--data",
               args.data, "--output", output, "--arch", args.student, "--image-size",
               str(args.size), "--batch-size", "4", "--steps", str(args.steps), "--seed", "1",
               "--plot-every", "0", "-q"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(result.stderr[-3000:])


def distill_bench(args) -> list[str]:
    import distill_content as content  # bench/
    from realtime import machine_line  # bench/

    from kstyle.export.verify import checked_styles
    from kstyle.images import psnr
    from kstyle.inference import stylize_array
    from kstyle.style_tables import style_count
    from kstyle.styles import bake_style
    from kstyle.transform_net import load_transform_net

    run = args.run or os.path.join(args.work, "base")
    if not args.run and not os.path.exists(os.path.join(run, "model.keras")):
        _train_base(args)
    args.data = os.path.join(args.work, "train")
    content.write_training_content(args.data, 32, 96, args.size, 0)
    teacher = load_transform_net(run)
    single_teacher = os.path.join(args.work, "style0.keras")
    bake_style(teacher, 0).save(single_teacher)
    many, one = (os.path.join(args.work, f"{args.student}_{name}") for name in ("all", "style0"))
    _distill(args, run, many)
    _distill(args, single_teacher, one)
    students = load_transform_net(many), load_transform_net(one)
    photos = [content.square_photo(content.load_photo(*held), args.size)
              for held in content.HELD_OUT_PHOTOS]  # fmt: skip
    lines = [machine_line([_versions()]), load_line(), ""]
    lines += [f"teacher {run} ({style_count(teacher)} styles); students: {args.student}, "
              f"{args.steps} steps at {args.size}², batch 4; PSNR against the teacher, mean "
              f"(worst) over {len(photos)} held-out photos at {args.size}²", "",
              "| style | student of every style | student of style 0 alone |",
              "|---|---|---|"]  # fmt: skip
    for vector in checked_styles(style_count(teacher)):
        cells = []
        for student, alone in zip(students, (False, True), strict=True):
            if alone and vector[0] < 1:
                cells.append("–")
                continue
            style = None if alone else vector
            scores = [
                psnr(
                    stylize_array(student, p, style=style), stylize_array(teacher, p, style=vector)
                )
                for p in photos
            ]
            cells.append(f"{np.mean(scores):.1f} ({min(scores):.1f})")
        name = " + ".join(f"{w:g}·style {k}" for k, w in enumerate(vector) if w)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append(load_line())
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("step", "infer", "add", "export", "distill", "one"))
    parser.add_argument("--arch", default="johnson,slim,tiny,live")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--styles", default="1,16")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--base-steps", type=int, default=600)
    parser.add_argument("--window", type=int, default=50)
    parser.add_argument("--vgg-weights", default="random")
    parser.add_argument("--run", default=None)
    parser.add_argument("--calibration", type=int, default=64)
    parser.add_argument("--student", default="live")
    parser.add_argument("--work", default=os.path.join("runs", "bench_multi_style"))
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    modes = {"step": step_bench, "infer": infer_bench, "add": add_bench, "one": one_config,
             "export": export_bench, "distill": distill_bench}  # fmt: skip
    lines = modes[args.mode](args)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
