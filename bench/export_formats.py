"""Size, fidelity and latency of every export format at 256² and 512² (a benchmark, not a test).

    python bench/export_formats.py MODEL_OR_RUN_DIR --calibration-data DIR [--json out.json]

Latency is the median of 5 batch-1 calls after a warm-up, next to the Keras path that
``kstyle.stylize_array`` uses, measured in the same run; fidelity is PSNR and max |diff| in uint8
levels against that Keras path on matplotlib's sample portrait.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def median_ms(function, image, repeats=5):
    function(image)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(image)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main(argv=None):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a model.keras file or a run directory")
    parser.add_argument("--calibration-data", required=True, help="photos for int8")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    args = parser.parse_args(argv)

    import numpy as np

    from kstyle.export import Runner, export
    from kstyle.export.verify import held_out_image
    from kstyle.images import psnr
    from kstyle.inference import stylize_array
    from kstyle.transform_net import load_transform_net

    net = load_transform_net(args.model)
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        results = export(
            args.model,
            directory,
            quantizations=("none", "float16", "dynamic", "int8"),
            calibration_data=args.calibration_data,
            printer=lambda *_: None,
        )
        images = {size: held_out_image(size, size) for size in (256, 512)}
        keras_row = {
            "format": "keras (stylize_array)",
            "size_mb": None,
            "psnr_db": None,
            "max_abs_diff": 0,
        }
        for size, image in images.items():
            keras_row[f"ms_{size}"] = median_ms(lambda x: stylize_array(net, x), image)
        rows.append(keras_row)
        for result in results:
            runner = Runner(result.format, result.path)
            name = result.format + (f" {result.quantize}" if result.quantize else "")
            row = {"format": name, "size_mb": result.size_bytes / 1e6}
            reference = stylize_array(net, images[256])
            output = runner(images[256])
            row["psnr_db"] = psnr(output, reference)
            row["max_abs_diff"] = int(np.abs(output.astype(int) - reference).max())
            for size, image in images.items():
                row[f"ms_{size}"] = median_ms(runner, image)
            rows.append(row)
    base = rows[0]
    print(
        "| format | size (MB) | PSNR vs Keras (dB) | max abs diff | 256² ms | 512² ms | "
        "512² vs Keras |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        size = "" if row["size_mb"] is None else f"{row['size_mb']:.2f}"
        quality = "" if row["psnr_db"] is None else f"{row['psnr_db']:.1f}"
        print(
            f"| {row['format']} | {size} | {quality} | {row['max_abs_diff']} | "
            f"{row['ms_256']:.0f} | {row['ms_512']:.0f} | "
            f"{row['ms_512'] / base['ms_512']:.2f}x |"
        )
    if args.json:
        with open(args.json, "w") as file:
            json.dump(rows, file, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
