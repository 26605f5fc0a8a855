"""Files on disk: listing images, and writing anything atomically and durably.

Every whole file kstyle writes (models, figures, JSON, images, exported artifacts) goes through
:class:`StagedOutput` (or :func:`atomic_output`, :func:`atomic_directory`): the content is
written under a short temporary name in the target's folder, flushed to disk (``fsync``),
renamed over the target, and the folder's entry is flushed too where the platform allows. A
kill at any moment leaves either the old file or the new one, never half of one. A failed
write removes its temporary file; one left by a kill is removed by :func:`remove_leftovers`
when the next run or export starts in that folder. (``history.csv`` gains a line per step
and is rewritten this way when a run resumes.)
"""

import contextlib
import errno
import hashlib
import json
import math
import os
import shutil
import sys
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


def flush_folder(directory: str) -> None:
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


def flush_to_disk(path: str) -> None:
    """Flushes a file, or every file under a folder and the folder itself, to disk."""
    paths = [path]
    if os.path.isdir(path):
        paths = [os.path.join(root, name) for root, _, names in os.walk(path) for name in names]
        flush_folder(path)
    for name in paths:
        with open(name, "rb+") as file:
            os.fsync(file.fileno())


PREFIX = ".kstyle-"  # every temporary name kstyle makes starts with this


def _mode_for(path: str, full: int) -> int:
    """The permission bits a new ``path`` gets: an existing file's, else ``full`` less the
    process's umask."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return full & ~umask


def remove_path(path: str) -> None:
    """Removes a file or a folder tree at ``path``, if there is one."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


def remove_leftovers(folder: str) -> int:
    """Removes the temporary files and folders that writes cut short by a kill (SIGKILL,
    power loss) left in ``folder``; returns how many. Only names kstyle makes are touched."""
    removed = 0
    if not os.path.isdir(folder):
        return removed
    for name in os.listdir(folder):
        if name.startswith(PREFIX):
            remove_path(os.path.join(folder, name))
            removed += 1
    return removed


def is_temporary_name(path) -> bool:
    """Whether ``path`` is, or lies under, a temporary name that kstyle made (:data:`PREFIX`)."""
    return any(part.startswith(PREFIX) for part in os.path.normpath(str(path)).split(os.sep))


def naming(error: OSError, path: str) -> OSError:
    """``error`` as the user should read it: the same error naming ``path`` (the output they
    asked for) where it names no file or one of kstyle's temporary names; else ``error``
    itself."""
    if not error.errno or (error.filename is not None and not is_temporary_name(error.filename)):
        return error
    return OSError(error.errno, error.strerror, path)


def _tensorflow_write_error(error: Exception, path: str) -> OSError | None:
    """The OSError that a TensorFlow file error (its writes, a SavedModel's, raise these rather
    than OSError) stands for, naming ``path``: a full disk, no permission, a missing folder.
    None for anything else."""
    tf = sys.modules.get("tensorflow")
    if tf is None:
        return None
    meanings = (
        (tf.errors.ResourceExhaustedError, errno.ENOSPC),
        (tf.errors.PermissionDeniedError, errno.EACCES),
        (tf.errors.NotFoundError, errno.ENOENT),
    )
    for kind, number in meanings:
        if isinstance(error, kind):
            return OSError(number, os.strerror(number), path)
    return None


