"""Smoke-test marks that travel with a model file.

A run with an untrained loss network (``--vgg-weights random``) trains a model that learned
no style: a smoke test. Its run directory says so (``config.json`` and ``summary.json``:
``"smoke_test": true`` and the :data:`SMOKE_TEST_NOTE`), and so does its ``model.keras``
itself, which may be copied anywhere: kstyle writes the same fields as JSON into the ``.keras``
zip's archive comment (:func:`mark_model_file`). Keras reads the archive's members by name and
never its comment, so the file loads as before, on every backend; a comment, unlike an extra
member, does not make Keras extract the archive to look for assets.

:func:`smoke_note` reads the mark of a model (a ``.keras`` file or a run directory), falling
back to the run's ``config.json`` for a model saved before models carried marks. Stylizing,
exporting, serving and distilling read it; a student distilled from a smoke test's teacher is
one too. This module does not import TensorFlow.
"""

import json
import os
import zipfile

# What a run with an untrained loss network (--vgg-weights random) says about itself.
SMOKE_TEST_NOTE = "untrained loss network: smoke test only"
_MARK_KEY = "kstyle"  # the archive comment is {"kstyle": {...the fields...}}


def smoke_line(cause: str, tense: str = "learns") -> str:
    """The note printed for a smoke test's model, without ``note: ``: the
    :data:`SMOKE_TEST_NOTE`, its ``cause`` in parentheses and what it means for the model."""
    return f"{SMOKE_TEST_NOTE} ({cause}); the model {tense} no style"


def smoke_fields(smoke_test: bool) -> dict:
    """The fields that mark a model, run or export: ``{"smoke_test": bool}``, and for a smoke
    test ``"note"``: the :data:`SMOKE_TEST_NOTE`."""
    return {"smoke_test": True, "note": SMOKE_TEST_NOTE} if smoke_test else {"smoke_test": False}


def mark_model_file(path: str, fields: dict) -> None:
    """Writes ``fields`` (JSON-serializable) as the archive comment of the ``.keras`` zip at
    ``path``. Call it on a file that is still being written (a temporary name), so that the
    model file appears whole, mark included, or not at all."""
    comment = json.dumps({_MARK_KEY: fields}, sort_keys=True).encode()
    with zipfile.ZipFile(path, "a") as archive:
        archive.comment = comment


def model_file_marks(path: str) -> dict | None:
    """The fields :func:`mark_model_file` wrote into the model file at ``path``; None for a
    file without them (saved by Keras alone, or before models carried marks) or not a zip."""
    try:
        with zipfile.ZipFile(path) as archive:
            comment = archive.comment
    except (OSError, zipfile.BadZipFile):
        return None
    try:
        marks = json.loads(comment.decode()).get(_MARK_KEY)
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None
    return marks if isinstance(marks, dict) else None


def model_file_of(model: str) -> str:
    """The model file of ``model``: ``model/model.keras`` for a run directory, else
    ``model`` itself."""
    return os.path.join(model, "model.keras") if os.path.isdir(model) else model


def _run_config_marks(model_file: str) -> dict | None:
    """``config.json``'s smoke fields when ``model_file`` sits in a kstyle run directory as
    its ``model.keras`` (None otherwise)."""
    if os.path.basename(model_file) != "model.keras":
        return None
    try:
        with open(os.path.join(os.path.dirname(model_file), "config.json")) as file:
            saved = json.load(file)
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or "kstyle" not in (saved.get("versions") or {}):
        return None
    return saved


def recorded_style_names(model: str) -> list[str] | None:
    """The names of the styles of ``model`` (a ``.keras`` file or a run directory) as its
    file's marks or its run's ``config.json`` record them; None where neither does (a net of
    one style, or a file saved elsewhere)."""
    path = model_file_of(model)
    names = (model_file_marks(path) or {}).get("style_names")
    if names is None:
        names = (_run_config_marks(path) or {}).get("style_names")
    ok = isinstance(names, list) and all(isinstance(name, str) for name in names)
    return names if ok else None


def is_smoke_test(model: str) -> bool:
    """Whether ``model`` (a ``.keras`` file or a run directory) is a smoke test's: its file's
    mark says so, or (for an unmarked file) its run's ``config.json`` does."""
    path = model_file_of(model)
    marks = model_file_marks(path)
    if marks is None:
        marks = _run_config_marks(path) or {}
    return marks.get("smoke_test") is True


def smoke_note(model: str) -> str | None:
    """The note to print before using ``model`` (a ``.keras`` file or a run directory), the
    one training prints, naming the model file; None for a model that is not a smoke test's."""
    if not is_smoke_test(model):
        return None
    return smoke_line(model_file_of(model), tense="learned")


def smoke_notes(paths) -> list[str]:
    """The notes (:func:`smoke_note`) of the smoke tests' models among ``paths``: model
    files, run directories, or folders of run directories (each sub-folder's
    ``model.keras``)."""
    notes = []
    for path in map(str, paths):
        models = [path]
        if os.path.isdir(path) and not os.path.isfile(model_file_of(path)):  # a folder of runs
            runs = (os.path.join(path, name) for name in sorted(os.listdir(path)))
            models = [run for run in runs if os.path.isdir(run)]
        notes.extend(note for note in map(smoke_note, models) if note is not None)
    return notes
