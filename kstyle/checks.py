"""What can be checked before any work, without TensorFlow: option values, the model file a
command is given, and where a command writes.

The commands run these checks right after parsing their arguments, before they import
TensorFlow, so that a mistake is reported in a fraction of a second; the library's functions
(:func:`kstyle.stylize`, :func:`kstyle.export.export`, :func:`kstyle.load_transform_net`, ...)
call the same checks, so that each rule is written once.
"""

import argparse
import collections
import json
import os
import zipfile

from kstyle.constants import FORMATS, QUANTIZATIONS, SIZE_MULTIPLE, STYLE_INPUT, VIDEO_EXTENSIONS
from kstyle.errors import KstyleError
from kstyle.files import check_writable, list_image_files
from kstyle.images import check_output_image


def check_strength(strength) -> float:
    """Returns ``strength`` as a float, or raises KstyleError unless 0 <= strength <= 1."""
    try:
        value = float(strength)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise KstyleError(f"--strength must be between 0 and 1, got {strength}")
    return value


def check_tile(tile) -> None:
    """Raises KstyleError unless ``tile`` is None or a non-negative multiple of 4."""
    if tile is not None and (int(tile) < 0 or int(tile) % SIZE_MULTIPLE):
        raise KstyleError(
            f"--tile must be a multiple of {SIZE_MULTIPLE} (0: never tile), got {tile}"
        )


def check_max_size(max_size) -> None:
    """Raises KstyleError unless ``max_size`` is None (keep the size) or at least 4 pixels."""
    if max_size is not None and max_size < SIZE_MULTIPLE:
        raise KstyleError(f"--max-size must be at least {SIZE_MULTIPLE}, got {max_size}")


def check_max_pixels(max_pixels) -> None:
    """Raises KstyleError unless ``max_pixels`` is None or 0 (no limit), or positive."""
    if max_pixels is not None and max_pixels < 0:
        raise KstyleError(f"--max-pixels must be 0 (no limit) or positive, got {max_pixels}")


def check_work_dir(work_dir) -> None:
    """Raises KstyleError unless ``work_dir`` is None (the system's temporary folder) or an
    existing folder, and OSError (naming it) unless a file can be written there."""
    if work_dir is None:
        return
    if not os.path.isdir(work_dir):
        raise KstyleError(f"--work-dir {work_dir} is not a folder; create it or choose another")
    check_writable(work_dir, folder=True)


NEEDS_CALIBRATION = "--quantize int8 needs --calibration-data DIR (representative photos)"


def fixed_size(input_size) -> tuple:
    """``(height, width)`` of an export's ``input_size``: None (any size) -> (None, None), an
    int N -> (N, N), a pair -> itself."""
    if input_size is None:
        return None, None
    if isinstance(input_size, int):
        return input_size, input_size
    height, width = input_size
    return int(height), int(width)


def parse_input_size(text: str):
    """``--input-size``'s value: ``"N"`` -> N (N x N), ``"HxW"`` -> (H, W).

    Raises:
        argparse.ArgumentTypeError: anything else (argparse prints it as a usage error).
    """
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(part.strip().isdigit() for part in parts):
        raise argparse.ArgumentTypeError(f"expected N or HxW such as 720x1280, got {text!r}")
    sizes = [int(part) for part in parts]
    return sizes[0] if len(sizes) == 1 else tuple(sizes)


