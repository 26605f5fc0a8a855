"""Real time on a CPU, per transform-net preset: size, FLOPs, latency of each runtime at 256²,
512² and 720p with 1 and 2 threads, and a 720p video end to end (a benchmark, not a test).

    python bench/realtime.py                     # every preset (kstyle.presets)
    python bench/realtime.py --arch johnson,tiny --sizes 256,720p --threads 2 --skip-int8
    python bench/realtime.py --arch johnson,w0.5b3 --sizes 64,128 --repeat 1 --video-frames 2

``--arch`` takes preset names and ``wWIDTHbBLOCKS`` variants (``w0.5b3``:
``build_transform_net(width=0.5, num_residual_blocks=3)``). The nets are untrained, with random
instance-norm scales and offsets (the same arithmetic as a trained net, so the same latency);
the int8 file is calibrated on kstyle.demo's sample photos. Latency is the median of
``--repeat`` batch-1 calls after a warm-up call, for a (H, W, 3) uint8 photo in and out:
``kstyle.stylize_array`` (the Keras path ``stylize.py`` takes, with its oneDNN choice) and
LiteRT fp32 and int8 (``kstyle.export.Runner``), each exported for the size's fixed shape (what
``kstyle export --input-size HxW`` writes; ``--dynamic``: one file for any size, which pads
and crops outside XNNPACK). Each thread count runs in its own process:
TensorFlow fixes its thread pools when it starts (``tf.config.threading``: N intra-op threads,
1 inter-op), LiteRT takes ``num_threads=N``. The video row runs ``kstyle.video.stylize_video``
on a 1280x720, 30 fps H.264 clip (decode + stylize + encode) and reports frames per second and
the fraction of real time (after a warm-up call at 720p, so the one-off tracing of a new
frame size is left out). Ratios to Keras are measured in the same process. With the defaults
the whole run is sized for about 10 minutes at most on a 2-core CPU.
"""

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

from export_formats import median_ms  # bench/: one timing rule for both tables

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = {"720p": (720, 1280)}  # other sizes are squares: "256" -> (256, 256)
VIDEO_FPS = 30
FLAGS_SHOWN = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8")
PATHS = ("keras", "tflite fp32", "tflite int8")


def parse_size(text: str) -> tuple[int, int]:
    """``"256"`` -> (256, 256); ``"720p"`` -> (720, 1280); ``"HxW"`` -> (H, W)."""
    if text in SIZES:
        return SIZES[text]
    if "x" in text:
        height, width = text.split("x")
        return int(height), int(width)
    return int(text), int(text)


def build_net(name: str, seed: int = 0):
    """The net ``name`` names (a preset, or ``wWIDTHbBLOCKS``), with random norm parameters."""
    import keras

    from kstyle.transform_net import build_transform_net

    keras.utils.set_random_seed(seed)
    variant = re.fullmatch(r"w([\d.]+)b(\d+)", name)
    if variant:
        net = build_transform_net(
            width=float(variant.group(1)), num_residual_blocks=int(variant.group(2))
        )
    else:
        net = build_transform_net(arch=name)
    return randomize_norms(net, seed)


def randomize_norms(net, seed: int = 0):
    """``net`` with random instance-norm scales and offsets (a trained net's arithmetic)."""
    import keras
    import numpy as np

    rng = np.random.default_rng(seed)
    for layer in net.layers:
        if isinstance(layer, keras.layers.GroupNormalization):
            gamma, beta = layer.get_weights()
            layer.set_weights(
                [gamma + rng.uniform(0, 1, gamma.shape), rng.normal(0, 0.3, beta.shape)]
            )
    return net


def gflop(net, height, width):
    """GFLOP (2 x multiply-adds) of one (height, width) image."""
    from kstyle.flops import count_flops

    return count_flops(net, height, width) / 1e9


def write_tflite(net, name, args, directory) -> dict:
    """``{path: {size: file}}``: fp32 and (unless ``--skip-int8``) int8 TFLite files of
    ``net``, exported for each size's fixed shape (``--dynamic``: one file for any size)."""
    from kstyle.export import tflite_bytes
    from kstyle.export.writer import load_calibration_images

    files = {path: {} for path in PATHS[1 : 2 if args.skip_int8 else 3]}
    for size in ["dynamic"] if args.dynamic else args.sizes.split(","):
        fixed = None if args.dynamic else parse_size(size)
        calibration = None
        if not args.skip_int8:  # at the model's size: a fixed shape calibrates on it
            folder = os.path.join(directory, "calibration")
            calibration = load_calibration_images(folder, args.calibration_count, fixed or 256)
        for path, quantize in zip(files, ("none", "int8"), strict=False):
            target = os.path.join(directory, f"{name}_{quantize}_{size}.tflite")
            with open(target, "wb") as file:
                file.write(tflite_bytes(net, quantize, fixed, calibration_images=calibration))
            files[path][size] = target
    if args.dynamic:
        files = {path: dict.fromkeys(args.sizes.split(","), by_size["dynamic"])
                 for path, by_size in files.items()}  # fmt: skip
    return files


