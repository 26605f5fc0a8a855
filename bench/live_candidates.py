"""Which live network: candidates for the frame budget, profiled per layer at 720p (a benchmark,
not a test).

    python bench/live_candidates.py                       # every candidate, 720p and 256²
    python bench/live_candidates.py --only tiny,live --profile-top 12

For each candidate (``CANDIDATES``: the ``tiny`` preset and variants of
:func:`kstyle.transform_net.build_live_net`): parameters, GFLOP at 256² and 720p, the share of
FLOPs in layers that read or write full-resolution tensors, and on ``--threads`` threads:

- LiteRT latency, fp32 and int8 (``kstyle.export.tflite_bytes``, calibrated on 8 of
  kstyle.demo's sample photos), batch 1, uint8 in and out, median of ``--repeat`` calls after a
  warm-up, at 720p and 256²;
- an ONNX Runtime profile of the ONNX export at 720p (``SessionOptions.enable_profiling``): the
  time per op type and the slowest nodes, the median over ``--repeat`` runs, so that the cost
  of each layer, norms, pads and the output included, shows.

The nets are untrained, with random instance-norm scales and offsets (the latency of a trained
net). Prints Markdown tables with the CPU flags and the load average.
"""

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile

from realtime import FLAGS_SHOWN, randomize_norms  # bench/: one rule for both

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = {"720p": (720, 1280), "256²": (256, 256)}

# name -> build_live_net knobs (or a preset name)
CANDIDATES = {
    "tiny": "tiny",
    "live": "live",
    "k1": dict(quarter=16, eighth=64, blocks=4, out_kernel=1),
    "no_block_norms": dict(quarter=16, eighth=64, blocks=4, out_kernel=3, block_norms=False),
    "q24e96b4": dict(quarter=24, eighth=96, blocks=4, out_kernel=3),
    "q16e48b3": dict(quarter=16, eighth=48, blocks=3, out_kernel=3),
}


def build(name, seed=0):
    """The candidate ``name`` with random norm parameters."""
    import keras

    from kstyle.transform_net import build_live_net, build_transform_net

    keras.utils.set_random_seed(seed)
    knobs = CANDIDATES[name]
    net = build_transform_net(knobs) if isinstance(knobs, str) else build_live_net(**knobs)
    return randomize_norms(net, seed)


def full_resolution_share(net) -> float:
    """The fraction of ``net``'s FLOPs in layers whose input or output is full resolution."""
    from kstyle.flops import layer_flops

    flops = layer_flops(net, 256, 256)
    full = sum(count for count, scale in flops.values() if scale == 1)
    return full / sum(count for count, _ in flops.values())


def onnx_profile(net, image, repeat, directory) -> dict:
    """``{op type: median ms}`` and ``{node: median ms}`` of ONNX Runtime at ``image``'s size."""
    import onnxruntime

    from kstyle.export.serving import export_model

    path = os.path.join(directory, "model.onnx")
    serving = export_model(net)
    serving(image[None])
    serving.export(path, format="onnx", verbose=False)
    options = onnxruntime.SessionOptions()
    options.enable_profiling = True
    options.intra_op_num_threads = ARGS.threads
    options.profile_file_prefix = os.path.join(directory, "profile")
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: image[None]}
    for _ in range(repeat + 1):
        session.run(None, feed)
    with open(session.end_profiling()) as file:
        events = json.load(file)
    per_node = collections.defaultdict(list)
    op_type = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            node = event["name"][: -len("_kernel_time")]
            per_node[node].append(event["dur"] / 1000)
            op_type[node] = event["args"].get("op_name", "?")
    nodes = {node: statistics.median(times[1:] or times) for node, times in per_node.items()}
    types = collections.Counter()
    for node, ms in nodes.items():
        types[op_type[node]] += ms
    return {"types": dict(types), "nodes": nodes, "op_type": op_type}


