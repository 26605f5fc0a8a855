"""The web page's in-browser runtime (the files of the npm package ``onnxruntime-web`` that a
page needs), vendored into ``kstyle/web/runtime/`` with ``RUNTIME.json`` (package, version,
sha256 of each file).

An installed wheel carries it (it is built from a checkout that vendored it). In a checkout
(``web/package-lock.json`` beside the package) :func:`ensure_runtime` vendors it on first
use when npm is installed: ``npm ci`` of the pinned versions in a temporary folder, then the
files are copied in and the folder deleted, so the checkout gets no ``node_modules``.
"""

import contextlib
import json
import logging
import os
import shutil
import subprocess
import tempfile

from kstyle.constants import WEB_RUNTIME_FILES, WEB_RUNTIME_PACKAGE
from kstyle.errors import KstyleError
from kstyle.files import atomic_directory, file_sha256, write_json_atomically

logger = logging.getLogger(__name__)

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
RUNTIME_DIR = os.path.join(PACKAGE_DIR, "web", "runtime")
# A checkout's npm project, which pins the runtime (absent from an installed wheel).
CHECKOUT_WEB = os.path.join(os.path.dirname(PACKAGE_DIR), "web")
NPM_PROJECT = "kstyle-web-runtime"  # web/package.json's name: what marks it as kstyle's
NPM_FILES = ("package.json", "package-lock.json")
# --ignore-scripts: no package's install script runs (protobufjs, from @litertjs/core)
NPM_CI = ("npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund")
NPM_COST = "a download of about 56 MB from the npm registry"
VENDOR_HINT = "run 'python scripts/vendor_web_runtime.py' in a kstyle checkout (needs npm)"


def runtime_record(runtime_dir: str | None = None) -> dict:
    """The vendored runtime's RUNTIME.json (``name``, ``version``, ``files``: name -> sha256),
    after checking that each file is present with that hash. ``runtime_dir`` defaults to
    :data:`RUNTIME_DIR`.

    Raises:
        KstyleError: the runtime is missing, incomplete or changed since it was vendored.
    """
    runtime_dir = runtime_dir or RUNTIME_DIR
    try:
        with open(os.path.join(runtime_dir, "RUNTIME.json")) as file:
            record = json.load(file)
    except (OSError, ValueError):
        raise KstyleError(f"the web runtime is missing from {runtime_dir}; {VENDOR_HINT}") from None
    for name in WEB_RUNTIME_FILES:
        path = os.path.join(runtime_dir, name)
        expected = record.get("files", {}).get(name)
        if not os.path.isfile(path) or expected is None or file_sha256(path) != expected:
            raise KstyleError(f"the web runtime file {path} is missing or changed; {VENDOR_HINT}")
    return record


