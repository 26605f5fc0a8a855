"""What a run directory holds: its files, the run found there, and ``config.json``.

A run directory (``TrainConfig.output``) belongs to one run. Running the same command again
resumes it (:func:`previous_run` checks the options match), ``--restart`` clears what it
wrote (:func:`clear_run`), and every worker of a multi-worker run has a directory of its own
(:func:`worker_dir`).
"""

import dataclasses
import json
import os
import platform
import re
import shutil
import sys

from kstyle.config import RunOptions, flag_of, resume_keys
from kstyle.constants import DEFAULT_TFDS_NAME, EPOCHS
from kstyle.errors import KstyleError, cause_of
from kstyle.files import PREFIX, write_json_atomically
from kstyle.lock import LOCK_NAME, run_dir_lock
from kstyle.smoke import smoke_fields

RUN_FILES = ("model.keras", "config.json", "history.csv", "losses.png", "preview.png")
# Files and folders of a run that --restart removes (never anything else in the folder).
RESTART_REMOVES = (*RUN_FILES, "summary.json", "stylized.png", "checkpoints", "logs")
# Other names kstyle itself puts into a run directory: the demo's data, the folders of the
# other workers of a multi-worker run, temporary files of a write that was cut short, and the
# lock file of the process that owns the run (kstyle.lock; left behind by a kill).
_OWN_NAMES = re.compile(
    rf"demo_data|(worker|chief)-\d+|{re.escape(PREFIX)}.*|{re.escape(LOCK_NAME)}"
)


def check_ownership(run_dir: str) -> None:
    """Refuses a ``--output`` folder that holds anything but a kstyle run.

    A folder may be missing, empty, hold a run (its ``config.json`` is kstyle's: a run writes
    it before any model, checkpoint or log), or hold only the demo's data, other workers'
    folders and temporary files of kstyle's. Anything else is somebody else's folder: kstyle
    would overwrite its ``config.json`` or ``model.keras``, and ``--restart`` would delete its
    ``logs/``.

    Raises:
        KstyleError: ``run_dir`` is a file, or a folder that is not a kstyle run.
    """
    if not os.path.exists(run_dir):
        return
    if not os.path.isdir(run_dir):
        raise KstyleError(f"--output {run_dir} is a file, not a directory")
    entries = os.listdir(run_dir)
    config_path = os.path.join(run_dir, "config.json")
    if os.path.isfile(config_path):
        try:
            with open(config_path) as file:
                saved = json.load(file)
        except (OSError, ValueError):
            saved = None
        if isinstance(saved, dict) and "kstyle" in (saved.get("versions") or {}):
            return
    elif all(_OWN_NAMES.fullmatch(name) for name in entries):
        return
    raise KstyleError(
        f"--output {run_dir} is a folder that holds no kstyle run ({len(entries)} entries); "
        "choose an empty or new folder (kstyle overwrites and, with --restart, deletes the "
        "files of its runs)"
    )


def own_run_dir(run_dir: str):
    """Makes this process the owner of ``run_dir`` for the ``with`` block (a context
    manager): refuses a folder that is not a run's (:func:`check_ownership`), then holds its
    lock (``kstyle.lock``), so that a second training or distillation into the same folder is
    refused with the PID of the first. In a multi-worker run only the chief takes the lock
    (the other workers write folders of their own inside it)."""
    import contextlib

    from kstyle.distribute import is_chief

    if not is_chief():
        return contextlib.nullcontext()
    check_ownership(run_dir)
    return run_dir_lock(run_dir)


def worker_dir(run_dir: str) -> str:
    """This worker's run directory: ``run_dir`` for the chief, a subfolder for the others."""
    from kstyle.distribute import is_chief, worker_role

    if is_chief():
        return run_dir
    task_type, index = worker_role()
    return os.path.join(run_dir, f"{task_type}-{index}")


def previous_run(run_dir: str, config: RunOptions) -> dict | None:
    """The saved config of a resumable run in ``run_dir`` (None: start a new run).

    Raises:
        KstyleError: the run there was started with other options.
    """
    from kstyle.callbacks import latest_checkpoint_step

    config_path = os.path.join(run_dir, "config.json")
    step = latest_checkpoint_step(os.path.join(run_dir, "checkpoints"))
    if step is None or not os.path.isfile(config_path):
        return None
    saved = read_json(config_path)
    if "data_seed" not in saved:
        raise KstyleError(f"{config_path} lacks data_seed; pass --restart to start over")
    adopt_old_default(saved, config)
    config.adopt_older_record(saved)
    now = dataclasses.asdict(config)
    older = config.options_of_older_runs()
    for key in resume_keys(config):
        then = saved.get(key, older.get(key, now[key]))  # absent: a newer option
        if then != now[key]:
            raise KstyleError(
                f"{run_dir} holds a run started with {flag_of(key)} {_shown(then)} "
                f"(now {_shown(now[key])}); rerun it with its options to resume, pass "
                "--restart to start over, or choose another --output"
            )
    for key, value in config.recorded_inputs().items():
        if key in saved and saved[key] != value:
            raise KstyleError(
                f"{run_dir} holds a run started with {key} {_shown(saved[key])} (now "
                f"{_shown(value)}); restore that input to resume, pass --restart to start "
                "over, or choose another --output"
            )
    return saved


