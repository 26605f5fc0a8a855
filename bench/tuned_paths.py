"""The stylize path ``kstyle tune`` chose on this machine against the default path, every
candidate path, a PyTorch implementation of the same network (eager and ``torch.compile``,
when torch is installed), and the 4096² float32 matmul peak, all in one run (a benchmark, not
a test; medians after a warm-up).

    python bench/tuned_paths.py                       # johnson at 256, 512 and 1024
    python bench/tuned_paths.py --arch tiny --sizes 256,512 --json out.json

The net is an untrained one with random instance-norm parameters (a trained net's arithmetic,
and the network ``kstyle tune --arch`` measures: every net of a preset shares its choice).
oneDNN is read when TensorFlow is imported, so this script sets it as the tuned choice says
(as ``kstyle stylize`` does) before it imports TensorFlow; ``--onednn on|off`` overrides.
Percent of peak counts the network's nominal FLOPs (``kstyle.flops``, unfused graph).
"""

import argparse
import json
import os
import platform
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))  # bench.py before the bench/ folder
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from kstyle.machine import cpu_flags, cpu_model  # noqa: E402
from kstyle.tuning import STYLIZE_CANDIDATES  # noqa: E402


def median_seconds(function, repeats):
    """Median seconds of ``repeats`` calls after one warm-up call (bench.py's)."""
    from bench import median_seconds as first_and_median

    return first_and_median(function, repeats)[1]


def tuned_choice(model_file):
    from kstyle.tuning import stylize_choice

    return stylize_choice(model_file)


def tensorflow_rows(model, sizes, repeats, choice):
    """Seconds of ``stylize_array`` on the default path and on ``choice``, and of each
    candidate path's bare pass, per size."""
    import numpy as np

    from kstyle.inference import stylize_array
    from kstyle.stylize_paths import PATHS, chosen_path, use_choice
    from kstyle.tune_worker import test_picture

    rows = []
    for size in sizes:
        image = test_picture(size).astype(np.uint8)
        batch = image[None].astype(np.float32)
        use_choice(None)
        row = {
            "size": size,
            "default": median_seconds(lambda i=image: stylize_array(model, i), repeats),
        }
        if choice is not None:
            use_choice(choice)
            row["tuned_path"] = chosen_path(size * size).name
            row["tuned"] = median_seconds(lambda i=image: stylize_array(model, i), repeats)
            use_choice(None)
        for name in STYLIZE_CANDIDATES:
            try:
                row[name] = median_seconds(lambda p=PATHS[name], b=batch: p.run(model, b), repeats)
            except Exception as error:  # e.g. LiteRT not installed
                row[name] = f"{type(error).__name__}"
        rows.append(row)
    return rows


def torch_rows(arch, sizes, repeats):
    """Seconds of a PyTorch implementation of ``arch`` (johnson only), eager and compiled;
    None without torch."""
    try:
        import torch
    except ImportError:
        return None
    from torch_peer import johnson_net

    net = johnson_net().eval()
    compiled = torch.compile(net)
    rows = []
    with torch.inference_mode():
        for size in sizes:
            batch = torch.rand(1, 3, size, size) * 255
            row = {"size": size, "torch eager": median_seconds(lambda b=batch: net(b), repeats)}
            row["torch.compile"] = median_seconds(lambda b=batch: compiled(b), repeats)
            rows.append(row)
    return {"version": torch.__version__, "threads": torch.get_num_threads(), "rows": rows}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="johnson")
    parser.add_argument("--sizes", default="256,512,1024")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--onednn", choices=("tuned", "on", "off"), default="tuned")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",")]
    folder = tempfile.mkdtemp()
    model_file = _net_file(args.arch, folder)
    choice = tuned_choice(model_file)
    if args.onednn != "tuned":
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1" if args.onednn == "on" else "0"
    elif choice is not None:
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1" if choice["onednn"] else "0"
    load = os.getloadavg()
    from bench import matmul_peak_gflops
    from kstyle.flops import count_flops
    from kstyle.transform_net import load_transform_net

    model = load_transform_net(model_file)
    result = {
        "cpu": cpu_model(),
        "flags": sorted(
            cpu_flags() & {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile"}
        ),
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "TensorFlow's default"),
        "choice": None if choice is None else choice["sizes"],
        "load_before": load,
        "peak_gflops": matmul_peak_gflops(),
        "gflop": {size: count_flops(model, size, size) / 1e9 for size in sizes},
        "tensorflow": tensorflow_rows(model, sizes, args.repeats, choice),
        "torch": None if args.no_torch else torch_rows(args.arch, sizes, args.repeats),
        "load_after": os.getloadavg(),
        "python": platform.python_version(),
    }
    print("\n".join(report(result)))
    if args.json:
        with open(args.json, "w") as file:
            json.dump(result, file, indent=2)


def _net_file(arch, folder):
    from kstyle.cli.tune import untrained_net_file

    return untrained_net_file(arch, "zeros", folder)


def report(result) -> list:
    """The result as Markdown lines: seconds and percent of the matmul peak."""
    torch = {row["size"]: row for row in (result["torch"] or {}).get("rows", [])}
    lines = [
        f"{result['cpu']}; flags {' '.join(result['flags'])}; oneDNN {result['onednn']}; "
        f"matmul peak {result['peak_gflops']:.0f} GFLOP/s; load {result['load_before']} -> "
        f"{result['load_after']}",
        "",
        "| size | default s | tuned path | tuned s | % of peak (tuned) | torch.compile s | "
        "tuned vs torch.compile |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["tensorflow"]:
        size, tuned = row["size"], row.get("tuned", row["default"])
        percent = 100 * result["gflop"][size] / tuned / result["peak_gflops"]
        peer = torch.get(size, {}).get("torch.compile")
        ratio = f"{peer / tuned:.2f}× faster" if peer else "–"
        lines.append(
            f"| {size}² | {row['default']:.4f} | {row.get('tuned_path', '(no choice)')} | "
            f"{tuned:.4f} | {percent:.0f} % | {peer and f'{peer:.4f}' or '–'} | {ratio} |"
        )
    lines += ["", "| size | " + " | ".join(STYLIZE_CANDIDATES) + " |"]
    lines.append("|---|" + "---|" * len(STYLIZE_CANDIDATES))
    for row in result["tensorflow"]:
        cells = [
            f"{row[n]:.4f}" if isinstance(row[n], float) else row[n] for n in STYLIZE_CANDIDATES
        ]
        lines.append(f"| {row['size']}² | " + " | ".join(cells) + " |")
    return lines


if __name__ == "__main__":
    main()
