"""The measured margin of each numeric bar in tests/ on several CPU code paths (a benchmark,
not a test).

    python bench/bar_margins.py [--seeds 0,1,2] [--paths default,AVX2,...] [--out DIR]
        [--seed-paths default,AVX2,no-oneDNN] [--ablations no_balance,no_equalize]
    python bench/bar_margins.py --records DIR/records.json [...]   (tabulate earlier runs)

The tests marked ``numeric`` (pytest -m numeric) check values that depend on the CPU's
kernels: int8 PSNR against the Keras model, fp32 TFLite / ONNX / SavedModel levels, fused and
tiled against plain. Each runs its check through the ``bars`` fixture of tests/conftest.py,
which, under ``KSTYLE_RECORD_BARS=FILE``, appends the measured value and the bar to FILE. This
bench runs those tests in a fresh process per CPU path (oneDNN and LiteRT read their settings
at import), and per seed of the nets the export tests train (``KSTYLE_TEST_TRAIN_SEED``: the
first seed runs every numeric test; the others run only :data:`SEEDED`, the tests of those
nets, on ``--seed-paths``), then prints one Markdown row per bar: its worst measured value on
each path and the margin left on the worst path.

Paths: ``default`` (oneDNN with the CPU's best ISA), ``AVX2`` and ``AVX512_CORE``
(``ONEDNN_MAX_CPU_ISA``: an older CPU's kernels), ``no-oneDNN`` (``TF_ENABLE_ONEDNN_OPTS=0``:
Eigen's kernels) and ``LiteRT-1``/``LiteRT-2`` (LiteRT with 1 or 2 threads; only the tests that
run LiteRT). ``--ablations`` also runs the int8 tests with one part of the int8 recipe switched
off (on the default path, each seed), to show that their bars catch that regression: those
tests are expected to fail, their values are what counts.

This file is also the pytest plugin (``-p bar_margins``) that sets LiteRT's thread count
(``KSTYLE_BENCH_LITERT_THREADS``) and the ablations (``KSTYLE_BENCH_ABLATION``) in the test
process.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THREADS_VARIABLE = "KSTYLE_BENCH_LITERT_THREADS"
ABLATION_VARIABLE = "KSTYLE_BENCH_ABLATION"
PATHS = {
    "default": {},
    "AVX2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "AVX512_CORE": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"},
    "no-oneDNN": {"TF_ENABLE_ONEDNN_OPTS": "0"},
    "LiteRT-1": {THREADS_VARIABLE: "1"},
    "LiteRT-2": {THREADS_VARIABLE: "2"},
}
LITERT_ONLY = "tflite or int8"  # the -k expression of the tests that run LiteRT
# The numeric tests whose nets the seed changes (export_run and tiny_run of tests/conftest.py).
SEEDED = [
    "tests/test_export_int8.py::test_int8_is_integer_and_meets_its_bar",
    "tests/test_export_int8.py::test_int8_tiny_preset",
    "tests/test_export_int8.py::test_int8_meets_its_bar_at_256",
    "tests/test_export_verify.py::test_quantized_tflite_meets_its_bar",
    "tests/test_export_writer.py::test_the_tiny_preset_exports_to_onnx",
]
# The int8 tests re-run under each ablation; bench/int8_study.py measures more variants.
ABLATED = SEEDED[:3]
ABLATIONS = ("no_balance", "no_equalize")


def pytest_configure(config):
    """(As the ``-p bar_margins`` plugin.) Applies the LiteRT thread count and the ablation
    named in the environment."""
    import functools

    threads = os.environ.get(THREADS_VARIABLE)
    ablation = os.environ.get(ABLATION_VARIABLE)
    if threads:
        import importlib

        # the module: kstyle.export's own ``verify`` is the function of that name
        runner = importlib.import_module("kstyle.export.verify").Runner
        runner.__init__ = functools.partialmethod(runner.__init__, num_threads=int(threads))
    if ablation == "no_balance":  # the depthwise/1x1 balance off: every s_c = 1
        from kstyle.export import calibration

        calibration.BALANCE_EXPONENT = 0.0
    elif ablation == "no_equalize":  # no equalization before the norms (nor the balance)
        from int8_variants import variant_flatbuffer  # bench/

        from kstyle.export import writer

        writer.int8_flatbuffer = functools.partial(variant_flatbuffer, equalize=False)
    elif ablation:
        raise ValueError(f"unknown ablation {ablation!r}; use one of {ABLATIONS}")


def run_tests(label, env, selection, record):
    """Runs pytest on ``selection`` (arguments) with ``env`` added, recording into
    ``record``; returns (label, seconds, pytest's last line)."""
    full_env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "KSTYLE_RECORD_BARS": record,
        "PYTHONPATH": os.pathsep.join([ROOT, os.path.join(ROOT, "bench")]),
        **env,
    }
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "bar_margins"]
    start = time.perf_counter()
    result = subprocess.run(
        [*args, "-o", "addopts=", *selection],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
    )
    lines = result.stdout.strip().splitlines()
    return label, time.perf_counter() - start, lines[-1] if lines else result.stderr[-500:]