def adopt_old_default(saved: dict, config: RunOptions) -> None:
    """Lets a run started before kstyle fetched COCO itself resume as the same command.

    Such a run (its ``config.json`` has no ``data_dir``) trained without ``--data`` on the
    tfds dataset that was then the default; when it is resumed with neither ``--data`` nor
    ``--tfds-name``, ``config.tfds_name`` is set to that dataset, so that the run continues
    on the very batches it would have seen (a run started with an explicit ``--tfds-name``
    must be resumed with it, like any option that defines what a run computes).
    """
    old_run = "data_dir" not in saved and saved.get("data") is None
    if old_run and saved.get("tfds_name") == DEFAULT_TFDS_NAME and config.data is None:
        config.tfds_name = config.tfds_name or DEFAULT_TFDS_NAME
    adopt_old_epochs(saved, config)


def adopt_old_epochs(saved: dict, config: RunOptions) -> None:
    """Lets a run started before ``--steps`` could run past ``--epochs`` resume as the same
    command.

    Such a run (its ``config.json`` has no ``epochs_used``) recorded the epochs it was given
    or their default then (2; the demo 100), which capped ``--steps``. Resumed without
    ``--epochs``, it keeps that recorded number, so that it continues to the very step count
    it was started for (its ``total_steps``). Without ``--steps``, an ``--epochs`` equal to
    the default and none at all are the same run, whichever way it was started and resumed.
    """
    if "epochs_used" not in saved and config.epochs is None and saved.get("epochs") is not None:
        config.epochs = saved["epochs"]
    elif saved.get("steps") is None and config.steps is None:
        # without --steps, --epochs 2 typed out is the default: the same run either way
        default = (None, EPOCHS)
        if saved.get("epochs") in default and config.epochs in default:
            config.epochs = saved.get("epochs")


def _shown(value) -> str:
    """An option's value in a message (None: "not given")."""
    return "not given" if value is None else str(value)


def model_marks(config: RunOptions) -> dict:
    """What the run's model file records about itself: :func:`smoke_test_fields` and the
    config's own marks (a net of several styles' names)."""
    return {**smoke_test_fields(config), **config.model_marks()}


def smoke_test_fields(config: RunOptions) -> dict:
    """``{"smoke_test": bool}``, and for a smoke test ``"note"`` (``kstyle.smoke``'s note).
    A smoke test is a run with an untrained loss network (``--vgg-weights random``: its losses
    measure nothing, its model learns no style) or a student of a smoke test's teacher (see
    ``config.smoke_test_cause``); a distillation without its perceptual term builds no loss
    network and is one only through its teacher. ``config.json``, ``summary.json`` and the
    model file (``kstyle.smoke``) hold them."""
    return smoke_fields(config.smoke_test_cause() is not None)


def check_loss_net(run_dir: str, config: RunOptions) -> None:
    """Refuses a run whose loss network is trained (ImageNet or a weights file) in a folder
    that holds a smoke test's run (``--vgg-weights random``), and the other way round: neither
    may resume the other or count as done. Other option changes are :func:`previous_run`'s.

    Raises:
        KstyleError: the kinds differ; the message names ``--restart``.
    """
    config_path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(config_path):
        return
    saved = read_json(config_path).get("vgg_weights")
    if (saved == "random") == (config.vgg_weights == "random"):
        return
    if saved == "random":
        raise KstyleError(
            f"{run_dir} holds a smoke-test run (--vgg-weights random, an untrained loss network) "
            f"that a run with --vgg-weights {config.vgg_weights} must not continue; pass "
            "--restart to train from scratch, or choose another --output"
        )
    raise KstyleError(
        f"{run_dir} holds a run trained with --vgg-weights {saved}; a --vgg-weights random "
        "smoke test must not continue it or pass for it: pass --restart to replace it (its "
        "model is deleted), or choose another --output"
    )


def read_json(path: str) -> dict:
    """A JSON object from ``path``, or a KstyleError that names the file."""
    try:
        with open(path) as file:
            data = json.load(file)
    except (OSError, ValueError) as error:
        raise KstyleError(
            f"could not read {path}: {cause_of(error)}; pass --restart to start over"
        ) from error
    if not isinstance(data, dict):
        raise KstyleError(f"{path} is not a JSON object; pass --restart to start over")
    return data


def clear_run(run_dir: str) -> None:
    """Removes what a previous run wrote into ``run_dir`` (for ``--restart``)."""
    for name in RESTART_REMOVES:
        path = os.path.join(run_dir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)


def write_run_config(run_dir: str, config: RunOptions, data, total_steps: int, strategy: str):
    """Writes ``config.json`` into ``run_dir``: the options as given (a resumed run must
    match them) and what the run made of them (``data`` is its ``TrainingData``, ``strategy``
    the strategy's name; ``epochs_used`` counts a last partial epoch as one)."""
    write_json_atomically(
        {
            **dataclasses.asdict(config),
            "run_dir": config.resolved_output(),
            **config.resolved_options(),
            "data_description": data.description,
            "data_seed": data.seed,
            "steps_per_epoch": data.steps_per_epoch,
            "total_steps": total_steps,
            "epochs_used": -(-total_steps // data.steps_per_epoch),
            "strategy_used": strategy,
            **smoke_test_fields(config),
            **config.recorded_inputs(),
            "command": sys.argv,
            "versions": library_versions(),
        },
        os.path.join(run_dir, "config.json"),
    )


def library_versions() -> dict:
    """Versions of kstyle, Python, TensorFlow and Keras, for ``config.json``."""
    import keras
    import tensorflow as tf

    import kstyle

    return {
        "kstyle": kstyle.__version__,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }
