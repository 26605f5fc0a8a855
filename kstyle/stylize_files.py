"""Stylizing files: one image, a video, or every image under a folder, written to disk.

Behind ``kstyle.stylize`` and the stylize command. Images go through
:func:`kstyle.inference.stylize_array`, videos through :func:`kstyle.video.stylize_video`.
"""

import functools
import logging
import os

from kstyle.checks import (
    check_max_pixels,
    check_max_size,
    check_strength,
    check_work_dir,
    stylize_jobs,
)
from kstyle.errors import KstyleError
from kstyle.images import DEFAULT_MAX_PIXELS, load_image, save_image, side_by_side
from kstyle.inference import Tilers, stylize_array
from kstyle.memory import AUTO
from kstyle.progress import ProgressBar
from kstyle.styles import styled_net
from kstyle.transform_net import load_transform_net
from kstyle.video import stylize_video

logger = logging.getLogger(__name__)


def _warn_renamed(jobs, input_folder: str, output_folder: str) -> None:
    """Names each image of a folder whose output keeps its extension, as another image has its
    name (see :func:`kstyle.checks.folder_jobs`)."""
    for source, target in jobs:
        name = os.path.relpath(source, input_folder)
        written = os.path.relpath(target, output_folder)
        if written != os.path.splitext(name)[0] + ".png":
            logger.warning("%s shares its name with another image: written as %s", name, written)


def stylize(
    model,
    input_path: str,
    output_path: str,
    max_size=None,
    show_input=False,
    *,
    preserve_colors: bool = False,
    strength: float = 1.0,
    tile=None,
    max_memory=AUTO,
    max_pixels=DEFAULT_MAX_PIXELS,
    progress: bool = False,
    work_dir=None,
    style=None,
):
    """Stylizes an image file, a video, or every image under a folder, and writes the results.

    Args:
        model: a transform network, or a path to a ``.keras`` file or run directory.
        input_path: an image file, a video (:data:`VIDEO_EXTENSIONS`), or a folder (searched
            recursively for images).
        output_path: a file when the input is a file (an existing folder is also accepted;
            an existing file is replaced, atomically, but never the input itself); a folder
            when the input is a folder, outside it (:func:`kstyle.checks.folder_jobs` names
            its files). A video input needs a video output path. All of it is checked, and
            the output's folder probed with a real write, before the model is loaded.
        max_size: shrink inputs so their longer side is at most this (None: keep the size).
        show_input: write input | output side by side, like the reference's final figure.
        preserve_colors, strength, tile, max_memory: see :func:`stylize_array`.
        max_pixels: decompression-bomb guard (see :func:`load_image`).
        progress: show a progress bar on stderr (videos: frames/s; large images: tiles).
        work_dir: folder for the temporary files of tiled images (None: the system's).
        style: for a net of N styles, the style or blend (see :func:`stylize_array`).

    Returns:
        ``(written, failed)``: output paths written, and ``(input path, reason)`` pairs for
        images that could not be read; one bad image never stops a folder.
    """
    strength = check_strength(strength)
    check_max_size(max_size)
    check_max_pixels(max_pixels)
    check_work_dir(work_dir)
    video, jobs = stylize_jobs(input_path, output_path)  # before the model: fail fast
    if isinstance(model, str):
        model = load_transform_net(model)
    model = styled_net(model, style)
    tilers = Tilers(model, tile, max_memory, work_dir)
    if video:
        stylize_video(
            model,
            input_path,
            output_path,
            max_size=max_size,
            preserve_colors=preserve_colors,
            strength=strength,
            max_memory=max_memory,
            max_pixels=max_pixels,
            show_input=show_input,
            progress=progress,
            tile=tile,
            work_dir=work_dir,
        )
        return [output_path], []
    if os.path.isdir(input_path):
        _warn_renamed(jobs, input_path, output_path)

    written, failed = [], []
    for source, target in jobs:
        try:
            content = load_image(source, max_size=max_size, max_pixels=max_pixels)
        except KstyleError as error:
            if len(jobs) == 1:
                raise
            failed.append((source, str(error)))
            continue
        height, width = tilers.padded_size(*content.shape[:2])
        tiler, bar = tilers.for_size(height, width), None
        if tiler is not None and progress:
            bar = ProgressBar(tiler.tiles(height, width), label="tiles")
        result = stylize_array(
            model,
            content,
            preserve_colors=preserve_colors,
            strength=strength,
            tile=0,
            tiler=tiler,
            progress=functools.partial(bar.update, 1) if bar else None,
        )
        if bar:
            bar.close()
        if show_input:
            result = side_by_side(content, result)
        save_image(result, target)
        written.append(target)
    return written, failed