def jobs(paths, seeds, ablations, seed_paths):
    """(label, path, seed, env, pytest arguments) of each run: seeds other than the first run
    only on ``seed_paths``."""
    for seed in seeds:
        for path in paths if seed == seeds[0] else [p for p in paths if p in seed_paths]:
            env = {**PATHS[path], "KSTYLE_TEST_TRAIN_SEED": str(seed)}
            selection = ["-m", "numeric"] + (["tests"] if seed == seeds[0] else SEEDED)
            if THREADS_VARIABLE in env:
                selection += ["-k", LITERT_ONLY]
            yield f"{path} seed {seed}", path, seed, env, selection
    for seed in seeds:
        for ablation in ablations:
            env = {ABLATION_VARIABLE: ablation, "KSTYLE_TEST_TRAIN_SEED": str(seed)}
            yield f"{ablation} seed {seed}", ablation, seed, env, ABLATED


def worst(values, kind):
    """The value of ``values`` nearest its bar: the least for ``>=``, the greatest for ``<=``."""
    return min(values) if kind == ">=" else max(values)


def table(records, columns):
    """Markdown rows: one per (quantity, bar), the worst value per column, and the margin
    on the worst of the CPU paths (ablation columns excluded)."""
    grouped = {}
    for record in records:
        key = (record["quantity"], record["bar"], record["kind"])
        grouped.setdefault(key, {}).setdefault(record["path"], []).append(record["value"])
    header = ["quantity", "bar", *columns, "margin"]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (quantity, bar, kind), by_path in sorted(grouped.items()):
        cells = []
        for column in columns:
            values = by_path.get(column)
            cells.append(f"{worst(values, kind):.4g}" if values else "")
        measured = [v for path, values in by_path.items() if path in PATHS for v in values]
        margin = worst(measured, kind) - bar if kind == ">=" else bar - worst(measured, kind)
        rows.append(f"| {quantity} | {kind} {bar:g} | " + " | ".join(cells) + f" | {margin:.3g} |")
    return "\n".join(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2", help="train seeds of the export nets")
    parser.add_argument("--paths", default=",".join(PATHS), help=f"of {', '.join(PATHS)}")
    parser.add_argument(
        "--seed-paths",
        default="default,AVX2,no-oneDNN",
        help="the paths that run the seeds after the first (the nets are trained with "
        "TensorFlow's kernels: LiteRT's threads do not change them)",
    )
    parser.add_argument("--ablations", default=",".join(ABLATIONS), help="'' for none")
    parser.add_argument("--out", help="folder for the raw records (default: a temporary one)")
    parser.add_argument(
        "--records", nargs="+", help="tabulate these records.json files of earlier runs instead"
    )
    args = parser.parse_args(argv)
    if args.records:
        records = []
        for path in args.records:
            with open(path) as file:
                records += json.load(file)
        columns = list(dict.fromkeys(record["path"] for record in records))
        ordered = [path for path in [*PATHS, *ABLATIONS] if path in columns]
        print(table(records, ordered))
        return
    paths = [path for path in args.paths.split(",") if path]
    unknown = sorted(set(paths) - set(PATHS))
    if unknown:
        parser.error(f"unknown path(s) {unknown}; use {', '.join(PATHS)}")
    seeds = [int(seed) for seed in args.seeds.split(",")]
    ablations = [name for name in args.ablations.split(",") if name]
    out = args.out or tempfile.mkdtemp(prefix="bar-margins-")
    os.makedirs(out, exist_ok=True)
    records = []
    seed_paths = args.seed_paths.split(",")
    for label, path, seed, env, selection in jobs(paths, seeds, ablations, seed_paths):
        record = os.path.join(out, label.replace(" ", "_") + ".jsonl")
        if os.path.exists(record):
            os.remove(record)
        label, seconds, last = run_tests(label, env, selection, record)
        print(f"{label:<24} {seconds:6.0f} s  {last}", file=sys.stderr, flush=True)
        if os.path.exists(record):
            with open(record) as file:
                records += [{**json.loads(line), "path": path, "seed": seed} for line in file]
    with open(os.path.join(out, "records.json"), "w") as file:
        json.dump(records, file, indent=1)
    print(f"seeds {args.seeds}; raw records in {out}\n")
    print(table(records, paths + ablations))


if __name__ == "__main__":
    main()