def pinned_version(web: str | None = None) -> str | None:
    """The runtime's version that ``web``/package-lock.json pins (``web`` defaults to
    :data:`CHECKOUT_WEB`); None where ``web`` is not kstyle's npm project (an installed
    wheel has none)."""
    web = web or CHECKOUT_WEB
    try:
        with open(os.path.join(web, "package.json")) as file:
            if json.load(file).get("name") != NPM_PROJECT:
                return None
        with open(os.path.join(web, "package-lock.json")) as file:
            packages = json.load(file)["packages"]
        return packages[f"node_modules/{WEB_RUNTIME_PACKAGE}"]["version"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _why_vendor(runtime_dir: str, version: str) -> str | None:
    """Why the runtime in ``runtime_dir`` must be vendored (missing, changed, or not the
    ``version`` pinned); None when it is fine."""
    try:
        record = runtime_record(runtime_dir)
    except KstyleError:
        if os.path.isfile(os.path.join(runtime_dir, "RUNTIME.json")):
            return "the web runtime is incomplete or changed"
        return "the web runtime is not vendored yet"
    if record.get("version") != version:
        return f"the web runtime is {WEB_RUNTIME_PACKAGE} {record.get('version')}, not {version}"
    return None


def ensure_runtime(runtime_dir: str | None = None, web: str | None = None):
    """The folder of a checked runtime and its record (see :func:`runtime_record`), as a pair.

    In a checkout (``web`` is kstyle's npm project; default :data:`CHECKOUT_WEB`) a runtime
    that is missing, changed or not the pinned version is vendored first
    (:func:`vendor_runtime`), saying so in one logged line (info); elsewhere (an installed
    wheel) it is only checked.

    Raises:
        KstyleError: no usable runtime and none can be vendored (not a checkout, npm missing,
            ``npm ci`` failed), one line.
    """
    runtime_dir, web = runtime_dir or RUNTIME_DIR, web or CHECKOUT_WEB
    version = pinned_version(web)
    if version is None:
        return runtime_dir, runtime_record(runtime_dir)
    reason = _why_vendor(runtime_dir, version)
    if reason is not None:
        if shutil.which(NPM_CI[0]) is None:
            with contextlib.suppress(KstyleError):  # intact, only not the pinned version
                record = runtime_record(runtime_dir)
                logger.warning("%s (npm is not installed to fetch it): using it", reason)
                return runtime_dir, record
            raise KstyleError(
                f"{reason} in {runtime_dir}, and npm is not installed to fetch it: install "
                "Node.js (20 or newer) and npm, then run this again"
            )
        with _locked(os.path.dirname(runtime_dir), wait_message=True):
            reason = _why_vendor(runtime_dir, version)  # None: another process just did it
            if reason is not None:
                lockfile = os.path.join(web, "package-lock.json")
                logger.info("%s: running npm ci from %s (once; %s)", reason, lockfile, NPM_COST)
                _vendor_unlocked(runtime_dir, web, install=True)
    return runtime_dir, runtime_record(runtime_dir)


def vendor_runtime(
    runtime_dir: str | None = None, web: str | None = None, install: bool = True
) -> dict:
    """Vendors the runtime pinned by ``web``/package-lock.json into ``runtime_dir`` (replacing
    it whole, atomically) and returns the RUNTIME.json record written beside its files.

    With ``install``, ``npm ci`` runs in a temporary folder that holds a copy of ``web``'s
    package.json and package-lock.json, deleted afterwards; without, the files come from an
    existing ``web``/node_modules. Processes that vendor at once take turns (a lock on
    ``runtime_dir``'s parent folder, where the OS has ``flock``).

    Raises:
        KstyleError: npm missing, ``npm ci`` failed, or the package lacks a file (one line).
    """
    runtime_dir, web = runtime_dir or RUNTIME_DIR, web or CHECKOUT_WEB
    with _locked(os.path.dirname(runtime_dir)):
        return _vendor_unlocked(runtime_dir, web, install)


def _vendor_unlocked(runtime_dir: str, web: str, install: bool) -> dict:
    """:func:`vendor_runtime`, its lock held."""
    if not install:
        return _copy_runtime(os.path.join(web, "node_modules"), runtime_dir)
    if shutil.which(NPM_CI[0]) is None:
        raise KstyleError("npm not found; install Node.js (20 or newer) and npm")
    with tempfile.TemporaryDirectory(prefix="kstyle-npm-") as work:
        for name in NPM_FILES:
            shutil.copyfile(os.path.join(web, name), os.path.join(work, name))
        _npm_ci(work)
        return _copy_runtime(os.path.join(work, "node_modules"), runtime_dir)


def _npm_ci(folder: str) -> None:
    """Runs ``npm ci`` in ``folder``; its output is kept and only its first error line is
    shown, in the KstyleError of a failure."""
    done = subprocess.run(NPM_CI, cwd=folder, capture_output=True, text=True)
    if done.returncode:
        lines = [line.strip() for line in (done.stderr + done.stdout).splitlines()]
        errors = [line for line in lines if line.startswith(("npm error", "npm ERR!"))]
        why = (errors or [line for line in lines if line] or ["no output"])[0]
        raise KstyleError(f"npm ci failed (exit status {done.returncode}): {why}")


def _copy_runtime(node_modules: str, runtime_dir: str) -> dict:
    """Copies the runtime's files from ``node_modules`` into ``runtime_dir`` (built aside and
    renamed into place) with RUNTIME.json; returns that record."""
    package = os.path.join(node_modules, WEB_RUNTIME_PACKAGE)
    try:
        with open(os.path.join(package, "package.json")) as file:
            version = json.load(file)["version"]
    except (OSError, ValueError, KeyError, TypeError):
        raise KstyleError(f"{package} is missing or has no version; run npm ci") from None
    with atomic_directory(runtime_dir) as staging:
        files = {}
        for name in WEB_RUNTIME_FILES:
            source = os.path.join(package, "dist", name)
            if not os.path.isfile(source):
                raise KstyleError(f"{source} is missing; is {WEB_RUNTIME_PACKAGE} {version} the "
                                  "version pinned in web/package-lock.json? (npm ci)")  # fmt: skip
            shutil.copyfile(source, os.path.join(staging, name))
            files[name] = file_sha256(os.path.join(staging, name))
        record = {"name": WEB_RUNTIME_PACKAGE, "version": version, "files": files}
        write_json_atomically(record, os.path.join(staging, "RUNTIME.json"), sort_keys=False)
    return record


@contextlib.contextmanager
def _locked(folder: str, wait_message: bool = False):
    """Holds an exclusive ``flock`` on ``folder`` (made if missing) for the ``with`` block,
    logging a line (with ``wait_message``) when it waits for another process; nothing is
    locked where there is no ``fcntl`` (Windows). The lock dies with its process."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    os.makedirs(folder, exist_ok=True)
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if wait_message:
                logger.info("waiting for another process that is vendoring the web runtime")
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock
