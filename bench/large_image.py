"""Large-image figures: peak RSS and time of a 16 MP stylization, and tiled vs untiled quality.

    python bench/large_image.py rss [WIDTH HEIGHT]   # one stylization; prints peak RSS and time
    python bench/large_image.py quality [SIZE TILE]  # tiled vs untiled PSNR and seam metric
    python bench/large_image.py all                  # both, each in its own subprocess

Uses an untrained transform net seeded with 3 and a structured synthetic image (gradients,
discs, rectangles, noise). Takes minutes on a 2-core CPU.
"""

import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _model():
    import keras

    from kstyle.transform_net import build_transform_net

    keras.utils.set_random_seed(3)
    return build_transform_net()


def rss(width=4896, height=3264):
    """Stylizes a width x height image with the default memory budget; prints RSS and time."""
    from kstyle.demo import structured_image
    from kstyle.inference import stylize_array

    image = structured_image(height, width)
    model = _model()
    start = time.perf_counter()
    out = stylize_array(model, image)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"{width}x{height} ({width * height / 1e6:.1f} MP): {seconds:.0f} s, "
          f"peak RSS {peak:.2f} GB, output {out.shape}")  # fmt: skip


def quality(size=2048, tile=512):
    """Tiled vs untiled PSNR and the seam metric on a size x size image."""
    import numpy as np

    from kstyle import tiling
    from kstyle.demo import structured_image
    from kstyle.images import psnr, seam_metric
    from kstyle.inference import stylize_array

    image = structured_image(size, size)
    model = _model()
    start = time.perf_counter()
    untiled = stylize_array(model, image, tile=0, max_memory=None)
    untiled_seconds = time.perf_counter() - start
    stats_pixels = tiling.pixels_within(tiling.DEFAULT_MAX_MEMORY)
    for name, options in [
        ("default budget (exact staged stats)", {}),
        ("full-resolution stats pass (max_memory=None)", {"stats_pixels": 2**62}),
        ("stats from a downscaled copy (exact_statistics=False)", {"exact_statistics": False}),
    ]:
        middle = time.perf_counter()
        tiler = tiling.TiledStylizer(model, tile, **{"stats_pixels": stats_pixels, **options})
        tiled = stylize_array(model, image, tiler=tiler)
        end = time.perf_counter()
        border, inside = seam_metric(tiled, tile)
        print(f"{size}^2, tile {tile}, {name}: PSNR {psnr(untiled, tiled):.2f} dB, "
              f"seam border {border:.2f} vs inside {inside:.2f} "
              f"(ratio {border / inside:.3f}); tiled {end - middle:.0f} s")  # fmt: skip
    print(f"untiled {untiled_seconds:.0f} s; untiled seam ratio "
          f"{np.divide(*seam_metric(untiled, tile)):.3f}")  # fmt: skip


if __name__ == "__main__":
    command, args = (sys.argv[1:2] or ["all"])[0], [int(a) for a in sys.argv[2:]]
    if command == "rss":
        rss(*args)
    elif command == "quality":
        quality(*args)
    else:
        for sub in ("rss", "quality"):
            subprocess.run([sys.executable, __file__, sub], check=True)
