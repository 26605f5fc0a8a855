"""kstyle benchmark suite: training steps, stylize latency, input pipeline, against a matmul peak
measured in the same run (a benchmark, not a test; numbers are medians after warm-up).

    python bench/bench.py                        # everything, oneDNN on and off (tens of minutes
                                                 # on a 2-core CPU; a few on a GPU)
    python bench/bench.py --quick --json out.json
    python bench/bench.py --sections stylize --sizes 256,512 --onednn on

Every figure is also given as a ratio to a baseline measured in the same run (training: float32,
no XLA, oneDNN as TensorFlow sets it; stylizing: ``model.predict``), because shared machines are
noisy. oneDNN is a process-wide switch read at TensorFlow import (``TF_ENABLE_ONEDNN_OPTS``), so
``--onednn both`` measures each setting in its own subprocess. Train steps use an untrained
VGG-16 (the same arithmetic as ImageNet weights, no download). FLOP counts (2 x multiply-adds):
the transform net is 20.16 GFLOP per 256² image; a training step at batch 4, 256², ~693 GFLOP.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TRANSFORM_GFLOP_256 = 20.16
TRAIN_STEP_GFLOP_256_B4 = 693.0
COCO_TWO_EPOCHS_STEPS = 41_391  # 2 x floor(82,783 / 4)
STYLIZE_PATHS = (
    "model.predict",
    "stylize_array",
    "tf.function",
    "tf.function+XLA",
    "saved_model",
    "tflite fp32",
    "tflite int8",
)


def median_seconds(function, repeats, warmup=1):
    """``(first call seconds, median seconds of repeats)``; the first call is a warm-up."""
    start = time.perf_counter()
    function()
    first = time.perf_counter() - start
    for _ in range(warmup - 1):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def matmul_peak_gflops(size=4096, repeats=5):
    """float32 GFLOP/s of a size x size matmul: the machine's practical peak."""
    import tensorflow as tf

    a = tf.random.normal((size, size))
    b = tf.random.normal((size, size))
    product = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))  # one scalar comes back
    _, seconds = median_seconds(lambda: product().numpy(), repeats)
    return 2 * size**3 / seconds / 1e9


def train_step_seconds(image_size, batch_size, jit_compile, repeats, mixed_precision="off"):
    """Median seconds of one ``train_on_batch`` step of the trainer that ``train.py`` builds."""
    import keras
    import numpy as np

    from kstyle.config import TrainConfig
    from kstyle.trainer import build_trainer

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    style = rng.uniform(0, 255, (image_size, image_size, 3)).astype("float32")
    config = TrainConfig(
        style="",
        vgg_weights="random",
        image_size=image_size,
        batch_size=batch_size,
        mixed_precision=mixed_precision,
        jit_compile="on" if jit_compile else "off",
    )
    trainer, _ = build_trainer(config, style)
    batch = rng.uniform(0, 255, (batch_size, image_size, image_size, 3)).astype("float32")
    return median_seconds(lambda: trainer.train_on_batch(batch), repeats, warmup=2)


def input_pipeline_images_per_second(image_size, batch_size, cache, count=96, seconds=20.0):
    """Images per second that ``TrainingData.stream`` delivers from a folder of 640x480 JPEGs.

    With ``cache``, the images are decoded once before timing (as ``--cache`` does up front).
    """
    import numpy as np
    from PIL import Image

    from kstyle.data import folder_dataset

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        for index in range(count):
            pixels = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(os.path.join(folder, f"{index:03d}.jpg"), quality=90)
        data = folder_dataset(
            folder, image_size=image_size, batch_size=batch_size, seed=0, cache=cache
        )
        iterator = iter(data.stream(0))
        for _ in range(2):  # warm-up
            next(iterator)
        images, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            images += int(next(iterator).shape[0])
        return images / (time.perf_counter() - start)


