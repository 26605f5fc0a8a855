"""The choices ``kstyle tune`` measured, kept in kstyle's cache folder and read by the other
commands before TensorFlow loads.

One JSON file, ``tuned.json``, holds entries of ``(machine, task, job) -> choice``: the machine
is :func:`kstyle.machine.machine_record` (CPU model, features, cores, library versions), the
task ``stylize`` or ``train``, the job what was tuned (a network's :func:`network_id` for
stylizing, the architecture for training). A lookup only returns a choice measured on an
equal machine record. A file that cannot be read as such a store is ignored and the reason
returned, for the caller to warn about; nothing is ever applied from it.
"""

import dataclasses
import hashlib
import json
import math
import os
import time
import zipfile

from kstyle.files import write_json_atomically
from kstyle.machine import machine_record

STORE_NAME = "tuned.json"
STORE_FORMAT = "kstyle tuned paths 1"
CACHE_VARIABLE = "KSTYLE_CACHE_DIR"
TASKS = ("stylize", "train")
# config.json keys that differ between files of one architecture: names, object ids, shapes
IGNORED_KEYS = ("name", "build_config", "shared_object_id")
MAX_PIXELS = 1 << 30  # a stored size beyond any image kstyle stylizes is a damaged one


def cache_folder() -> str:
    """kstyle's cache folder: ``$KSTYLE_CACHE_DIR``, else ``$XDG_CACHE_HOME/kstyle``, else
    ``~/.cache/kstyle``."""
    if os.environ.get(CACHE_VARIABLE):
        return os.environ[CACHE_VARIABLE]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "kstyle")


def store_path() -> str:
    """Where the tuned choices are kept: ``tuned.json`` in :func:`cache_folder`."""
    return os.path.join(cache_folder(), STORE_NAME)


def network_id(keras_file: str) -> str:
    """A network's identity for the store: the SHA-256 (16 hex digits) of the architecture in
    a ``.keras`` file's ``config.json`` without :data:`IGNORED_KEYS`, weights ignored. Every
    net of one preset and options shares it; read without TensorFlow."""
    with zipfile.ZipFile(keras_file) as archive:
        config = json.loads(archive.read("config.json"))
    text = json.dumps(_without_names(config), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _without_names(value):
    if isinstance(value, dict):
        return {k: _without_names(v) for k, v in value.items() if k not in IGNORED_KEYS}
    if isinstance(value, list):
        return [_without_names(item) for item in value]
    return value


@dataclasses.dataclass
class TunedStore:
    """The entries of a store file, and why the file was ignored (``problem``, None when it
    was read or is absent)."""

    path: str
    entries: list = dataclasses.field(default_factory=list)
    problem: str | None = None

    @classmethod
    def read(cls, path: str | None = None) -> "TunedStore":
        """The store at ``path`` (default :func:`store_path`); an absent file is an empty store,
        an unreadable or foreign one an empty store with its ``problem``."""
        path = path or store_path()
        try:
            with open(path) as file:
                data = json.load(file)
        except FileNotFoundError:
            return cls(path)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            return cls(path, problem=f"cannot read it ({type(error).__name__}: {error})")
        if not isinstance(data, dict) or data.get("format") != STORE_FORMAT:
            return cls(path, problem=f"it is not a kstyle store of format {STORE_FORMAT!r}")
        entries = data.get("entries")
        if not isinstance(entries, list) or not all(_valid(entry) for entry in entries):
            return cls(path, problem="its entries are damaged")
        return cls(path, entries)

    def choice(self, task: str, job: str, machine: dict | None = None) -> dict | None:
        """The stored choice for ``task`` and ``job`` on ``machine`` (default: this one)."""
        machine = machine_record() if machine is None else machine
        for entry in self.entries:
            if (entry["task"], entry["job"], entry["machine"]) == (task, job, machine):
                return entry["choice"]
        return None

    def foreign(self, machine: dict | None = None) -> bool:
        """Whether the store holds choices, none of them measured on ``machine`` (default: this
        one): another CPU, other library versions (say, after an upgrade) or kernel settings."""
        machine = machine_record() if machine is None else machine
        return bool(self.entries) and all(entry["machine"] != machine for entry in self.entries)

    def put(self, task: str, job: str, choice: dict, label: str, machine=None) -> None:
        """Adds (or replaces) the choice for ``task``, ``job`` and ``machine`` (default: this
        one) and writes the file atomically; entries of other machines are kept."""
        machine = machine_record() if machine is None else machine
        key = (task, job, machine)
        kept = [e for e in self.entries if (e["task"], e["job"], e["machine"]) != key]
        entry = {"task": task, "job": job, "label": label, "machine": machine, "choice": choice}
        entry["tuned_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
        self.entries = [*kept, entry]
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        write_json_atomically({"format": STORE_FORMAT, "entries": self.entries}, self.path)

    def problem_line(self) -> str | None:
        """The warning to show when this store is not used: damaged, foreign or None."""
        if self.problem:
            return f"ignoring the tuned choices in {self.path}: {self.problem}"
        if self.foreign():
            return (
                f"ignoring the tuned choices in {self.path}: they were measured on another CPU "
                "or with other library versions (run kstyle tune to measure this machine)"
            )
        return None


def _valid(entry) -> bool:
    keys = ("task", "job", "machine", "choice")
    if not (isinstance(entry, dict) and all(key in entry for key in keys)):
        return False
    choice = entry["choice"]
    if entry["task"] == "stylize":
        return _valid_stylize(choice)
    return entry["task"] == "train" and _valid_train(choice)


def _valid_stylize(choice) -> bool:
    """A stylize choice: ``onednn`` and ``sizes``, each with whole ``pixels`` and a ``path``."""
    if not isinstance(choice, dict) or not isinstance(choice.get("onednn"), bool):
        return False
    sizes = choice.get("sizes")
    return isinstance(sizes, list) and bool(sizes) and all(_valid_size(size) for size in sizes)


def _valid_size(size) -> bool:
    pixels = size.get("pixels") if isinstance(size, dict) else None
    return (
        isinstance(pixels, int)
        and 0 < pixels <= MAX_PIXELS
        and isinstance(size.get("path"), str)
        and isinstance(size.get("tensorflow_path", ""), str)
        and all(_number(size.get(key, 0)) for key in ("seconds", "default_seconds"))
    )


def _number(value) -> bool:
    """A time a store may hold: a finite non-negative number, or None (not measured)."""
    return value is None or (
        isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 1e9
    )


def _valid_train(choice) -> bool:
    """A training choice: ``precision``, and for it (and each other) ``onednn`` and ``xla``."""
    by_precision = choice.get("by_precision") if isinstance(choice, dict) else None
    return (
        isinstance(by_precision, dict)
        and choice.get("precision") in by_precision
        and all(
            precision in ("off", "bfloat16")
            and isinstance(best, dict)
            and isinstance(best.get("onednn"), bool)
            and isinstance(best.get("xla"), bool)
            and _number(best.get("seconds"))
            for precision, best in by_precision.items()
        )
    )


def nearest_size(sizes: list, pixels: int) -> dict:
    """The entry of ``sizes`` (dicts with ``pixels``) nearest to ``pixels`` in scale (ratio)."""
    return min(sizes, key=lambda size: abs(math.log(size["pixels"] / max(pixels, 1))))