def check_writable(path: str, folder: bool = False) -> None:
    """Raises OSError naming ``path`` unless kstyle can write it: a real write, since permission
    bits do not tell (root ignores them; a read-only mount or a full disk does not show in
    them). A temporary file is created and removed in the folder that will hold ``path``
    (``path`` itself with ``folder``, for a folder written into), or in the nearest existing
    folder above it, under which the write would create the rest. Nothing else is created.
    """
    target = os.path.abspath(path)
    directory = target if folder else os.path.dirname(target)
    while not os.path.lexists(directory):
        directory = os.path.dirname(directory)
    if not os.path.isdir(directory):  # a file where a folder must go
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
    try:
        descriptor, probe = tempfile.mkstemp(prefix=PREFIX, suffix=".probe", dir=directory)
    except OSError as error:
        raise OSError(error.errno, error.strerror, path) from error
    os.close(descriptor)
    with contextlib.suppress(FileNotFoundError):  # another run's clean-up took it already
        os.remove(probe)


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
        try:
            os.makedirs(self.directory, exist_ok=True)
            # mkstemp and mkdtemp make owner-only entries; an output gets the usual permissions
            # (those of the file it replaces, else what the umask leaves), as open() would give.
            if folder:
                self.temporary = tempfile.mkdtemp(prefix=PREFIX, suffix=".tmp", dir=self.directory)
                os.chmod(self.temporary, _mode_for(path, 0o777))
            else:
                extension = os.path.splitext(path)[1][:16]
                descriptor, self.temporary = tempfile.mkstemp(
                    prefix=PREFIX, suffix=f".tmp{extension}", dir=self.directory
                )
                os.close(descriptor)
                os.chmod(self.temporary, _mode_for(path, 0o666))
        except OSError as error:
            raise naming(error, path) from error

    def commit(self) -> None:
        """Flushes the temporary to disk and renames it over ``path``."""
        self.keep_as(self.path)

    def keep_as(self, path: str) -> None:
        """Flushes the temporary to disk and renames it over ``path`` (in the same folder)."""
        flush_to_disk(self.temporary)
        replace_path(self.temporary, path)

    def discard(self) -> None:
        """Removes the temporary if it is still there."""
        remove_path(self.temporary)

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        self.discard()
        if isinstance(error, OSError):
            renamed = naming(error, self.path)
        elif error is not None and self.temporary in str(error):
            renamed = _tensorflow_write_error(error, self.path)
        else:
            renamed = None
        if renamed is not None and renamed is not error:
            raise renamed from error


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

    A folder ``target`` is replaced only by a folder: it is first renamed aside, and deleted
    only once ``source`` is in place (put back if that fails).

    Raises:
        IsADirectoryError: ``source`` is a file and ``target`` a folder.
    """
    directory = os.path.dirname(os.path.abspath(target))
    aside = None
    if os.path.isdir(target) and not os.path.islink(target):
        if not os.path.isdir(source):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), target)
        aside = tempfile.mkdtemp(prefix=PREFIX + "old-", dir=directory)
        os.rmdir(aside)
        os.replace(target, aside)
    try:
        os.replace(source, target)
    except OSError:
        if aside is not None:
            os.replace(aside, target)
        raise
    flush_folder(directory)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def write_json_atomically(data: dict, path: str, sort_keys: bool = True) -> None:
    """Writes ``data`` as indented JSON to ``path`` (see :func:`atomic_output`)."""
    with atomic_output(path) as temporary:
        with open(temporary, "w") as file:
            json.dump(data, file, indent=2, sort_keys=sort_keys)
            file.write("\n")


def file_sha256(path: str) -> str:
    """The SHA-256 of the file at ``path``, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_sha256(path: str) -> str:
    """The SHA-256 (hex) of the folder at ``path``: of each file's path relative to it and
    SHA-256, in sorted order, so that a renamed, added, removed or changed file changes it."""
    digest = hashlib.sha256()
    for root, folders, names in os.walk(path):
        folders.sort()
        for name in sorted(names):
            full = os.path.join(root, name)
            relative = os.path.relpath(full, path).replace(os.sep, "/")
            digest.update(f"{relative}\0{file_sha256(full)}\n".encode())
    return digest.hexdigest()


def file_stem(path: str) -> str:
    """A file's or folder's name without extension."""
    return os.path.splitext(os.path.basename(os.path.normpath(path)))[0]


def image_files_of(paths) -> list[str]:
    """The images of ``paths``, in order: each folder's images (recursive, sorted,
    :func:`list_image_files`) and every other path as it is (reading it says whether it is
    an image); a file given twice counts once.

    Raises:
        KstyleError: a folder without images.
    """
    files = []
    for path in paths or ():
        files += list_image_files(path) if os.path.isdir(path) else [path]
    return list(dict.fromkeys(files))


def unique_names(files, taken=()) -> list[str]:
    """A name per file: its name without extension (``-2``, ``-3``, ... after a
    name already taken, here or in ``taken``)."""
    names = list(taken)
    for path in files:
        name, count = file_stem(path), 1
        while name in names:
            count += 1
            name = f"{file_stem(path)}-{count}"
        names.append(name)
    return names[len(taken) :]