def prepare(args, directory) -> dict:
    """Writes each net's model.keras and TFLite files and the 720p clip; returns their
    description (sizes, parameters, GFLOP, paths)."""
    import imageio.v2 as imageio
    import numpy as np

    from kstyle.demo import make_content_images
    from kstyle.export.verify import held_out_image

    if not args.skip_int8:
        folder = os.path.join(directory, "calibration")
        make_content_images(folder, count=args.calibration_count, size=256)
    nets = []
    for name in args.arch.split(","):
        _progress(f"preparing {name}")
        net = build_net(name)
        files = {"keras": os.path.join(directory, f"{name}.keras")}
        net.save(files["keras"])
        files.update(write_tflite(net, name, args, directory))
        nets.append(
            {
                "arch": name,
                "params": int(net.count_params()),
                "gflop_256": gflop(net, 256, 256),
                "gflop_720p": gflop(net, 720, 1280),
                "files": files,
            }
        )
    video = None
    if args.video_frames:
        video = os.path.join(directory, "clip_720p.mp4")
        photo = held_out_image(720, 1280 + 8 * args.video_frames)
        with imageio.get_writer(video, fps=VIDEO_FPS, ffmpeg_log_level="error") as writer:
            for index in range(args.video_frames):  # a slow pan across the photo
                writer.append_data(np.ascontiguousarray(photo[:, 8 * index : 8 * index + 1280]))
    return {"nets": nets, "video": video}


def measure(spec: dict, threads: int) -> dict:
    """Every latency and the video rate with ``threads`` threads (run in a fresh process)."""
    from kstyle.cli.common import use_fastest_onednn

    use_fastest_onednn("stylize", None)  # as stylize.py does, before TensorFlow starts
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from kstyle.export import Runner
    from kstyle.export.verify import held_out_image
    from kstyle.inference import stylize_array
    from kstyle.transform_net import load_transform_net
    from kstyle.video import stylize_video

    rows, videos = [], []
    for net in spec["nets"]:
        model = load_transform_net(net["files"]["keras"])
        for size in spec["sizes"]:
            runners = {"keras": lambda image, m=model: stylize_array(m, image)}
            for path in PATHS[1:]:
                if path in net["files"]:
                    file = net["files"][path][size]
                    runners[path] = Runner("tflite", file, num_threads=threads)
            image = held_out_image(*parse_size(size))
            row = {"arch": net["arch"], "size": size, "threads": threads}
            for path, runner in runners.items():
                row[path] = median_ms(runner, image, spec["repeat"])
                _progress(f"{net['arch']} {size} {threads} thread(s) {path}: {row[path]:.0f} ms")
            rows.append(row)
        if spec["video"]:  # traced for frames of this size first, as the 720p row is
            stylize_array(model, held_out_image(*SIZES["720p"]))
            target = os.path.join(os.path.dirname(spec["video"]), f"{net['arch']}_{threads}.mp4")
            speed = stylize_video(model, spec["video"], target, progress=False)
            videos.append(
                {"arch": net["arch"], "threads": threads, "frames": speed.frames,
                 "seconds": speed.seconds, "fps": speed.fps, "real_time": speed.real_time}
            )  # fmt: skip
            _progress(f"{net['arch']} video {threads} thread(s): {speed.message()}")
    import ai_edge_litert

    return {
        "rows": rows,
        "videos": videos,
        "onednn": _onednn_setting(),
        "versions": f"TensorFlow {tf.__version__}, LiteRT {_version(ai_edge_litert)}",
    }


def _onednn_setting() -> str:
    from kstyle.cli.common import ONEDNN_VARIABLE, cpu_flags, tensorflow_onednn_default

    value = os.environ.get(ONEDNN_VARIABLE)
    if value is None:
        return f"{'on' if tensorflow_onednn_default(cpu_flags()) else 'off'} (TensorFlow's default)"
    return "on" if value == "1" else "off"


def _version(module):
    from importlib.metadata import version

    try:
        return version("ai-edge-litert")
    except Exception:
        return getattr(module, "__version__", "?")


