"""Stylize videos frame by frame through imageio's ffmpeg plugin (ffmpeg ships in imageio-ffmpeg).

Frames are read one by one, resized if ``max_size`` asks, stylized in batches (all frames of a
video share one size), and written with the input's frame rate. The input's first audio
stream, if there is one, is copied into the output (re-encoded to the container's usual codec).
At the end, the frames per second achieved are logged against the source's frame rate.
"""

import dataclasses
import logging
import os
import re
import subprocess
import time

import numpy as np

from kstyle.errors import KstyleError, cause_of
from kstyle.extras import require
from kstyle.files import atomic_output
from kstyle.images import check_pixels, side_by_side
from kstyle.inference import Tilers, stylize_array, stylize_batch
from kstyle.memory import AUTO, batch_within, resolve_max_memory
from kstyle.progress import ProgressBar

AUDIO_CODECS = {".mp4": "aac", ".mov": "aac", ".mkv": "aac", ".avi": "libmp3lame"}
VIDEO_CODECS = {".webm": "libvpx-vp9", ".avi": "mpeg4"}

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class VideoSpeed:
    """How fast a video was stylized, end to end (decode, stylize, encode).

    Attributes:
        frames: frames written.
        seconds: wall-clock seconds from the first frame read to the output closed.
        source_fps: the input's frame rate (frames per second of playback).
    """

    frames: int
    seconds: float
    source_fps: float

    @property
    def fps(self) -> float:
        """Frames stylized per second of wall-clock time."""
        return self.frames / max(self.seconds, 1e-9)

    @property
    def real_time(self) -> float:
        """``fps`` as a fraction of the source's frame rate: 1.0 keeps up with playback."""
        return self.fps / self.source_fps

    def message(self) -> str:
        """One line, e.g. ``stylized 120 frames in 40.1 s: 2.99 fps (source 30 fps: 0.10x real
        time)``."""
        return (
            f"stylized {self.frames} frames in {self.seconds:.1f} s: {self.fps:.3g} fps "
            f"(source {self.source_fps:.4g} fps: {self.real_time:.2f}x real time)"
        )


def has_audio(path: str) -> bool:
    """Whether ffmpeg sees an audio stream in the media file at ``path``."""
    imageio_ffmpeg = require("imageio_ffmpeg", "video")
    result = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", path],
        capture_output=True,
        text=True,
        errors="replace",
    )
    return re.search(r"Stream #\S+.*: Audio:", result.stderr) is not None


def _even_size(width, height, max_size):
    if max_size and max(width, height) > max_size:
        scale = max_size / max(width, height)
        width, height = max(2, round(width * scale)), max(2, round(height * scale))
    return width - width % 2, height - height % 2  # yuv420p needs even sides


def stylize_video(
    model,
    input_path: str,
    output_path: str,
    *,
    max_size=None,
    preserve_colors=False,
    strength=1.0,
    batch_size=None,
    max_memory=AUTO,
    max_pixels=None,
    show_input=False,
    progress=True,
    tile=None,
    work_dir=None,
):
    """Stylizes a video file and writes it to ``output_path`` with the same frame rate.

    Args:
        model: the transform net.
        input_path, output_path: video files (any format ffmpeg reads; the output's
            extension picks the container: .mp4 .mov .mkv (H.264), .webm (VP9), .avi (MPEG-4)).
        max_size: shrink frames so the longer side is at most this (sides rounded to even).
        preserve_colors, strength: as in :func:`kstyle.inference.stylize_array`.
        batch_size: frames per forward pass (default: as many as fit ``max_memory``, 1..8).
        max_memory: budget of one forward pass (bytes or e.g. "4GB"; "auto": the default);
            frames too large for it are stylized one by one in tiles.
        max_pixels: refuse frames with more pixels (decompression-bomb guard; 0/None: off).
        show_input: write input | output side by side.
        progress: show a progress bar (frames/s) on stderr.
        tile: tile size for every frame (None: only when a frame exceeds ``max_memory``).
        work_dir: folder for tiling's temporary files (None: the system's).

    Returns:
        A :class:`VideoSpeed`: frames written, seconds taken and the source's frame rate
        (also logged, as one line, on the ``kstyle`` logger at info level).
    """
    imageio = require("imageio.v2", "video")

    if not os.path.isfile(input_path):
        raise KstyleError(f"input not found: {input_path}")
    extension = os.path.splitext(output_path)[1].lower()
    try:
        reader = imageio.get_reader(input_path, format="FFMPEG")
        meta = reader.get_meta_data()
    except Exception as error:
        raise KstyleError(f"cannot read video {input_path}: {error}".splitlines()[0]) from error
    fps = float(meta.get("fps") or 25.0)
    width, height = meta["size"]
    check_pixels(input_path, width, height, max_pixels)
    out_width, out_height = _even_size(width, height, max_size)
    total = None
    try:
        frames_estimate = reader.count_frames()
        total = frames_estimate if frames_estimate > 0 else None
    except Exception:
        total = None

    budget = resolve_max_memory(max_memory)
    tiler = Tilers(model, tile, budget, work_dir).for_size(out_height, out_width)
    if batch_size is None:
        batch_size = batch_within(out_height, out_width, budget)
    audio = has_audio(input_path)
    writer_options = {
        "fps": fps,
        "macro_block_size": 2,
        "ffmpeg_log_level": "error",
        "quality": 8,
    }
    if extension in VIDEO_CODECS:
        writer_options["codec"] = VIDEO_CODECS[extension]
    if audio:
        writer_options["audio_path"] = input_path
        if extension in AUDIO_CODECS:
            writer_options["audio_codec"] = AUDIO_CODECS[extension]
    bar = ProgressBar(total) if progress else None
    written = 0

    def flush(batch):
        if tiler is not None:
            outputs = [
                stylize_array(
                    model, f, preserve_colors=preserve_colors, strength=strength, tiler=tiler
                )
                for f in batch
            ]
        else:
            outputs = stylize_batch(
                model, np.stack(batch), preserve_colors=preserve_colors, strength=strength
            )
        for frame, output in zip(batch, outputs, strict=True):
            writer.append_data(side_by_side(frame, output) if show_input else output)
        if bar is not None:
            bar.update(len(batch))
        return len(batch)

    start = time.perf_counter()
    try:
        with atomic_output(output_path) as temporary:
            writer = imageio.get_writer(temporary, format="FFMPEG", **writer_options)
            try:
                batch = []
                for frame in reader:
                    frame = np.asarray(frame)[..., :3]
                    if frame.shape[:2] != (out_height, out_width):
                        from PIL import Image

                        frame = np.asarray(
                            Image.fromarray(frame).resize(
                                (out_width, out_height), Image.Resampling.LANCZOS
                            )
                        )
                    batch.append(frame)
                    if len(batch) == batch_size:
                        written += flush(batch)
                        batch = []
                if batch:
                    written += flush(batch)
            finally:
                writer.close()
                reader.close()
                if bar is not None:
                    bar.close()
            if not written:
                raise KstyleError(f"no frames in {input_path}")
    except KstyleError:
        raise
    except Exception as error:
        raise KstyleError(
            f"video stylization failed for {input_path}: {cause_of(error)}"
        ) from error
    speed = VideoSpeed(frames=written, seconds=time.perf_counter() - start, source_fps=fps)
    logger.info(speed.message())
    return speed
