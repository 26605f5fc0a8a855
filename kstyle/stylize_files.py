"""Stylizing files: one image, a video, or every image under a folder, written to disk.

Behind ``kstyle.stylize`` and the stylize command. Images go through
:func:`kstyle.inference.stylize_array`, videos through :func:`kstyle.video.stylize_video`.
"""

import collections
import functools
import logging
import os

from kstyle.constants import VIDEO_EXTENSIONS
from kstyle.errors import KstyleError
from kstyle.files import list_image_files
from kstyle.images import DEFAULT_MAX_PIXELS, load_image, save_image, side_by_side
from kstyle.inference import Tilers, check_strength, stylize_array
from kstyle.memory import AUTO
from kstyle.progress import ProgressBar
from kstyle.transform_net import load_transform_net
from kstyle.video import is_video, stylize_video

logger = logging.getLogger(__name__)


def _same_file(a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` are one file (links, hard links and case-insensitive file
    systems included)."""
    if os.path.exists(a) and os.path.exists(b):
        return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)


def _inside(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or lies under it (after resolving links)."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


def folder_jobs(input_folder: str, output_folder: str) -> list[tuple[str, str]]:
    """``(source, target)`` for every image under ``input_folder``: the tree mirrored under
    ``output_folder`` as PNG files named after their sources (``a.jpg`` -> ``a.png``).

    Sources that would share a target (``a.jpg`` and ``a.png`` in one folder) keep their
    extension instead (``a.jpg.png``, ``a.png.png``; an underscore is added should even that
    be taken), and a warning names them, so no output overwrites another.

    Raises:
        KstyleError: the output folder is the input folder, lies inside it, or holds it.
    """
    if _inside(output_folder, input_folder) or _inside(input_folder, output_folder):
        raise KstyleError(
            f"--output {output_folder} and the input folder {input_folder} overlap; "
            "the outputs would mix with (and be read as) the inputs. Choose a folder outside it"
        )
    sources = list_image_files(input_folder)
    relative = [os.path.relpath(source, input_folder) for source in sources]
    stems = collections.Counter(os.path.splitext(name)[0].lower() for name in relative)
    jobs, taken = [], set()
    for source, name in zip(sources, relative, strict=True):
        stem = os.path.splitext(name)[0]
        if stems[stem.lower()] > 1:
            stem = name
        while f"{stem}.png".lower() in taken:  # even that name is taken: lengthen it
            stem += "_"
        if stem != os.path.splitext(name)[0]:
            logger.warning("%s shares its name with another image: written as %s.png", name, stem)
        taken.add(f"{stem}.png".lower())
        jobs.append((source, os.path.join(output_folder, stem + ".png")))
    return jobs


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
):
    """Stylizes an image file, a video, or every image under a folder, and writes the results.

    Args:
        model: a transform network, or a path to a ``.keras`` file or run directory.
        input_path: an image file, a video (:data:`VIDEO_EXTENSIONS`), or a folder (searched
            recursively for images).
        output_path: a file when the input is a file (an existing folder is also accepted;
            an existing file is replaced, atomically, but never the input itself); a folder
            when the input is a folder, outside it (see :func:`folder_jobs` for the names).
            A video input needs a video output path.
        max_size: shrink inputs so their longer side is at most this (None: keep the size).
        show_input: write input | output side by side, like the reference's final figure.
        preserve_colors, strength, tile, max_memory: see :func:`stylize_array`.
        max_pixels: decompression-bomb guard (see :func:`load_image`).
        progress: show a progress bar on stderr (videos: frames/s; large images: tiles).
        work_dir: folder for the temporary files of tiled images (None: the system's).

    Returns:
        ``(written, failed)``: output paths written, and ``(input path, reason)`` pairs for
        images that could not be read; one bad image never stops a folder.
    """
    strength = check_strength(strength)
    if isinstance(model, str):
        model = load_transform_net(model)
    tilers = Tilers(model, tile, max_memory, work_dir)
    if os.path.isfile(input_path) and is_video(input_path):
        if os.path.isdir(output_path) or not is_video(output_path):
            raise KstyleError(
                f"a video input needs a video output ({', '.join(VIDEO_EXTENSIONS)}), "
                f"got {output_path}"
            )
        if _same_file(input_path, output_path):
            raise KstyleError(f"--output {output_path} is the input itself; choose another output")
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
        jobs = folder_jobs(input_path, output_path)
    elif os.path.isfile(input_path):
        target = output_path
        if os.path.isdir(output_path):
            name = os.path.splitext(os.path.basename(input_path))[0] + ".png"
            target = os.path.join(output_path, name)
            beside = _same_file(output_path, os.path.dirname(os.path.abspath(input_path)))
            if beside and os.path.exists(target) and not _same_file(input_path, target):
                raise KstyleError(
                    f"{target} exists beside the input and was not named; give --output a file "
                    "name or another folder"
                )
        if _same_file(input_path, target):
            raise KstyleError(f"--output {target} is the input itself; choose another output")
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
