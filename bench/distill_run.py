"""``kstyle distill`` in a subprocess, milestone checkpoints kept (bench/distill_fidelity.py).

kstyle keeps only its 2 newest checkpoints, so :func:`distill` polls the run and copies each
milestone's checkpoint aside as soon as it is written.
"""

import glob
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

POLL_SECONDS = 0.2  # kstyle keeps its 2 newest checkpoints: poll well within a step
BATCH_SIZE = 4  # kstyle's default, as the command runs


def latest_step(checkpoints: str) -> int | None:
    """The newest complete checkpoint's step (the ``checkpoint`` state file names it)."""
    state = os.path.join(checkpoints, "checkpoint")
    try:
        with open(state) as file:
            first = file.readline()
    except OSError:
        return None
    name = first.split(":", 1)[-1].strip().strip('"')
    return int(name.rsplit("-", 1)[-1]) if "-" in name else None


def distill_command(args, arch: str, prepared: dict, run_dir: str) -> list:
    """The ``kstyle distill`` command line for student ``arch`` to the last milestone."""
    milestones = sorted(args.milestones)
    epochs = math.ceil(milestones[-1] * BATCH_SIZE / prepared["count"])  # --steps ends it
    return [
        sys.executable, "-m", "kstyle", "distill", "--teacher", prepared["teacher"],
        "--arch", arch, "--data", prepared["data"], "--output", run_dir,
        "--image-size", str(args.size), "--steps", str(milestones[-1]),
        "--epochs", str(epochs), "--batch-size", str(BATCH_SIZE),
        "--checkpoint-every", str(math.gcd(*milestones)), "--log-every", str(args.log_every),
        "--plot-every", "0", "--cache", "--seed", str(args.seed),
    ]  # fmt: skip


class MilestoneCopier:
    """Copies each milestone's checkpoint from ``checkpoints`` into ``saved`` once it exists,
    and records the wall seconds per step since the previous one in ``saved/times.json``."""

    def __init__(self, checkpoints: str, saved: str, milestones: list):
        self.checkpoints, self.saved, self.milestones = checkpoints, saved, milestones
        os.makedirs(saved, exist_ok=True)
        self.times_path = os.path.join(saved, "times.json")
        self.times = {}
        if os.path.isfile(self.times_path):
            with open(self.times_path) as file:
                self.times = json.load(file)
        self.found = {}
        for step in milestones[:-1]:
            prefix = os.path.join(saved, f"ckpt-{step}")
            if os.path.isfile(prefix + ".index"):
                self.found[step] = prefix
        self.mark = (latest_step(checkpoints) or 0, time.time())  # counts from a resume too

    def record(self, step: int) -> None:
        """Stores the wall seconds per step since the mark and moves the mark to ``step``."""
        steps = step - self.mark[0]  # 0 or less: copied late, after a resume from a later step
        self.times[str(step)] = (time.time() - self.mark[1]) / steps if steps > 0 else None
        with open(self.times_path + ".partial", "w") as file:
            json.dump(self.times, file)
        os.replace(self.times_path + ".partial", self.times_path)
        self.mark = (step, time.time())

    def copy(self) -> None:
        """Copies every milestone checkpoint not copied yet (the .index last, renamed into
        place, so a copy cut short is never taken for a whole one)."""
        newest = latest_step(self.checkpoints) or 0
        for step in self.milestones[:-1]:
            index = os.path.join(self.checkpoints, f"ckpt-{step}.index")
            if step in self.found or newest < step or not os.path.isfile(index):
                continue
            for path in glob.glob(os.path.join(self.checkpoints, f"ckpt-{step}.data-*")):
                shutil.copy(path, self.saved)
            partial = os.path.join(self.saved, "index.partial")
            shutil.copy(index, partial)
            os.replace(partial, os.path.join(self.saved, f"ckpt-{step}.index"))
            self.found[step] = os.path.join(self.saved, f"ckpt-{step}")
            self.record(step)
            print(f"milestone {step} copied", file=sys.stderr, flush=True)


def distill(args, arch: str, prepared: dict) -> dict:
    """Runs (or resumes) ``kstyle distill`` of student ``arch`` under ``args.work/arch`` to the
    last milestone, or until ``args.time_limit`` minutes (``args.no_train``: runs nothing,
    takes the milestones already there); returns {step: (checkpoint prefix or
    model file, wall seconds per step since the previous milestone, None if unknown)} for
    the milestones reached."""
    run_dir = os.path.join(args.work, arch, "run")
    milestones = sorted(args.milestones)
    copier = MilestoneCopier(
        os.path.join(run_dir, "checkpoints"), os.path.join(args.work, arch, "milestones"),
        milestones,
    )  # fmt: skip
    summary = os.path.join(run_dir, "summary.json")
    if not os.path.isfile(summary) and not args.no_train:
        command = distill_command(args, arch, prepared, run_dir)
        print("running:", " ".join(command), file=sys.stderr, flush=True)
        process = subprocess.Popen(command)
        started, stopping = time.time(), False
        while process.poll() is None:
            time.sleep(POLL_SECONDS)
            if args.time_limit and not stopping and time.time() - started > args.time_limit * 60:
                process.send_signal(signal.SIGTERM)  # kstyle stops after the step, checkpointed
                stopping = True
            copier.copy()
        copier.copy()  # a milestone checkpointed just before a stop
        if os.path.isfile(summary):
            copier.record(milestones[-1])
        else:
            print(
                f"warning: kstyle distill --arch {arch} stopped (exit status "
                f"{process.returncode}) before step {milestones[-1]}; rerun with the same "
                "--work to resume",
                file=sys.stderr,
            )
    found = dict(copier.found)
    if os.path.isfile(summary):
        found[milestones[-1]] = os.path.join(run_dir, "model.keras")
    missed = [step for step in milestones if step not in found and os.path.isfile(summary)]
    if missed:
        print(f"warning: {arch}: no checkpoint was copied at steps {missed}", file=sys.stderr)
    return {step: (found[step], copier.times.get(str(step))) for step in sorted(found)}
