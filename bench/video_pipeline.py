"""A 720p, 30 fps clip stylized end to end (``kstyle.video.stylize_video``, the path of
``stylize.py clip.mp4``): frames per second, fraction of real time and peak memory, with the
three stages run one after another (the old way, ``queue_depth=0``) and overlapped (a benchmark,
not a test).

    python bench/video_pipeline.py                                # tiny, a 2 s clip, both ways
    python bench/video_pipeline.py --arch live --seconds 2,120 --modes overlapped
    python bench/video_pipeline.py --arch tiny --seconds 2 --modes decode,encode

``--modes`` takes ``sequential`` and ``overlapped`` (the model runs), and ``decode`` and
``encode`` (no model: how fast ffmpeg alone reads the clip, and writes as many 720p frames, the
ceiling of the end-to-end rate). The clip is a slow pan back and forth across the held-out
photo, written with imageio's ffmpeg writer (H.264) as bench/realtime.py writes its clip. The
nets are untrained with random norm parameters (bench/realtime.py's ``build_net``: the same
arithmetic, so the same speed). Each figure runs in a fresh process (TensorFlow with
``--threads`` intra-op threads and 1 inter-op thread), after a warm-up call at 720p, so its peak
resident memory (``VmHWM``) is its own; the peak of it plus its ffmpeg children is sampled
apart (every 0.25 s). The
1-minute load average is recorded before and after each figure: the machine may be shared.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FPS = 30
HEIGHT, WIDTH = 720, 1280
PAN_STEPS = 60  # the pan turns back after this many frames of 8 px
MODEL_MODES = {"sequential": 0, "overlapped": None}  # queue_depth (None: kstyle's default)


def write_clip(path: str, seconds: float) -> int:
    """Writes a 1280x720, 30 fps H.264 clip of ``seconds`` to ``path``; returns its frames."""
    import imageio.v2 as imageio
    import numpy as np

    from kstyle.export.verify import held_out_image

    photo = held_out_image(HEIGHT, WIDTH + 8 * PAN_STEPS)
    frames = round(seconds * FPS)
    with imageio.get_writer(path, fps=FPS, ffmpeg_log_level="error") as writer:
        for index in range(frames):
            step = index % (2 * PAN_STEPS)
            offset = 8 * min(step, 2 * PAN_STEPS - step)
            writer.append_data(np.ascontiguousarray(photo[:, offset : offset + WIDTH]))
    return frames


def _status_kib(pid, field: str) -> int:
    """A memory figure (``VmRSS``, ``VmHWM``) of process ``pid``, in KiB (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as file:
            return next((int(line.split()[1]) for line in file if line.startswith(field)), 0)
    except OSError:
        return 0


def _ffmpeg_children() -> list[int]:
    """The ffmpeg processes this one started that still run (the decoder, the encoder); a
    child not yet past its exec is left out, as it still shows this process's pages."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as file:
                parent = int(file.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as file:
                command = file.read().split(b"\0")[0]
        except (OSError, ValueError, IndexError):
            continue
        if parent == os.getpid() and b"ffmpeg" in os.path.basename(command):
            found.append(int(entry))
    return found


class MemorySampler:
    """Samples the resident memory of this process plus its ffmpeg children every ``interval``
    seconds on a thread; ``peak_mib`` is the largest total seen."""

    def __init__(self, interval=0.25):
        self.interval, self.peak_kib = interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(self.interval):
            pids = [os.getpid(), *_ffmpeg_children()]
            total = sum(_status_kib(pid, "VmRSS") for pid in pids)
            self.peak_kib = max(self.peak_kib, total)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *error):
        self._stop.set()
        self._thread.join()

    @property
    def peak_mib(self) -> float:
        return self.peak_kib / 1024


def _run_model(job: dict) -> dict:
    """Stylizes the clip of ``job`` with its net, its way (sequential or overlapped)."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(job["threads"])
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from kstyle.export.verify import held_out_image
    from kstyle.inference import stylize_array
    from kstyle.transform_net import load_transform_net
    from kstyle.video import QUEUE_DEPTH, stylize_video

    model = load_transform_net(job["model"])
    stylize_array(model, held_out_image(HEIGHT, WIDTH))  # traced for 720p first
    depth = MODEL_MODES[job["mode"]]
    load = os.getloadavg()[0]
    with MemorySampler() as memory:
        speed = stylize_video(
            model, job["clip"], job["output"], progress=False,
            queue_depth=QUEUE_DEPTH if depth is None else depth,
        )  # fmt: skip
    return {"frames": speed.frames, "seconds": speed.seconds, "fps": speed.fps,
            "real_time": speed.real_time, "load_before": load,
            "peak_total_mib": memory.peak_mib}  # fmt: skip


def _run_ffmpeg_only(job: dict) -> dict:
    """Decodes the clip (``decode``) or encodes as many frames (``encode``), no model."""
    from kstyle.video_io import FrameWriter, read_frames

    frames = 0
    if job["mode"] == "decode":
        load, start = os.getloadavg()[0], time.perf_counter()
        with MemorySampler() as memory:
            for _ in read_frames(job["clip"], WIDTH, HEIGHT):
                frames += 1
    else:  # the clip's frames (one pan, there and back) are in memory before the clock starts
        pan = []
        for frame in read_frames(job["clip"], WIDTH, HEIGHT):
            pan.append(frame)
            if len(pan) == 2 * PAN_STEPS:
                break
        load, start = os.getloadavg()[0], time.perf_counter()
        with MemorySampler() as memory, FrameWriter(job["output"], FPS, extension=".mp4") as writer:
            for frames in range(job["frames"]):
                writer.write(pan[frames % len(pan)])
            writer.finish()
        frames = job["frames"]
    seconds = time.perf_counter() - start
    return {"frames": frames, "seconds": seconds, "fps": frames / seconds,
            "real_time": frames / seconds / FPS, "load_before": load,
            "peak_total_mib": memory.peak_mib}  # fmt: skip


def child(job_path: str) -> int:
    """Runs one job (a JSON file) and writes its result next to it."""
    with open(job_path) as file:
        job = json.load(file)
    run = _run_model if job["mode"] in MODEL_MODES else _run_ffmpeg_only
    result = {**job, **run(job)}  # VmHWM: ru_maxrss would start at the parent's peak
    result.update(rss_mib=_status_kib(os.getpid(), "VmHWM") / 1024, load_after=os.getloadavg()[0])
    with open(job_path + ".result.json", "w") as file:
        json.dump(result, file)
    return 0


def _table(results: list[dict]) -> list[str]:
    lines = [
        "| preset | clip | mode | frames | seconds | fps | x real time (30 fps) | peak RSS MiB "
        "| peak RSS with ffmpeg MiB | load avg before / after |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['arch']} | {r['clip_seconds']:g} s | {r['mode']} | {r['frames']} | "
            f"{r['seconds']:.1f} | {r['fps']:.2f} | {r['real_time']:.2f}x | {r['rss_mib']:.0f} | "
            f"{r['peak_total_mib']:.0f} | {r['load_before']:.2f} / {r['load_after']:.2f} |"
        )
    return lines


def _jobs(args, directory: str) -> list[dict]:
    """Writes the nets and clips; one job per (net, clip, mode)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from realtime import build_net  # bench/: one way to build the untrained nets

    jobs, clips = [], {}
    for seconds in (float(text) for text in args.seconds.split(",")):
        path = os.path.join(directory, f"clip_{seconds:g}s.mp4")
        started = time.perf_counter()
        clips[seconds] = (path, write_clip(path, seconds))
        print(f"wrote {path} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    modes = args.modes.split(",")
    for arch in args.arch.split(","):
        model = os.path.join(directory, f"{arch}.keras")
        if any(mode in MODEL_MODES for mode in modes):
            build_net(arch).save(model)
        for seconds, (clip, frames) in clips.items():
            for mode in modes:
                if mode not in MODEL_MODES and arch != args.arch.split(",")[0]:
                    continue  # no model: once is enough
                jobs.append(
                    {"arch": arch if mode in MODEL_MODES else "(ffmpeg only)", "mode": mode,
                     "model": model, "clip": clip, "clip_seconds": seconds, "frames": frames,
                     "threads": args.threads,
                     "output": os.path.join(directory, f"out_{arch}_{mode}.mp4")}
                )  # fmt: skip
    return jobs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="tiny", help="presets, comma-separated")
    parser.add_argument("--seconds", default="2", help="clip lengths in seconds, e.g. 2,120")
    parser.add_argument("--modes", default="sequential,overlapped",
                        help="sequential, overlapped, decode, encode")  # fmt: skip
    parser.add_argument("--threads", type=int, default=2, help="TensorFlow intra-op threads")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sys.path.insert(0, ROOT)
    if args.child:
        return child(args.child)
    results = []
    with tempfile.TemporaryDirectory() as directory:
        for index, job in enumerate(_jobs(args, directory)):
            job_path = os.path.join(directory, f"job{index}.json")
            with open(job_path, "w") as file:
                json.dump(job, file)
            command = [sys.executable, os.path.abspath(__file__), "--child", job_path]
            subprocess.run(command, check=True)
            with open(job_path + ".result.json") as file:
                results.append(json.load(file))
            print("\n".join(_table(results[-1:])[2:]), file=sys.stderr, flush=True)
    if args.json:
        with open(args.json, "w") as file:
            json.dump(results, file, indent=2)
    print("\n".join(_table(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
