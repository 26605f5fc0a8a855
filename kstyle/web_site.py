"""A built web page's folder (``kstyle export --format web``) as ``kstyle serve`` needs it: what
marks a folder as a kstyle site, its models' smoke-test notes, the cross-origin isolation
headers, and a local HTTP server for it. This module does not import TensorFlow, so serving a
built site starts at once; building one is :mod:`kstyle.export.web`.
"""

import json
import os

from kstyle.constants import DEFAULT_SERVE_PORT
from kstyle.errors import KstyleError
from kstyle.smoke import smoke_line

MANIFEST = "manifest.json"
SITE_FORMAT = 1  # manifest.json's "kstyle_site": what marks a folder as a kstyle site

# The headers a page's files are served with (by ``kstyle serve``, and by static hosts that
# read the site's ``_headers`` file); COOP/COEP make the page cross-origin isolated, which
# multi-threaded wasm (SharedArrayBuffer) needs.
ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
}
HEADERS_FILE = "_headers"  # Netlify's and Cloudflare Pages' per-path headers file

CONTENT_TYPES = {".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm",
                 ".json": "application/json", ".onnx": "application/octet-stream"}  # fmt: skip


def is_site(folder: str) -> bool:
    """Whether ``folder`` holds a site written by ``kstyle export --format web`` (its manifest
    says so)."""
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


def headers_file() -> str:
    """The text of the site's ``_headers`` file (Netlify / Cloudflare Pages syntax): every path
    with :data:`ISOLATION_HEADERS`."""
    lines = ["/*"] + [f"  {key}: {value}" for key, value in ISOLATION_HEADERS.items()]
    return "\n".join(lines) + "\n"


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
