"""Start-up time of kstyle's commands: ``--help`` (must not wait for TensorFlow) and
``kstyle info`` (which does import TensorFlow), each the median of several runs.

    python bench/startup.py [--repeat 7]

Prints a Markdown table: command, median and min wall seconds, and the ratio to a bare
``python -c pass`` measured in the same run.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "python -m kstyle --help": ["-m", "kstyle", "--help"],
    "python -m kstyle train --help": ["-m", "kstyle", "train", "--help"],
    "python train.py --help": [os.path.join(ROOT, "train.py"), "--help"],
    "python stylize.py --help": [os.path.join(ROOT, "stylize.py"), "--help"],
    "python export.py --help": [os.path.join(ROOT, "export.py"), "--help"],
    "python -m kstyle info": ["-m", "kstyle", "info"],
}


def wall_seconds(args, repeat):
    """Wall seconds of ``python ARGS``, ``repeat`` times (after one warm-up run)."""
    times = []
    for index in range(repeat + 1):
        start = time.perf_counter()
        subprocess.run([sys.executable, *args], capture_output=True, check=True, cwd=ROOT)
        if index:
            times.append(time.perf_counter() - start)
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="runs per command (default: 7)")
    args = parser.parse_args(argv)
    baseline = None
    print("| command | median s | min s | vs `python -c pass` |")
    print("|---|---|---|---|")
    for name, command in COMMANDS.items():
        times = wall_seconds(command, args.repeat if "info" not in name else 3)
        median = statistics.median(times)
        baseline = baseline or median
        print(f"| `{name}` | {median:.3f} | {min(times):.3f} | {median / baseline:.1f}x |")


if __name__ == "__main__":
    main()