def machine_line(runs) -> str:
    """The CPU, its core count and vector flags, the library versions and oneDNN setting."""
    from kstyle.cli.common import cpu_flags

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as file:
            names = [
                line.split(":", 1)[1].strip() for line in file if line.startswith("model name")
            ]
        model = names[0] if names else model
    except OSError:
        pass
    flags = cpu_flags()
    shown = " ".join(flag for flag in FLAGS_SHOWN if flag in flags) or "unknown"
    return (
        f"Machine: {model}, {os.cpu_count()} CPUs, flags {shown}; {runs[0]['versions']}; "
        f"oneDNN {runs[0]['onednn']}"
    )


def report(spec, runs) -> list[str]:
    """The Markdown tables."""
    lines = [machine_line(runs), "", "| preset | parameters | GFLOP 256² | GFLOP 720p |"]
    lines.append("|---|---|---|---|")
    for net in spec["nets"]:
        flops = [net["gflop_256"], net["gflop_720p"]]
        shown = [f"{value:.2f}" for value in flops]
        lines.append(f"| {net['arch']} | {net['params']:,} | {shown[0]} | {shown[1]} |")
    paths = [path for path in PATHS if any(path in row for run in runs for row in run["rows"])]
    lines += [
        "",
        "| preset | size | threads | "
        + " | ".join(f"{path} ms" for path in paths)
        + " | "
        + " | ".join(f"{path} vs keras" for path in paths[1:])
        + " | best fps |",
        "|---|---|---|" + "---|" * (2 * len(paths)),
    ]
    rows = sorted(
        (row for run in runs for row in run["rows"]),
        key=lambda row: ([n["arch"] for n in spec["nets"]].index(row["arch"]),
                         spec["sizes"].index(row["size"]), row["threads"]),
    )  # fmt: skip
    for row in rows:
        times = [row[path] for path in paths]
        lines.append(
            f"| {row['arch']} | {_size_text(row['size'])} | {row['threads']} | "
            + " | ".join(f"{ms:.0f}" for ms in times)
            + " | "
            + " | ".join(f"{ms / times[0]:.2f}x" for ms in times[1:])
            + f" | {1000 / min(times):.1f} |"
        )
    videos = [video for run in runs for video in run["videos"]]
    if videos:
        lines += [
            "",
            f"| preset | threads | frames | seconds | fps | x real time ({VIDEO_FPS} fps) |",
            "|---|---|---|---|---|---|",
        ]
        for video in videos:
            lines.append(
                f"| {video['arch']} | {video['threads']} | {video['frames']} | "
                f"{video['seconds']:.1f} | {video['fps']:.2f} | {video['real_time']:.2f}x |"
            )
    return lines


def _size_text(size):
    height, width = parse_size(size)
    return f"{height}²" if height == width else f"{width}x{height}"


def _progress(line):
    print(line, file=sys.stderr, flush=True)


def build_parser():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    add = parser.add_argument
    add("--arch", default=None, help="presets or wWIDTHbBLOCKS (default: every kstyle preset)")
    add("--sizes", default="256,512,720p", help="image sizes: N (N²), HxW or 720p")
    add("--repeat", type=int, default=3, help="timed calls per figure, after one warm-up")
    add("--threads", default="1,2", help="thread counts, each in its own process")
    add("--skip-int8", action="store_true", help="no TFLite int8 (no calibration)")
    add("--dynamic", action="store_true", help="TFLite for any size (default: one per size)")
    add("--video-frames", type=int, default=6, help="frames of the 720p clip (0: no video)")
    add("--calibration-count", type=int, default=16, help="int8 calibration photos")
    add("--json", default=None, help="also write the results to this file")
    add("--child", default=None, help=argparse.SUPPRESS)  # spec file of a measuring process
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    sys.path.insert(0, ROOT)
    if args.child:
        with open(args.child) as file:
            spec = json.load(file)
        result = measure(spec, int(args.threads))
        with open(args.child + f".{args.threads}.json", "w") as file:
            json.dump(result, file)
        return 0
    if args.arch is None:
        try:  # the preset registry; older checkouts kept the names in kstyle.constants
            from kstyle.presets import arch_names

            args.arch = ",".join(arch_names())
        except ImportError:
            from kstyle import constants

            args.arch = ",".join(getattr(constants, "ARCHES", ("johnson",)))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as directory:
        spec = {**prepare(args, directory), "sizes": args.sizes.split(","), "repeat": args.repeat}
        spec_path = os.path.join(directory, "spec.json")
        with open(spec_path, "w") as file:
            json.dump(spec, file)
        runs = []
        for threads in args.threads.split(","):
            command = [sys.executable, os.path.abspath(__file__), "--child", spec_path]
            subprocess.run([*command, "--threads", threads], check=True, stdout=subprocess.DEVNULL)
            with open(f"{spec_path}.{threads}.json") as file:
                runs.append(json.load(file))
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"spec": spec, "runs": runs}, file, indent=2)
    print("\n".join(report(spec, runs)))
    print(f"\n(whole run: {time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
