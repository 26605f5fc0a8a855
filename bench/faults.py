"""Fault injection: what kstyle does when a run is killed, stopped, diverges, fills the disk,
reads bad data or would overwrite a user's file; writes the table of docs/faults.md.

    python bench/faults.py                         # every row; writes docs/faults.md
    python bench/faults.py --rows nan-loss,bomb    # some rows; prints them only
    python bench/faults.py --rows bomb --output /tmp/faults.md

Every row runs the real commands as subprocesses (``python train.py`` / ``python stylize.py``;
a fault that needs code, such as a NaN loss, runs ``train.py``'s ``main`` in ``python -c`` with
one function patched) on tiny settings: 10 generated 36x44 JPEGs, a generated 40x40 style PNG,
``--vgg-weights random --image-size 32 --batch-size 2 --steps 24 --checkpoint-every 2
--plot-every 0 --seed 1 --epochs 10``. It observes what happens (exit status, the one
``error:`` line, seconds to exit), what is left on disk (checkpoints, whose tensors are read
back and checked finite; model.keras; the user's files, by SHA-256) and one measured figure
per row. Runs that should resume are rerun with the same command and their per-step losses
(history.csv) compared with one uninterrupted run's.

The full-disk rows mount a small tmpfs (``mount -t tmpfs``), so they need root; elsewhere they
say "not run". Every child process has a timeout: a regression shows as "hangs (timed out
after N s)" in its row instead of hanging the script. About 6 minutes on 2 CPU cores.
"""

import argparse
import csv
import dataclasses
import datetime
import hashlib
import io
import json
import os
import platform
import random
import re
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
import zlib

import numpy as np
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE = os.path.join(ROOT, "docs", "faults.md")
PYTHON = sys.executable
STEPS = 24  # steps of the runs that are killed and resumed (5 per epoch: 10 images, batch 2)
RUN_TIMEOUT = 180  # seconds any training or stylize process may take before it "hangs"
HANG_TIMEOUT = 60  # seconds for the rows whose regression is a hang (bad data)
RELATIVE_LOSS_BAR = 1e-4  # a resumed run's losses equal the uninterrupted run's within this
BOMB_SIDE = 20000  # the decompression bomb declares BOMB_SIDE x BOMB_SIDE RGB pixels
DISK_CHECKPOINT_MB = 30  # fits the first checkpoint (about 20 MB), not the second
DISK_MODEL_MB = 10  # fits one model.keras (about 6.9 MB), not a second one written beside it
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16")

# Code that runs ``train.py``'s main in ``python -c`` with TensorFlow patched. The prelude
# picks oneDNN as train.py itself does (it must, before TensorFlow is imported), so that the
# losses compare with those of plain train.py runs.
PRELUDE = """
import copy, os, signal, sys, time
sys.path.insert(0, {root!r})
from kstyle.cli.common import use_fastest_onednn
use_fastest_onednn("train", None)
import tensorflow as tf
from kstyle.cli.train import main
from kstyle.data import TrainingData
from kstyle.trainer import StyleTransferTrainer
"""
RUN_MAIN = "\nsys.exit(main(sys.argv[1:]))\n"

KILL_DURING_WRITE = """
write = tf.train.Checkpoint._write

def dying_write(self, prefix, options=None):
    if prefix.endswith("ckpt-6"):  # write this checkpoint's files, cut one short, then die
        unrecorded = copy.copy(options)
        unrecorded.experimental_write_callbacks = None  # the index update comes after a write
        write(self, prefix, options=unrecorded)
        folder = os.path.dirname(prefix)
        data = [n for n in os.listdir(folder) if n.startswith("ckpt-6") and ".data-" in n][0]
        with open(os.path.join(folder, data), "r+b") as file:
            file.truncate(os.path.getsize(os.path.join(folder, data)) // 2)
        os.kill(os.getpid(), signal.SIGKILL)
    return write(self, prefix, options=options)

tf.train.Checkpoint._write = dying_write
"""

NAN_LOSS_FROM_STEP_6 = """
compute_losses = StyleTransferTrainer.compute_losses

def diverging(self, content_batch, stylized):
    total, parts = compute_losses(self, content_batch, stylized)
    blown = tf.cast(self.optimizer.iterations, tf.float32) >= 5.0
    return tf.where(blown, tf.constant(float("nan")), total), parts

StyleTransferTrainer.compute_losses = diverging
"""

NAN_GRADIENT_FROM_STEP_6 = """
compute_losses = StyleTransferTrainer.compute_losses

@tf.custom_gradient
def poisoned(x, blown):  # the identity; its gradient is NaN where ``blown``
    def gradient(upstream):
        return upstream + tf.where(blown, float("nan"), 0.0), None
    return tf.identity(x), gradient

def exploding(self, content_batch, stylized):  # the loss stays finite, its gradient is NaN
    total, parts = compute_losses(self, content_batch, stylized)
    blown = self.optimizer.iterations >= 5
    return total + 0.0 * tf.reduce_sum(poisoned(stylized, blown)), parts

StyleTransferTrainer.compute_losses = exploding
"""

BLOCKING_PIPELINE = """
stream = TrainingData.stream

def blocking(self, start_step=0, input_context=None):  # 3 batches, then a pipeline that hangs
    def hang():
        open({marker!r}, "w").close()
        while True:
            time.sleep(1)
        yield
    first = stream(self, start_step, input_context).take(3)
    return first.concatenate(
        tf.data.Dataset.from_generator(hang, output_signature=first.element_spec)
    )

TrainingData.stream = blocking
"""


class Hang(Exception):
    """A child process ran past its timeout (it was killed)."""

    def __init__(self, seconds):
        super().__init__(f"timed out after {seconds:g} s")
        self.seconds = seconds


