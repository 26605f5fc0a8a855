"""Vendors the web page's runtime into the package: ``npm ci`` of the versions pinned by
web/package-lock.json, in a temporary folder (no web/node_modules is left), then the files a
page needs are copied into kstyle/web/runtime/ with RUNTIME.json (package, version, sha256 of
each file), which ``kstyle export --format web`` checks before it copies them into a site.

    python scripts/vendor_web_runtime.py              # npm ci, then copy
    python scripts/vendor_web_runtime.py --no-install # copy from an existing web/node_modules

``kstyle export --format web`` and ``kstyle serve`` do the same by themselves in a checkout
that lacks the runtime (kstyle.web_runtime). Run it before building a wheel or sdist:
kstyle/web/runtime/ is git-ignored package data, which the wheel carries.
"""

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from kstyle.errors import KstyleError  # noqa: E402
from kstyle.web_runtime import CHECKOUT_WEB, RUNTIME_DIR, vendor_runtime  # noqa: E402


def vendor(install: bool = True, target: str = RUNTIME_DIR, web: str = CHECKOUT_WEB) -> dict:
    """:func:`kstyle.web_runtime.vendor_runtime` into ``target`` from ``web``; exits with one
    ``error:`` line (SystemExit) when npm, the package or one of its files is missing."""
    try:
        return vendor_runtime(target, web, install=install)
    except KstyleError as error:
        sys.exit(f"error: {error}")
    except OSError as error:  # web/'s files, or the disk
        sys.exit(f"error: {error.filename}: {error.strerror}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-install", action="store_true", help="skip npm ci")
    args = parser.parse_args()
    record = vendor(install=not args.no_install)
    print(f"{record['name']} {record['version']}: {len(record['files'])} files in {RUNTIME_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