def litert_ms(net, image, quantize, calibration, directory) -> float:
    """LiteRT's median ms on ``image`` of ``net`` exported for ``image``'s fixed size."""
    import numpy as np
    from export_formats import median_ms
    from PIL import Image

    from kstyle.export import Runner, tflite_bytes

    path = os.path.join(directory, f"{quantize}.tflite")
    size = image.shape[:2]
    calibration = [  # a fixed-size model calibrates on images of its size
        np.asarray(Image.fromarray(photo).resize(size[::-1], Image.BILINEAR))
        for photo in calibration
    ]
    with open(path, "wb") as file:
        file.write(tflite_bytes(net, quantize, size, calibration_images=calibration))
    return median_ms(Runner("tflite", path, num_threads=ARGS.threads), image, ARGS.repeat)


def measure(name, calibration) -> dict:
    from kstyle.export.verify import held_out_image
    from kstyle.flops import count_flops

    net = build(name)
    row = {
        "name": name,
        "params": net.count_params(),
        "gflop_256": count_flops(net, 256, 256) / 1e9,
        "gflop_720p": count_flops(net, 720, 1280) / 1e9,
        "full_share": full_resolution_share(net),
    }
    with tempfile.TemporaryDirectory() as directory:
        for size, (height, width) in SIZES.items():
            image = held_out_image(height, width)
            for quantize in ("none", "int8"):
                row[f"{quantize} {size}"] = litert_ms(net, image, quantize, calibration, directory)
                print(f"{name} {size} {quantize}: {row[f'{quantize} {size}']:.1f} ms", flush=True)
        row["profile"] = onnx_profile(net, held_out_image(*SIZES["720p"]), ARGS.repeat, directory)
    return row


def machine_line() -> str:
    with open("/proc/cpuinfo") as file:
        info = file.read()
    model = next(
        line.split(":", 1)[1].strip() for line in info.splitlines() if "model name" in line
    )
    flags = set(next(line for line in info.splitlines() if line.startswith("flags")).split())
    shown = " ".join(flag for flag in FLAGS_SHOWN if flag in flags)
    return f"{model}, {os.cpu_count()} CPUs, flags {shown}; load average {os.getloadavg()}"


def report(rows, top):
    print(f"\nMachine: {machine_line()}; {ARGS.threads} threads\n")
    print(
        "| net | parameters | GFLOP 256² | GFLOP 720p | full-res FLOP share "
        "| LiteRT fp32 720p ms | int8 720p ms | fp32 256² ms | int8 256² ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['name']} | {row['params']:,} | {row['gflop_256']:.3f} | "
            f"{row['gflop_720p']:.2f} | {row['full_share']:.1%} | {row['none 720p']:.1f} | "
            f"{row['int8 720p']:.1f} | {row['none 256²']:.2f} | {row['int8 256²']:.2f} |"
        )
    for row in rows:
        profile = row["profile"]
        total = sum(profile["nodes"].values())
        print(f"\nONNX Runtime at 720p, {row['name']}: {total:.1f} ms of kernels; by op type:")
        for op, ms in sorted(profile["types"].items(), key=lambda item: -item[1]):
            print(f"- {op}: {ms:.2f} ms ({ms / total:.0%})")
        print(f"slowest {top} nodes:")
        for node, ms in sorted(profile["nodes"].items(), key=lambda item: -item[1])[:top]:
            print(f"- {node} ({profile['op_type'][node]}): {ms:.2f} ms")


def main(argv=None):
    global ARGS
    sys.path.insert(0, ROOT)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(CANDIDATES), help="candidates to run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile-top", type=int, default=8)
    parser.add_argument("--json", default=None, help="also write the rows here")
    ARGS = parser.parse_args(argv)
    from kstyle.demo import make_content_images
    from kstyle.export.writer import load_calibration_images

    with tempfile.TemporaryDirectory() as folder:
        make_content_images(folder, count=8, size=256)
        calibration = load_calibration_images(folder, 8, 256)
    rows = [measure(name, calibration) for name in ARGS.only.split(",")]
    report(rows, ARGS.profile_top)
    if ARGS.json:
        with open(ARGS.json, "w") as file:
            json.dump(rows, file, indent=1)


ARGS = None
if __name__ == "__main__":
    main()