def check_export_options(
    formats, quantizations, input_size, calibration_data, calibration_count, verify_size
) -> None:
    """Raises KstyleError for export options that cannot work: an unknown format or
    quantization, a size under 4 pixels, no calibration images for int8 (a missing folder, or
    one without images), a calibration count under 1. Arguments as
    :func:`kstyle.export.export` takes them."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise KstyleError(f"unknown format {unknown[0]!r}; use one of {', '.join(FORMATS)}, all")
    for quantize in quantizations:
        if quantize not in QUANTIZATIONS:
            raise KstyleError(f"unknown quantization {quantize!r}; use one of {QUANTIZATIONS}")
    if input_size is not None and min(fixed_size(input_size)) < SIZE_MULTIPLE:
        shown = "x".join(str(side) for side in fixed_size(input_size))
        raise KstyleError(f"--input-size must be at least {SIZE_MULTIPLE}, got {shown}")
    if verify_size < SIZE_MULTIPLE:
        raise KstyleError(f"--verify-size must be at least {SIZE_MULTIPLE}, got {verify_size}")
    if calibration_count < 1:
        raise KstyleError(f"--calibration-count must be positive, got {calibration_count}")
    if "tflite" in formats and "int8" in quantizations:
        if calibration_data is None:
            raise KstyleError(NEEDS_CALIBRATION)
        list_image_files(calibration_data)  # a missing folder, or one without images


# How a file starts (its "magic" bytes): a zip archive (a .keras file is one), HDF5 (Keras 2's
# .h5 files, which Keras 3 still loads), and a TFLite flatbuffer's identifier at bytes 4 to 8.
ZIP_SIGNATURE = b"PK\x03\x04"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
TFLITE_IDENTIFIER = b"TFL3"
# An ONNX file is a protobuf ModelProto whose first field is ir_version (field 1, a varint):
# its first byte is that field's tag.
ONNX_FIRST_BYTE = 0x08
# The graph file of a SavedModel folder, binary or text.
SAVED_MODEL_GRAPHS = ("saved_model.pb", "saved_model.pbtxt")
# Where the docs say how to run the exported files.
EXPORT_DOCS = "docs/export.md"
# What a run directory's model file is called.
MODEL_FILE_NAME = "model.keras"


def _exported_kind(path: str, head: bytes) -> str | None:
    """What kind of exported model the file ``path`` (starting with ``head``) is, or None."""
    if head[4:8] == TFLITE_IDENTIFIER:
        return "a TFLite model"
    if path.lower().endswith(".onnx") and head[:1] == bytes([ONNX_FIRST_BYTE]):
        return "an ONNX model"
    if os.path.basename(path) in SAVED_MODEL_GRAPHS:
        return "the graph of a TensorFlow SavedModel"
    return None


def _exported(path: str, kind: str, option: str) -> KstyleError:
    """The error for an exported model given to ``option`` where a Keras model goes."""
    return KstyleError(
        f"{path} is {kind}, an exported model: {option} takes a training run directory or its "
        f"{MODEL_FILE_NAME}. Exported models run in their own runtimes ({EXPORT_DOCS} says how)"
    )


def _holds_exports(folder: str) -> bool:
    """Whether ``folder`` holds what ``kstyle export`` writes (a folder of exported models)."""
    return any(
        name.endswith((".tflite", ".onnx")) or name == "saved_model" for name in os.listdir(folder)
    )


def model_file(path: str, option: str = "kstyle") -> str:
    """The Keras model file that ``path`` names: ``path`` itself, or a run directory's
    ``model.keras``. Looks at the file's first bytes (and, for a zip, its table of contents),
    not at a loader's error, so that each mistake is told apart. ``option`` names what was
    given ``path`` in the message about an exported model (e.g. ``--model``).

    Raises:
        KstyleError: nothing there; a folder without a model.keras (a SavedModel folder says
            so); a TFLite, ONNX or SavedModel file (an exported model); a zip archive cut
            short or damaged; a zip without a Keras model's config.json, or one not named
            *.keras (Keras will not load it); any other file that is neither a zip nor an
            HDF5 file.
    """
    if os.path.isdir(path):
        if any(os.path.isfile(os.path.join(path, name)) for name in SAVED_MODEL_GRAPHS):
            raise _exported(path, "a TensorFlow SavedModel folder", option)
        candidate = os.path.join(path, MODEL_FILE_NAME)
        if not os.path.isfile(candidate):
            exports = f" (it holds exported models; {EXPORT_DOCS} says how to run them)"
            raise KstyleError(
                f"no {MODEL_FILE_NAME} in run directory {path}"
                + (exports if _holds_exports(path) else "")
            )
        path = candidate
    if not os.path.isfile(path):
        raise KstyleError(f"model not found: {path}")
    with open(path, "rb") as file:
        head = file.read(8)
    size = os.path.getsize(path)
    kind = _exported_kind(path, head)
    if kind is not None:
        raise _exported(path, kind, option)
    if head.startswith(ZIP_SIGNATURE):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, EOFError) as error:
            raise KstyleError(
                f"could not load model {path}: the file is cut short or damaged (a zip archive "
                f"without its table of contents, {size:,} bytes); copy or save it again"
            ) from error
        if "config.json" not in names:
            raise KstyleError(
                f"could not load model {path}: a zip archive, but not a Keras model (it holds "
                "no config.json)"
            )
        if not path.endswith(".keras"):  # Keras reads the format from the name
            raise KstyleError(
                f"could not load model {path}: a Keras model, but Keras loads one only from a "
                "file named *.keras; rename it"
            )
    elif not head.startswith(HDF5_SIGNATURE):
        raise KstyleError(
            f"could not load model {path}: not a Keras model file (a .keras file is a zip "
            f"archive; this {size:,}-byte file is not one)"
        )
    return path


def is_video(path: str) -> bool:
    """Whether ``path`` has a video extension (:data:`VIDEO_EXTENSIONS`)."""
    return path.lower().endswith(VIDEO_EXTENSIONS)


def same_file(a: str, b: str) -> bool:
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
    be taken), so no output overwrites another.

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
        taken.add(f"{stem}.png".lower())
        jobs.append((source, os.path.join(output_folder, stem + ".png")))
    return jobs


def _image_target(input_path: str, output_path: str) -> str:
    """Where one image's result goes: ``output_path``, or ``<its name>.png`` in the folder
    ``output_path``; checked as :func:`stylize_jobs` says."""
    target = output_path
    if os.path.isdir(output_path):
        name = os.path.splitext(os.path.basename(input_path))[0] + ".png"
        target = os.path.join(output_path, name)
        beside = same_file(output_path, os.path.dirname(os.path.abspath(input_path)))
        if beside and os.path.exists(target) and not same_file(input_path, target):
            raise KstyleError(
                f"{target} exists beside the input and was not named; give --output a file "
                "name or another folder"
            )
    if same_file(input_path, target):
        raise KstyleError(f"--output {target} is the input itself; choose another output")
    check_output_image(target)
    return target


def stylize_jobs(input_path: str, output_path: str) -> tuple[bool, list[tuple[str, str]]]:
    """What stylizing ``input_path`` into ``output_path`` writes, checked before any work:
    ``(video, jobs)``, where ``video`` tells a video input and ``jobs`` lists ``(source,
    target)`` pairs (one for a file; :func:`folder_jobs` for a folder).

    Raises:
        KstyleError: the input is missing; a video input without a video output; an image
            output of a type kstyle does not write; an output that is the input itself, an
            unnamed file beside it, or a folder overlapping the input folder.
        OSError: the output's folder cannot be written (naming ``output_path``).
    """
    if os.path.isfile(input_path) and is_video(input_path):
        if os.path.isdir(output_path) or not is_video(output_path):
            raise KstyleError(
                f"a video input needs a video output ({', '.join(VIDEO_EXTENSIONS)}), "
                f"got {output_path}"
            )
        if same_file(input_path, output_path):
            raise KstyleError(f"--output {output_path} is the input itself; choose another output")
        check_writable(output_path)
        return True, [(input_path, output_path)]
    if os.path.isdir(input_path):
        jobs = folder_jobs(input_path, output_path)
        check_writable(output_path, folder=True)
        return False, jobs
    if not os.path.isfile(input_path):
        raise KstyleError(f"input not found: {input_path}")
    target = _image_target(input_path, output_path)
    check_writable(target)
    return False, [(input_path, target)]


def archived_style_count(path: str) -> int:
    """How many styles the ``.keras`` file ``path`` holds, read from its archive's model config
    without Keras: the size of its input named ``style`` (:data:`STYLE_INPUT`); 1 for a net
    without one, or a file that cannot be read as a Keras archive (loading it says why)."""
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
        layers = config["config"]["layers"]
    except (OSError, KeyError, TypeError, ValueError, zipfile.BadZipFile, EOFError):
        return 1
    for layer in layers if isinstance(layers, list) else []:
        if isinstance(layer, dict) and layer.get("class_name") == "InputLayer":
            shape = (layer.get("config") or {}).get("batch_shape") or []
            if layer.get("name") == STYLE_INPUT and shape and isinstance(shape[-1], int):
                return shape[-1]
    return 1
