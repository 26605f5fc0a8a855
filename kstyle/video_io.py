"""Video files in and out through ffmpeg (the binary that ships in the imageio-ffmpeg wheel).

Reading goes through imageio's ffmpeg plugin. Writing runs an ffmpeg process of kstyle's own
(:class:`FrameWriter`), with the settings imageio's writer would use, so that a failed or
interrupted write can kill it at once rather than wait for it to finish encoding.
"""

import dataclasses
import re
import subprocess
import tempfile
import threading
from fractions import Fraction

import numpy as np

from kstyle.errors import KstyleError
from kstyle.extras import require

AUDIO_CODECS = {".mp4": "aac", ".mov": "aac", ".mkv": "aac", ".avi": "libmp3lame"}
VIDEO_CODECS = {".webm": "libvpx-vp9", ".avi": "mpeg4"}
DEFAULT_VIDEO_CODEC = "libx264"  # H.264, in the imageio-ffmpeg wheel's ffmpeg
# imageio's quality 8 of 10, as imageio-ffmpeg writes it: a CRF for H.264, a qscale otherwise.
# x264's "veryfast" preset encodes 720p about 3x faster than its default ("medium"), which
# alone could not keep up with 30 fps on 2 cores (docs/performance.md, Video).
CODEC_ARGUMENTS = {"libx264": ["-crf", "10", "-preset", "veryfast"]}
OTHER_CODEC_ARGUMENTS = ["-qscale:v", "6"]


@dataclasses.dataclass(frozen=True)
class ClipInfo:
    """What ffmpeg says of a video file before it is decoded.

    Attributes:
        fps: frames per second of playback (25 where the file does not say).
        width, height: frame size in pixels.
        frames: the number of frames, or None where not counted or unknown.
    """

    fps: float
    width: int
    height: int
    frames: int | None


def ffmpeg_executable() -> str:
    """The path of the ffmpeg binary that imageio-ffmpeg uses."""
    return require("imageio_ffmpeg", "video").get_ffmpeg_exe()


def probe_clip(path: str, count_frames: bool = False) -> ClipInfo:
    """Reads the header of the video at ``path`` (and counts its frames if asked, a pass over
    the file without decoding).

    Raises:
        KstyleError: ffmpeg cannot read the file.
    """
    imageio = require("imageio.v2", "video")
    try:
        reader = imageio.get_reader(path, format="FFMPEG")
    except Exception as error:
        raise KstyleError(f"cannot read video {path}: {error}".splitlines()[0]) from error
    try:
        meta = reader.get_meta_data()
        frames = None
        if count_frames:
            try:
                frames = reader.count_frames() or None
            except Exception:  # a stream that cannot be counted: the progress bar has no end
                frames = None
        width, height = meta["size"]
        return ClipInfo(float(meta.get("fps") or 25.0), int(width), int(height), frames)
    finally:
        reader.close()


def has_audio(path: str) -> bool:
    """Whether ffmpeg sees an audio stream in the media file at ``path``."""
    result = subprocess.run(
        [ffmpeg_executable(), "-hide_banner", "-i", path],
        capture_output=True,
        text=True,
        errors="replace",
    )
    return re.search(r"Stream #\S+.*: Audio:", result.stderr) is not None


def read_frames(path: str, width: int, height: int):
    """Yields the frames of the video at ``path`` one by one, as (height, width, 3) uint8 RGB
    (resized with Lanczos where the file's size differs). The reader is closed when the
    generator ends or is closed."""
    imageio = require("imageio.v2", "video")
    reader = imageio.get_reader(path, format="FFMPEG")
    try:
        for frame in reader:
            frame = np.asarray(frame)[..., :3]
            if frame.shape[:2] != (height, width):
                from PIL import Image

                frame = np.asarray(
                    Image.fromarray(frame).resize((width, height), Image.Resampling.LANCZOS)
                )
            yield frame
    finally:
        reader.close()


