"""How close a distilled student gets to its teacher on held-out photos (a benchmark, not a test).

    python bench/distill_fidelity.py --arch live,tiny --size 128 --strip strip.png
    python bench/distill_fidelity.py --arch tiny --milestones 1000     # one student, 1k steps
    python bench/distill_fidelity.py --arch tiny --size 64 --milestones 10,20 \\
        --train-scenes 8 --train-crops 13 --teacher-steps 5 --scenes 2 --eval-size 64  # dry run

For each student preset of ``--arch`` it runs the real command, ``kstyle distill --teacher T
--arch A --data D --steps N``, in a subprocess and copies the student's checkpoint when it
reaches each milestone (``--milestones``: steps, the last one is the run's length). Rerunning
with the same ``--work`` folder resumes each distillation where it stopped (kstyle's own
resume) and skips the finished ones; the content and the teacher are made once per folder.

- **Training content** (``--size``² PNGs in ``WORK/train``; bench/distill_content.py):
  ``--train-scenes`` generated scenes (``kstyle.demo.structured_image``, seeds 10,000 up) and
  ``--train-crops`` random crops of the training photos: side 25-100 % of the photo's short
  side, anywhere, flipped left-right half the time, resized to ``--size``. Training photos
  (:data:`distill_content.TRAIN_PHOTOS`): matplotlib's Minduka_Present_Blue_Pack; scikit-image's
  astronaut, rocket, motorcycle_left, hubble_deep_field, ihc, retina, camera, coins, moon, grass,
  gravel and brick.
- **Held out**, never cropped for training (``HELD_OUT_PHOTOS``): matplotlib's grace_hopper,
  scikit-image's chelsea and coffee, scikit-learn's china and flower (the centre square,
  resized to ``--eval-size``), and ``--scenes`` generated scenes (seeds 0 up).
- **Teacher** (``--teacher``: a trained run or ``.keras`` file, when you have one): no style
  net can be trained here without the VGG-16 ImageNet weights, and an untrained net's output
  is coloured noise, nothing like a style. So by default the teacher is a seed-sized
  (``johnson``) net fitted with a pixel loss, ``--teacher-steps`` steps on the training
  content, to a painterly filter (``distill_content.painted``: median smoothing, posterizing
  to the demo style's palette, dark edges): a trained seed network whose pictures are flat
  colour areas, hard edges and texture, as style nets' are. The report also gives the PSNR of
  the teacher against a flat picture of its own mean colour, so that the scale can be read.
- **Fidelity**: PSNR (kstyle.images.psnr) and SSIM (``tf.image.ssim``, 11x11 Gaussian window,
  max 255) of the student's picture against the teacher's, both through
  ``kstyle.stylize_array``; the mean over the photos and over the scenes.
- **Grid**: ``kstyle.images.seam_metric(picture, 4)`` on the held-out photos, border / inside:
  the mean step between neighbouring pixels across the lines of a 4-px grid, over the mean
  step elsewhere (1.00: no grid; a stride-4 network's blocks raise it above the teacher's);
  and the fixed pattern: the student's signed error against the teacher averaged per phase
  (y mod 4, x mod 4) over the photos, the RMS of those 16 means in levels (a lattice that is
  the same everywhere, as a pixel shuffle's per-channel offsets would draw).
- **Step time**: wall seconds per step between milestones, from the run's own clock.
- **Strip** (``--strip PATH``): one row per held-out photo (``--strip-photos``: some of
  them), input | teacher | each student at its last milestone; and ``PATH`` with ``-zoom``
  before the suffix: the centre 64² of each, enlarged 4x with nearest pixels.

Writes ``--json`` if asked and prints Markdown tables with the machine's CPU flags.
"""

import argparse
import json
import math
import os
import platform
import sys

import distill_content as content  # bench/
from distill_run import distill  # bench/
from realtime import FLAGS_SHOWN  # bench/: one list of the CPU flags that matter

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
GRID = 4  # the stride of the coarsest body the presets have: blocks would show at this period
ZOOM = 4


