"""Videos: frames, size, frame rate and audio survive stylization."""

import numpy as np
import pytest
from conftest import random_image

from kstyle.stylize_files import stylize


def test_video_round_trip_keeps_frames_size_and_fps(preset_net, tmp_path):
    import imageio.v2 as imageio

    source = str(tmp_path / "clip.mp4")
    with imageio.get_writer(source, fps=10, macro_block_size=1, ffmpeg_log_level="error") as w:
        for index in range(10):
            w.append_data(random_image(48, 64, seed=index))
    target = str(tmp_path / "out" / "styled.mp4")
    written, failed = stylize(preset_net, source, target, strength=0.8, preserve_colors=True)
    assert written == [target] and failed == []
    reader = imageio.get_reader(target)
    assert reader.get_meta_data()["fps"] == pytest.approx(10.0)
    frames = [np.asarray(frame) for frame in reader]
    assert len(frames) == 10 and frames[0].shape == (48, 64, 3)
    # and the frames really are stylized, not copied
    assert np.abs(frames[0].astype(int) - random_image(48, 64, seed=0)).mean() > 5


def test_video_keeps_audio(model, tmp_path):
    import subprocess

    import imageio_ffmpeg

    from kstyle.video import has_audio

    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    source = str(tmp_path / "with_audio.mp4")
    subprocess.run(
        [ffmpeg, "-y", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=10",
         "-f", "lavfi", "-i", "sine=frequency=440", "-t", "1", "-pix_fmt", "yuv420p",
         "-c:v", "libx264", "-c:a", "aac", "-shortest", source],
        check=True,
    )  # fmt: skip
    assert has_audio(source)
    target = str(tmp_path / "styled.mp4")
    stylize(model, source, target, max_size=32)
    assert has_audio(target)
    import imageio.v2 as imageio

    assert imageio.get_reader(target).get_meta_data()["size"] == (32, 24)


def test_video_reports_frames_per_second_against_the_source(model, tmp_path):
    import logging
    import re

    import imageio.v2 as imageio

    from kstyle.video import VideoSpeed, stylize_video

    source = str(tmp_path / "clip.mp4")
    with imageio.get_writer(source, fps=12, macro_block_size=1, ffmpeg_log_level="error") as w:
        for index in range(7):
            w.append_data(random_image(32, 48, seed=index))
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    kstyle_logger = logging.getLogger("kstyle")
    kstyle_logger.addHandler(handler)
    level = kstyle_logger.level
    kstyle_logger.setLevel(logging.INFO)
    try:
        speed = stylize_video(model, source, str(tmp_path / "out.webm"), progress=False)
    finally:
        kstyle_logger.removeHandler(handler)
        kstyle_logger.setLevel(level)
    assert isinstance(speed, VideoSpeed)
    written = imageio.get_reader(str(tmp_path / "out.webm"))
    assert speed.frames == 7 == sum(1 for _ in written)
    assert speed.source_fps == pytest.approx(12.0)
    assert speed.seconds > 0 and speed.fps == pytest.approx(speed.frames / speed.seconds)
    assert speed.real_time == pytest.approx(speed.fps / 12.0)
    reports = [m for m in messages if m.startswith("stylized ")]
    assert reports == [speed.message()], messages
    found = re.fullmatch(
        r"stylized (\d+) frames in ([\d.]+) s: ([\d.]+) fps \(source ([\d.]+) fps: "
        r"([\d.]+)x real time\)",
        reports[0],
    )
    assert found, reports[0]
    frames, seconds, fps, source_fps, ratio = (float(value) for value in found.groups())
    assert (frames, source_fps) == (7, 12)
    assert fps > 0 and fps == pytest.approx(frames / max(seconds, 0.05), rel=0.5, abs=0.01)
    assert ratio == pytest.approx(fps / source_fps, rel=0.02, abs=0.006)


# ---- the overlapped pipeline (decode thread | model on the calling thread | encode thread) ----

import contextlib  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

from conftest import ROOT, assert_one_line_error, run_in_process  # noqa: E402

from kstyle.files import is_temporary_name  # noqa: E402