class FrameWriter:
    """Writes (H, W, 3) uint8 frames into a video file through an ffmpeg process.

    The process starts at the first frame (which sets the size). :meth:`finish` ends the file;
    :meth:`abort` kills the process at once (from any thread: a :meth:`write` blocked on it
    then fails). Use it as a context manager: leaving the block without :meth:`finish` aborts.

    Args:
        path: the file to write; its extension picks the codecs (:data:`VIDEO_CODECS`,
            :data:`AUDIO_CODECS`).
        fps: frames per second of playback.
        audio_path: a media file whose first audio stream is added (None: no audio).
        extension: the output type when ``path``'s own extension does not say it (a
            temporary name), e.g. ``".mp4"``.
    """

    def __init__(self, path: str, fps: float, *, audio_path=None, extension=""):
        self.path, self.fps, self.audio_path = path, fps, audio_path
        self.extension = extension.lower()
        self.process = None
        self._log = None
        self._aborted = False
        self._lock = threading.Lock()

    def command(self, width: int, height: int) -> list[str]:
        """The ffmpeg command line for frames of (width, height), read from stdin as RGB."""
        codec = VIDEO_CODECS.get(self.extension, DEFAULT_VIDEO_CODEC)
        command = [ffmpeg_executable(), "-y", "-f", "rawvideo", "-vcodec", "rawvideo"]
        command += ["-s", f"{width}x{height}", "-pix_fmt", "rgb24"]
        command += ["-r", str(Fraction(self.fps).limit_denominator()), "-i", "-"]
        command += ["-an"] if self.audio_path is None else ["-i", self.audio_path]
        command += ["-vcodec", codec, "-pix_fmt", "yuv420p"]
        command += CODEC_ARGUMENTS.get(codec, OTHER_CODEC_ARGUMENTS) + ["-v", "error"]
        if self.audio_path is not None:
            if self.extension in AUDIO_CODECS:
                command += ["-acodec", AUDIO_CODECS[self.extension]]
            command += ["-map", "0:v:0", "-map", "1:a:0"]
        return [*command, self.path]

    def _start(self, width: int, height: int) -> None:
        self._log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            self.command(width, height),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            process_group=0,  # a Ctrl-C in the terminal is kstyle's to handle, not ffmpeg's
        )

    def write(self, frame: np.ndarray) -> None:
        """Appends one (H, W, 3) uint8 frame; every frame must have the first one's size.

        Raises:
            RuntimeError: ffmpeg has ended (its last error line says why), or was aborted.
        """
        with self._lock:
            if self._aborted:
                raise RuntimeError("the video writer was stopped")
            if self.process is None:
                self._start(frame.shape[1], frame.shape[0])
        try:
            self.process.stdin.write(np.ascontiguousarray(frame, np.uint8).data)
        except (OSError, ValueError) as error:
            raise RuntimeError(self._failure_line(error)) from error

    def _failure_line(self, error=None) -> str:
        """Why ffmpeg failed, in one line: its last error line, else its exit status."""
        self.process.wait()
        self._log.seek(0)
        lines = [line for line in self._log.read().decode(errors="replace").splitlines() if line]
        if lines:
            return f"ffmpeg: {lines[-1].strip()}"
        return f"ffmpeg ended with status {self.process.returncode}" + (
            f" ({error})" if error is not None else ""
        )

    def finish(self) -> None:
        """Ends the file: ffmpeg encodes what it holds and exits.

        Raises:
            RuntimeError: ffmpeg failed (its last error line says why).
        """
        if self.process is None:
            return
        try:
            self.process.stdin.close()
        except OSError as error:  # ffmpeg already gone: flushing its pipe failed
            raise RuntimeError(self._failure_line(error)) from error
        if self.process.wait() != 0:
            raise RuntimeError(self._failure_line())

    def abort(self) -> None:
        """Kills ffmpeg (the file is left unfinished, for the caller to remove)."""
        with self._lock:
            self._aborted = True
            if self.process is not None and self.process.poll() is None:
                self.process.kill()
        if self.process is not None:
            self.process.wait()

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if error is not None or (self.process is not None and self.process.returncode is None):
            self.abort()
        if self.process is not None and not self.process.stdin.closed:
            try:
                self.process.stdin.close()
            except OSError:  # the process is gone
                pass
        if self._log is not None:
            self._log.close()
