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


def train_step_seconds(image_size, batch_size, jit_compile, repeats):
    """Median seconds of one ``train_on_batch`` step of the real trainer."""
    import keras
    import numpy as np

    from kstyle.loss_net import build_loss_net
    from kstyle.trainer import StyleTransferTrainer
    from kstyle.transform_net import build_transform_net

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    style = rng.uniform(0, 255, (image_size, image_size, 3)).astype("float32")
    trainer = StyleTransferTrainer(
        build_transform_net(), build_loss_net(weights=None), style, image_size=image_size
    )
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=jit_compile)
    batch = rng.uniform(0, 255, (batch_size, image_size, image_size, 3)).astype("float32")
    return median_seconds(lambda: trainer.train_on_batch(batch), repeats, warmup=2)


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
    }
    peak = results["matmul_peak_gflops"]
    print(f"matmul peak: {peak:.1f} GFLOP/s")
    scale = (args.image_size / 256) ** 2 * args.batch_size / 4
    for jit in (False, True):
        seconds = train_step_seconds(args.image_size, args.batch_size, jit, repeats)
        gflops = TRAIN_STEP_GFLOP_256_B4 * scale / seconds
        row = {
            "jit_compile": jit,
            "seconds_per_step": seconds,
            "gflops": gflops,
            "percent_of_peak": 100 * gflops / peak,
        }
        results["train"].append(row)
        print(
            f"train step {args.image_size}² batch {args.batch_size} xla={jit}: "
            f"{seconds:.3f} s ({gflops:.0f} GFLOP/s, {row['percent_of_peak']:.0f}% of peak)"
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
