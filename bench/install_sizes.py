"""Installed size of kstyle's core and of each extra, each in a fresh virtual environment.

For every variant (core, export, video, coco, all) this makes a venv under a temporary
folder with ``python3.11 -m venv``, runs ``pip install "ROOT[extra]"`` (non-editable), and
records ``du -s`` of its site-packages and each installed distribution's size (the files
its RECORD lists). It prints a Markdown table for docs/install.md: each variant's size, its
growth over the core and the distributions it adds, biggest first. The venvs are deleted.

    python bench/install_sizes.py [--python python3.11] [--variants core export ...]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = ("core", "export", "video", "coco", "all")
MB = 2**20
CORE_LISTED = 6  # the core row names its biggest distributions
SIZES_SNIPPET = """
import importlib.metadata as m, json, os
sizes = {}
for dist in m.distributions():
    total = 0
    for file in dist.files or ():
        path = dist.locate_file(file)
        if os.path.isfile(path):
            total += os.path.getsize(path)
    sizes[dist.metadata["Name"].lower()] = [dist.version, total]
print(json.dumps(sizes))
"""


def measure(python: str, variant: str, work: str) -> dict:
    """Installs one variant into a fresh venv; returns its sizes (bytes) and install time."""
    venv = os.path.join(work, variant)
    subprocess.run([python, "-m", "venv", venv], check=True)
    pip = os.path.join(venv, "bin", "pip")
    target = ROOT if variant == "core" else f"{ROOT}[{variant}]"
    start = time.monotonic()
    subprocess.run([pip, "install", "-q", target], check=True)
    seconds = time.monotonic() - start
    (site,) = [
        os.path.join(root, name)
        for root, names, _ in os.walk(os.path.join(venv, "lib"))
        for name in names
        if name == "site-packages"
    ]
    du = subprocess.run(["du", "-sk", site], check=True, capture_output=True, text=True)
    sizes = subprocess.run(
        [os.path.join(venv, "bin", "python"), "-c", SIZES_SNIPPET],
        check=True,
        capture_output=True,
        text=True,
    )
    shutil.rmtree(venv)
    return {
        "site_packages_kib": int(du.stdout.split()[0]),
        "distributions": json.loads(sizes.stdout),
        "install_seconds": round(seconds),
    }


def _listing(distributions: dict, limit: int | None = None) -> str:
    """``name version (size)`` of each distribution of 1 MB or more, biggest first (at most
    ``limit``), then the count and total size of the rest."""
    ranked = sorted(distributions.items(), key=lambda item: -item[1][1])
    shown = [(n, v, s) for n, (v, s) in ranked if s >= MB][:limit]
    rest = [s for _, (_, s) in ranked][len(shown) :]
    parts = [f"{name} {version} ({size / MB:.0f} MB)" for name, version, size in shown]
    if rest:
        parts.append(f"{len(rest)} smaller ({sum(rest) / MB:.1f} MB)")
    return ", ".join(parts)


def table(results: dict) -> str:
    """The Markdown table: size, growth over the core and what each install adds (the core:
    its biggest distributions)."""
    core = results.get("core")
    lines = [
        "| install | site-packages | over the core | adds (biggest first) |",
        "|---|---:|---:|---|",
    ]
    for variant, result in results.items():
        mb = result["site_packages_kib"] / 1024
        name = "kstyle" if variant == "core" else f"kstyle[{variant}]"
        if variant == "core" or core is None:
            growth = ""
            added = _listing(result["distributions"], limit=CORE_LISTED)
        else:
            growth = f"+{mb - core['site_packages_kib'] / 1024:.0f} MB"
            added = _listing(
                {
                    dist: value
                    for dist, value in result["distributions"].items()
                    if dist not in core["distributions"]
                }
            )
        lines.append(f"| `{name}` | {mb:.0f} MB | {growth} | {added} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default="python3.11", help="interpreter for the venvs")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--json", help="also write the raw sizes to this JSON file")
    parser.add_argument("--from-json", help="print the table of a JSON file --json wrote")
    args = parser.parse_args(argv)
    if args.from_json:
        with open(args.from_json) as file:
            print(table(json.load(file)))
        return 0
    results = {}
    with tempfile.TemporaryDirectory(prefix="kstyle-sizes-") as work:
        for variant in args.variants:
            results[variant] = measure(args.python, variant, work)
            print(
                f"{variant}: {results[variant]['site_packages_kib'] / 1024:.0f} MB "
                f"in {results[variant]['install_seconds']} s",
                file=sys.stderr,
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as file:
            json.dump(results, file, indent=1)
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