def stylize_runners(model, directory, paths, calibration_size=64):
    """``{path name: function(uint8 (H, W, 3)) -> output}`` for each stylize path."""
    import numpy as np
    import tensorflow as tf

    import kstyle
    from kstyle import export

    def float_batch(image):
        return image[None].astype(np.float32)

    forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    forward_xla = tf.function(
        lambda x: model(x, training=False), jit_compile=True, reduce_retracing=True
    )
    runners = {
        "model.predict": lambda image: model.predict(float_batch(image), verbose=0),
        "stylize_array": lambda image: kstyle.stylize_array(model, image),
        "tf.function": lambda image: forward(float_batch(image)).numpy(),
        "tf.function+XLA": lambda image: forward_xla(float_batch(image)).numpy(),
    }
    if "saved_model" in paths:
        saved = export.serving_archive(model, os.path.join(directory, "saved_model"))
        runners["saved_model"] = export.Runner("saved_model", saved)
    for quantize, name in (("none", "tflite fp32"), ("int8", "tflite int8")):
        if name not in paths:
            continue
        rng = np.random.default_rng(1)
        calibration = [
            rng.integers(0, 256, (calibration_size, calibration_size, 3), dtype=np.uint8)
            for _ in range(8)
        ]
        path = os.path.join(directory, f"{quantize}.tflite")
        with open(path, "wb") as file:
            file.write(export.tflite_bytes(model, quantize, calibration_images=calibration))
        runners[name] = export.Runner("tflite", path)
    return {name: runners[name] for name in paths if name in runners}


