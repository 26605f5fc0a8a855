"""``kstyle tune``: times the candidate paths of a job on this machine, keeps the fastest whose
output matches the reference path's, and stores it (:mod:`kstyle.tune_store`).

oneDNN is fixed when TensorFlow is imported, so each setting is measured in a process of its
own (:mod:`kstyle.tune_worker`); this module runs them, compares and chooses, without
TensorFlow. The reference is what the commands do without a choice: the default path under
:func:`kstyle.machine.preferred_onednn`'s rule, float32 without XLA for training.

A stylize candidate is accepted when its uint8 output is within :data:`STYLIZE_TOLERANCE`
levels of the reference's everywhere; a training candidate when the total losses of its first
two steps (the second after one update) are within :data:`TRAIN_TOLERANCE` of the reference's,
relatively: float32 paths differ only by summation order, bfloat16 keeps 8 bits of mantissa.
"""

import json
import os
import subprocess
import sys
import tempfile
import zipfile

import numpy as np

from kstyle.distribute import several_tasks
from kstyle.errors import KstyleError
from kstyle.machine import cpu_flags, preferred_onednn, tensorflow_onednn_default
from kstyle.tune_store import TunedStore, network_id

STYLIZE_TOLERANCE = 1  # levels of the uint8 output
TRAIN_TOLERANCE = {"off": 1e-3, "bfloat16": 3e-2}  # relative, per precision
DEFAULT_STYLIZE_SIZES = (256, 512)
STYLIZE_CANDIDATES = (
    "tensorflow",
    "tensorflow-xla",
    "tensorflow-blocked",
    "tensorflow-unfused",
    "tensorflow-unfused-xla",
    "litert",
)
ONEDNN_INDEPENDENT = ("litert",)  # measured once: TensorFlow's oneDNN switch does not touch it
# paths that compile or convert for each image size: a new size first runs another path
COMPILED_PER_SIZE = ("tensorflow-xla", "tensorflow-unfused-xla", "litert")
TRAIN_CANDIDATES = ((False, "off"), (False, "bfloat16"), (True, "off"), (True, "bfloat16"))
WORKER_TIMEOUT = 1800  # seconds one measuring process may take


def onednn_settings(task: str) -> list[bool]:
    """The oneDNN settings to measure, the reference's (today's rule) first."""
    flags = cpu_flags()
    reference = preferred_onednn(task, flags)
    reference = tensorflow_onednn_default(flags) if reference is None else reference
    return [reference, not reference]


def work_items(request: dict) -> list:
    """The items a measuring request covers, in the worker's order: ``[path, size index]``
    for stylizing, ``[xla, precision]`` for training."""
    if request["task"] == "stylize":
        return [[name, i] for i in range(len(request["sizes"])) for name in request["paths"]]
    return [list(candidate) for candidate in request["candidates"]]


def run_worker(request: dict, onednn: bool) -> dict:
    """Runs :mod:`kstyle.tune_worker` on ``request`` with oneDNN ``onednn``; its rows.

    A candidate that kills the process (a kernel that aborts, say) becomes a row with its
    ``error``, and a new process measures the ones after it.

    Raises:
        KstyleError: a process failed before measuring anything (its last line says why).
    """
    rows = []
    while True:
        returncode, found, last = _run_worker_once({**request, "skip": _items(rows)}, onednn)
        if found is None:  # it stopped before measuring: nothing would go better next time
            raise KstyleError(f"measuring with oneDNN {_state(onednn)} failed: {last}")
        rows += found
        left = [item for item in work_items(request) if item not in _items(rows)]
        if returncode == 0 or not left:
            return {"rows": rows}
        rows.append({**_item_fields(request, left[0]), "error": f"the process stopped: {last}"})


def _items(rows) -> list:
    return [row["item"] for row in rows]


def _item_fields(request: dict, item) -> dict:
    """A row's identifying fields for ``item`` of ``request``."""
    if request["task"] == "stylize":
        side = request["sizes"][item[1]]
        return {"path": item[0], "pixels": side * side, "item": item}
    return {"xla": item[0], "precision": item[1], "item": item}


def _run_worker_once(request: dict, onednn: bool) -> tuple:
    """One measuring process: its exit status, the rows it wrote (None: it wrote no result,
    so it stopped before measuring), its last line of output."""
    with tempfile.TemporaryDirectory() as folder:
        paths = [os.path.join(folder, name) for name in ("request.json", "result.json")]
        with open(paths[0], "w") as file:
            json.dump(request, file)
        environment = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": str(int(onednn))}
        environment.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        command = [sys.executable, "-m", "kstyle.tune_worker", *paths]
        try:
            done = subprocess.run(
                command, env=environment, capture_output=True, text=True, timeout=WORKER_TIMEOUT
            )
            returncode, stderr = done.returncode, done.stderr
        except subprocess.TimeoutExpired:  # a candidate that hangs is one that failed
            returncode, stderr = -1, f"no result after {WORKER_TIMEOUT} s"
        last = (stderr.strip().splitlines() or [f"exit status {returncode}"])[-1]
        try:
            with open(paths[1]) as file:
                rows = json.load(file)["rows"]
        except (OSError, ValueError, KeyError):
            rows = None
        return returncode, rows, last[:300]


