"""Two checkouts of kstyle, benchmarked in the same run: the speed of a change, before and after.

    git worktree add /tmp/before <commit>
    python bench/compare.py /tmp/before . --json compare.json

Runs ``bench/bench.py --quick`` of each checkout (with that checkout's own ``kstyle``), one
section at a time and the two checkouts alternately, so that drift on a shared machine hits
both alike, and prints every path's time before and after and their ratio (after / before).
Other arguments (after ``--``, e.g. ``-- --onednn default``) go to both bench runs.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

SECTIONS = ("train", "stylize", "pipeline")


def run_bench(checkout, section, extra, directory):
    """One section of ``checkout``'s bench/bench.py --quick; returns its list of runs."""
    target = os.path.join(directory, f"{os.path.basename(os.path.abspath(checkout))}-{section}")
    env = {**os.environ, "PYTHONPATH": os.path.abspath(checkout)}
    command = [sys.executable, os.path.join(checkout, "bench", "bench.py"), "--quick"]
    command += ["--sections", section, *extra, "--json", target]
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    with open(target) as file:
        return json.load(file)


def rows(runs):
    """{(section, key): seconds} of every timed path in a bench result."""
    found = {}
    for run in runs:
        onednn = run["onednn"]
        for row in run["train"]:
            key = f"oneDNN {onednn}, {row['mixed_precision']}, XLA {row['jit_compile']}"
            found[("train step", key)] = row["seconds_per_step"]
        for row in run["stylize"]:
            key = f"oneDNN {onednn}, {row['size']}², {row['path']}"
            found[("stylize", key)] = row["seconds"]
        for row in run["input_pipeline"]:
            key = f"oneDNN {onednn}, cache {row['cache']}"
            found[("input pipeline (s/image)", key)] = 1.0 / row["images_per_second"]
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", help="the checkout before the change")
    parser.add_argument("after", help="the checkout after the change")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="bench sections")
    parser.add_argument("--json", default=None, help="also write both results here")
    args, extra = parser.parse_known_args(argv)
    args.extra = [arg for arg in extra if arg != "--"]  # the rest goes to bench.py
    results = {"before": {}, "after": {}}
    with tempfile.TemporaryDirectory() as directory:
        for section in args.sections.split(","):
            for name in ("before", "after"):
                checkout = getattr(args, name)
                runs = run_bench(checkout, section, args.extra, directory)
                results[name].update(rows(runs))
                print(f"{section}: {name} done", file=sys.stderr, flush=True)
    print("| section | path | before (s) | after (s) | after / before |")
    print("|---|---|---|---|---|")
    worst = 0.0
    for key, before in results["before"].items():
        after = results["after"].get(key)
        if after is None:
            continue
        worst = max(worst, after / before)
        print(f"| {key[0]} | {key[1]} | {before:.4f} | {after:.4f} | {after / before:.2f}x |")
    print(f"\nslowest ratio: {worst:.2f}x")
    if args.json:
        serial = {name: {" / ".join(k): v for k, v in r.items()} for name, r in results.items()}
        with open(args.json, "w") as file:
            json.dump(serial, file, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
