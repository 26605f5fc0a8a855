"""The export command's library: write each requested artifact, verify it, and record its
contract in a JSON sidecar."""

import json
import os

import numpy as np
import tensorflow as tf

from kstyle.checks import NEEDS_CALIBRATION, check_export_options, fixed_size, model_file
from kstyle.constants import (
    DEFAULT_CALIBRATION_COUNT,
    DEFAULT_VERIFY_SIZE,
    FORMATS,
    NO_QUANTIZATION,
    QUANTIZATIONS,
    SIZE_MULTIPLE,
    STYLE_INPUT,
)
from kstyle.errors import KstyleError
from kstyle.export.int8 import int8_flatbuffer
from kstyle.export.serving import OUTPUT_NAME, export_model, plain_tflite_bytes, serving_archive
from kstyle.export.verify import held_out_image, verify
from kstyle.extras import require
from kstyle.files import (
    StagedOutput,
    check_writable,
    list_image_files,
    remove_leftovers,
    remove_path,
    write_json_atomically,
)
from kstyle.graph import size_multiple, smallest_side
from kstyle.images import load_image
from kstyle.smoke import is_smoke_test, recorded_style_names, smoke_fields
from kstyle.style_tables import style_count
from kstyle.styles import style_vector, styled_net
from kstyle.transform_net import load_transform_net


def load_calibration_images(folder, count=DEFAULT_CALIBRATION_COUNT, size=DEFAULT_VERIFY_SIZE):
    """The first ``count`` images under ``folder`` as (size, size, 3) uint8 arrays (``size``:
    an int, or (height, width) for a fixed-size export).

    Raises:
        KstyleError: the folder is missing or holds no readable image.
    """
    if folder is None:
        raise KstyleError(NEEDS_CALIBRATION)
    images = []
    for path in list_image_files(folder):
        try:
            image = load_image(path)
        except KstyleError:
            continue
        resized = tf.image.resize(image, fixed_size(size), antialias=True)
        images.append(np.clip(np.round(resized.numpy()), 0, 255).astype(np.uint8))
        if len(images) == count:
            break
    if not images:
        raise KstyleError(f"no readable calibration images in {folder}")
    return images


def tflite_bytes(transform_net, quantize=NO_QUANTIZATION, input_size=None, calibration_images=None):
    """Converts the serving model to a TFLite flatbuffer (batch 1, uint8 in and out).

    Args:
        quantize: ``none`` (fp32), ``float16`` (fp16 weights), ``dynamic`` (int8 weights,
            dynamic-range activations) or ``int8`` (integer convolutions and activations
            calibrated on ``calibration_images``; the instance-norm arithmetic stays float; see
            :func:`int8_flatbuffer`).
        input_size: None for a dynamic H, W (resize the input tensor before use), N for
            N x N, or (H, W). A fixed size needs no dynamic shapes, so LiteRT runs the whole
            graph in XNNPACK (a dynamic one pads and crops outside it: slower, docs/export.md).
        calibration_images: uint8 (H, W, 3) arrays, required for ``int8``.
    """
    if quantize not in QUANTIZATIONS:
        raise KstyleError(f"unknown quantization {quantize!r}; use one of {QUANTIZATIONS}")
    if quantize == "int8" and not calibration_images:
        raise KstyleError(NEEDS_CALIBRATION)
    if quantize == "int8":
        return int8_flatbuffer(transform_net, calibration_images, input_size)
    return plain_tflite_bytes(transform_net, quantize, input_size)


def describe_model(model_path: str) -> dict:
    """Name and style of a trained model, from its run directory's config.json if present,
    and whether it is a smoke test's (``kstyle.smoke``: its sidecars and manifest entries say
    so)."""
    run_dir = model_path if os.path.isdir(model_path) else os.path.dirname(model_path)
    name = os.path.basename(os.path.normpath(run_dir)) or "kstyle"
    style = None
    config_path = os.path.join(run_dir, "config.json")
    if os.path.isfile(config_path):
        try:
            with open(config_path) as file:
                styles = json.load(file).get("style") or []
            styles = [styles] if isinstance(styles, str) else styles  # runs before N styles
            if len(styles) == 1:
                style = os.path.basename(styles[0]) or None
            elif len(styles) > 1:
                style = ", ".join(os.path.basename(path) for path in styles)
        except (OSError, ValueError, TypeError):
            style = None
    return {"name": name, "style": style, **smoke_fields(is_smoke_test(model_path))}


def style_input_contract(names: list, fmt: str) -> dict:
    """The sidecar's description of the ``style`` input of an export of a net of N styles
    (``names``: the N styles' names, in index order)."""
    return {
        "name": STYLE_INPUT,
        "dtype": "float32",
        "shape": [1 if fmt == "tflite" else None, len(names)],
        "meaning": "each style's weight: non-negative, summing to 1 (one-hot for one style)",
        "styles": list(names),
    }


