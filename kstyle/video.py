"""Stylize videos frame by frame through imageio's ffmpeg plugin (ffmpeg ships in imageio-ffmpeg).

Frames are read one by one, resized if ``max_size`` asks, stylized in batches (all frames of a
video share one size), and written with the input's frame rate. The input's first audio
stream, if there is one, is copied into the output (re-encoded to the container's usual codec).
"""

import os
import re
import subprocess
import sys
import time

import numpy as np

from kstyle.errors import KstyleError

AUDIO_CODECS = {".mp4": "aac", ".mov": "aac", ".mkv": "aac", ".avi": "libmp3lame"}
VIDEO_CODECS = {".webm": "libvpx-vp9", ".avi": "mpeg4"}


class FrameProgress:
    """A one-line progress bar on ``stream`` with frames done, frames per second and ETA."""

    def __init__(self, total=None, stream=None, label="frames"):
        self.total, self.done, self.label = total, 0, label
        self.stream = stream if stream is not None else sys.stderr
        self.start = time.monotonic()

    @property
    def rate(self) -> float:
        """Frames per second so far."""
        return self.done / max(time.monotonic() - self.start, 1e-9)

    def update(self, count: int) -> None:
        """Adds ``count`` finished frames and redraws the line."""
        self.done += count
        rate = self.rate
        if self.total:
            width = 24
            filled = int(width * min(self.done, self.total) / self.total)
            eta = (self.total - self.done) / rate if rate > 0 else 0.0
            line = (
                f"\r{self.label} {self.done}/{self.total} [{'=' * filled:<{width}}] "
                f"{rate:.2f} frames/s, ETA {eta:.0f} s"
            )
        else:
            line = f"\r{self.label} {self.done}  {rate:.2f} frames/s"
        self.stream.write(line)
        self.stream.flush()

    def close(self) -> None:
        """Ends the line."""
        self.stream.write("\n")
        self.stream.flush()


def has_audio(path: str) -> bool:
    """Whether ffmpeg sees an audio stream in the media file at ``path``."""
    import imageio_ffmpeg

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
    max_memory="auto",
    max_pixels=None,
    show_input=False,
    progress=True,
    tile=None,
):
    """Stylizes a video file and writes it to ``output_path`` with the same frame rate.

    Args:
        model: the transform net.
        input_path, output_path: video files (any format ffmpeg reads; the output's
            extension picks the container: .mp4 .mov .mkv (H.264), .webm (VP9), .avi (MPEG-4)).
        max_size: shrink frames so the longer side is at most this (sides rounded to even).
        preserve_colors, strength: as in :func:`kstyle.stylize.stylize_array`.
        batch_size: frames per forward pass (default: as many as fit ``max_memory``, 1..8).
        max_memory: budget of one forward pass (bytes or e.g. "4GB"; "auto": the default);
            frames too large for it are stylized one by one in tiles.
        max_pixels: refuse frames with more pixels (decompression-bomb guard; 0/None: off).
        show_input: write input | output side by side.
        progress: show a progress bar (frames/s) on stderr.
        tile: tile size for every frame (None: only when a frame exceeds ``max_memory``).

    Returns:
        The number of frames written.
    """
    import imageio.v2 as imageio

    from kstyle import tiling
    from kstyle.stylize import check_pixels, side_by_side, stylize_array, stylize_batch

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

    budget = tiling.DEFAULT_MAX_MEMORY if max_memory == "auto" else max_memory
    budget = tiling.parse_memory(budget) if budget is not None else None
    tiled = tile or (budget is not None and tiling.needs_tiling(out_height, out_width, budget))
    if batch_size is None:
        batch_size = 8
        while (
            budget
            and batch_size > 1
            and (tiling.forward_bytes(out_height, out_width, batch_size) > budget)
        ):
            batch_size //= 2
    audio = has_audio(input_path)
    os.makedirs(os.path.dirname(os.path.abspath(output_path)) or ".", exist_ok=True)
    temporary = os.path.join(
        os.path.dirname(os.path.abspath(output_path)), f".{os.path.basename(output_path)}.tmp"
        f"{extension}"
    )  # fmt: skip
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
    bar = FrameProgress(total) if progress else None
    tiler = None
    written = 0

    def flush(batch):
        nonlocal tiler
        if tiled:
            if tiler is None:
                size = int(tile) if tile else tiling.auto_tile_size(budget)
                tiler = tiling.TiledStylizer(model, size)
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

    try:
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
        os.replace(temporary, output_path)
    except KstyleError:
        raise
    except Exception as error:
        raise KstyleError(
            f"video stylization failed for {input_path}: {type(error).__name__}: "
            + (str(error).strip().splitlines() or [""])[0][:200]
        ) from error
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return written
