"""How close a distilled student gets to its teacher, and at what cost (a benchmark, not a test).

    python bench/distill_fidelity.py                          # tiny student, 256², 1k and 5k steps
    python bench/distill_fidelity.py --arch slim --milestones 1000
    python bench/distill_fidelity.py --size 64 --milestones 10,20 --train-images 16   # dry run

It runs the real command, ``kstyle distill --teacher T --arch A --data D --steps N``, in a
subprocess and copies the student's checkpoint when it reaches each milestone (``--milestones``:
steps, the last one is the run's length). Rerunning with the same ``--work`` folder resumes the
distillation where it stopped (kstyle's own resume).

- **Teacher** (``--teacher``: a trained run or ``.keras`` file, when you have one): no style
  net can be trained here without the VGG-16 ImageNet weights, and an untrained net's output
  is coloured noise, nothing like a style. So by default the teacher is a seed-sized
  (``johnson``) net fitted with a pixel loss, ``--teacher-steps`` steps on 128² crops, to a
  painterly filter (:func:`painted`: median smoothing, posterizing to the demo style's palette,
  dark edges): a trained seed network whose pictures are flat colour areas, hard edges and
  texture, as style nets' are. The table also gives the PSNR of the teacher against a flat
  picture of its own mean colour, so that the scale of the numbers can be read.
- **Training images**: ``--train-images`` generated scenes (``kstyle.demo.structured_image``,
  seeds from 10,000 up), ``--size`` pixels square.
- **Held-out set**, never used in training: matplotlib's sample photos (centre crop, resized to
  ``--size``) and ``--scenes`` generated scenes (seeds 0 up).
- **Fidelity**: PSNR (kstyle.images.psnr) and SSIM (``tf.image.ssim``, 11x11 Gaussian window,
  max 255) of the student's picture against the teacher's, both through
  ``kstyle.stylize_array``; the mean over the photos and over the scenes.
- **Step time**: wall seconds per step between milestones, from the run's own clock.

Writes ``--json`` if asked and prints a Markdown table with the machine's CPU flags.
"""

import argparse
import glob
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import time

from realtime import FLAGS_SHOWN  # bench/: one list of the CPU flags that matter

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
TRAIN_SEED_START = 10_000
POLL_SECONDS = 0.2  # kstyle keeps its 2 newest checkpoints: poll well within a step


def square_photo(path: str, size: int):
    """The centre square of the photo at ``path``, resized to ``size`` x ``size``, uint8 RGB."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        image = image.crop((left, top, left + side, top + side))
        return np.asarray(image.resize((size, size), Image.Resampling.LANCZOS))


def painted(array):
    """The teacher's target picture for an (H, W, 3) uint8 image: median-smoothed, posterized
    to the demo style's palette (blended 65/35 with the smoothed image), with dark edges."""
    import numpy as np
    from PIL import Image, ImageChops, ImageFilter

    from kstyle.demo import STYLE_PALETTE

    image = Image.fromarray(array)
    smooth = image.filter(ImageFilter.MedianFilter(5))
    palette = Image.new("P", (1, 1))
    repeats = 256 // len(STYLE_PALETTE)
    palette.putpalette([value for colour in STYLE_PALETTE for value in colour] * repeats)
    poster = smooth.quantize(palette=palette, dither=Image.Dither.NONE).convert("RGB")
    mixed = Image.blend(poster, smooth, 0.35)
    edges = image.convert("L").filter(ImageFilter.GaussianBlur(1)).filter(ImageFilter.FIND_EDGES)
    edges = edges.point(lambda value: min(255, value * 3)).convert("RGB")
    return np.asarray(ImageChops.subtract(mixed, edges))