def write_metadata(
    path: str,
    fmt: str,
    quantize,
    input_size,
    description: dict,
    sizes=(SIZE_MULTIPLE,) * 2,
    styles=None,
) -> str:
    """Writes the JSON sidecar ``<path>.json`` (inside the directory for a SavedModel);
    ``sizes``: the net's size multiple (which the graph pads to) and smallest side;
    ``styles``: the names of an exported net's N styles, when it takes a style input."""
    import kstyle

    height, width = fixed_size(input_size)
    metadata = {
        **description,
        "format": fmt,
        "quantization": quantize,
        "kstyle_version": kstyle.__version__,
        "input": {
            "name": "image",
            "dtype": "uint8",
            "shape": [1 if fmt == "tflite" else None, height, width, 3],
            "layout": "NHWC",
            "channels": "RGB",
            "range": [0, 255],
            "size_multiple": sizes[0],
            "min_size": sizes[1],
        },
        "output": {
            "name": OUTPUT_NAME,
            "dtype": "uint8",
            "shape": "same as input",
            "channels": "RGB",
            "range": [0, 255],
        },
    }
    if styles:
        metadata["style_input"] = style_input_contract(styles, fmt)
    target = os.path.join(path, "kstyle.json") if os.path.isdir(path) else f"{path}.json"
    write_json_atomically(metadata, target, sort_keys=False)
    return target


def artifact_name(fmt: str, quantize=None) -> str:
    """The file (or folder) name of an artifact: ``saved_model``, ``model.tflite`` (fp32),
    ``model_<quantization>.tflite`` or ``model.onnx``."""
    if fmt == "saved_model":
        return "saved_model"
    if fmt == "tflite":
        return f"model{'' if quantize in (None, NO_QUANTIZATION) else '_' + quantize}.tflite"
    return "model.onnx"


def _write_artifact(fmt, path, transform_net, quantize, input_size, calibration, image):
    """Writes one artifact of ``transform_net`` to ``path`` (a folder for a SavedModel); for
    a net of N styles it takes the style vector too (input ``style``, float32 (B, N))."""
    if fmt == "saved_model":
        serving_archive(transform_net, path, input_size=input_size)
    elif fmt == "tflite":
        flatbuffer = tflite_bytes(transform_net, quantize, input_size, calibration)
        with open(path, "wb") as file:
            file.write(flatbuffer)
    else:
        onnx_model = export_model(transform_net, input_size=input_size)
        count = style_count(transform_net)
        # Keras's ONNX export needs a model that has been called
        onnx_model([image[None], np.eye(count, dtype=np.float32)[:1]] if count > 1 else image[None])
        onnx_model.export(path, format="onnx", verbose=False)
        _finish_onnx(path, OUTPUT_NAME)


# tf2onnx writes TF's half-pixel nearest resize as ``tf_half_pixel_for_nn`` with ``floor``,
# a mode deprecated since opset 13 (ONNX Runtime Web logs two console errors per model). It
# picks floor((x + 0.5) / scale); ``half_pixel`` gives (x + 0.5) / scale - 0.5, and rounding
# that half up picks the same pixel for every scale.
DEPRECATED_RESIZE = ("tf_half_pixel_for_nn", "floor")
CURRENT_RESIZE = ("half_pixel", "round_prefer_ceil")


def current_resize_modes(graph) -> int:
    """Rewrites, in place, each nearest ``Resize`` node of the ONNX ``graph`` that uses the
    deprecated ``tf_half_pixel_for_nn`` coordinates (with ``floor``) to the equal
    :data:`CURRENT_RESIZE` modes; returns how many were rewritten."""
    rewritten = 0
    for node in graph.node:
        if node.op_type != "Resize":
            continue
        attributes = {attribute.name: attribute for attribute in node.attribute}
        modes = ("coordinate_transformation_mode", "nearest_mode")
        found = tuple(attributes[name].s.decode() if name in attributes else "" for name in modes)
        if found != DEPRECATED_RESIZE or attributes["mode"].s != b"nearest":
            continue
        for name, value in zip(modes, CURRENT_RESIZE, strict=True):
            attributes[name].s = value.encode()
        rewritten += 1
    return rewritten


def _finish_onnx(path: str, name: str) -> None:
    """Renames the ONNX graph's single output to ``name`` (the converter calls it
    ``Identity:0``), so that every format names its output as the sidecar does, and writes
    current Resize modes (:func:`current_resize_modes`)."""
    onnx = require("onnx", "export")  # installed with tf2onnx
    model = onnx.load(path)
    current_resize_modes(model.graph)
    old = model.graph.output[0].name
    for node in model.graph.node:
        for field in (node.input, node.output):
            for index, tensor in enumerate(field):
                if tensor == old:
                    field[index] = name
    model.graph.output[0].name = name
    onnx.save(model, path)


def check_sizes_for(input_size, verify_size, smallest) -> None:
    """Raises KstyleError for an ``--input-size`` or ``--verify-size`` side under the net's
    ``smallest`` side (:func:`kstyle.graph.smallest_side`: 8 for ``live``, 16 with reflect
    padding), which its graph cannot pad to its size multiple."""
    sides = {"--input-size": min(fixed_size(input_size))} if input_size else {}
    if not input_size:
        sides["--verify-size"] = verify_size
    for flag, side in sides.items():
        if side < smallest:
            raise KstyleError(f"{flag} must be at least {smallest} for this network, got {side}")


