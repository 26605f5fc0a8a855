"""Vendors the web page's runtime into the package: ``npm ci`` in web/ (the versions pinned by
web/package-lock.json), then copies the files a page needs into kstyle/web/runtime/ with
RUNTIME.json (package, version, sha256 of each file), which ``kstyle export --format web``
checks before it copies them into a site.

    python scripts/vendor_web_runtime.py              # npm ci, then copy
    python scripts/vendor_web_runtime.py --no-install # copy from an existing web/node_modules

Run it before building a wheel or sdist: kstyle/web/runtime/ is git-ignored package data.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from kstyle.constants import WEB_RUNTIME_FILES, WEB_RUNTIME_PACKAGE  # noqa: E402
from kstyle.files import file_sha256  # noqa: E402

WEB = os.path.join(ROOT, "web")
TARGET = os.path.join(ROOT, "kstyle", "web", "runtime")


def vendor(install: bool = True, target: str = TARGET, web: str = WEB) -> dict:
    """Copies the runtime's files from ``web``/node_modules into ``target`` (replacing it
    whole) and returns the RUNTIME.json record written beside them. Exits with one
    ``error:`` line (SystemExit) when npm, the package or one of its files is missing."""
    if install:
        if shutil.which("npm") is None:
            sys.exit("error: npm not found; install Node.js (20 or newer) and npm")
        # --ignore-scripts: no package's install script runs (protobufjs, from @litertjs/core)
        npm_ci = ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"]
        if subprocess.run(npm_ci, cwd=web).returncode:
            sys.exit("error: npm ci failed in web/ (see its output above)")
    package = os.path.join(web, "node_modules", WEB_RUNTIME_PACKAGE)
    if not os.path.isdir(package):
        sys.exit(f"error: {package} is missing; run without --no-install (npm ci)")
    with open(os.path.join(package, "package.json")) as file:
        version = json.load(file)["version"]
    os.makedirs(os.path.dirname(target), exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".runtime-", dir=os.path.dirname(target))
    try:
        files = {}
        for name in WEB_RUNTIME_FILES:
            source = os.path.join(package, "dist", name)
            if not os.path.isfile(source):
                sys.exit(f"error: {source} is missing; is {WEB_RUNTIME_PACKAGE} {version} the "
                         "version pinned in web/package-lock.json? (npm ci)")  # fmt: skip
            shutil.copyfile(source, os.path.join(staging, name))
            files[name] = file_sha256(os.path.join(staging, name))
        record = {"name": WEB_RUNTIME_PACKAGE, "version": version, "files": files}
        with open(os.path.join(staging, "RUNTIME.json"), "w") as file:
            json.dump(record, file, indent=2)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already after the rename
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-install", action="store_true", help="skip npm ci")
    args = parser.parse_args()
    record = vendor(install=not args.no_install)
    print(f"{record['name']} {record['version']}: {len(record['files'])} files in {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
