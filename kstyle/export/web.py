"""``kstyle export --format web``: a self-contained static site that stylizes photos and the
webcam in the browser (ONNX Runtime Web, wasm), one page for one or several trained models.

The site holds ``index.html`` and the page's scripts and style (``kstyle/web/page/``), each
model's verified ONNX export under ``models/``, the runtime's files under ``runtime/`` (copied
from ``kstyle/web/runtime/``, which a wheel carries and a checkout fills on first use from the
npm package pinned in ``web/package-lock.json``: :mod:`kstyle.web_runtime`), and
``manifest.json``. Nothing is fetched from
anywhere else when the page is viewed.
"""

import json
import os
import re
import shutil
import tempfile

from kstyle.constants import DEFAULT_VERIFY_SIZE, WEB_MAX_SIDE, WEB_RUNTIME_FILES
from kstyle.errors import KstyleError
from kstyle.export.serving import OUTPUT_NAME
from kstyle.export.writer import describe_model, export
from kstyle.files import atomic_directory, file_sha256, write_json_atomically
from kstyle.presets import LIVE_ARCH
from kstyle.web_runtime import (  # RUNTIME_DIR and runtime_record: also imported from here
    PACKAGE_DIR,
    RUNTIME_DIR,  # noqa: F401
    ensure_runtime,
    runtime_record,  # noqa: F401
)
from kstyle.web_site import (  # the site's format and server: also imported from here
    CONTENT_TYPES,  # noqa: F401
    HEADERS_FILE,
    ISOLATION_HEADERS,  # noqa: F401
    MANIFEST,
    SITE_FORMAT,
    headers_file,
    is_site,
    site_server,  # noqa: F401
    site_smoke_notes,  # noqa: F401
)

PAGE_DIR = os.path.join(PACKAGE_DIR, "web", "page")
PAGE_FILES = ("index.html", "app.js", "worker.js", "pixels.js", "style.css")
# The preset built for the webcam (kstyle.transform_net), which the export suggests.
THUMBNAIL_SIDE = 160  # the style pictures' longer side in the site (styles/NAME.jpg), px
# The photo the page stylizes on opening, so that a picture shows before the user picks one:
# the default resolution's side, so that it runs as a picked photo would.
SAMPLE_FILE = "sample.jpg"
SAMPLE_SIDE = 512


def find_models(paths) -> list:
    """The model.keras files that ``paths`` name: model files, run directories, or folders of
    run directories (each sub-folder with a model.keras, in name order).

    Raises:
        KstyleError: a path is missing or holds no model.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    models = []
    for path in map(str, paths):
        if os.path.isfile(path):
            models.append(path)
        elif os.path.isfile(os.path.join(path, "model.keras")):
            models.append(os.path.join(path, "model.keras"))
        elif os.path.isdir(path):
            found = [
                os.path.join(path, name, "model.keras")
                for name in sorted(os.listdir(path))
                if os.path.isfile(os.path.join(path, name, "model.keras"))
            ]
            if not found:
                raise KstyleError(f"no model.keras in {path} or in its sub-folders")
            models.extend(found)
        else:
            raise KstyleError(f"model not found: {path}")
    return models


def _run_config(model_path: str) -> dict:
    """The config.json of the run that holds ``model_path`` ({} if none or unreadable)."""
    config_path = os.path.join(os.path.dirname(os.path.abspath(model_path)), "config.json")
    try:
        with open(config_path) as file:
            config = json.load(file)
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def describe_run(model_path: str) -> dict:
    """Name, style and preset (``arch``) of a model, from its run's config.json if any."""
    return {**describe_model(model_path), "arch": _run_config(model_path).get("arch")}


def _found_image(style, run_dir, here) -> str | None:
    """``style`` (a path from a run's config.json) where it is still a file: relative to the
    folder that the run's recorded ``run_dir`` was relative to (training ran there), or as
    written; None when neither is."""
    if not isinstance(style, str):
        return None
    candidates = []  # the run's own folder first: the current one may hold another file
    if isinstance(run_dir, str) and not os.path.isabs(style):
        parts = os.path.normpath(run_dir).split(os.sep)
        if here.split(os.sep)[-len(parts) :] == parts:  # here ends with run_dir
            base = os.sep.join(here.split(os.sep)[: -len(parts)]) or os.sep
            candidates.append(os.path.join(base, style))
    candidates.append(style)
    return next((path for path in candidates if os.path.isfile(path)), None)


