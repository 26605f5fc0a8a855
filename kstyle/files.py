"""Files on disk: listing images, and writing anything atomically and durably.

Every file kstyle writes goes through :func:`atomic_output` (or :func:`atomic_directory`):
the content is written under a short temporary name in the target's folder, flushed to disk
(``fsync``), renamed over the target, and the folder's entry is flushed too where the platform
allows. A kill at any moment leaves either the old file or the new one, never half of one, and
the temporary file is removed on every error path.
"""

import contextlib
import json
import math
import os
import shutil
import tempfile

from kstyle.errors import KstyleError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


def is_image_file(name: str) -> bool:
    """Whether ``name`` has one of :data:`IMAGE_EXTENSIONS` (any case)."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


def list_image_files(folder: str, fraction: float = 1.0) -> list[str]:
    """Image files under ``folder`` (recursive, sorted), the first ``floor(N * fraction)``.

    Raises:
        KstyleError: the folder is missing, holds no images, or the fraction keeps none.
    """
    if not 0.0 < fraction <= 1.0:
        raise KstyleError(f"--fraction must be in (0, 1], got {fraction}")
    if not os.path.isdir(folder):
        raise KstyleError(f"folder not found: {folder}")
    files = []
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        files.extend(os.path.join(root, name) for name in sorted(names) if is_image_file(name))
    if not files:
        raise KstyleError(
            f"no images in {folder} (looked for {', '.join(IMAGE_EXTENSIONS)}, recursively)"
        )
    kept = files[: math.floor(len(files) * fraction)]
    if not kept:
        raise KstyleError(
            f"--fraction {fraction} keeps none of the {len(files)} images in {folder}"
        )
    return kept


def _fsync_directory(directory: str) -> None:
    """Flushes a folder's entries to disk (a no-op where folders cannot be opened)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _fsync_tree(path: str) -> None:
    """Flushes a file, or every file under a folder, to disk."""
    paths = [path]
    if os.path.isdir(path):
        paths = [os.path.join(root, name) for root, _, names in os.walk(path) for name in names]
    for name in paths:
        with open(name, "rb+") as file:
            os.fsync(file.fileno())


class StagedOutput:
    """A temporary file (or folder) next to ``path`` that becomes ``path`` only when told.

    Write the whole artifact to :attr:`temporary` (with any library: ``model.save``,
    ``Image.save``, ``open``), check it if you like, then :meth:`commit` (flushed to disk and
    renamed over ``path``) or :meth:`keep_as` another name. Leaving the ``with`` block without
    either removes the temporary, so ``path`` is untouched by a failed write. The temporary
    name is short (well within any file-name limit) and keeps ``path``'s extension, which some
    writers read to pick a format.
    """

    def __init__(self, path: str, folder: bool = False):
        self.path = path
        self.directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(self.directory, exist_ok=True)
        if folder:
            self.temporary = tempfile.mkdtemp(prefix=".kstyle-", suffix=".tmp", dir=self.directory)
        else:
            extension = os.path.splitext(path)[1][:16]
            descriptor, self.temporary = tempfile.mkstemp(
                prefix=".kstyle-", suffix=f".tmp{extension}", dir=self.directory
            )
            os.close(descriptor)

    def commit(self) -> None:
        """Flushes the temporary to disk and renames it over ``path``."""
        self.keep_as(self.path)

    def keep_as(self, path: str) -> None:
        """Flushes the temporary to disk and renames it over ``path`` (in the same folder)."""
        _fsync_tree(self.temporary)
        replace_path(self.temporary, path)

    def discard(self) -> None:
        """Removes the temporary if it is still there."""
        if os.path.isdir(self.temporary):
            shutil.rmtree(self.temporary, ignore_errors=True)
        elif os.path.lexists(self.temporary):
            os.remove(self.temporary)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.discard()


@contextlib.contextmanager
def atomic_output(path: str):
    """Yields a temporary file path next to ``path``; when the block ends without an error the
    file is flushed and renamed over ``path``; on an error it is removed and ``path`` is
    untouched (see :class:`StagedOutput`)."""
    with StagedOutput(path) as staged:
        yield staged.temporary
        staged.commit()


@contextlib.contextmanager
def atomic_directory(path: str):
    """Like :func:`atomic_output` for a folder (a SavedModel): on success an existing ``path``
    is moved aside, the new folder renamed into place, and the old one deleted."""
    with StagedOutput(path, folder=True) as staged:
        yield staged.temporary
        staged.commit()


def replace_path(source: str, target: str) -> None:
    """Renames ``source`` (a file or folder) over ``target`` and flushes the folder entry.

    A folder ``target`` is first renamed aside and deleted only once ``source`` is in place.
    """
    directory = os.path.dirname(os.path.abspath(target))
    aside = None
    if os.path.isdir(target) and not os.path.islink(target):
        aside = tempfile.mkdtemp(prefix=".kstyle-old-", dir=directory)
        os.rmdir(aside)
        os.replace(target, aside)
    os.replace(source, target)
    _fsync_directory(directory)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def write_json_atomically(data: dict, path: str, sort_keys: bool = True) -> None:
    """Writes ``data`` as indented JSON to ``path`` (see :func:`atomic_output`)."""
    with atomic_output(path) as temporary:
        with open(temporary, "w") as file:
            json.dump(data, file, indent=2, sort_keys=sort_keys)
            file.write("\n")