def fit_teacher(scenes: list, steps: int, path: str, seed: int, crop: int = 128) -> None:
    """Fits a ``johnson`` net to :func:`painted` on random ``crop``² crops of ``scenes`` (batch 4,
    Adam 1e-3, mean squared error of [0, 1] pictures) and saves it to ``path``."""
    import keras
    import numpy as np
    import tensorflow as tf

    from kstyle.transform_net import build_transform_net

    keras.utils.set_random_seed(seed)
    inputs = np.stack(scenes).astype(np.float32)
    targets = np.stack([painted(scene) for scene in scenes]).astype(np.float32)
    pairs = tf.concat([inputs, targets], axis=-1)

    def random_crop(pair):
        pair = tf.image.random_crop(pair, (crop, crop, 6))
        return pair[..., :3], pair[..., 3:]

    data = tf.data.Dataset.from_tensor_slices(pairs).shuffle(len(scenes), seed=seed).repeat()
    data = data.map(random_crop).batch(4).prefetch(2)
    net = build_transform_net()
    net.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=lambda target, output: keras.ops.mean(keras.ops.square((output - target) / 255.0)),
    )
    net.fit(data, steps_per_epoch=steps, epochs=1, verbose=2)
    teacher = build_transform_net()  # the weights without the compiled loss (a lambda)
    teacher.set_weights(net.get_weights())
    teacher.save(path)


def prepare(args) -> dict:
    """Writes the teacher and the training scenes into ``args.work`` (once); returns the
    held-out images by group."""
    import numpy as np
    from PIL import Image

    from kstyle.demo import sample_photo_paths, structured_image

    data = os.path.join(args.work, "train")
    os.makedirs(data, exist_ok=True)
    scenes = []
    for index in range(args.train_images):
        path = os.path.join(data, f"scene_{index:05d}.png")
        if os.path.isfile(path):
            with Image.open(path) as image:
                scenes.append(np.asarray(image))
        else:
            scenes.append(structured_image(args.size, args.size, seed=TRAIN_SEED_START + index))
            Image.fromarray(scenes[-1]).save(path)
    teacher = args.teacher or os.path.join(args.work, "teacher.keras")
    if not os.path.exists(teacher):
        print(f"fitting the teacher ({args.teacher_steps} steps)", file=sys.stderr, flush=True)
        fit_teacher(scenes, args.teacher_steps, teacher, args.seed, crop=min(128, args.size))
    held_out = {
        "photos": [square_photo(path, args.size) for path in sample_photo_paths()],
        "scenes": [structured_image(args.size, args.size, seed=i) for i in range(args.scenes)],
    }
    return {"teacher": teacher, "data": data, "held_out": held_out}


def latest_step(checkpoints: str) -> int | None:
    """The newest complete checkpoint's step (the ``checkpoint`` state file names it)."""
    state = os.path.join(checkpoints, "checkpoint")
    try:
        with open(state) as file:
            first = file.readline()
    except OSError:
        return None
    name = first.split(":", 1)[-1].strip().strip('"')
    return int(name.rsplit("-", 1)[-1]) if "-" in name else None


