"""Stylize videos frame by frame through ffmpeg (which ships in imageio-ffmpeg).

Frames are read one by one on a decoder thread, resized if ``max_size`` asks, and grouped in
batches (all frames of a video share one size); the calling thread stylizes each batch, and an
encoder thread writes the frames with the input's frame rate (:mod:`kstyle.pipeline`: bounded
queues between the three, so memory does not grow with the clip's length). The input's first
audio stream, if there is one, is copied into the output (re-encoded to the container's usual
codec). The output appears only once complete. At the end, the frames per second achieved
are logged against the source's frame rate.
"""

import contextlib
import dataclasses
import logging
import os
import time

import numpy as np

from kstyle.errors import KstyleError, cause_of
from kstyle.files import atomic_output
from kstyle.images import check_pixels, side_by_side
from kstyle.inference import Tilers, stylize_array, stylize_batch
from kstyle.memory import AUTO, batch_within, resolve_max_memory
from kstyle.pipeline import run_overlapped, run_sequential
from kstyle.progress import ProgressBar
from kstyle.video_io import ClipInfo, FrameWriter, has_audio, probe_clip, read_frames

QUEUE_DEPTH = 2  # batches waiting between two stages: enough to ride out uneven stages

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


def _even_size(width, height, max_size):
    if max_size and max(width, height) > max_size:
        scale = max_size / max(width, height)
        width, height = max(2, round(width * scale)), max(2, round(height * scale))
    return width - width % 2, height - height % 2  # yuv420p needs even sides


def _open_clip(
    input_path: str, max_size, max_pixels, count_frames: bool
) -> tuple[ClipInfo, tuple[int, int]]:
    """The clip's header (frames counted if asked), checked against ``max_pixels``, and the
    (width, height) of its frames once ``max_size`` is applied."""
    if not os.path.isfile(input_path):
        raise KstyleError(f"input not found: {input_path}")
    clip = probe_clip(input_path, count_frames=count_frames)
    check_pixels(input_path, clip.width, clip.height, max_pixels)
    return clip, _even_size(clip.width, clip.height, max_size)


def frame_batches(frames, batch_size: int):
    """Yields (B, H, W, 3) arrays of ``batch_size`` consecutive frames of the generator
    ``frames`` (the last one may be shorter); ``frames`` is closed when this one ends."""
    with contextlib.closing(frames):
        batch = []
        for frame in frames:
            batch.append(frame)
            if len(batch) == batch_size:
                yield np.stack(batch)
                batch = []
        if batch:
            yield np.stack(batch)


@dataclasses.dataclass(frozen=True)
class FrameStylizer:
    """Stylizes a batch of frames: ``(frames, outputs)``, both (B, H, W, 3) uint8, from a
    batch; one forward pass, or frame by frame in tiles when ``tiler`` is set."""

    model: object
    tiler: object = None
    preserve_colors: bool = False
    strength: float = 1.0

    def __call__(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        options = {"preserve_colors": self.preserve_colors, "strength": self.strength}
        if self.tiler is None:
            return frames, stylize_batch(self.model, frames, **options)
        outputs = [stylize_array(self.model, f, tiler=self.tiler, **options) for f in frames]
        return frames, np.stack(outputs)


class FrameSink:
    """Writes stylized batches, ``(frames, outputs)``, to a :class:`FrameWriter` (input |
    output side by side with ``show_input``), counting the frames and moving ``bar``."""

    def __init__(self, writer: FrameWriter, show_input: bool = False, bar=None):
        self.writer, self.show_input, self.bar = writer, show_input, bar
        self.written = 0

    def __call__(self, batch: tuple[np.ndarray, np.ndarray]) -> None:
        for frame, output in zip(*batch, strict=True):
            self.writer.write(side_by_side(frame, output) if self.show_input else output)
        self.written += len(batch[0])
        if self.bar is not None:
            self.bar.update(len(batch[0]))


@contextlib.contextmanager
def _one_line_errors(input_path: str):
    """Turns any error of the block but a KstyleError into one naming the video."""
    try:
        yield
    except KstyleError:
        raise
    except Exception as error:
        message = f"video stylization failed for {input_path}: {cause_of(error)}"
        raise KstyleError(message) from error


def _write_video(input_path, output_path, clip, size, stylizer, *, batch_size, show_input,
                 bar, queue_depth) -> int:  # fmt: skip
    """Decodes, stylizes and encodes the clip into ``output_path`` (atomically: nothing is
    left there unless every frame is written); returns the frames written."""
    audio = input_path if has_audio(input_path) else None
    extension = os.path.splitext(output_path)[1]
    with atomic_output(output_path) as temporary:
        with FrameWriter(temporary, clip.fps, audio_path=audio, extension=extension) as writer:
            sink = FrameSink(writer, show_input, bar)
            batches = frame_batches(read_frames(input_path, *size), batch_size)
            try:
                if queue_depth:
                    run_overlapped(batches, stylizer, sink, depth=queue_depth, abort=writer.abort)
                else:
                    run_sequential(batches, stylizer, sink)
            finally:
                if bar is not None:
                    bar.close()
            if not sink.written:
                raise KstyleError(f"no frames in {input_path}")
            writer.finish()
    return sink.written


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
    queue_depth=QUEUE_DEPTH,
):
    """Stylizes a video file and writes it to ``output_path`` with the same frame rate.

    Decoding, stylizing and encoding overlap (see the module). The first error of any stage,
    or a Ctrl-C, stops all three and leaves no output.

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
        queue_depth: batches each queue between two stages holds (0: no overlap: decode,
            stylize and encode one batch after another on the calling thread).

    Returns:
        A :class:`VideoSpeed` (also logged, as one line, on the ``kstyle`` logger at info level).

    Raises:
        KstyleError: the input cannot be read, or any stage failed (one line).
    """
    clip, (width, height) = _open_clip(input_path, max_size, max_pixels, count_frames=progress)
    budget = resolve_max_memory(max_memory)
    tiler = Tilers(model, tile, budget, work_dir).for_size(height, width)
    stylizer = FrameStylizer(model, tiler, preserve_colors, strength)
    batch_size = batch_size or batch_within(height, width, budget)
    start = time.perf_counter()
    with _one_line_errors(input_path):
        written = _write_video(
            input_path, output_path, clip, (width, height), stylizer, batch_size=batch_size,
            show_input=show_input, bar=ProgressBar(clip.frames) if progress else None,
            queue_depth=queue_depth,
        )  # fmt: skip
    speed = VideoSpeed(frames=written, seconds=time.perf_counter() - start, source_fps=clip.fps)
    logger.info(speed.message())
    return speed