def style_image_paths(model_path: str, depth: int = 0) -> list:
    """The style images that the run of ``model_path`` trained on, one per style in index
    order, each None where it is no longer there (see :func:`_found_image`): its config.json's
    ``style_files`` (or its one ``style``), after its base's for a run that added styles
    (``base_model``); a distilled student's are its teacher's (``teacher_model``). [] without
    a config.json."""
    config = _run_config(model_path)
    styles = config.get("style_files") or config.get("style") or []
    styles = [styles] if isinstance(styles, str) else styles
    if not isinstance(styles, list):
        return []
    here = os.path.dirname(os.path.abspath(model_path))
    found = [_found_image(style, config.get("run_dir"), here) for style in styles]
    earlier = config.get("base_model") or (None if found else config.get("teacher_model"))
    if isinstance(earlier, str) and depth < 8:  # a chain of runs, not a loop
        found = style_image_paths(earlier, depth + 1) + found
    return found


def style_image_path(model_path: str) -> str | None:
    """The style image of a run of one style (:func:`style_image_paths`), or None."""
    paths = style_image_paths(model_path)
    return paths[0] if len(paths) == 1 else None


def live_hint(manifest: dict) -> str | None:
    """The line that suggests the :data:`LIVE_ARCH` preset for the webcam, when none of the
    ``manifest``'s models is one by its run's recorded ``arch``; None when one is."""
    if any(entry.get("arch") == LIVE_ARCH for entry in manifest["models"]):
        return None
    return (
        f"for the webcam, the '{LIVE_ARCH}' preset is the one built for it: train one with "
        f"'kstyle train --arch {LIVE_ARCH}', or distill one from any run with 'kstyle distill "
        f"--teacher RUN --arch {LIVE_ARCH}' (docs/web.md)"
    )


def write_thumbnail(image_path, target: str) -> bool:
    """Writes a JPEG of ``image_path`` scaled to fit :data:`THUMBNAIL_SIDE` to ``target``;
    False (nothing written) when the image is missing or unreadable."""
    from PIL import Image

    try:
        with Image.open(image_path) as image:
            picture = image.convert("RGB")
    except (OSError, ValueError, TypeError):
        return False
    picture.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS)
    picture.save(target, quality=88)
    return True


def write_sample(site: str) -> str | None:
    """Writes the page's sample photo (matplotlib's first sample photo, :mod:`kstyle.demo`,
    longer side :data:`SAMPLE_SIDE`) into ``site``; returns its URL path, None if unreadable."""
    from PIL import Image

    from kstyle.demo import sample_photo_paths

    try:
        with Image.open(sample_photo_paths()[0]) as image:
            photo = image.convert("RGB")
    except (OSError, ValueError):
        return None
    photo.thumbnail((SAMPLE_SIDE, SAMPLE_SIDE), Image.Resampling.LANCZOS)
    photo.save(os.path.join(site, SAMPLE_FILE), quality=90)
    return SAMPLE_FILE


def check_output(output: str) -> None:
    """Refuses an ``output`` that is a file, or a non-empty folder that is not a kstyle site."""
    if os.path.exists(output) and not os.path.isdir(output):
        raise KstyleError(f"--output {output} is a file, not a folder")
    if os.path.isdir(output) and os.listdir(output) and not is_site(output):
        raise KstyleError(f"--output {output} is a non-empty folder that is not a kstyle site")


def _unique(name: str, taken: set) -> str:
    """``name``, or ``name-2``, ``name-3``... if taken."""
    candidate, index = name, 1
    while candidate in taken:
        index += 1
        candidate = f"{name}-{index}"
    taken.add(candidate)
    return candidate