def _state(onednn) -> str:
    return "on" if onednn else "off"


def tune_stylize(model_file: str, sizes=DEFAULT_STYLIZE_SIZES, worker=None, log=print):
    """Measures every stylize candidate for the net in ``model_file`` at each square size
    of ``sizes``, under both oneDNN settings (``worker``: :func:`run_worker` unless given);
    returns the choice (see :func:`pick_stylize`)."""
    worker = worker or run_worker
    settings = onednn_settings("stylize")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for setting in settings:
            names = [n for n in STYLIZE_CANDIDATES if not rows or n not in ONEDNN_INDEPENDENT]
            log(f"stylize: measuring {', '.join(names)} with oneDNN {_state(setting)}")
            request = {"task": "stylize", "model": model_file, "sizes": list(sizes)}
            outputs = os.path.join(folder, f"onednn-{_state(setting)}")  # each its own files
            os.makedirs(outputs)
            result = worker({**request, "paths": names, "folder": outputs}, setting)
            for row in result["rows"]:
                independent = row["path"] in ONEDNN_INDEPENDENT
                rows.append({**row, "onednn": None if independent else setting})
        add_differences(rows, settings[0])
    return pick_stylize(rows, settings[0])


def add_differences(rows: list, reference_onednn: bool) -> None:
    """Sets each measured row's ``difference``: the largest absolute difference, in levels,
    of its output from the reference path's at the same size (and drops the file name)."""
    references = {
        row["pixels"]: np.load(row["output"]).astype(np.int16)
        for row in rows
        if row["path"] == STYLIZE_CANDIDATES[0]
        and row["onednn"] == reference_onednn
        and "output" in row
    }
    for row in rows:
        if "output" in row:
            output = np.load(row.pop("output")).astype(np.int16)
            reference = references.get(row["pixels"])
            same_shape = reference is not None and reference.shape == output.shape
            row["difference"] = int(np.abs(output - reference).max()) if same_shape else None


def accepted(row: dict, tolerance=STYLIZE_TOLERANCE) -> bool:
    """Whether a stylize row ran and matched the reference within ``tolerance`` levels."""
    return (
        "error" not in row
        and row.get("difference") is not None
        and (row["difference"] <= tolerance)
    )


def pick_stylize(rows: list, reference_onednn: bool) -> dict | None:
    """The choice of the measured ``rows``: the oneDNN setting whose fastest accepted paths
    take the least time summed over the sizes, and at each size its fastest accepted path and
    its fastest accepted path that needs no compilation per size (what runs while XLA or
    LiteRT has not compiled for an image size, :func:`kstyle.stylize_paths.run_pass`).
    ``{"onednn", "sizes": [{"pixels", "path", "seconds", "tensorflow_path",
    "default_seconds"}], "rows"}``; None when no setting has an accepted path at every size
    (the reference not running)."""
    sizes = sorted({row["pixels"] for row in rows if "error" not in row})
    best = None
    for setting in (reference_onednn, not reference_onednn):
        usable = [r for r in rows if accepted(r) and r["onednn"] in (setting, None)]
        fastest = [_fastest(usable, pixels) for pixels in sizes]
        if None in fastest:
            continue
        total = sum(row["seconds"] for row in fastest)
        if best is None or total < best[0]:
            best = (total, setting, usable, fastest)
    if best is None:
        return None
    _, setting, usable, fastest = best
    references = [r for r in rows if r["onednn"] == reference_onednn and accepted(r)]
    chosen = []
    for row in fastest:
        ready = [r for r in usable if r["path"] not in COMPILED_PER_SIZE]
        tensorflow = _fastest(ready, row["pixels"])
        default = _fastest(
            [r for r in references if r["path"] == STYLIZE_CANDIDATES[0]], row["pixels"]
        )
        chosen.append(
            {
                "pixels": row["pixels"],
                "path": row["path"],
                "seconds": row["seconds"],
                "tensorflow_path": (tensorflow or {"path": STYLIZE_CANDIDATES[0]})["path"],
                "default_seconds": default and default["seconds"],
            }
        )
    return {"onednn": setting, "sizes": chosen, "rows": rows}


def _fastest(rows: list, pixels: int) -> dict | None:
    """The row of ``rows`` at ``pixels`` with the fewest seconds, or None."""
    return min((row for row in rows if row["pixels"] == pixels), key=_seconds, default=None)


def _seconds(row) -> float:
    return row["seconds"]


def train_job(arch: str, padding: str) -> str:
    """The store's job of training ``arch`` with ``padding``: what the step's graph is."""
    return f"train {arch}, {padding} padding"


