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

from kstyle.constants import (
    DEFAULT_SERVE_PORT,
    DEFAULT_VERIFY_SIZE,
    WEB_MAX_SIDE,
    WEB_RUNTIME_FILES,
)
from kstyle.errors import KstyleError
from kstyle.export.serving import OUTPUT_NAME
from kstyle.export.writer import describe_model, export
from kstyle.files import atomic_directory, file_sha256, write_json_atomically
from kstyle.smoke import smoke_line
from kstyle.web_runtime import (  # RUNTIME_DIR and runtime_record: also imported from here
    PACKAGE_DIR,
    RUNTIME_DIR,  # noqa: F401
    ensure_runtime,
    runtime_record,  # noqa: F401
)

PAGE_DIR = os.path.join(PACKAGE_DIR, "web", "page")
PAGE_FILES = ("index.html", "app.js", "worker.js", "pixels.js", "style.css")
MANIFEST = "manifest.json"
SITE_FORMAT = 1  # manifest.json's "kstyle_site": what marks a folder as a kstyle site


def is_site(folder: str) -> bool:
    """Whether ``folder`` holds a site written by :func:`build_site` (its manifest says so)."""
    try:
        with open(os.path.join(folder, MANIFEST)) as file:
            return json.load(file).get("kstyle_site") == SITE_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def site_smoke_notes(folder: str) -> list[str]:
    """The smoke-test notes (``kstyle.smoke``) of the models in the site ``folder``, from its
    manifest's entries, which carry their models' marks: one per smoke test's model."""
    with open(os.path.join(folder, MANIFEST)) as file:
        entries = json.load(file).get("models") or []
    return [
        smoke_line(f"{entry.get('file')} in {folder}", tense="learned")
        for entry in entries
        if isinstance(entry, dict) and entry.get("smoke_test") is True
    ]


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


def describe_run(model_path: str) -> dict:
    """Name, style and preset (``arch``) of a model, from its run's config.json if any."""
    description = describe_model(model_path)
    config_path = os.path.join(os.path.dirname(os.path.abspath(model_path)), "config.json")
    arch = None
    try:
        with open(config_path) as file:
            arch = json.load(file).get("arch")
    except (OSError, ValueError, AttributeError):
        arch = None
    return {**description, "arch": arch}


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
    its manifest entry. ``taken``: the names and file stems used so far (updated)."""
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
            multiple = json.load(file)["input"]["min_size"]
    return {
        **description,
        "name": name,
        "file": target,
        "sha256": file_sha256(os.path.join(site, target)),
        "input": {
            "name": "image",
            "dtype": "uint8",
            "shape": [1, None, None, 3],
            "layout": "NHWC",
            "channels": "RGB",
            "range": [0, 255],
            "size_multiple": multiple,
            "padding": "reflect at the bottom and right (edge where too small), cropped back",
        },
        "output": {"name": OUTPUT_NAME, "dtype": "uint8", "shape": "same as input"},
    }


# The headers a page's files are served with (by ``kstyle serve``, and by static hosts that
# read the site's ``_headers`` file); COOP/COEP make the page cross-origin isolated, which
# multi-threaded wasm (SharedArrayBuffer) needs.
ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
}
HEADERS_FILE = "_headers"  # Netlify's and Cloudflare Pages' per-path headers file


def headers_file() -> str:
    """The text of the site's ``_headers`` file (Netlify / Cloudflare Pages syntax): every path
    with :data:`ISOLATION_HEADERS`."""
    lines = ["/*"] + [f"  {key}: {value}" for key, value in ISOLATION_HEADERS.items()]
    return "\n".join(lines) + "\n"


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
        for name in WEB_RUNTIME_FILES:
            shutil.copyfile(os.path.join(runtime_dir, name), os.path.join(site, "runtime", name))
        taken = {}
        entries = [_model_entry(path, site, taken, verify_size, printer) for path in models]
        manifest = {
            "kstyle_site": SITE_FORMAT,
            "kstyle_version": kstyle.__version__,
            "models": entries,
            "max_side": WEB_MAX_SIDE,
            "runtime": {**runtime, "entry": WEB_RUNTIME_FILES[0]},
        }
        write_json_atomically(manifest, os.path.join(site, MANIFEST), sort_keys=False)
        with open(os.path.join(site, HEADERS_FILE), "w") as file:
            file.write(headers_file())
    printer(f"web page with {len(entries)} model(s) in {output}")
    return manifest


CONTENT_TYPES = {".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm",
                 ".json": "application/json", ".onnx": "application/octet-stream"}  # fmt: skip


def site_server(folder: str, port: int = DEFAULT_SERVE_PORT, host: str = "127.0.0.1", log=None):
    """An HTTP server (not yet serving: call ``serve_forever``) for the site in ``folder`` on
    ``host:port`` (port 0: any free one; ``server.server_address`` says which), sending
    :data:`ISOLATION_HEADERS`. ``log``, if given, is called with each request's line.

    Raises:
        KstyleError: the port is in use or cannot be bound.
    """
    import functools
    import http.server

    class Handler(http.server.SimpleHTTPRequestHandler):
        extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, **CONTENT_TYPES}

        def end_headers(self):
            for key, value in ISOLATION_HEADERS.items():
                self.send_header(key, value)
            self.send_header("Cache-Control", "no-cache")
            super().end_headers()

        def log_message(self, format, *args):  # noqa: A002 (the base class's name)
            if log is not None:
                log(format % args)

    try:
        return http.server.ThreadingHTTPServer(
            (host, port), functools.partial(Handler, directory=folder)
        )
    except OSError as error:
        raise KstyleError(f"cannot serve on {host}:{port}: {error.strerror or error}") from None
