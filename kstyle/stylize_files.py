"""Stylizing files: one image, a video, or every image under a folder, written to disk.

Behind ``kstyle.stylize`` and the stylize command. Images go through
:func:`kstyle.inference.stylize_array`, videos through :func:`kstyle.video.stylize_video`.
"""

import functools
import os

from kstyle.errors import KstyleError
from kstyle.files import list_image_files
from kstyle.images import DEFAULT_MAX_PIXELS, load_image, save_image, side_by_side
from kstyle.inference import Tilers, check_strength, stylize_array
from kstyle.memory import AUTO
from kstyle.progress import ProgressBar
from kstyle.transform_net import SIZE_MULTIPLE, load_transform_net
from kstyle.video import VIDEO_EXTENSIONS, is_video, stylize_video


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
):
    """Stylizes an image file, a video, or every image under a folder, and writes the results.

    Args:
        model: a transform network, or a path to a ``.keras`` file or run directory.
        input_path: an image file, a video (:data:`VIDEO_EXTENSIONS`), or a folder (searched
            recursively for images).
        output_path: a file when the input is a file (an existing folder is also accepted);
            a folder when the input is a folder (the tree is mirrored, names kept, PNG output).
            A video input needs a video output path.
        max_size: shrink inputs so their longer side is at most this (None: keep the size).
        show_input: write input | output side by side, like the reference's final figure.
        preserve_colors, strength, tile, max_memory: see :func:`stylize_array`.
        max_pixels: decompression-bomb guard (see :func:`load_image`).
        progress: show a progress bar on stderr (videos: frames/s; large images: tiles).

    Returns:
        ``(written, failed)``: output paths written, and ``(input path, reason)`` pairs for
        images that could not be read; one bad image never stops a folder.
    """
    strength = check_strength(strength)
    if isinstance(model, str):
        model = load_transform_net(model)
    tilers = Tilers(model, tile, max_memory)
    if os.path.isfile(input_path) and is_video(input_path):
        if os.path.isdir(output_path) or not is_video(output_path):
            raise KstyleError(
                f"a video input needs a video output ({', '.join(VIDEO_EXTENSIONS)}), "
                f"got {output_path}"
            )
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
        )
        return [output_path], []
    if os.path.isdir(input_path):
        jobs = []
        for source in list_image_files(input_path):
            relative = os.path.splitext(os.path.relpath(source, input_path))[0] + ".png"
            jobs.append((source, os.path.join(output_path, relative)))
    elif os.path.isfile(input_path):
        target = output_path
        if os.path.isdir(output_path):
            name = os.path.splitext(os.path.basename(input_path))[0] + ".png"
            target = os.path.join(output_path, name)
        jobs = [(input_path, target)]
    else:
        raise KstyleError(f"input not found: {input_path}")

    written, failed = [], []
    for source, target in jobs:
        try:
            content = load_image(source, max_size=max_size, max_pixels=max_pixels)
        except KstyleError as error:
            if len(jobs) == 1:
                raise
            failed.append((source, str(error)))
            continue
        height, width = (side + (-side) % SIZE_MULTIPLE for side in content.shape[:2])
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
