"""Distilling from an exported teacher: the same network as a .keras file, a SavedModel, a
TFLite and an ONNX file (a benchmark, not a test; issue 23, item 3).

    python bench/teacher_formats.py --teacher T.keras --work W --steps 300 --size 128

The teacher (``--teacher``, a run or ``.keras`` file) is exported once with ``kstyle export``
(SavedModel, fp32 TFLite, ONNX: uint8 pictures in and out). Then, for each format, the real
command ``kstyle distill --teacher FILE --arch --student`` runs ``--steps`` steps at
``--size``², batch 4, seed 1, on bench/distill_content.py's training content (crops of the
training photos and generated scenes), in that order: keras, onnx, tflite, saved_model. The
student starts from the same weights whatever the teacher's format.

Reported per format: the median seconds per step (from history.csv, steps 11 on), its ratio
to the .keras teacher's, the teacher's time in the input pipeline over the time ``fit`` took
(summary.json's ``teacher_share``), and the student's PSNR against the .keras teacher on the
held-out photos (``--size``² centre squares, through ``kstyle.stylize_array``), mean and worst,
with its difference from the .keras-taught student's.

Goal (issue 23): within 0.5 dB of the .keras-taught student at ≤ 1.3× its step time.
Prints Markdown with the CPU flags and the load average.
"""

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

FORMATS = {"keras": None, "onnx": "model.onnx", "tflite": "model.tflite",
           "saved_model": "saved_model"}  # fmt: skip
WARM_UP_STEPS = 10  # steps left out of the median: graph building and the first batches


def load_line() -> str:
    return "load average (1, 5, 15 min): " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def _versions() -> dict:
    from importlib.metadata import version

    import keras
    import tensorflow as tf
    from realtime import _onednn_setting  # bench/

    runtimes = f"ONNX Runtime {version('onnxruntime')}, LiteRT {version('ai-edge-litert')}"
    return {"versions": f"TF {tf.__version__}, Keras {keras.__version__}, {runtimes}",
            "onednn": _onednn_setting()}  # fmt: skip


def _kstyle(*args) -> None:
    result = subprocess.run([sys.executable, "-m", "kstyle", *args], capture_output=True,
                            text=True)  # fmt: skip
    if result.returncode:
        raise SystemExit(result.stderr[-3000:])


def _teachers(args) -> dict:
    """Each format's teacher path, exporting the teacher once into ``--work``/exports."""
    exports = os.path.join(args.work, "exports")
    if not all(os.path.exists(os.path.join(exports, name)) for name in FORMATS.values() if name):
        _kstyle("export", args.teacher, "--output", exports, "--format", "all", "-q")
    return {fmt: os.path.join(exports, name) if name else args.teacher
            for fmt, name in FORMATS.items()}  # fmt: skip


def _step_seconds(run: str) -> float:
    with open(os.path.join(run, "history.csv"), newline="") as file:
        seconds = [float(row["seconds"]) for row in csv.DictReader(file)]
    return statistics.median(np.diff(seconds[WARM_UP_STEPS:]))


def _distill(args, teacher: str, output: str) -> None:
    if os.path.exists(os.path.join(output, "summary.json")):
        return
    _kstyle("distill", "--teacher", teacher, "--data", args.data, "--output", output,
            "--arch", args.student, "--image-size", str(args.size), "--batch-size", "4",
            "--steps", str(args.steps), "--seed", "1", "--plot-every", "0", "-q")  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True, help="a run directory or .keras file")
    parser.add_argument("--work", default="teacher_formats_work")
    parser.add_argument("--student", default="tiny")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    import distill_content as content  # bench/
    from realtime import machine_line  # bench/

    from kstyle.images import psnr
    from kstyle.inference import stylize_array
    from kstyle.transform_net import load_transform_net

    os.makedirs(args.work, exist_ok=True)
    args.data = os.path.join(args.work, "train")
    content.write_training_content(args.data, 32, 96, args.size, 0)
    teachers = _teachers(args)
    lines = [machine_line([_versions()]), load_line(), ""]
    for fmt, teacher in teachers.items():
        _distill(args, teacher, os.path.join(args.work, f"student_{fmt}"))
    lines.append(load_line())
    keras_teacher = load_transform_net(args.teacher)
    photos = [content.square_photo(content.load_photo(*held), args.size)
              for held in content.HELD_OUT_PHOTOS]  # fmt: skip
    targets = [stylize_array(keras_teacher, photo) for photo in photos]
    lines += ["", f"teacher {args.teacher}; student {args.student}, {args.steps} steps at "
              f"{args.size}², batch 4; PSNR against the .keras teacher over {len(photos)} "
              "held-out photos", "",
              "| teacher file | s/step | × .keras | teacher's share of fit | PSNR mean (worst) "
              "| Δ mean |", "|---|---|---|---|---|---|"]  # fmt: skip
    base_seconds = base_psnr = None
    for fmt in teachers:
        run = os.path.join(args.work, f"student_{fmt}")
        student = load_transform_net(run)
        scores = [psnr(stylize_array(student, p), t) for p, t in zip(photos, targets, strict=True)]
        seconds, mean = _step_seconds(run), float(np.mean(scores))
        base_seconds, base_psnr = base_seconds or seconds, base_psnr or mean
        with open(os.path.join(run, "summary.json")) as file:
            share = json.load(file).get("teacher_share")
        lines.append(
            f"| {fmt} | {seconds:.3f} | {seconds / base_seconds:.2f} | "
            f"{'in the step' if share is None else f'{share:.0%}'} | {mean:.2f} "
            f"({min(scores):.2f}) | {mean - base_psnr:+.2f} |"
        )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
