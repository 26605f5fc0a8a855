"""int8 of a distilled student against its own float model on held-out photos (a benchmark).

    python bench/int8_student.py --model WORK/live/run/model.keras --calibration WORK/train

WORK is a ``bench/distill_fidelity.py`` folder: its student, and its training content as
the calibration images (every ``--stride``-th file, at most ``--count``; the held-out photos
are never among them). The student is exported int8 at a fixed ``--size``² input
(``kstyle.export.tflite_bytes``), run by LiteRT on one thread, and compared with the float
model through ``kstyle.stylize_array`` on the held-out photos of bench/distill_content.py
(the centre square, resized to ``--size``): PSNR in dB, one line per photo.
"""

import argparse
import glob
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import distill_content as content  # noqa: E402

from kstyle.export import Runner, tflite_bytes  # noqa: E402
from kstyle.export.writer import load_calibration_images  # noqa: E402
from kstyle.images import psnr  # noqa: E402
from kstyle.inference import stylize_array  # noqa: E402
from kstyle.transform_net import load_transform_net  # noqa: E402


def calibration_images(folder: str, stride: int, count: int, size: int):
    """Every ``stride``-th PNG of ``folder`` (sorted), at most ``count``, as calibration
    images of ``size``²."""
    files = sorted(glob.glob(os.path.join(folder, "*.png")))[::stride][:count]
    if not files:
        sys.exit(f"error: no PNG in {folder}")
    with tempfile.TemporaryDirectory() as chosen:
        for path in files:
            shutil.copy(path, chosen)
        return load_calibration_images(chosen, len(files), (size, size))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="the student's model.keras")
    parser.add_argument("--calibration", required=True, help="folder of training PNGs")
    parser.add_argument("--size", type=int, default=256, help="fixed input side, pixels")
    parser.add_argument("--count", type=int, default=100, help="calibration images")
    parser.add_argument("--stride", type=int, default=23, help="take every n-th training PNG")
    args = parser.parse_args()
    net = load_transform_net(args.model)
    images = calibration_images(args.calibration, args.stride, args.count, args.size)
    size = (args.size, args.size)
    with tempfile.TemporaryDirectory() as work:
        path = os.path.join(work, "student_int8.tflite")
        with open(path, "wb") as file:
            file.write(tflite_bytes(net, "int8", size, calibration_images=images))
        runner = Runner("tflite", path, num_threads=1)
        for package, name in content.HELD_OUT_PHOTOS:
            photo = content.square_photo(content.load_photo(package, name), args.size)
            score = psnr(runner(photo), stylize_array(net, photo))
            print(f"{name}: int8 vs float {score:.1f} dB", flush=True)


if __name__ == "__main__":
    main()