def prepare(args) -> dict:
    """Writes the training content and the teacher into ``args.work`` (once); returns them
    and the held-out images by group, with the photos' names."""
    data = os.path.join(args.work, "train")
    images = content.write_training_content(
        data, args.train_scenes, args.train_crops, args.size, args.seed
    )
    teacher = args.teacher or os.path.join(args.work, "teacher.keras")
    if not os.path.exists(teacher):
        print(f"fitting the teacher ({args.teacher_steps} steps)", file=sys.stderr, flush=True)
        content.fit_teacher(
            images, args.teacher_steps, teacher, args.seed, crop=min(128, args.size)
        )
    photos = [content.load_photo(package, name) for package, name in content.HELD_OUT_PHOTOS]
    held_out = {
        "photos": [content.square_photo(photo, args.eval_size) for photo in photos],
        "scenes": [content_scene(args.eval_size, seed) for seed in range(args.scenes)],
    }
    names = [os.path.splitext(name)[0] for _, name in content.HELD_OUT_PHOTOS]
    return {"teacher": teacher, "data": data, "count": len(images), "held_out": held_out,
            "photo_names": names}  # fmt: skip


def content_scene(size: int, seed: int):
    """A held-out generated scene, (size, size, 3) uint8."""
    from kstyle.demo import structured_image

    return structured_image(size, size, seed=seed)


def load_student(arch: str, source: str):
    """The student at a milestone: a ``.keras`` file, or a checkpoint prefix restored into a
    fresh ``build_transform_net(arch=...)``."""
    import tensorflow as tf

    from kstyle.transform_net import build_transform_net, load_transform_net

    if source.endswith(".keras"):
        return load_transform_net(source)
    student = build_transform_net(arch=arch)
    tf.train.Checkpoint(transform_net=student).restore(source).expect_partial()
    return student


def fidelity(outputs: dict, teacher_outputs: dict) -> dict:
    """Mean PSNR and SSIM of ``outputs`` against the teacher's pictures, per held-out group,
    and the photos' mean 4-px grid ratio (:func:`grid_ratio`)."""
    import numpy as np
    import tensorflow as tf

    from kstyle.images import psnr

    row = {}
    for group, pictures in outputs.items():
        targets = teacher_outputs[group]
        pairs = zip(pictures, targets, strict=True)
        row[f"{group}_psnr"] = float(np.mean([psnr(o, t) for o, t in pairs]))
        ssim = tf.image.ssim(np.stack(pictures), np.stack(targets), max_val=255.0)
        row[f"{group}_ssim"] = float(np.mean(ssim))
    row["grid"] = grid_ratio(outputs["photos"])
    row["pattern"] = grid_pattern(outputs["photos"], teacher_outputs["photos"])
    return row


def grid_ratio(pictures: list) -> float:
    """Mean over ``pictures`` of border / inside of ``kstyle.images.seam_metric`` on a
    :data:`GRID`-px grid: 1.0 when steps across the grid lines are like any others."""
    import numpy as np

    from kstyle.images import seam_metric

    steps = [seam_metric(picture, GRID) for picture in pictures]
    ratios = [border / inside if inside else math.inf for border, inside in steps]  # flat blocks
    return float(np.mean(ratios))