def tune_train(arch, padding, image_size, batch_size, worker=None, log=print):
    """Measures a training step of ``arch`` under both oneDNN settings, with and without XLA,
    in float32 and bfloat16 (``worker``: :func:`run_worker` unless given); returns the choice
    (see :func:`pick_train`)."""
    worker = worker or run_worker
    rows = []
    for setting in onednn_settings("train"):
        log(f"train: measuring float32 and bfloat16, XLA off and on, with oneDNN {_state(setting)}")
        request = {"task": "train", "arch": arch, "padding": padding, "image_size": image_size}
        request |= {"batch_size": batch_size, "candidates": TRAIN_CANDIDATES}
        best = {}
        for row in (row for row in rows if "seconds" in row):
            best[row["precision"]] = min(best.get(row["precision"], 1e30), row["seconds"])
        result = worker({**request, "best": best}, setting)
        rows += [{**row, "onednn": setting} for row in result["rows"]]
    return pick_train(rows)


def loss_difference(row: dict, reference: dict) -> float | None:
    """The largest relative difference of ``row``'s first two losses from ``reference``'s."""
    if "losses" not in row or "losses" not in reference or len(row["losses"]) < 2:
        return None
    pairs = list(zip(row["losses"][:2], reference["losses"][:2], strict=True))
    if not np.isfinite(pairs).all():  # a diverged step matches nothing
        return None
    return max(abs(a - b) / max(abs(b), 1e-30) for a, b in pairs)


def pick_train(rows: list) -> dict | None:
    """The choice of the measured training ``rows`` (the first is the reference: today's
    oneDNN rule, no XLA, float32): for each precision, the fastest accepted candidate, and
    ``precision``, the faster of the two. ``{"precision", "by_precision": {precision: {"onednn",
    "xla", "seconds"}}, "default_seconds", "rows"}``; None when the reference did not run."""
    reference = rows[0] if rows and "error" not in rows[0] else None
    if reference is None:
        return None
    by_precision = {}
    for row in rows:
        row["difference"] = loss_difference(row, reference)
        tolerance = TRAIN_TOLERANCE[row["precision"]]
        if row["difference"] is None or row["difference"] > tolerance:
            continue
        best = by_precision.get(row["precision"])
        if best is None or row["seconds"] < best["seconds"]:
            by_precision[row["precision"]] = {k: row[k] for k in ("onednn", "xla", "seconds")}
    precision = min(by_precision, key=lambda name: by_precision[name]["seconds"])
    return {
        "precision": precision,
        "by_precision": by_precision,
        "default_seconds": reference["seconds"],
        "rows": rows,
    }


def stylize_choice(model_file: str, store: TunedStore | None = None) -> dict | None:
    """The stored stylize choice for the net in ``model_file`` on this machine, or None."""
    store = TunedStore.read() if store is None else store
    try:
        job = network_id(model_file)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):  # .h5, or damaged: the loader
        return None  # says what is wrong, and no choice is applied
    return store.choice("stylize", job)


def train_choice(job: str | None, precision: str, store: TunedStore | None = None):
    """The stored training choice for ``job`` (:func:`train_job`; None: none applies) on this
    machine, as ``(precision, {"onednn", "xla", ...})``: ``precision`` ``auto`` becomes the
    precision that was measured faster (``off`` without a choice). The dict is None where
    nothing was measured for that precision."""
    store = TunedStore.read() if store is None else store
    choice = store.choice("train", job) if job is not None else None
    if precision == "auto":
        precision = choice["precision"] if choice else "off"
    return precision, (choice or {}).get("by_precision", {}).get(precision)


def apply_tuned_training(config, store: TunedStore | None = None) -> dict | None:
    """Resolves ``config``'s ``auto`` options (any run kind's) from the stored training choice
    for its ``tuned_job()`` on this machine: ``mixed_precision`` ``auto`` becomes the
    precision measured faster (``off`` without a choice; a run being resumed keeps the one it
    recorded), ``jit_compile`` ``auto`` the measured XLA setting of that precision (unchanged
    without one). A multi-worker run (``TF_CONFIG`` with several tasks) takes no choice, since
    each host has its own store: ``auto`` is ``off`` there. Returns that precision's choice
    (``onednn``, ``xla``, ``seconds``) or None."""
    if several_tasks():  # each host would read its own store: replicas must agree
        if config.mixed_precision == "auto":
            config.mixed_precision = "off"
        return None
    precision = config.mixed_precision
    if precision == "auto" and not config.restart:
        precision = _recorded_precision(config.resolved_output()) or precision
    precision, tuned = train_choice(config.tuned_job(), precision, store)
    config.mixed_precision = precision
    if tuned is not None and config.jit_compile == "auto":
        config.jit_compile = "on" if tuned["xla"] else "off"
    return tuned


def _recorded_precision(run_dir: str) -> str | None:
    """The ``mixed_precision`` that the run in ``run_dir`` recorded, if any."""
    try:
        with open(os.path.join(run_dir, "config.json")) as file:
            recorded = json.load(file).get("mixed_precision")
    except (OSError, ValueError, AttributeError):
        return None
    return recorded if isinstance(recorded, str) and recorded != "auto" else None