def file_stem(name: str) -> str:
    """``name`` as a URL-safe file name: each run of characters outside [A-Za-z0-9._-] becomes
    one '-' ('starry #2' -> 'starry-2'); never empty or starting with '.'."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")
    return stem or "model"


def _model_entry(model_path, site, taken, verify_size, printer) -> dict:
    """Exports ``model_path`` to ONNX (verified), copies it into ``site/models/`` and returns
    its manifest entry (for a net of N styles, with its ``style_input``: the page's style
    picker and blend). ``taken``: the names and file stems used so far (updated)."""
    description = describe_run(model_path)
    name = _unique(description["name"], taken.setdefault("names", set()))
    stem = _unique(file_stem(name), taken.setdefault("files", set()))
    with tempfile.TemporaryDirectory(prefix=".kstyle-web-", dir=site) as scratch:
        (result,) = export(model_path, scratch, formats=("onnx",), verify_size=verify_size,
                           printer=printer)  # fmt: skip
        if not result.passed:
            raise KstyleError(f"the ONNX export of {model_path} missed its bar: {result.shortfall}")
        target = f"models/{stem}.onnx"  # a URL path, relative to the page
        shutil.copyfile(result.path, os.path.join(site, target))
        with open(f"{result.path}.json") as file:  # the export's sidecar
            contract = json.load(file)
    entry = {**description, "name": name, "file": target}
    entry["sha256"] = file_sha256(os.path.join(site, target))
    entry["thumbnail"] = _thumbnail(style_image_path(model_path), site, stem)
    entry["input"] = {
        "name": "image",
        "dtype": "uint8",
        "shape": [1, None, None, 3],
        "layout": "NHWC",
        "channels": "RGB",
        "range": [0, 255],
        "size_multiple": contract["input"]["size_multiple"],
        "padding": "reflect at the bottom and right (edge where too small), cropped back",
    }
    if "style_input" in contract:  # a net of N styles: the page picks and blends them
        entry["style_input"] = _style_input(contract["style_input"], model_path, site, stem)
    entry["output"] = {"name": OUTPUT_NAME, "dtype": "uint8", "shape": "same as input"}
    return entry


def _thumbnail(style_image, site, stem) -> str | None:
    """The URL path of ``style_image``'s thumbnail, written into ``site/styles/`` as
    ``stem.jpg`` (``stem`` may hold a sub-folder); None when the image is missing or
    unreadable."""
    thumbnail = f"styles/{stem}.jpg"
    if not style_image:
        return None
    os.makedirs(os.path.dirname(os.path.join(site, thumbnail)), exist_ok=True)
    return thumbnail if write_thumbnail(style_image, os.path.join(site, thumbnail)) else None


def _style_input(contract, model_path, site, stem) -> dict:
    """The manifest's ``style_input`` of a net of N styles: the export's contract (name,
    dtype, shape [1, N]) and ``styles``, one ``{"name", "thumbnail"}`` per style."""
    images = style_image_paths(model_path)
    images = images if len(images) == len(contract["styles"]) else [None] * len(contract["styles"])
    styles = [
        {"name": style, "thumbnail": _thumbnail(image, site, f"{stem}/{index}")}
        for index, (style, image) in enumerate(zip(contract["styles"], images, strict=True))
    ]
    return {**contract, "shape": [1, len(styles)], "styles": styles}


def build_site(paths, output: str, verify_size: int = DEFAULT_VERIFY_SIZE, printer=print):
    """Writes the static site for the models ``paths`` name (see :func:`find_models`) to
    ``output`` and returns its manifest (a dict).

    The folder is built aside and renamed into place, replacing an earlier kstyle site there;
    a non-empty folder that is not one is refused.

    Raises:
        KstyleError: no model, a missing runtime (see :func:`runtime_record`), a refused
            ``output``, or an ONNX export that misses its fidelity bar.
    """
    import kstyle

    models = find_models(paths)
    check_output(output)
    runtime_dir, runtime = ensure_runtime()
    with atomic_directory(output) as site:
        for name in PAGE_FILES:
            shutil.copyfile(os.path.join(PAGE_DIR, name), os.path.join(site, name))
        os.makedirs(os.path.join(site, "runtime"))
        os.makedirs(os.path.join(site, "models"))
        os.makedirs(os.path.join(site, "styles"))
        for name in WEB_RUNTIME_FILES:
            shutil.copyfile(os.path.join(runtime_dir, name), os.path.join(site, "runtime", name))
        taken = {}
        entries = [_model_entry(path, site, taken, verify_size, printer) for path in models]
        manifest = {
            "kstyle_site": SITE_FORMAT,
            "kstyle_version": kstyle.__version__,
            "models": entries,
            "max_side": WEB_MAX_SIDE,
            "sample": write_sample(site),
            "runtime": {**runtime, "entry": WEB_RUNTIME_FILES[0], "wasm": WEB_RUNTIME_FILES[2]},
        }
        write_json_atomically(manifest, os.path.join(site, MANIFEST), sort_keys=False)
        with open(os.path.join(site, HEADERS_FILE), "w") as file:
            file.write(headers_file())
    printer(f"web page with {len(entries)} model(s) in {output}")
    return manifest