def distill(args, prepared) -> dict:
    """Runs ``kstyle distill`` to the last milestone, copying each milestone's checkpoint
    under ``work/milestones``; returns {step: (checkpoint prefix or model file, wall seconds
    per step since the previous milestone or the start, None if unknown)}."""
    run_dir = os.path.join(args.work, "run")
    milestones = sorted(args.milestones)
    every = math.gcd(*milestones)
    batch_size = 4  # kstyle's default, as the command runs
    epochs = math.ceil(milestones[-1] * batch_size / args.train_images)  # --steps ends it
    command = [
        sys.executable, "-m", "kstyle", "distill", "--teacher", prepared["teacher"],
        "--arch", args.arch, "--data", prepared["data"], "--output", run_dir,
        "--image-size", str(args.size), "--steps", str(milestones[-1]),
        "--epochs", str(epochs),
        "--checkpoint-every", str(every), "--log-every", str(args.log_every),
        "--plot-every", "0", "--cache", "--seed", str(args.seed),
    ]  # fmt: skip
    saved = os.path.join(args.work, "milestones")
    os.makedirs(saved, exist_ok=True)
    times_path = os.path.join(saved, "times.json")
    times = json.load(open(times_path)) if os.path.isfile(times_path) else {}
    found = {}
    for step in milestones[:-1]:
        prefix = os.path.join(saved, f"ckpt-{step}")
        if os.path.isfile(prefix + ".index"):
            found[step] = prefix
    final_model = os.path.join(run_dir, "model.keras")
    if not os.path.isfile(os.path.join(run_dir, "summary.json")):
        print("running:", " ".join(command), file=sys.stderr, flush=True)
        process = subprocess.Popen(command)
        started = time.time()
        checkpoints = os.path.join(run_dir, "checkpoints")
        mark = (latest_step(checkpoints) or 0, started)  # s/step counts from here (or a resume)

        def record(step):
            """Stores the wall seconds per step since ``mark``; returns the new mark."""
            steps = step - mark[0]  # 0 or less: copied late, after a resume from a later step
            times[str(step)] = (time.time() - mark[1]) / steps if steps > 0 else None
            json.dump(times, open(times_path, "w"))
            return step, time.time()

        def copy_milestones():
            """Copies every milestone checkpoint not copied yet (the .index last, renamed into
            place, so a copy cut short is never taken for a whole one)."""
            nonlocal mark
            newest = latest_step(checkpoints) or 0
            for step in milestones[:-1]:
                index = os.path.join(checkpoints, f"ckpt-{step}.index")
                if step in found or newest < step or not os.path.isfile(index):
                    continue
                for path in glob.glob(os.path.join(checkpoints, f"ckpt-{step}.data-*")):
                    shutil.copy(path, saved)
                shutil.copy(index, os.path.join(saved, "index.partial"))
                os.replace(
                    os.path.join(saved, "index.partial"), os.path.join(saved, f"ckpt-{step}.index")
                )
                found[step] = os.path.join(saved, f"ckpt-{step}")
                mark = record(step)
                print(f"milestone {step} copied", file=sys.stderr, flush=True)

        stopping = False
        while process.poll() is None:
            time.sleep(POLL_SECONDS)
            if args.time_limit and not stopping and time.time() - started > args.time_limit * 60:
                process.send_signal(signal.SIGTERM)  # kstyle stops after the step, checkpointed
                stopping = True
            copy_milestones()
        copy_milestones()  # a milestone checkpointed just before a stop
        if os.path.isfile(os.path.join(run_dir, "summary.json")):
            record(milestones[-1])
        else:
            print(
                f"warning: kstyle distill stopped (exit status {process.returncode}) before "
                f"step {milestones[-1]}; rerun with the same --work to resume",
                file=sys.stderr,
            )
    if os.path.isfile(os.path.join(run_dir, "summary.json")):
        found[milestones[-1]] = final_model
        missed = [step for step in milestones if step not in found]
        if missed:
            print(f"warning: milestones {missed} were overwritten before a copy", file=sys.stderr)
    return {step: (found[step], times.get(str(step))) for step in sorted(found)}


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


def fidelity(student, teacher_outputs, held_out) -> dict:
    """Mean PSNR and SSIM of the student against the teacher's pictures, per held-out group."""
    import numpy as np
    import tensorflow as tf

    from kstyle.images import psnr
    from kstyle.inference import stylize_array

    row = {}
    for group, images in held_out.items():
        outputs = [stylize_array(student, image) for image in images]
        targets = teacher_outputs[group]
        row[f"{group}_psnr"] = float(
            np.mean([psnr(o, t) for o, t in zip(outputs, targets, strict=True)])
        )
        ssim = tf.image.ssim(np.stack(outputs), np.stack(targets), max_val=255.0)
        row[f"{group}_ssim"] = float(np.mean(ssim))
    return row