def grid_pattern(pictures: list, targets: list) -> float:
    """The fixed part of a :data:`GRID`-px lattice in ``pictures`` against ``targets`` (lists
    of (H, W, 3) uint8, H and W multiples of GRID): the signed error averaged over the
    pictures, channels and positions of each of the GRID² phases (y mod GRID, x mod GRID);
    returns the RMS of those GRID² means about their own mean, in levels (0: no pattern)."""
    import numpy as np

    error = np.stack(pictures).astype(np.float64) - np.stack(targets).astype(np.float64)
    batch, height, width, channels = error.shape
    phases = error.reshape(batch, height // GRID, GRID, width // GRID, GRID, channels)
    means = phases.mean(axis=(0, 1, 3, 5))  # (GRID, GRID)
    return float(np.sqrt(np.mean((means - means.mean()) ** 2)))


def flat_baseline(teacher_outputs: dict) -> dict:
    """PSNR of each teacher picture against a flat picture of its own mean colour."""
    import numpy as np

    from kstyle.images import psnr

    return {
        group: float(
            np.mean([psnr(t, np.broadcast_to(t.mean((0, 1)).round(), t.shape)) for t in images])
        )
        for group, images in teacher_outputs.items()
    }


def stylize_all(net, held_out: dict) -> dict:
    """``kstyle.stylize_array(net, image)`` of every held-out image, by group."""
    from kstyle.inference import stylize_array

    return {
        group: [stylize_array(net, image) for image in images] for group, images in held_out.items()
    }


def measure(args, arch: str, reached: dict, prepared: dict, teacher_outputs: dict) -> tuple:
    """Rows (step 0 = the untrained student, then each milestone reached) of :func:`fidelity`
    and s/step for student ``arch``; and the last milestone's pictures by group."""
    import keras

    from kstyle.transform_net import build_transform_net

    keras.utils.set_random_seed(args.seed)
    untrained = stylize_all(build_transform_net(arch=arch), prepared["held_out"])
    rows = [{"arch": arch, "step": 0, **fidelity(untrained, teacher_outputs)}]
    last = untrained
    for step, (source, pace) in sorted(reached.items()):
        last = stylize_all(load_student(arch, source), prepared["held_out"])
        rows.append({"arch": arch, "step": step, **fidelity(last, teacher_outputs),
                     "s_per_step": pace})  # fmt: skip
    return rows, last


def save_strip(path: str, columns: list, size: int) -> None:
    """Writes ``columns`` (lists of (size, size, 3) uint8 pictures, one per row) side by side
    to ``path``, and their centre 64² enlarged ZOOMx (nearest) to ``path`` with ``-zoom``."""
    import numpy as np
    from PIL import Image

    strip = np.concatenate([np.concatenate(column, axis=0) for column in columns], axis=1)
    window = min(64, size)
    start = (size - window) // 2
    zoomed = [[p[start : start + window, start : start + window] for p in c] for c in columns]
    zoom = np.concatenate([np.concatenate(column, axis=0) for column in zoomed], axis=1)
    zoom = zoom.repeat(ZOOM, axis=0).repeat(ZOOM, axis=1)
    stem, suffix = os.path.splitext(path)
    for target, picture in ((path, strip), (f"{stem}-zoom{suffix}", zoom)):
        partial = f"{target}.partial{suffix}"
        Image.fromarray(picture).save(partial, optimize=True)
        os.replace(partial, target)


def teacher_report(args, prepared: dict, teacher_outputs: dict) -> dict:
    """The teacher's reference figures: PSNR against its flat mean colour, and (for the fitted
    teacher) against the filter it was fitted to, per group; its photos' grid ratio."""
    import numpy as np

    from kstyle.images import psnr

    report = {
        "flat_psnr": flat_baseline(teacher_outputs),
        "grid": grid_ratio(teacher_outputs["photos"]),
    }
    if not args.teacher:
        report["vs_filter_psnr"] = {
            group: float(
                np.mean(
                    [
                        psnr(content.painted(i), t)
                        for i, t in zip(images, teacher_outputs[group], strict=True)
                    ]
                )
            )
            for group, images in prepared["held_out"].items()
        }
    return report


def print_report(result: dict) -> None:
    """Prints the machine, the setting and the Markdown table of ``result``."""
    print(f"\nmachine: {result['machine']}; load average at the end {result['load_average']}")
    print(
        f"students {', '.join(result['archs'])}; teacher {result['teacher']}; training "
        f"{result['train_images']} images at {result['size']}²; measured at "
        f"{result['eval_size']}²; held out: {result['held_out']}"
    )
    teacher = result["teacher_figures"]
    flat = teacher["flat_psnr"]
    photos, scenes = flat["photos"], flat["scenes"]
    print(f"teacher vs its flat mean colour (dB): photos {photos:.2f}, scenes {scenes:.2f}")
    if "vs_filter_psnr" in teacher:
        fit = teacher["vs_filter_psnr"]
        print(f"teacher vs painted() (dB): photos {fit['photos']:.2f}, scenes {fit['scenes']:.2f}")
    print(f"teacher's {GRID}-px grid ratio on the photos: {teacher['grid']:.3f}\n")
    print(
        "| student | steps | photos PSNR (dB) | photos SSIM | scenes PSNR (dB) | scenes SSIM "
        f"| {GRID}-px grid ratio (photos) | fixed {GRID}x{GRID} pattern (levels) | s/step |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in result["rows"]:
        pace = f"{row['s_per_step']:.2f}" if row.get("s_per_step") else ""
        print(
            f"| {row['arch']} | {row['step']} | {row['photos_psnr']:.2f} | "
            f"{row['photos_ssim']:.3f} | {row['scenes_psnr']:.2f} | {row['scenes_ssim']:.3f} | "
            f"{row['grid']:.3f} | {row['pattern']:.2f} | {pace} |"
        )


def parse_args(argv):
    """The benchmark's options (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--arch", type=lambda text: text.split(","), default=["tiny"],
        help="student presets, comma-separated, distilled one after the other (default: tiny)",
    )  # fmt: skip
    parser.add_argument("--size", type=int, default=256, help="training image side (default: 256)")
    parser.add_argument("--eval-size", type=int, default=256, help="held-out side (default: 256)")
    parser.add_argument(
        "--milestones", type=lambda text: [int(s) for s in text.split(",")], default=[1000, 5000],
        help="steps at which each student is measured; the last is the run's length "
        "(default: 1000,5000)",
    )  # fmt: skip
    parser.add_argument("--train-scenes", type=int, default=1000, help="(default: 1000)")
    parser.add_argument("--train-crops", type=int, default=1300, help="(default: 1300)")
    parser.add_argument("--scenes", type=int, default=24, help="held-out scenes (default: 24)")
    parser.add_argument("--seed", type=int, default=0, help="(default: 0)")
    parser.add_argument("--teacher", help="a trained teacher (default: fit one, see above)")
    parser.add_argument("--teacher-steps", type=int, default=600, help="(default: 600)")
    parser.add_argument("--log-every", type=int, default=100, help="(default: 100)")
    parser.add_argument(
        "--work", default="bench_distill", help="working folder, reused to resume (default: "
        "bench_distill)",
    )  # fmt: skip
    parser.add_argument(
        "--time-limit", type=float, help="stop each distillation after this many minutes and "
        "measure the milestones reached (default: none)",
    )  # fmt: skip
    parser.add_argument(
        "--no-train", action="store_true",
        help="run no distillation: measure the milestones already in --work",
    )  # fmt: skip
    parser.add_argument("--strip", help="write the held-out photos' strip here (PNG)")
    parser.add_argument(
        "--strip-photos", type=lambda text: text.split(","),
        help="the held-out photos in the strip, comma-separated names without suffix "
        "(default: all)",
    )  # fmt: skip
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    if args.eval_size % GRID:
        parser.error(f"--eval-size must be a multiple of {GRID}, got {args.eval_size}")
    held_out = [os.path.splitext(name)[0] for _, name in content.HELD_OUT_PHOTOS]
    unknown = sorted(set(args.strip_photos or ()) - set(held_out))
    if unknown:
        parser.error(f"--strip-photos: not held-out photos: {unknown} (choose from {held_out})")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    os.makedirs(args.work, exist_ok=True)
    prepared = prepare(args)
    reached = {arch: distill(args, arch, prepared) for arch in args.arch}

    from kstyle.cli.common import cpu_flags
    from kstyle.transform_net import load_transform_net

    teacher_outputs = stylize_all(load_transform_net(prepared["teacher"]), prepared["held_out"])
    rows, columns = [], [prepared["held_out"]["photos"], teacher_outputs["photos"]]
    for arch in args.arch:
        arch_rows, last = measure(args, arch, reached[arch], prepared, teacher_outputs)
        rows.extend(arch_rows)
        columns.append(last["photos"])
    if args.strip:
        names = prepared["photo_names"]
        rows_kept = [names.index(name) for name in args.strip_photos or names]
        save_strip(args.strip, [[c[i] for i in rows_kept] for c in columns], args.eval_size)
    flags = " ".join(flag for flag in FLAGS_SHOWN if flag in cpu_flags())
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"flags {flags}",
        "load_average": " ".join(f"{load:.2f}" for load in os.getloadavg()),
        "archs": args.arch,
        "teacher": args.teacher or "johnson fitted to painted()",
        "size": args.size,
        "eval_size": args.eval_size,
        "train_images": prepared["count"],
        "held_out": {group: len(images) for group, images in prepared["held_out"].items()},
        "photos": prepared["photo_names"],
        "teacher_figures": teacher_report(args, prepared, teacher_outputs),
        "rows": rows,
    }
    print_report(result)
    if args.json:
        with open(args.json, "w") as file:
            json.dump(result, file, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
