"""kstyle benchmark: training-step time and stylize latency, against a matmul peak measured in
the same run (this is a benchmark, not a test; numbers are medians after warm-up).

    python bench/bench.py                      # full run (several minutes on a 2-core CPU)
    python bench/bench.py --quick --json out.json

Train steps use an untrained VGG-16 (weights=None): the same arithmetic as ImageNet weights,
and no download. FLOP counts (2 x multiply-adds) scale with pixels from these 256² figures:
transform net 20.16 GFLOP per image; one training step at batch 4 about 693 GFLOP.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TRANSFORM_GFLOP_256 = 20.16
TRAIN_STEP_GFLOP_256_B4 = 693.0


def median_seconds(function, repeats, warmup=1):
    """Median wall time of ``function()`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_peak_gflops(size=4096, repeats=5):
    """float32 GFLOP/s of a size x size matmul: the machine's practical peak."""
    import tensorflow as tf

    a = tf.random.normal((size, size))
    b = tf.random.normal((size, size))
    product = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))  # one scalar comes back
    seconds = median_seconds(lambda: product().numpy(), repeats)
    return 2 * size**3 / seconds / 1e9


def train_step_seconds(image_size, batch_size, jit_compile, repeats, mixed_precision="off"):
    """Median seconds of one ``train_on_batch`` step of the trainer that ``train.py`` builds."""
    import keras
    import numpy as np

    from kstyle.run import TrainConfig, build_trainer

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
    import tempfile

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


def stylize_seconds(size, jit_compile, repeats):
    """``(first call seconds, median seconds)`` of a batch-1 forward pass at size x size."""
    import keras
    import numpy as np
    import tensorflow as tf

    from kstyle.transform_net import build_transform_net

    keras.utils.set_random_seed(0)
    model = build_transform_net()
    forward = tf.function(lambda x: model(x, training=False), jit_compile=jit_compile)
    image = np.random.default_rng(0).uniform(0, 255, (1, size, size, 3)).astype("float32")
    start = time.perf_counter()
    forward(image).numpy()
    first = time.perf_counter() - start
    return first, median_seconds(lambda: forward(image).numpy(), repeats, warmup=0)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer repeats, no 1024² stylize")
    parser.add_argument("--image-size", type=int, default=256, help="training image size")
    parser.add_argument("--batch-size", type=int, default=4, help="training batch size")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument(
        "--precisions",
        default="off,bfloat16,float16",
        help="--mixed-precision values to time training with (comma-separated)",
    )
    args = parser.parse_args(argv)

    import tensorflow as tf

    repeats = 3 if args.quick else 5
    results = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "gpus": len(tf.config.list_physical_devices("GPU")),
            "tensorflow": tf.__version__,
        },
        "matmul_peak_gflops": matmul_peak_gflops(),
        "train": [],
        "stylize": [],
        "input_pipeline": [],
    }
    peak = results["matmul_peak_gflops"]
    print(f"matmul peak: {peak:.1f} GFLOP/s")
    scale = (args.image_size / 256) ** 2 * args.batch_size / 4
    for precision in args.precisions.split(","):
        for jit in (False, True):
            seconds = train_step_seconds(
                args.image_size, args.batch_size, jit, repeats, mixed_precision=precision
            )
            gflops = TRAIN_STEP_GFLOP_256_B4 * scale / seconds
            row = {
                "mixed_precision": precision,
                "jit_compile": jit,
                "seconds_per_step": seconds,
                "gflops": gflops,
                "percent_of_peak": 100 * gflops / peak,
            }
            results["train"].append(row)
            baseline = results["train"][0]["seconds_per_step"]
            print(
                f"train step {args.image_size}² batch {args.batch_size} "
                f"precision={precision} xla={jit}: {seconds:.3f} s "
                f"({seconds / baseline:.2f}x the float32 no-XLA step; {gflops:.0f} GFLOP/s, "
                f"{row['percent_of_peak']:.0f}% of peak)"
            )
    for cache in (False, True):
        rate = input_pipeline_images_per_second(args.image_size, args.batch_size, cache)
        results["input_pipeline"].append({"cache": cache, "images_per_second": rate})
        print(
            f"input pipeline (640x480 JPEG -> {args.image_size}², cache={cache}): "
            f"{rate:.0f} images/s"
        )
    sizes = (256, 512) if args.quick else (256, 512, 1024)
    for size in sizes:
        for jit in (False, True):
            first, seconds = stylize_seconds(size, jit, repeats)
            gflops = TRANSFORM_GFLOP_256 * (size / 256) ** 2 / seconds
            row = {
                "size": size,
                "jit_compile": jit,
                "first_call_seconds": first,
                "seconds": seconds,
                "gflops": gflops,
                "percent_of_peak": 100 * gflops / peak,
            }
            results["stylize"].append(row)
            print(
                f"stylize {size}² xla={jit}: {seconds:.3f} s (first call {first:.2f} s, "
                f"{row['percent_of_peak']:.0f}% of peak)"
            )
    if args.json:
        with open(args.json, "w") as file:
            json.dump(results, file, indent=2)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
