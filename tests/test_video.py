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