def flat_baseline(teacher_outputs) -> dict:
    """PSNR of each teacher picture against a flat picture of its own mean colour."""
    import numpy as np

    from kstyle.images import psnr

    return {
        group: float(
            np.mean([psnr(t, np.broadcast_to(t.mean((0, 1)).round(), t.shape)) for t in images])
        )
        for group, images in teacher_outputs.items()
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="tiny", help="student preset (default: tiny)")
    parser.add_argument("--size", type=int, default=256, help="image side (default: 256)")
    parser.add_argument(
        "--milestones",
        type=lambda text: [int(s) for s in text.split(",")],
        default=[1000, 5000],
        help="steps at which the student is measured; the last is the run's length "
        "(default: 1000,5000)",
    )
    parser.add_argument("--train-images", type=int, default=2000, help="(default: 2000)")
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
        "--time-limit", type=float, help="stop the distillation after this many minutes and "
        "measure the milestones reached (default: none)",
    )  # fmt: skip
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    os.makedirs(args.work, exist_ok=True)

    prepared = prepare(args)
    reached = distill(args, prepared)

    from kstyle.inference import stylize_array
    from kstyle.transform_net import build_transform_net, load_transform_net

    teacher = load_transform_net(prepared["teacher"])
    held_out = prepared["held_out"]
    teacher_outputs = {g: [stylize_array(teacher, i) for i in imgs] for g, imgs in held_out.items()}
    import keras
    import numpy as np

    from kstyle.images import psnr

    keras.utils.set_random_seed(args.seed)
    rows = [{"step": 0, **fidelity(build_transform_net(arch=args.arch), teacher_outputs, held_out)}]
    for step, (source, pace) in sorted(reached.items()):
        student = load_student(args.arch, source)
        rows.append(
            {"step": step, **fidelity(student, teacher_outputs, held_out), "s_per_step": pace}
        )
    from kstyle.cli.common import cpu_flags

    flags = " ".join(flag for flag in FLAGS_SHOWN if flag in cpu_flags())
    if not args.teacher:
        result_teacher = {
            group: float(
                np.mean(
                    [psnr(painted(i), t) for i, t in zip(imgs, teacher_outputs[group], strict=True)]
                )
            )
            for group, imgs in held_out.items()
        }
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"flags {flags}",
        "arch": args.arch,
        "size": args.size,
        "train_images": args.train_images,
        "held_out": {group: len(images) for group, images in held_out.items()},
        "flat_baseline_psnr": flat_baseline(teacher_outputs),
        "teacher_vs_filter_psnr": None if args.teacher else result_teacher,
        "rows": rows,
    }
    print(f"\nmachine: {result['machine']}")
    print(
        f"student {args.arch}, teacher {args.teacher or 'johnson fitted to painted()'}, "
        f"{args.size}² images, "
        f"{args.train_images} training scenes; held out: {result['held_out']}"
    )
    baseline = result["flat_baseline_psnr"]
    print(
        f"teacher vs its flat mean colour: photos {baseline['photos']:.1f} dB, "
        f"scenes {baseline['scenes']:.1f} dB"
    )
    if not args.teacher:
        fit = result["teacher_vs_filter_psnr"]
        print(f"teacher vs painted(): photos {fit['photos']:.1f} dB, scenes {fit['scenes']:.1f} dB")
    print()
    print("| steps | photos PSNR (dB) | photos SSIM | scenes PSNR (dB) | scenes SSIM | s/step |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        pace = f"{row['s_per_step']:.2f}" if row.get("s_per_step") else ""
        print(
            f"| {row['step']} | {row['photos_psnr']:.2f} | {row['photos_ssim']:.3f} | "
            f"{row['scenes_psnr']:.2f} | {row['scenes_ssim']:.3f} | {pace} |"
        )
    if args.json:
        with open(args.json, "w") as file:
            json.dump(result, file, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