def marked_frame(index, height=48, width=64):
    """A frame that no other frame of a clip resembles: noise of its own seed, and a white
    8-px square at a place of its own (35 places)."""
    frame = random_image(height, width, seed=index)
    y, x = 8 * ((index // 7) % 5), 8 * (index % 7)
    frame[y : y + 8, x : x + 8] = 255
    return frame


def write_clip(path, frames, fps=10):
    import imageio.v2 as imageio

    with imageio.get_writer(path, fps=fps, macro_block_size=1, ffmpeg_log_level="error") as w:
        for index in range(frames):
            w.append_data(marked_frame(index))
    return path


def read_clip(path):
    import imageio.v2 as imageio

    reader = imageio.get_reader(path)
    try:
        return reader.get_meta_data()["fps"], [np.asarray(frame) for frame in reader]
    finally:
        reader.close()


class Trace:
    """Wraps the three stages of kstyle.video (monkeypatched) to record which frame each one
    handled, on which thread, in which order; a stage can be told to fail at a frame."""

    def __init__(self, monkeypatch, stylize_delay=0.0, fail=None, fail_at=None, folder=None):
        from kstyle import video, video_io

        self.events, self.lock = [], threading.Lock()
        self.fail, self.fail_at, self.folder = fail, fail_at, folder
        self.files_at_failure = None
        read_frames, stylize_batch = video.read_frames, video.stylize_batch
        write = video_io.FrameWriter.write
        trace = self

        def traced_read(*args):
            with contextlib.closing(read_frames(*args)) as frames:
                for index, frame in enumerate(frames):
                    if trace.fail == "decode" and index == trace.fail_at:
                        trace.mid_clip()
                        raise RuntimeError(f"Could not read frame {index}: corrupt data (test)")
                    trace.record("decoded")
                    yield frame

        def traced_stylize(model, frames, **options):
            if trace.fail == "stylize" and trace.count("stylized") >= 16:
                trace.mid_clip()
                raise RuntimeError("the model failed (test)")
            time.sleep(stylize_delay)
            output = stylize_batch(model, frames, **options)
            trace.record("stylized", len(frames))
            return output

        def traced_write(writer, frame):
            if trace.fail == "encode" and trace.count("encoded") == trace.fail_at:
                trace.mid_clip()
                writer.process.kill()  # ffmpeg dies mid-clip
                writer.process.wait()
            write(writer, frame)
            trace.record("encoded")

        monkeypatch.setattr(video, "read_frames", traced_read)
        monkeypatch.setattr(video, "stylize_batch", traced_stylize)
        monkeypatch.setattr(video_io.FrameWriter, "write", traced_write)

    def mid_clip(self):
        """Before a failure: waits until 16 frames are encoded (the output half written), and
        notes the files of ``folder`` then."""
        deadline = time.monotonic() + 30
        while self.count("encoded") < 16 and time.monotonic() < deadline:
            time.sleep(0.01)
        self.files_at_failure = os.listdir(self.folder)

    def record(self, stage, frames=1):
        with self.lock:
            self.events.extend([(stage, threading.current_thread().name)] * frames)

    def count(self, stage):
        with self.lock:
            return sum(1 for kind, _ in self.events if kind == stage)

    def threads(self, stage):
        return {name for kind, name in self.events if kind == stage}

    def largest_lead(self):
        """The most frames the decoder was ever ahead of the encoder."""
        lead = largest = 0
        for kind, _ in self.events:
            lead += {"decoded": 1, "encoded": -1}.get(kind, 0)
            largest = max(largest, lead)
        return largest


def pipeline_threads():
    from kstyle.pipeline import CONSUMER_NAME, PRODUCER_NAME

    return [t for t in threading.enumerate() if t.name in (PRODUCER_NAME, CONSUMER_NAME)]


def ffmpeg_children():
    """The ffmpeg processes this process started that still run."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                with open(f"/proc/{entry}/stat") as file:
                    fields = file.read().rsplit(")", 1)[1].split()
                with open(f"/proc/{entry}/cmdline", "rb") as file:
                    command = file.read()
                if int(fields[1]) == os.getpid() and b"ffmpeg" in command and fields[0] != "Z":
                    found.append(int(entry))
    return found


@pytest.mark.parametrize("depth", [1, 0], ids=["overlapped", "sequential"])
def test_video_keeps_frame_count_order_and_fps_when_stages_overlap(
    model, tmp_path, monkeypatch, depth
):
    from kstyle.inference import stylize_batch
    from kstyle.video import stylize_video

    source = write_clip(str(tmp_path / "clip.mp4"), frames=15, fps=12.5)
    source_fps, source_frames = read_clip(source)
    expected = stylize_batch(model, np.stack(source_frames)).astype(int)
    trace = Trace(monkeypatch, stylize_delay=0.05)  # the model is the slow stage, as in life
    target = str(tmp_path / "styled.mkv")
    speed = stylize_video(model, source, target, batch_size=2, queue_depth=depth, progress=False)
    fps, frames = read_clip(target)
    assert speed.frames == len(frames) == 15
    assert fps == source_fps == 12.5
    for index, frame in enumerate(frames):  # each output frame is its own input's, in order
        errors = np.abs(expected - frame.astype(int)).mean(axis=(1, 2, 3))
        nearest, second = np.argsort(errors)[:2]
        assert nearest == index and errors[nearest] < 0.5 * errors[second], (index, errors)
    main = threading.current_thread().name
    if depth:  # each stage on its own thread, the decoder ahead but never far ahead
        assert trace.threads("decoded").isdisjoint({main} | trace.threads("encoded"))
        assert trace.threads("stylized") == {main} != trace.threads("encoded")
        assert 2 * 2 < trace.largest_lead() <= (2 * depth + 3) * 2
    else:  # the old way: one batch at a time, all on the calling thread
        assert trace.threads("decoded") == trace.threads("encoded") == {main}
        assert trace.largest_lead() == 2
    assert pipeline_threads() == []


@pytest.mark.parametrize("stage", ["decode", "stylize", "encode"])
def test_a_stage_failing_mid_clip_stops_all_and_leaves_no_output(
    saved_model_path, tmp_path, monkeypatch, stage
):
    source = write_clip(str(tmp_path / "clip.mp4"), frames=120)
    out = tmp_path / "out"
    out.mkdir()
    trace = Trace(monkeypatch, fail=stage, fail_at=20, folder=out)
    started = time.monotonic()
    result = run_in_process(
        "stylize.py", source, "--model", saved_model_path, "--output", out / "styled.mp4",
        "--no-progress",
    )  # fmt: skip
    elapsed = time.monotonic() - started
    line = assert_one_line_error(result, f"video stylization failed for {source}: ")
    assert {"decode": "Could not read frame 20", "stylize": "the model failed",
            "encode": "ffmpeg ended"}[stage] in line  # fmt: skip
    # when the stage failed, the output was half written (16 frames) under a temporary name
    assert trace.count("encoded") >= 16
    assert len([name for name in trace.files_at_failure if is_temporary_name(name)]) == 1
    assert os.listdir(out) == []  # and now: no output, no temporary file
    # the other stages stopped at once: the decoder went no further than the queues allow
    assert trace.count("decoded") <= 20 + (2 * 2 + 3) * 8 < 120
    assert pipeline_threads() == [] and ffmpeg_children() == []
    assert elapsed < 30


def test_ctrl_c_stops_a_video_within_10_seconds_and_leaves_nothing(saved_model_path, tmp_path):
    import imageio_ffmpeg

    source = str(tmp_path / "long.mp4")
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error", "-f", "lavfi",
         "-i", "testsrc=size=160x128:rate=30", "-t", "40", "-pix_fmt", "yuv420p", source],
        check=True,
    )  # fmt: skip
    out = tmp_path / "out"
    out.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "kstyle", "stylize", source, "--model", saved_model_path,
         "--output", str(out / "styled.mp4")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONFAULTHANDLER": "1"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not any(
            is_temporary_name(n) and os.path.getsize(out / n) > 0 for n in os.listdir(out)
        ):
            assert process.poll() is None, process.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no frame was written in 240 s"
            time.sleep(0.05)
        time.sleep(1.0)  # well into the clip: every stage busy
        process.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        try:
            _, stderr = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(_what_hangs(process, tmp_path))
        stopped_in = time.monotonic() - interrupted
        leftover = _processes_naming(tmp_path)  # before the clean-up below kills them
    finally:
        if process.poll() is None:
            process.kill()
        for pid in _processes_naming(tmp_path):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
    assert stopped_in < 10, stopped_in
    assert_one_line_error(
        subprocess.CompletedProcess([], process.returncode, "", stderr), "interrupted", code=130
    )
    assert os.listdir(out) == []
    assert leftover == [], "ffmpeg processes outlived kstyle"


def _processes_naming(folder) -> list[str]:
    """The ids of the running processes whose command line names a file in ``folder``."""
    return [
        pid for pid in os.listdir("/proc") if pid.isdigit()
        and os.path.join(str(folder), "").encode() in _cmdline(pid)
    ]  # fmt: skip


def _what_hangs(process, folder) -> str:
    """Why a Ctrl-C'd kstyle's pipes are still open after 60 s, for the failure message: its
    exit status, or every thread's stack (faulthandler dumps them on SIGABRT); its stderr;
    and the processes still naming ``folder``, which might hold its pipes."""
    status = process.poll()
    if status is None:
        process.send_signal(signal.SIGABRT)
    try:
        stderr = process.communicate(timeout=30)[1][-6000:]
    except subprocess.TimeoutExpired:
        stderr = "(stderr still open: another process holds it)"
    others = [_cmdline(pid).replace(b"\0", b" ")[:200] for pid in _processes_naming(folder)]
    state = "was still running" if status is None else f"had ended (status {status})"
    return f"60 s after Ctrl-C kstyle {state}; processes naming its folder: {others}\n{stderr}"


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            return file.read()
    except OSError:
        return b""
