"""One kstyle process at a time in a run folder or on an output: advisory ``flock`` locks.

A process that trains into a run directory, or writes a stylized picture or an export, holds
an exclusive ``flock`` on a lock file for as long as it works: ``RUN/.kstyle.lock`` in a run
directory (:func:`run_dir_lock`), ``.NAME.kstyle.lock`` beside any other output
(:func:`output_lock`). The kernel releases a ``flock`` when its process ends, however it ends
(SIGKILL too), so a lock never outlives its process: a lock file that a killed process left
behind is simply locked by the next command. The file holds its holder's PID, which the
refusal names. A process that holds a lock may take it again (nested calls), and releasing
removes the file (and a folder that the lock itself created, if it is still empty).

Where ``flock`` does not exist (Windows) or the file system refuses it, nothing is locked.
"""

import contextlib
import errno
import hashlib
import os
import threading
import time

from kstyle.errors import KstyleError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; kstyle runs unlocked there
    fcntl = None

LOCK_NAME = ".kstyle.lock"
# errnos of a lock that another open file (another process, or another open of this process)
# holds; and of file systems that cannot lock at all (these run unlocked).
_HELD_ELSEWHERE = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
_CANNOT_LOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)
# The longest output name that keeps its whole name in its lock file's.
_MAX_NAME_BYTES = 255 - len(LOCK_NAME) - 1
# How long a refusal waits for a holder that has just locked to write its PID.
_PID_WAIT_SECONDS = 0.5

# (thread, lock file) -> [descriptor, holds, folders made for it] of the locks held here
_held: dict[tuple[int, str], list] = {}
_held_guard = threading.Lock()


def run_dir_lock_path(run_dir: str) -> str:
    """The lock file of a run directory: ``run_dir/.kstyle.lock``."""
    return os.path.join(run_dir, LOCK_NAME)


def output_lock_path(output: str) -> str:
    """The lock file of any other output (a file or a folder): ``.NAME.kstyle.lock`` beside
    it, so that it never lands inside what is written. A NAME too long for that keeps its
    start and gains a hash of the whole name, within the file-name limit of 255 bytes."""
    folder, name = os.path.split(os.path.abspath(output.rstrip(os.sep) or output))
    if len(name.encode()) > _MAX_NAME_BYTES:
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        name = f"{name.encode()[: _MAX_NAME_BYTES - 17].decode(errors='ignore')}-{digest}"
    return os.path.join(folder, f".{name}{LOCK_NAME}")


def holder_pid(lock_path: str) -> int | None:
    """The PID written in ``lock_path`` (None: none yet, or no such file)."""
    deadline = time.monotonic() + _PID_WAIT_SECONDS
    while True:
        try:
            with open(lock_path) as file:
                text = file.read().strip()
        except OSError:
            text = ""
        if text.isdigit() or time.monotonic() > deadline:
            return int(text) if text.isdigit() else None
        time.sleep(0.02)


def _try_lock(lock_path: str) -> int | None:
    """A descriptor of ``lock_path`` with its exclusive lock taken and this PID written in
    it; None when another holds it. -1 where the file system cannot lock (run unlocked)."""
    while True:
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(descriptor)
            if error.errno in _HELD_ELSEWHERE:
                return None
            if error.errno in _CANNOT_LOCK:
                return -1
            raise
        # The holder before us removes the file when it lets go: a lock on a removed file
        # guards nothing, so lock the file that is there now.
        try:
            current = os.stat(lock_path)
        except FileNotFoundError:
            current = None
        opened = os.fstat(descriptor)
        if current is not None and (current.st_dev, current.st_ino) == (
            opened.st_dev,
            opened.st_ino,
        ):
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
            return descriptor
        os.close(descriptor)


def _release(lock_path: str, descriptor: int, made_folders: list[str]) -> None:
    """Removes the lock file (while still holding it), then lets go of the lock; removes the
    ``made_folders`` (deepest first) that are empty now."""
    with contextlib.suppress(OSError):
        os.remove(lock_path)
    os.close(descriptor)
    for folder in made_folders:
        try:
            os.rmdir(folder)
        except OSError:  # not empty: the run wrote into it (and so into those above)
            break


def _missing_folders(folder: str) -> list[str]:
    """``folder`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    while folder and not os.path.isdir(folder) and folder != os.path.dirname(folder):
        missing.append(folder)
        folder = os.path.dirname(folder)
    return missing


@contextlib.contextmanager
def holding(lock_path: str, output: str):
    """Holds the exclusive lock of ``lock_path``, which guards ``output`` (the ``--output``
    that the refusal names), for the ``with`` block. The lock file's folder is created if it
    is missing, and removed again on release if it is still empty.

    Raises:
        KstyleError: another process holds the lock (one line naming its PID).
        OSError: the lock file cannot be made (named as ``output``, or as the folder that
            cannot be made).
    """
    if fcntl is None:
        yield
        return
    key = (threading.get_ident(), os.path.realpath(lock_path))  # another thread: refused
    with _held_guard:
        held = _held.get(key)
        if held is not None:  # this process holds it already (a nested call)
            held[1] += 1
    if held is None:
        held = _acquire(lock_path, output)
        if held is None:  # a file system without locks
            yield
            return
        with _held_guard:
            _held[key] = held
    try:
        yield
    finally:
        with _held_guard:
            held[1] -= 1
            last = held[1] == 0
            if last:
                del _held[key]
        if last:
            _release(lock_path, held[0], held[2])


def _acquire(lock_path: str, output: str) -> list | None:
    """``[descriptor, 1, made_folders]`` for the newly taken lock of ``lock_path`` (None where
    the file system cannot lock); see :func:`holding`."""
    folder = os.path.dirname(os.path.abspath(lock_path))
    made_folders = _missing_folders(folder)
    try:
        os.makedirs(folder, exist_ok=True)
        descriptor = _try_lock(lock_path)
    except OSError as error:
        named = output if error.filename in (None, lock_path) else error.filename  # a folder
        raise OSError(error.errno, error.strerror, named) from error
    if descriptor is None:
        pid = holder_pid(lock_path)
        who = f"PID {pid}" if pid is not None else "PID unknown"
        raise KstyleError(
            f"--output {output} is in use by another kstyle process ({who}); wait for it to "
            "end (or stop it), or choose another --output"
        )
    if descriptor == -1:
        for made in made_folders:  # nothing to guard: leave no folder behind
            with contextlib.suppress(OSError):
                os.rmdir(made)
        return None
    return [descriptor, 1, made_folders]


def run_dir_lock(run_dir: str):
    """Holds ``run_dir``'s lock (a context manager): one training or distillation per run
    directory (see :func:`holding`)."""
    return holding(run_dir_lock_path(run_dir), run_dir)


def output_lock(output: str, folder: bool = False):
    """Holds the lock of an output (a context manager): one stylize or export writes it at a
    time (see :func:`holding`). An output ``folder`` that kstyle writes files into has its
    lock inside (``FOLDER/.kstyle.lock``), so that nothing is written outside what the user
    named; a file, or a folder that is built aside and renamed into place (a web site), has
    it beside (:func:`output_lock_path`)."""
    if folder:
        return holding(run_dir_lock_path(output), output)
    return holding(output_lock_path(output), output)