def _verification_image(input_size, verify_size):
    """The held-out photo every artifact is checked on: the fixed input size, or
    ``verify_size`` high and a quarter wider plus one (sides that need padding)."""
    if input_size:
        return held_out_image(*fixed_size(input_size))
    return held_out_image(verify_size, verify_size + verify_size // 4 + 1)


def _chosen_style(vector, names) -> str:
    """The style a vector picks, by name (``names``: one per style): one name, or ``name
    weight + name weight`` for a blend."""
    chosen = [(names[k], weight) for k, weight in enumerate(vector) if weight > 0]
    if len(chosen) == 1:
        return chosen[0][0]
    return " + ".join(f"{name} {weight:.3g}" for name, weight in chosen)


def _exported_net(model_path: str, style):
    """The net that ``model_path`` holds, its description for the sidecars, and the names of
    its styles when the export takes a style input (None otherwise).

    A net of N styles is exported with its style input, or for one ``style`` or blend
    (:func:`kstyle.styles.styled_net`; the description then holds its ``style_vector``).
    """
    net = load_transform_net(model_path)
    description = {**describe_model(model_path), "source": os.path.abspath(model_path)}
    count = style_count(net)
    names = recorded_style_names(model_path)
    names = names if names and len(names) == count else [f"style {k}" for k in range(count)]
    if style is None and count > 1:
        return net, description, names
    if style is not None:  # one style or blend of a net of several: which, as weights
        vector = style_vector(style, count)
        description["style"] = _chosen_style(vector, names)
        description["style_vector"] = vector.tolist()
    return styled_net(net, style), description, None


def export(
    model_path,
    output_dir,
    formats=FORMATS,
    quantizations=(NO_QUANTIZATION,),
    input_size=None,
    calibration_data=None,
    calibration_count=DEFAULT_CALIBRATION_COUNT,
    verify_size=DEFAULT_VERIFY_SIZE,
    printer=print,
    style=None,
):
    """Writes and verifies the requested artifacts; returns their ``Verification`` records.

    A net of N styles is exported with a second input, ``style`` (float32 [batch, N]: each
    style's weight), verified with each style and a blend; or, given ``style`` (as
    :func:`kstyle.inference.stylize_array` takes it), for that style or blend alone, as the
    one-style net :func:`kstyle.styles.styled_net` makes of it.

    Files in ``output_dir``: ``saved_model/``, ``model.tflite`` (fp32) or
    ``model_<quantization>.tflite``, ``model.onnx``, each with a JSON sidecar. Each artifact
    is written under a temporary name and verified there; only one that meets its bar is moved
    into place (with its sidecar). One that misses it leaves any previous file untouched and
    is kept beside it as ``NAME.failed`` (the record's ``path``).
    """
    check_export_options(
        formats, quantizations, input_size, calibration_data, calibration_count, verify_size
    )
    check_writable(output_dir, folder=True)
    model_file(model_path)
    # Before any work: the verifying runtimes (and ONNX's converter) come with kstyle[export].
    if "tflite" in formats:
        require("ai_edge_litert", "export")
    if "onnx" in formats:
        require("tf2onnx", "export")
        require("onnxruntime", "export")
    calibration = None
    if "tflite" in formats and "int8" in quantizations:
        calibration = load_calibration_images(
            calibration_data, calibration_count, input_size or verify_size
        )
    transform_net, description, styles = _exported_net(model_path, style)
    sizes = size_multiple(transform_net), smallest_side(transform_net)
    check_sizes_for(input_size, verify_size, sizes[1])
    os.makedirs(output_dir, exist_ok=True)
    remove_leftovers(output_dir)  # temporary files of an export that a kill cut short
    image = _verification_image(input_size, verify_size)
    results = []
    for fmt in formats:
        for quantize in quantizations if fmt == "tflite" else (None,):
            target = os.path.join(output_dir, artifact_name(fmt, quantize))
            contract = fmt, quantize, input_size, description, sizes, styles
            with StagedOutput(target, folder=fmt == "saved_model") as staged:
                _write_artifact(fmt, staged.temporary, transform_net, quantize, input_size,
                                calibration, image)  # fmt: skip
                result = verify(fmt, staged.temporary, transform_net, image, quantize=quantize)
                if result.passed:
                    if fmt == "saved_model":  # the sidecar travels inside the folder
                        write_metadata(staged.temporary, *contract)
                    staged.commit()
                    if fmt != "saved_model":
                        write_metadata(target, *contract)
                    remove_path(f"{target}.failed")  # a failure this export made good
                    result.path = target
                else:  # the previous file stays; the failing one is kept beside it
                    result.path = f"{target}.failed"
                    staged.keep_as(result.path)
            printer(result.line())
            results.append(result)
    return results