def measure(args) -> dict:
    """Every section asked for, in this process (one oneDNN setting)."""
    import tensorflow as tf

    repeats = 3 if args.quick else 5
    results = {
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "gpus": [device.name for device in tf.config.list_physical_devices("GPU")],
            "tensorflow": tf.__version__,
        },
        "matmul_peak_gflops": matmul_peak_gflops(),
        "train": [],
        "stylize": [],
        "input_pipeline": [],
    }
    sections = args.sections.split(",")
    scale = (args.image_size / 256) ** 2 * args.batch_size / 4
    if "train" in sections:
        for precision in args.precisions.split(","):
            for jit in _xla_settings(args.xla):
                first, seconds = train_step_seconds(
                    args.image_size, args.batch_size, jit, repeats, mixed_precision=precision
                )
                results["train"].append(
                    {
                        "mixed_precision": precision,
                        "jit_compile": jit,
                        "first_call_seconds": first,
                        "seconds_per_step": seconds,
                        "gflops": TRAIN_STEP_GFLOP_256_B4 * scale / seconds,
                    }
                )
                _progress(f"train {precision} xla={jit}: {seconds:.3f} s/step")
    if "stylize" in sections:
        import keras
        import numpy as np

        from kstyle.transform_net import build_transform_net

        keras.utils.set_random_seed(0)
        model = build_transform_net()
        paths = args.paths.split(",")
        with tempfile.TemporaryDirectory() as directory:
            runners = stylize_runners(model, directory, paths)
            for size in (int(side) for side in args.sizes.split(",")):
                image = np.random.default_rng(0).integers(0, 256, (size, size, 3), np.uint8)
                for name, runner in runners.items():
                    first, seconds = median_seconds(lambda r=runner, i=image: r(i), repeats)
                    results["stylize"].append(
                        {
                            "size": size,
                            "path": name,
                            "first_call_seconds": first,
                            "seconds": seconds,
                            "gflops": TRANSFORM_GFLOP_256 * (size / 256) ** 2 / seconds,
                        }
                    )
                    _progress(f"stylize {size} {name}: {seconds:.3f} s (first {first:.2f} s)")
    if "pipeline" in sections:
        for cache in (False, True):
            rate = input_pipeline_images_per_second(args.image_size, args.batch_size, cache)
            results["input_pipeline"].append({"cache": cache, "images_per_second": rate})
            _progress(f"input pipeline cache={cache}: {rate:.0f} images/s")
    results["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return results


def _xla_settings(xla):
    return {"both": (False, True), "on": (True,), "off": (False,)}[xla]


def _progress(line):
    print(line, file=sys.stderr, flush=True)


def _child(argv, onednn, json_path):
    """Runs this script with one oneDNN setting in a subprocess; returns its result."""
    command = [sys.executable, os.path.abspath(__file__), *argv, "--onednn", onednn]
    subprocess.run([*command, "--json", json_path], check=True, stdout=subprocess.DEVNULL)
    with open(json_path) as file:
        return json.load(file)[0]


def report(runs) -> list[str]:
    """The table lines for a list of per-oneDNN-setting results."""
    peak = max(run["matmul_peak_gflops"] for run in runs)
    lines = [f"matmul peak: {peak:.1f} GFLOP/s (best over the oneDNN settings)"]
    train = [(run["onednn"], row) for run in runs for row in run["train"]]
    if train:
        base = train[0][1]["seconds_per_step"]
        lines += [
            "",
            "| oneDNN | precision | XLA | s/step | vs first row | % of peak | 2 COCO epochs |",
            "|---|---|---|---|---|---|---|",
        ]
        for onednn, row in train:
            seconds = row["seconds_per_step"]
            lines.append(
                f"| {onednn} | {row['mixed_precision']} | {'on' if row['jit_compile'] else 'off'}"
                f" | {seconds:.3f} | {seconds / base:.2f}x | {100 * row['gflops'] / peak:.0f} % |"
                f" {_hours(seconds * COCO_TWO_EPOCHS_STEPS)} |"
            )
    stylize = [(run["onednn"], row) for run in runs for row in run["stylize"]]
    if stylize:
        lines += [
            "",
            "| oneDNN | size | path | seconds | first call (s) | vs model.predict | % of peak |",
            "|---|---|---|---|---|---|---|",
        ]
        baselines = {
            (onednn, row["size"]): row["seconds"]
            for onednn, row in stylize
            if row["path"] == "model.predict"
        }
        for onednn, row in stylize:
            base = baselines.get((onednn, row["size"]), row["seconds"])
            lines.append(
                f"| {onednn} | {row['size']} | {row['path']} | {row['seconds']:.3f} | "
                f"{row['first_call_seconds']:.2f} | {row['seconds'] / base:.2f}x | "
                f"{100 * row['gflops'] / peak:.0f} % |"
            )
    for run in runs:
        for row in run["input_pipeline"]:
            lines.append(
                f"input pipeline (oneDNN {run['onednn']}, cache={row['cache']}): "
                f"{row['images_per_second']:.0f} images/s"
            )
        lines.append(f"peak RSS (oneDNN {run['onednn']}): {run['peak_rss_gb']:.2f} GiB")
    return lines


def _hours(seconds):
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def build_parser():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="3 repeats instead of 5; no 1024² stylize")
    add("--sections", default="train,stylize,pipeline", help="what to measure")
    add("--image-size", type=int, default=256, help="training image size")
    add("--batch-size", type=int, default=4, help="training batch size")
    add("--precisions", default="off,bfloat16,float16", help="--mixed-precision values to time")
    add("--xla", choices=("both", "on", "off"), default="both", help="train with XLA off/on")
    add("--sizes", default=None, help="stylize sizes (default 256,512,1024; --quick 256,512)")
    add("--paths", default=",".join(STYLIZE_PATHS), help="stylize paths to time")
    add(
        "--onednn",
        choices=("both", "on", "off", "default"),
        default="both",
        help="TF_ENABLE_ONEDNN_OPTS for the run; both: one subprocess each",
    )
    add("--json", default=None, help="also write the results to this file")
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    if args.sizes is None:
        args.sizes = "256,512" if args.quick else "256,512,1024"
    if args.onednn == "both":
        child_argv = _without_options(argv, ("--onednn", "--json"))
        with tempfile.TemporaryDirectory() as directory:
            runs = [
                _child(child_argv, onednn, os.path.join(directory, f"{onednn}.json"))
                for onednn in ("on", "off")
            ]
    else:
        if args.onednn != "default":  # read by TensorFlow at import, which has not happened
            os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1" if args.onednn == "on" else "0"
        sys.path.insert(0, ROOT)
        runs = [measure(args)]
    if args.json:
        with open(args.json, "w") as file:
            json.dump(runs, file, indent=2)
    print("\n".join(report(runs)))
    return 0


def _without_options(argv, names):
    """``argv`` without the options ``names`` and their values."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in names:
            skip = True
        elif not any(arg.startswith(name + "=") for name in names):
            kept.append(arg)
    return kept


if __name__ == "__main__":
    sys.exit(main())