@dataclasses.dataclass
class Result:
    """How a child process ended."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float  # from start to exit
    ended: float  # time.monotonic() at exit
    peak_rss: int  # bytes (ru_maxrss of this child alone, from wait4)

    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error: ")]

    def status(self) -> str:
        if self.returncode < 0:
            return f"killed by {signal.Signals(-self.returncode).name}"
        return f"exit {self.returncode}"

    def describe(self) -> str:
        """``exit 3 after 14.2 s: `error: ...```, with a warning for a traceback or several
        error lines."""
        text = f"{self.status()} after {self.seconds:.1f} s"
        errors = self.error_lines()
        if errors:
            text += ": " + "; ".join(f"`{line}`" for line in errors)
        if len(errors) > 1:
            text += f" ({len(errors)} error lines)"
        if "Traceback" in self.stderr:
            text += " (with a traceback)"
        return text


class Child:
    """A running subprocess; output goes to files, and it is reaped with ``wait4`` so that its
    own peak RSS is known."""

    def __init__(self, args, env, log_dir):
        os.makedirs(log_dir, exist_ok=True)
        descriptor, self.out_path = tempfile.mkstemp(suffix=".out", dir=log_dir)
        os.close(descriptor)
        self.err_path = self.out_path[:-4] + ".err"
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.process = subprocess.Popen(args, stdout=out, stderr=err, env=env, cwd=ROOT)
        self.started = time.monotonic()
        self.result = None

    def poll(self) -> Result | None:
        """The result once the process has ended, else None."""
        if self.result is None:
            pid, status, usage = os.wait4(self.process.pid, os.WNOHANG)
            if pid == 0:
                return None
            ended = time.monotonic()
            self.process.returncode = os.waitstatus_to_exitcode(status)
            with open(self.out_path) as out, open(self.err_path) as err:
                stdout, stderr = out.read(), err.read()
            self.result = Result(
                self.process.returncode,
                stdout,
                stderr,
                ended - self.started,
                ended,
                usage.ru_maxrss * 1024,
            )
        return self.result

    def send(self, number) -> float:
        """Sends signal ``number`` unless the process has ended (and been reaped: its pid may
        be another's now); returns when (``time.monotonic()``)."""
        sent = time.monotonic()
        if self.poll() is None:
            os.kill(self.process.pid, number)
        return sent

    def wait(self, timeout=RUN_TIMEOUT) -> Result:
        """The result; past ``timeout`` seconds from the start, SIGKILL and :class:`Hang`."""
        return self.wait_until(lambda: False, timeout)

    def wait_until(self, condition, timeout=RUN_TIMEOUT) -> Result | None:
        """None as soon as ``condition()`` holds, or the result if the process ended first."""
        deadline = self.started + timeout
        while True:
            if condition():
                return None
            result = self.poll()
            if result is not None:
                return result
            if time.monotonic() > deadline:
                self.process.kill()
                while self.poll() is None:
                    time.sleep(0.01)
                raise Hang(timeout)
            time.sleep(0.01)


@dataclasses.dataclass
class Row:
    """One fault: what was done, what happened, what was kept, and its measured figure."""

    key: str
    fault: str
    how: str
    expected: str
    happens: str = ""
    kept: str = ""
    figure: str = ""
    failures: list = dataclasses.field(default_factory=list)
    ran: bool = True
    seconds: float = 0.0

    def expect(self, condition, what: str) -> bool:
        """Records ``what`` as a way this row differs from :attr:`expected` unless it holds."""
        if not condition:
            self.failures.append(what)
        return bool(condition)


ROWS = {}  # key -> (fault, how, expected, function)


def fault_row(key, fault, how, expected):
    """Registers a row function under ``key``, with the words of its first two columns."""

    def register(function):
        ROWS[key] = (fault, how, expected, function)
        return function

    return register


# -- files of a run ------------------------------------------------------------------------


def checkpoint_step(run_dir) -> int:
    """The step of the checkpoint that ``checkpoints/checkpoint`` names (0: none)."""
    try:
        with open(os.path.join(run_dir, "checkpoints", "checkpoint")) as file:
            first = file.readline()  # model_checkpoint_path: "ckpt-N"
    except OSError:
        return 0
    match = re.search(r"ckpt-(\d+)", first)
    return int(match.group(1)) if match else 0


def history(run_dir) -> list[tuple[int, float]]:
    """(step, loss) of every complete row of history.csv (none if it is missing)."""
    try:
        with open(os.path.join(run_dir, "history.csv"), newline="") as file:
            rows = list(csv.DictReader(file))
    except OSError:
        return []
    parsed = []
    for row in rows:
        try:
            parsed.append((int(row["step"]), float(row["loss"])))
        except (KeyError, TypeError, ValueError):  # a line cut short
            continue
    return parsed


def last_history_step(run_dir) -> int:
    rows = history(run_dir)
    return rows[-1][0] if rows else 0


def steps_text(steps) -> str:
    """``1-24`` for a contiguous run of steps, else the list."""
    if not steps:
        return "none"
    if steps == list(range(steps[0], steps[-1] + 1)):
        return f"{steps[0]}-{steps[-1]}" if len(steps) > 1 else str(steps[0])
    return ",".join(map(str, steps))


def checkpoint_tensors(run_dir) -> tuple[str | None, int, bool]:
    """(the newest checkpoint's name, its float tensors, whether all are finite), read back
    through TensorFlow's checkpoint reader."""
    import tensorflow as tf

    prefix = tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints"))
    if prefix is None:
        return None, 0, False
    reader = tf.train.load_checkpoint(prefix)
    count, finite = 0, True
    for name, dtype in reader.get_variable_to_dtype_map().items():
        if dtype.is_floating:
            count += 1
            finite &= bool(np.isfinite(reader.get_tensor(name)).all())
    return os.path.basename(prefix), count, finite


def model_arrays(path) -> tuple[int, bool]:
    """(weight arrays in a .keras file, whether all are finite); (0, False) if unreadable."""
    import h5py

    try:
        with zipfile.ZipFile(path) as archive:
            weights = io.BytesIO(archive.read("model.weights.h5"))
        arrays = []
        with h5py.File(weights, "r") as file:
            file.visititems(
                lambda _, item: arrays.append(item[()]) if isinstance(item, h5py.Dataset) else None
            )
    except (OSError, KeyError, zipfile.BadZipFile):
        return 0, False
    return len(arrays), all(np.isfinite(array).all() for array in arrays)


def leftovers(run_dir) -> list[str]:
    """Temporary files of writes cut short: kstyle's ``.kstyle-*`` and TensorFlow's
    ``*_temp*``."""
    found = []
    for root, dirs, names in os.walk(run_dir):
        for name in dirs + names:
            if name.startswith(".kstyle-") or "_temp" in name:
                found.append(os.path.relpath(os.path.join(root, name), run_dir))
    return sorted(found)


def digest(paths) -> dict:
    """{path: (size, sha256)} of every file under ``paths`` (files or folders)."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            for root, _, names in os.walk(path):
                files.extend(os.path.join(root, name) for name in names)
        else:
            files.append(path)
    result = {}
    for name in sorted(files):
        with open(name, "rb") as file:
            data = file.read()
        result[name] = (len(data), hashlib.sha256(data).hexdigest())
    return result


# -- inputs ----------------------------------------------------------------------------------


def random_image(height, width, seed=0) -> np.ndarray:
    """A smooth random uint8 RGB image (gradients plus noise), as the tests make them."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack(
        [x * 255 / max(1, width - 1), y * 255 / max(1, height - 1), np.full((height, width), 128)],
        axis=-1,
    )
    image = base + rng.normal(0, 20, size=(height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(side=BOMB_SIDE) -> bytes:
    """A valid PNG of side x side black 8-bit RGB pixels: about 1.2 MB that decode to
    3 x side² bytes (1.2 GB for 20000)."""
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    compressor = zlib.compressobj(9)
    rows = b"\x00" * ((1 + 3 * side) * 100)  # 100 rows: filter byte 0, then black pixels
    data = b"".join(compressor.compress(rows) for _ in range(side // 100))
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", data + compressor.flush())
        + png_chunk(b"IEND", b"")
    )


# -- the bench -------------------------------------------------------------------------------


class Bench:
    """The temporary folder with the inputs, the children's environment, and the one
    uninterrupted run that resumed runs are compared with."""

    def __init__(self, base):
        self.base = base
        self.data = os.path.join(base, "data")
        self.style = os.path.join(base, "style.png")
        os.makedirs(self.data)
        for index in range(10):
            Image.fromarray(random_image(36, 44, seed=index)).save(
                os.path.join(self.data, f"img_{index:02d}.jpg"), quality=90
            )
        Image.fromarray(random_image(40, 40, seed=99)).save(self.style)
        path = os.environ.get("PYTHONPATH")
        self.env = {
            **os.environ,
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONPATH": ROOT + (os.pathsep + path if path else ""),
        }
        self._reference = None

    def folder(self, name) -> str:
        """A new path under the temporary folder (not created)."""
        return os.path.join(self.base, name)

    def train_args(self, output, *extra, steps=STEPS, data=None) -> list[str]:
        """``python train.py`` with the tiny settings; ``extra`` options override them."""
        return [
            PYTHON, os.path.join(ROOT, "train.py"),
            "--style", self.style, "--data", data or self.data, "--output", output,
            "--vgg-weights", "random", "--image-size", "32", "--batch-size", "2",
            "--steps", str(steps), "--checkpoint-every", "2", "--plot-every", "0",
            "--seed", "1", "--epochs", "10", *extra,
        ]  # fmt: skip

    def patched(self, args, patch) -> list[str]:
        """``args`` (a train.py command) run as ``python -c`` with ``patch`` applied first."""
        return [PYTHON, "-c", PRELUDE.format(root=ROOT) + patch + RUN_MAIN, *args[2:]]

    def start(self, args) -> Child:
        return Child(args, self.env, os.path.join(self.base, "logs"))

    def run(self, args, timeout=RUN_TIMEOUT) -> Result:
        return self.start(args).wait(timeout)

    def reference(self):
        """The uninterrupted run: (run directory, {step: loss}, its Result)."""
        if self._reference is None:
            output = self.folder("uninterrupted")
            result = self.run(self.train_args(output))
            if result.returncode != 0:
                raise RuntimeError(f"the uninterrupted run failed: {result.describe()}")
            self._reference = (output, dict(history(output)), result)
        return self._reference

    def short(self, text: str) -> str:
        """``text`` with the temporary folder written as ``$TMP``."""
        return text.replace(self.base, "$TMP")


@dataclasses.dataclass
class Rerun:
    """The same command run again after a fault, compared with the uninterrupted run."""

    result: Result
    resumed_at: int | None  # None: it started over
    steps: list
    worst: float  # largest relative difference of a step's loss from the uninterrupted run's
    left: list  # temporary files left in the run directory after the rerun

    def figure(self) -> str:
        where = f"resumed at step {self.resumed_at}" if self.resumed_at else "started over"
        same = "bit-identical to" if self.worst == 0 else f"within a relative {self.worst:.1e} of"
        return (
            f"{where}; steps {steps_text(self.steps)} once each; every step's loss {same} the "
            f"uninterrupted run's; temporary files left: {', '.join(self.left) or 'none'}"
        )


def rerun(bench, row, args, output, resumed_at) -> Rerun:
    """Runs ``args`` again and checks it resumes at ``resumed_at`` (0: starts over) and ends
    with the uninterrupted run's steps and losses."""
    _, reference, _ = bench.reference()
    result = bench.run(args)
    row.expect(result.returncode == 0, f"the rerun ended with {result.status()}")
    match = re.search(r"resuming .* at step (\d+) of", result.stdout)
    resumed = int(match.group(1)) if match else None
    row.expect((resumed or 0) == resumed_at, f"the rerun resumed at {resumed}, not {resumed_at}")
    rows = history(output)
    steps = [step for step, _ in rows]
    row.expect(steps == list(range(1, STEPS + 1)), f"history.csv holds steps {steps}")
    worst = max(
        (abs(loss - reference[step]) / abs(reference[step]) for step, loss in rows),
        default=float("inf"),
    )
    row.expect(worst <= RELATIVE_LOSS_BAR, f"losses differ by a relative {worst:.1e}")
    return Rerun(result, resumed, steps, worst, leftovers(output))


def killed_state(output) -> str:
    """What a killed run left: its files, its checkpoint and its history."""
    step = checkpoint_step(output)
    names = sorted(os.listdir(output)) if os.path.isdir(output) else []
    checkpoint = f"ckpt-{step} (the index names it)" if step else "no checkpoint"
    steps = [s for s, _ in history(output)]
    rows = f"history.csv steps {steps_text(steps)}" if steps else "no history.csv rows"
    return f"{', '.join(names) or 'nothing'}; {checkpoint}; {rows}"


def kill_and_rerun(bench, row, name, condition, describe_point):
    """Starts the standard run, SIGKILLs it once ``condition(output)`` holds, reruns it."""
    output = bench.folder(name)
    args = bench.train_args(output)
    child = bench.start(args)
    ended = child.wait_until(lambda: condition(output))
    if ended is not None:
        row.expect(False, f"the run ended ({ended.status()}) before the kill point")
    child.send(signal.SIGKILL)
    child.wait()
    at_kill = checkpoint_step(output)
    row.expect(condition(output), "the kill came too late (the condition no longer held)")
    row.happens = f"killed {describe_point(output)}; the rerun: "
    row.kept = killed_state(output)
    again = rerun(bench, row, args, output, at_kill)
    row.happens += again.result.describe()
    row.figure = again.figure()


# -- the rows --------------------------------------------------------------------------------


@fault_row(
    "kill-before-checkpoint",
    "SIGKILL before the first checkpoint",
    "SIGKILL as soon as `config.json` appears; the same command again",
    "the rerun starts over and trains the same 24 steps as an uninterrupted run",
)
def kill_before_checkpoint(bench, row):
    kill_and_rerun(
        bench,
        row,
        "killed_early",
        lambda output: os.path.exists(os.path.join(output, "config.json")),
        lambda output: f"at step {last_history_step(output)}",
    )


@fault_row(
    "kill-after-checkpoint",
    "SIGKILL right after a checkpoint",
    "SIGKILL once `checkpoints/checkpoint` names ckpt-4 or later; the same command again",
    "the rerun resumes at that checkpoint's step with the uninterrupted run's losses",
)
def kill_after_checkpoint(bench, row):
    kill_and_rerun(
        bench,
        row,
        "killed_after",
        lambda output: checkpoint_step(output) >= 4,
        lambda output: (
            f"at step {last_history_step(output)}, ckpt-{checkpoint_step(output)} written"
        ),
    )


@fault_row(
    "kill-between-checkpoints",
    "SIGKILL between two checkpoints",
    "SIGKILL once history.csv holds a step past the newest checkpoint (from step 5); the same "
    "command again",
    "the rerun resumes at the checkpoint, drops the steps after it from history.csv and redoes "
    "them with the uninterrupted run's losses",
)
def kill_between_checkpoints(bench, row):
    def past_checkpoint(output):
        last = last_history_step(output)
        return last >= 5 and last > checkpoint_step(output) > 0

    kill_and_rerun(
        bench,
        row,
        "killed_between",
        past_checkpoint,
        lambda output: f"at step {last_history_step(output)}, after ckpt-{checkpoint_step(output)}",
    )


@fault_row(
    "kill-during-checkpoint-write",
    "SIGKILL during a checkpoint write",
    "`tf.train.Checkpoint._write` patched: ckpt-6's files are written, its data file cut to "
    "half, then SIGKILL (before the index names it); the same command again",
    "the index still names ckpt-4; the rerun resumes there with the uninterrupted run's losses",
)
def kill_during_checkpoint_write(bench, row):
    output = bench.folder("killed_in_write")
    args = bench.train_args(output)
    dying = bench.run(bench.patched(args, KILL_DURING_WRITE))
    row.expect(dying.returncode == -signal.SIGKILL, f"the patched run ended with {dying.status()}")
    row.kept = killed_state(output)
    cut = [name for name in os.listdir(os.path.join(output, "checkpoints")) if "ckpt-6" in name]
    if cut:
        row.kept += f"; the cut ckpt-6 files ({len(cut)}) lie unnamed beside it"
    row.expect(checkpoint_step(output) == 4, "the index does not name ckpt-4")
    again = rerun(bench, row, args, output, 4)
    row.happens = f"{dying.status()} in the write of ckpt-6; the rerun: {again.result.describe()}"
    row.figure = again.figure()


@fault_row(
    "sigterm",
    "SIGTERM at a step",
    "SIGTERM once history.csv holds 5 steps, with `--checkpoint-every 1000` (so any checkpoint "
    "is the signal's); the same command again",
    "exit 130 within seconds with one error line, after a checkpoint of the step it stopped at; "
    "the rerun resumes there",
)
def sigterm(bench, row):
    output = bench.folder("terminated")
    args = bench.train_args(output, "--checkpoint-every", "1000")
    child = bench.start(args)
    ended = child.wait_until(lambda: last_history_step(output) >= 5)
    row.expect(ended is None, "the run ended before step 5")
    sent = child.send(signal.SIGTERM)
    result = child.wait()
    seconds = result.ended - sent
    row.expect(result.returncode == 130, f"{result.status()}, not exit 130")
    errors = result.error_lines()
    row.expect(len(errors) == 1, f"{len(errors)} error lines")
    match = re.search(r"SIGTERM after (\d+) steps", errors[0] if errors else "")
    stopped = int(match.group(1)) if match else None
    saved = checkpoint_step(output)
    row.expect(saved == stopped, f"the checkpoint is of step {saved}, the run stopped at {stopped}")
    row.kept = killed_state(output)
    row.happens = f"{result.describe()}; the rerun: "
    again = rerun(bench, row, args, output, saved)
    row.happens += again.result.describe()
    row.figure = f"{seconds:.2f} s from SIGTERM to exit; checkpoint of step {saved}; " + (
        again.figure()
    )


@fault_row(
    "sigterm-blocked",
    "SIGTERM while the input pipeline blocks",
    "`TrainingData.stream` patched: 3 batches, then a generator that sleeps forever; SIGTERM "
    "1 s after it starts",
    "exit 130 within the 5 s grace (plus shutdown) with one error line; ckpt-2 intact",
)
def sigterm_blocked(bench, row):
    output, marker = bench.folder("blocked"), bench.folder("blocked.marker")
    child = bench.start(
        bench.patched(bench.train_args(output), BLOCKING_PIPELINE.format(marker=marker))
    )
    ended = child.wait_until(lambda: os.path.exists(marker))
    row.expect(ended is None, "the run ended before its pipeline blocked")
    time.sleep(1.0)  # the main thread now waits inside TensorFlow for a batch that never comes
    sent = child.send(signal.SIGTERM)
    result = child.wait(timeout=time.monotonic() - child.started + HANG_TIMEOUT)
    seconds = result.ended - sent
    row.expect(result.returncode == 130, f"{result.status()}, not exit 130")
    row.expect(len(result.error_lines()) == 1, f"{len(result.error_lines())} error lines")
    row.expect(seconds <= 10, f"{seconds:.1f} s from SIGTERM to exit")
    name, count, finite = checkpoint_tensors(output)
    row.expect(name == "ckpt-2" and finite, f"the newest checkpoint is {name}, finite: {finite}")
    row.happens = result.describe()
    row.kept = killed_state(output)
    row.kept += f"; temporary files left: {', '.join(leftovers(output)) or 'none'}"
    row.figure = (
        f"{seconds:.2f} s from SIGTERM to exit; {name} is the newest checkpoint, its {count} "
        f"float tensors read back, {'all finite' if finite else 'NOT all finite'}"
    )


def non_finite_row(bench, row, name, patch, message):
    """A run whose step 6 goes non-finite: exit 3, ckpt-4 and model.keras kept and finite."""
    output = bench.folder(name)
    result = bench.run(bench.patched(bench.train_args(output), patch))
    row.expect(result.returncode == 3, f"{result.status()}, not exit 3")
    errors = result.error_lines()
    row.expect(len(errors) == 1 and message in errors[0], f"error lines: {errors}")
    checkpoint, count, finite = checkpoint_tensors(output)
    arrays, model_finite = model_arrays(os.path.join(output, "model.keras"))
    losses = [loss for _, loss in history(output)]
    row.expect(
        checkpoint == "ckpt-4" and finite, f"newest checkpoint {checkpoint}, finite {finite}"
    )
    row.expect(arrays > 0 and model_finite, f"model.keras: {arrays} arrays, finite {model_finite}")
    row.expect(np.isfinite(losses).all(), "history.csv holds a non-finite loss")
    row.happens = result.describe()
    row.kept = killed_state(output)
    row.figure = (
        f"{checkpoint}: {count} float tensors, {'all finite' if finite else 'NOT all finite'}; "
        f"model.keras: {arrays} weight arrays, "
        f"{'all finite' if model_finite else 'NOT all finite'}; "
        f"history.csv: {len(losses)} losses, {'all finite' if np.isfinite(losses).all() else 'NOT'}"
    )


@fault_row(
    "nan-loss",
    "NaN loss",
    "`compute_losses` patched to return NaN from step 6",
    "exit 3 with one error line naming step 6 and ckpt-4; ckpt-4 and model.keras finite",
)
def nan_loss(bench, row):
    non_finite_row(bench, row, "nan_loss", NAN_LOSS_FROM_STEP_6, "total loss became nan at step 6")


@fault_row(
    "nan-gradient",
    "NaN gradient, finite loss",
    "`compute_losses` patched from step 6 to add 0 × a term whose gradient is NaN",
    "exit 3 with one error line naming the gradient norm and step 6; ckpt-4 and model.keras finite",
)
def nan_gradient(bench, row):
    non_finite_row(
        bench, row, "nan_gradient", NAN_GRADIENT_FROM_STEP_6, "gradient norm became nan at step 6"
    )


class Tmpfs:
    """A tmpfs of ``megabytes`` mounted at ``path`` (needs root); unmounted on exit."""

    def __init__(self, path, megabytes):
        self.path, self.megabytes = path, megabytes

    def __enter__(self):
        os.makedirs(self.path, exist_ok=True)
        command = ["mount", "-t", "tmpfs", "-o", f"size={self.megabytes}m", "tmpfs", self.path]
        try:
            mounted = subprocess.run(command, capture_output=True, text=True, timeout=30)
            reason = mounted.stderr.strip() if mounted.returncode else None
        except (OSError, subprocess.TimeoutExpired) as error:
            reason = str(error)
        if reason is not None:
            raise NotRun(f"not run: needs root and tmpfs ({reason})")
        return self

    def grow(self, megabytes):
        subprocess.run(
            ["mount", "-o", f"remount,size={megabytes}m", self.path], check=True, timeout=30
        )

    def __exit__(self, *exc_info):
        if subprocess.run(["umount", self.path], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", self.path], capture_output=True)


class NotRun(Exception):
    """The row cannot run on this machine (its message says why)."""


def disk_error_line(row, result, output):
    """Checks for exit 2 and one error line that says the disk is full and names the run."""
    row.expect(result.returncode == 2, f"{result.status()}, not exit 2")
    errors = result.error_lines()
    row.expect(len(errors) == 1 and "space" in errors[0].lower(), "no one line about the disk")
    row.expect(any(output in line for line in errors), "the error line names no file of the run")
    row.expect("Traceback" not in result.stderr, "a traceback")


@fault_row(
    "full-disk-checkpoint",
    "Full disk during a checkpoint",
    f"`--output` on a {DISK_CHECKPOINT_MB} MB tmpfs: ckpt-2 (about 20 MB) fits, ckpt-4 does "
    "not; then the tmpfs is grown and the same command run again",
    "exit 2 with one error line naming the disk and the file; ckpt-2 still the newest and "
    "finite; the rerun resumes at step 2",
)
def full_disk_checkpoint(bench, row):
    with Tmpfs(bench.folder("disk_checkpoint"), DISK_CHECKPOINT_MB) as disk:
        output = os.path.join(disk.path, "run")
        args = bench.train_args(output)
        result = bench.run(args)
        disk_error_line(row, result, output)
        name, count, finite = checkpoint_tensors(output)
        row.expect(name == "ckpt-2" and finite, f"newest checkpoint {name}, finite {finite}")
        row.expect(not os.path.exists(os.path.join(output, "model.keras")), "a model.keras")
        left = leftovers(output)
        row.kept = (
            killed_state(output) + f" ({name}: {count} float tensors, "
            f"{'all finite' if finite else 'NOT all finite'}); "
            f"temporary files left: {', '.join(left) or 'none'}"
        )
        disk.grow(256)
        again = rerun(bench, row, args, output, 2)
        row.happens = f"{result.describe()}; after growing the tmpfs, the rerun: "
        row.happens += again.result.describe()
        row.figure = (
            f"{name} kept, its {count} float tensors "
            f"{'all finite' if finite else 'NOT all finite'}; {again.figure()}"
        )


@fault_row(
    "full-disk-model",
    "Full disk while model.keras is saved",
    f"`--output` on a {DISK_MODEL_MB} MB tmpfs with `--checkpoint-every 0`: the model.keras "
    "of epoch 1 (about 6.9 MB) fits, the temporary copy of epoch 2's does not",
    "exit 2 with one error line naming the disk and the file; epoch 1's model.keras whole and "
    "finite, no partial file",
)
def full_disk_model(bench, row):
    with Tmpfs(bench.folder("disk_model"), DISK_MODEL_MB) as disk:
        output = os.path.join(disk.path, "run")
        result = bench.run(bench.train_args(output, "--checkpoint-every", "0"))
        disk_error_line(row, result, output)
        model = os.path.join(output, "model.keras")
        arrays, finite = model_arrays(model)
        row.expect(arrays > 0 and finite, f"model.keras: {arrays} arrays, finite {finite}")
        left = leftovers(output)
        row.expect(not left, f"temporary files left: {left}")
        row.happens = result.describe()
        row.kept = killed_state(output) + f"; temporary files left: {', '.join(left) or 'none'}"
        size = os.path.getsize(model) if os.path.exists(model) else 0
        row.figure = (
            f"model.keras of step 5: {size:,} bytes, a valid zip with {arrays} weight arrays, "
            f"{'all finite' if finite else 'NOT all finite'}"
        )


@fault_row(
    "unreadable-data",
    "All training images unreadable",
    "`--data` is a folder of 4 .jpg files of random bytes",
    "exit 2 with one error line within seconds, nothing trained",
)
def unreadable_data(bench, row):
    junk = bench.folder("junk")
    os.makedirs(junk)
    rng = random.Random(1)
    for index in range(4):
        with open(os.path.join(junk, f"junk_{index}.jpg"), "wb") as file:
            file.write(rng.randbytes(2048))
    output = bench.folder("junk_run")
    try:
        result = bench.run(bench.train_args(output, data=junk), timeout=HANG_TIMEOUT)
    except Hang:
        row.kept = killed_state(output)
        row.figure = f"no exit within {HANG_TIMEOUT} s"
        raise
    row.expect(result.returncode == 2, f"{result.status()}, not exit 2")
    row.expect(len(result.error_lines()) == 1, f"{len(result.error_lines())} error lines")
    row.happens = result.describe()
    row.kept = killed_state(output)
    row.figure = f"{result.seconds:.1f} s to exit (Python and TensorFlow start-up included)"


@fault_row(
    "bomb",
    "A decompression bomb among the training images",
    f"9 of the images plus a valid {BOMB_SIDE}x{BOMB_SIDE} black PNG (1.2 MB that decode to "
    f"{BOMB_SIDE**2 * 3 / 1e9:.1f} GB); 6 steps",
    "trains; the bomb is skipped and counted (`skipped 1 unreadable image file(s)`); peak RSS "
    "stays near a run without it",
)
def bomb(bench, row):
    _, _, reference = bench.reference()
    data = bench.folder("data_bomb")
    shutil.copytree(bench.data, data)  # 9 of them: with the bomb, 10 files make whole
    os.remove(os.path.join(data, "img_09.jpg"))  # batches, so every epoch reads every file
    with open(os.path.join(data, "bomb.png"), "wb") as file:
        file.write(bomb_png())
    output = bench.folder("bomb_run")
    try:
        result = bench.run(bench.train_args(output, steps=6, data=data))
    except Hang:
        row.kept = killed_state(output)
        raise
    skipped = re.search(r"skipped (\d+) [^\n]*file\(s\)[^\n]*", result.stdout)
    extra = (result.peak_rss - reference.peak_rss) / 1e6
    row.expect(result.returncode == 0, f"{result.status()}, not exit 0")
    row.expect(skipped is not None and skipped.group(1) == "1", "no 'skipped 1' line")
    row.expect(extra < 256, f"peak RSS {extra:+.0f} MB over a run without the bomb")
    row.happens = result.describe()
    if skipped:
        row.happens += f"; prints `{skipped.group(0)}`"
    else:
        summary = os.path.join(output, "summary.json")
        counted = (
            json.load(open(summary)).get("skipped_images") if os.path.exists(summary) else None
        )
        row.happens += f"; no `skipped` line (summary.json: skipped_images {counted})"
    row.kept = f"a finished run: {', '.join(sorted(os.listdir(output)))}"
    row.figure = (
        f"peak RSS {result.peak_rss / 1e6:.0f} MB, {extra:+.0f} MB against the uninterrupted "
        f"run without the bomb ({reference.peak_rss / 1e6:.0f} MB); the bomb would decode to "
        f"{BOMB_SIDE**2 * 3 / 1e9:.1f} GB"
    )


def refusal(bench, row, args, protected):
    """Runs ``args``, which must be refused (exit 2, one error line) with every file under
    ``protected`` unchanged."""
    before = digest(protected)
    result = bench.run(args)
    after = digest(protected)
    row.expect(result.returncode == 2, f"{result.status()}, not exit 2")
    row.expect(len(result.error_lines()) == 1, f"{len(result.error_lines())} error lines")
    row.expect(after == before, "the user's files changed")
    return result, before, after


def unchanged_text(before, after) -> str:
    same = sum(1 for path in before if after.get(path) == before[path])
    size = sum(size for size, _ in before.values())
    extra = len(set(after) - set(before))
    text = f"{same} of {len(before)} files ({size:,} bytes) byte-identical (SHA-256)"
    return text + (f", {extra} new" if extra else ", none added")


@fault_row(
    "overwrite-image",
    "Stylizing an image onto itself",
    "`stylize.py x.png --output x.png`",
    "refused with exit 2 and one error line; x.png byte-identical",
)
def overwrite_image(bench, row):
    model, _, _ = bench.reference()
    source = bench.folder("x.png")
    Image.fromarray(random_image(40, 48, seed=5)).save(source)
    args = [PYTHON, os.path.join(ROOT, "stylize.py"), source, "--model", model, "--output", source]
    result, before, after = refusal(bench, row, args, [source])
    row.happens = result.describe()
    row.kept = "x.png"
    row.figure = unchanged_text(before, after)


@fault_row(
    "overwrite-folder",
    "Stylizing a folder into itself",
    "`stylize.py photos --output photos` (3 images)",
    "refused with exit 2 and one error line; every file byte-identical, none added",
)
def overwrite_folder(bench, row):
    model, _, _ = bench.reference()
    folder = bench.folder("photos")
    os.makedirs(folder)
    for index, name in enumerate(("a.jpg", "a.png", "b.png")):
        Image.fromarray(random_image(24, 32, seed=index)).save(os.path.join(folder, name))
    args = [PYTHON, os.path.join(ROOT, "stylize.py"), folder, "--model", model, "--output", folder]
    result, before, after = refusal(bench, row, args, [folder])
    row.happens = result.describe()
    row.kept = "photos/ as it was"
    row.figure = unchanged_text(before, after)


@fault_row(
    "overwrite-foreign-output",
    "Training into somebody else's folder",
    "`train.py --output project`, where project/ holds a config.json and logs/ that are not "
    "kstyle's; then the same with `--restart`",
    "both refused with exit 2 and one error line; config.json and logs/ byte-identical",
)
def overwrite_foreign_output(bench, row):
    folder = bench.folder("project")
    os.makedirs(os.path.join(folder, "logs"))
    with open(os.path.join(folder, "config.json"), "w") as file:
        file.write('{"name": "my project", "owner": "somebody else"}\n')
    with open(os.path.join(folder, "logs", "notes.txt"), "w") as file:
        file.write("three weeks of notes\n" * 100)
    plain, before, _ = refusal(bench, row, bench.train_args(folder), [folder])
    restart, _, after = refusal(bench, row, bench.train_args(folder, "--restart"), [folder])
    row.happens = f"{plain.describe()}; with `--restart`: {restart.status()} after "
    row.happens += f"{restart.seconds:.1f} s, the same line"
    if restart.error_lines() != plain.error_lines():
        row.happens += f" (differs: {'; '.join(restart.error_lines())})"
    row.kept = "project/config.json and project/logs/notes.txt"
    row.figure = unchanged_text(before, after) + " after both attempts"


# -- the page --------------------------------------------------------------------------------


def machine() -> str:
    """CPU model, the flags that decide TensorFlow's kernels, core count (from /proc/cpuinfo)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model in ("", platform.machine()):
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    marks = ", ".join(f"{flag} {'yes' if flag in flags else 'no'}" for flag in CPU_FLAGS)
    return f"{model}, {os.cpu_count()} cores ({marks})"


def versions(bench) -> str:
    """Python, TensorFlow and Keras of the children (from a run's config.json)."""
    for name in ("uninterrupted", "killed_early", "nan_loss", "bomb_run"):
        path = os.path.join(bench.folder(name), "config.json")
        if os.path.exists(path):
            with open(path) as file:
                found = json.load(file).get("versions", {})
            return ", ".join(f"{key} {value}" for key, value in sorted(found.items()))
    return f"python {platform.python_version()}"


def cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|") or "-"


def table(rows) -> str:
    lines = [
        "| Fault | How it is injected | What happens | What is kept | Figure |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        fields = (row.fault, row.how, row.happens, row.kept, row.figure)
        lines.append("| " + " | ".join(cell(field) for field in fields) + " |")
    return "\n".join(lines)


def deviations(rows) -> str:
    """A list of the rows that did not do what issue 12 asks, with what differed."""
    wrong = [row for row in rows if row.failures]
    if not wrong:
        return "Every row that ran behaved as expected."
    lines = ["Rows that did not behave as expected:", ""]
    for row in wrong:
        lines.append(
            f"- **{row.fault}** (`{row.key}`): expected {row.expected}; "
            f"got: {'; '.join(cell(f) for f in row.failures)}."
        )
    return "\n".join(lines)


def page(bench, rows, command, started, seconds) -> str:
    """The whole of docs/faults.md (paragraphs on one line each, as the other pages)."""
    intro = (
        "What kstyle does when a training run is killed, stopped, diverges, fills the disk or "
        "reads bad data, and when a command would overwrite a user's files. Every row ran the "
        "real commands (`python train.py`, `python stylize.py`) as subprocesses; a fault that "
        "needs code (a NaN, a blocked pipeline, a kill inside a checkpoint write) patches one "
        "function in a `python -c` wrapper around `train.py`'s `main`. How the guarantees work: "
        "[training.md](training.md) (resuming, crashes and NaN) and [stylizing.md](stylizing.md)."
    )
    generated = (
        "Generated by `bench/faults.py`: do not edit by hand, run it again (`--rows` runs some "
        "rows and prints them)."
    )
    notes = [
        f"Command: `{command}`",
        f"Date: {started:%Y-%m-%d %H:%M} UTC; the rows took {seconds:.0f} s.",
        f"Machine: {machine()}; {versions(bench)}.",
        "Settings: 10 generated 36x44 JPEGs and a 40x40 style PNG; `--vgg-weights random "
        f"--image-size 32 --batch-size 2 --steps {STEPS} --checkpoint-every 2 --plot-every 0 "
        "--seed 1 --epochs 10` unless a row says otherwise (5 steps per epoch). `$TMP` is the "
        "script's temporary folder.",
        "**What happens:** the exit status, seconds from start to exit (Python and TensorFlow "
        "start-up included) and the `error:` line; for a fault that a rerun of the same "
        "command recovers from, the rerun's too.",
        "**What is kept:** the run directory right after the fault, before any rerun.",
        "**Figure:** a measured number per row. Resumed runs are compared step by step "
        "(history.csv) with one uninterrupted run of the same command; checkpoints are read "
        "back with TensorFlow's checkpoint reader, model.keras with h5py; the user's files are "
        "compared by SHA-256; peak RSS is the child's own (from `wait4`).",
    ]
    parts = [
        "# Fault injection",
        intro,
        generated,
        "\n".join(f"- {note}" for note in notes),
        table(rows),
        deviations(rows),
    ]
    return "\n\n".join(parts) + "\n"


def write_atomically(text: str, path: str) -> None:
    descriptor, temporary = tempfile.mkstemp(prefix=".faults-", dir=os.path.dirname(path))
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(text)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def run_row(bench, key) -> Row:
    fault, how, expected, function = ROWS[key]
    row = Row(key, fault, how, expected)
    start = time.monotonic()
    try:
        function(bench, row)
    except NotRun as reason:
        row.ran, row.happens, row.kept, row.figure = False, str(reason), "-", "-"
    except Hang as hang:
        row.happens = f"hangs ({hang}; killed)"
        row.failures.append(f"hangs ({hang})")
        row.figure = row.figure or str(hang)
    except Exception as error:  # the row's own bug: report it, go on with the others
        traceback.print_exc()
        row.happens = f"the script failed: {type(error).__name__}: {error}"
        row.failures.append(row.happens)
    row.seconds = time.monotonic() - start
    for name in ("happens", "kept", "figure"):
        setattr(row, name, bench.short(getattr(row, name)))
    row.failures = [bench.short(failure) for failure in row.failures if failure]
    return row


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python bench/faults.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="rows:\n" + "\n".join(f"  {key:30} {fault}" for key, (fault, *_) in ROWS.items()),
    )
    parser.add_argument(
        "--rows",
        help="comma-separated rows to run (default: all); a subset is printed and written "
        "only with --output",
    )
    parser.add_argument(
        "--output",
        help="where the page goes (default: docs/faults.md when every row runs, else nowhere)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary folder with every run in it"
    )
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    keys = list(ROWS) if not args.rows else [key.strip() for key in args.rows.split(",")]
    unknown = [key for key in keys if key not in ROWS]
    if unknown:
        parser.error(f"unknown rows {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    output = args.output or (PAGE if not args.rows else None)
    command = shlex.join(["python", "bench/faults.py", *(sys.argv[1:] if argv is None else argv)])
    started = datetime.datetime.now(datetime.UTC)
    clock = time.monotonic()
    base = tempfile.mkdtemp(prefix="kstyle-faults-")
    rows = []
    try:
        bench = Bench(base)
        for index, key in enumerate(keys, 1):
            row = run_row(bench, key)
            rows.append(row)
            verdict = "not run" if not row.ran else "ok" if not row.failures else "NOT AS EXPECTED"
            print(f"[{index}/{len(keys)}] {key}: {verdict} ({row.seconds:.0f} s)", flush=True)
        text = page(bench, rows, command, started, time.monotonic() - clock)
    finally:
        if args.keep:
            print(f"runs kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    print("\n" + table(rows) + "\n\n" + deviations(rows))
    if output:
        write_atomically(text, output)
        print(f"\nwrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
