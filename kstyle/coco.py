"""The COCO 2014 train images, downloaded once: what a run trains on when given no ``--data``.

:func:`coco_train_folder` fetches COCO's ``train2014.zip`` (13.5 GB, the 82,783 train images
alone: no annotations, no other split), checks its published SHA-256, extracts it once into
``<data dir>/train2014`` and returns that folder, which later runs reuse without a request.
A download cut short is kept as ``train2014.zip.part`` and resumed with an HTTP range request.
Offline, a full disk or a corrupt download each fail with one line.

Neither ``keras.utils.get_file`` (``urlretrieve``) nor tensorflow-datasets' downloader resumes
a partial download, so the transfer uses the standard library's ``urllib.request``.

The module also checks the network before the tensorflow-datasets route (``--tfds-name``)
downloads, so that offline it fails at once instead of after minutes of DNS retries. It does
not import TensorFlow.
"""

import contextlib
import hashlib
import http.client
import os
import shutil
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile

from kstyle.errors import KstyleError
from kstyle.extras import require
from kstyle.files import StagedOutput, flush_folder, remove_leftovers
from kstyle.progress import ProgressBar

# COCO's train2014.zip, with the size and SHA-256 that tensorflow-datasets publishes for it
# (tensorflow_datasets/url_checksums/coco2014.txt).
COCO_URL = "http://images.cocodataset.org/zips/train2014.zip"
COCO_SIZE = 13_510_573_713  # bytes
COCO_SHA256 = "ede4087e640bddba550e090eae701092534b554b42b05ac33f0300b984b31775"
# Environment variables for tests and mirrors: another URL of the zip, and its SHA-256.
URL_VARIABLE = "KSTYLE_COCO_URL"
SHA256_VARIABLE = "KSTYLE_COCO_SHA256"
FOLDER = "train2014"  # the extracted images in the data directory; being there means done
DATA_DIR_HELP = "$KERAS_HOME/datasets/coco2014, KERAS_HOME defaulting to ~/.keras"
CONNECT_SECONDS = 10.0  # for the name lookup, then again for the connection
READ_SECONDS = 60.0  # a transfer that stalls this long stops (and resumes on the next run)
CHUNK = 1 << 20
OFFLINE_ADVICE = "offline, train on a folder of your own images with --data FOLDER"


def default_data_dir() -> str:
    """Where the COCO images go without ``--data-dir``: ``datasets/coco2014`` under Keras's
    cache folder (``$KERAS_HOME``, else ``~/.keras``, else ``/tmp/.keras`` where the home
    folder is not writable, as Keras decides)."""
    home = os.environ.get("KERAS_HOME")
    if not home:
        base = os.path.expanduser("~")
        home = os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")
    return os.path.join(home, "datasets", "coco2014")


def unreachable_reason(url: str, seconds: float | None = None) -> str | None:
    """Why ``url``'s host (or the proxy that urllib would use for it) cannot be reached: the
    name lookup and the TCP connection each get ``seconds`` (default CONNECT_SECONDS); None
    when a connection opens."""
    seconds = CONNECT_SECONDS if seconds is None else seconds
    parts = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        parts = urllib.parse.urlsplit(proxy if "//" in proxy else f"http://{proxy}")
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    found = {}

    def look_up():  # getaddrinfo has no timeout of its own: a thread bounds it
        try:
            found["addresses"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as error:
            found["error"] = error

    thread = threading.Thread(target=look_up, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        return f"no answer for {host} within {seconds:g} s"
    if "error" in found:
        return f"{host}: {found['error']}"
    error = None
    for family, kind, protocol, _, address in found["addresses"]:
        try:
            with socket.socket(family, kind, protocol) as connection:
                connection.settimeout(seconds)
                connection.connect(address)
            return None
        except OSError as failure:
            error = failure
    return f"{host}:{port}: {error}"


def check_free_space(folder: str, needed: int, what: str) -> None:
    """Raises a one-line KstyleError when ``folder``'s disk has fewer than ``needed`` bytes
    free; ``what`` says what they are for."""
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise KstyleError(
            f"not enough disk space in {folder} (--data-dir) for {what}: {needed / 1e9:.1f} GB "
            f"needed, {free / 1e9:.1f} GB free; free some, choose another --data-dir, or "
            "train on a folder of your own images with --data FOLDER"
        )


class TransferProgress(ProgressBar):
    """A progress line for a download (in GB) or an extraction (in files): done of total,
    rate and time left. On a terminal it is redrawn in place at most twice a second; in a log
    (not a terminal) it is a line a minute."""

    def __init__(self, total, done=0, stream=None, label="", scale=1e9, unit="GB"):
        super().__init__(total, stream, label)
        self.done, self.first, self.scale, self.unit = done, done, scale, unit
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = 0.5 if self.interactive else 60.0
        self.drawn = None  # when the line was last written

    @property
    def rate(self) -> float:
        """Units per second in this session (a resumed download's earlier bytes excluded)."""
        return (self.done - self.first) / max(time.monotonic() - self.start, 1e-9)

    def line(self) -> str:
        """``label done/total unit [bar] rate, ETA``."""
        rate, scale = self.rate, self.scale
        digits = 2 if scale > 1 else 0
        done = f"{self.done / scale:.{digits}f}"
        speed = f"{rate / 1e6:.1f} MB/s" if scale > 1 else f"{rate:.0f} {self.unit}/s"
        if not self.total:
            return f"{self.label} {done} {self.unit}, {speed}"
        filled = int(24 * min(self.done, self.total) / self.total)
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        return (
            f"{self.label} {done}/{self.total / scale:.{digits}f} {self.unit} "
            f"[{'=' * filled:<24}] {speed}, ETA {eta / 60:.0f} min"
        )

    def update(self, count: int) -> None:
        """Adds ``count`` bytes (or files) and redraws the line when it is due."""
        self.done += count
        now = time.monotonic()
        if self.drawn is None or now - self.drawn >= self.interval:
            self.drawn = now
            self._draw()

    def _draw(self) -> None:
        self.stream.write(f"\r{self.line()}" if self.interactive else f"{self.line()}\n")
        self.stream.flush()

    def close(self) -> None:
        """Writes the final state and ends the line."""
        self._draw()
        if self.interactive:
            super().close()


@contextlib.contextmanager
def _locked(data_dir: str, stream):
    """Holds ``data_dir``'s lock file, so that processes sharing it (the workers of a run)
    download and extract once; where there is no ``fcntl`` (Windows) nothing is locked."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(os.path.join(data_dir, f"{FOLDER}.lock"), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            print(f"waiting for another process that is fetching into {data_dir}", file=stream)
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def coco_train_folder(data_dir=None, url=None, sha256=None, stream=None) -> str:
    """The folder of the COCO 2014 train images, fetched and extracted on first use.

    Args:
        data_dir: the cache folder (None: :func:`default_data_dir`). ``<data_dir>/train2014``
            is the extracted images; a run that finds it makes no request at all.
        url: where the zip is (None: ``$KSTYLE_COCO_URL``, else :data:`COCO_URL`).
        sha256: the zip's SHA-256 in hex (None: ``$KSTYLE_COCO_SHA256``, else COCO's).
        stream: where the progress goes (None: stderr).

    Returns:
        ``<data_dir>/train2014``.

    Raises:
        KstyleError: (one line, exit status 2) the server cannot be reached (within about 20
            s), the transfer stopped (rerun to resume), the download's checksum is wrong (it
            is removed), or the disk has too little free space (zip plus extracted images).
    """
    data_dir = os.path.abspath(os.path.expanduser(data_dir or default_data_dir()))
    url = url or os.environ.get(URL_VARIABLE) or COCO_URL
    sha256 = (sha256 or os.environ.get(SHA256_VARIABLE) or COCO_SHA256).lower()
    stream = stream if stream is not None else sys.stderr
    folder = os.path.join(data_dir, FOLDER)
    if os.path.isdir(folder):
        return folder
    try:
        os.makedirs(data_dir, exist_ok=True)
    except OSError as error:
        raise KstyleError(f"cannot create --data-dir {data_dir}: {error.strerror}") from error
    with _locked(data_dir, stream):
        if os.path.isdir(folder):  # another process finished while this one waited
            return folder
        remove_leftovers(data_dir)  # an extraction that a kill cut short
        archive = os.path.join(data_dir, f"{FOLDER}.zip")
        if not os.path.isfile(archive):  # present only once verified
            part = archive + ".part"
            found = _download(url, part, data_dir, stream, expected=sha256)
            if found != sha256:
                os.remove(part)
                raise KstyleError(
                    f"the download of {url} is corrupt (SHA-256 {found[:16]}..., expected "
                    f"{sha256[:16]}...) and was removed; rerun to download it again, or "
                    "train on a folder of your own images with --data FOLDER"
                )
            os.replace(part, archive)
            flush_folder(data_dir)
        try:
            _extract(archive, folder, data_dir, stream)
        except zipfile.BadZipFile as error:  # it matched the checksum it was given
            os.remove(archive)
            raise KstyleError(f"{url} is not a zip file ({error}); it was removed") from error
        os.remove(archive)  # the images are what later runs read
    return folder


def _download(url: str, part: str, data_dir: str, stream, expected: str | None = None) -> str:
    """Completes ``part`` from ``url`` (a range request for what is missing) and returns the
    SHA-256 of the whole file, in hex; a ``part`` whose hash is already ``expected`` (a run
    killed between its last byte and the rename) needs no request at all."""
    digest = hashlib.sha256()
    offset = os.path.getsize(part) if os.path.isfile(part) else 0
    if offset:  # what the earlier runs fetched counts in the checksum
        with open(part, "rb") as file:
            while block := file.read(CHUNK):
                digest.update(block)
        if expected is not None and digest.hexdigest() == expected:
            return expected
    reason = unreachable_reason(url)
    if reason is not None:
        raise KstyleError(
            f"cannot reach the server to download the COCO 2014 train images into {data_dir} "
            f"(--data-dir) ({reason}); {OFFLINE_ADVICE}"
        )
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=READ_SECONDS)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # nothing left to fetch: the checksum decides
            return digest.hexdigest()
        raise KstyleError(f"downloading {url} failed: HTTP {error.code} {error.reason}") from error
    except (OSError, http.client.HTTPException, ValueError) as error:  # ValueError: a bad URL
        raise KstyleError(
            f"cannot download {url} into {data_dir} (--data-dir) ({error}); {OFFLINE_ADVICE}"
        ) from error
    with response:
        if offset and response.status != 206:  # the server sends the whole file: start over
            offset, digest = 0, hashlib.sha256()
        elif offset and not response.headers.get("Content-Range", "").startswith(
            f"bytes {offset}-"
        ):  # another range than asked for: appending it would corrupt the file
            os.remove(part)
            raise KstyleError(
                f"{url} answered the request for bytes {offset}- with "
                f"{response.headers.get('Content-Range')!r}; the partial download was removed, "
                "rerun to download it again"
            )
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        size = total or COCO_SIZE
        check_free_space(data_dir, size - offset + size, "the COCO zip and its extracted images")
        verb = "resuming the download of" if offset else "downloading"
        print(f"{verb} the COCO 2014 train images ({size / 1e9:.1f} GB) from {url}", file=stream)
        progress = TransferProgress(total, offset, stream, label=os.path.basename(part)[:-5])
        try:
            with open(part, "ab" if offset else "wb", buffering=0) as file:
                while chunk := response.read(CHUNK):
                    file.write(chunk)
                    digest.update(chunk)
                    progress.update(len(chunk))
                os.fsync(file.fileno())
            if total is not None and progress.done < total:
                raise ConnectionError("the server closed the connection")
        except (OSError, http.client.HTTPException) as error:  # the bytes so far are kept
            raise KstyleError(
                f"the COCO download stopped at {progress.done / 1e9:.2f} of {size / 1e9:.2f} GB "
                f"({type(error).__name__}: {error}); rerun the same command to resume it"
            ) from error
        finally:
            progress.close()
    return digest.hexdigest()


def _extract(archive: str, folder: str, data_dir: str, stream) -> None:
    """Extracts ``archive`` into a staging folder in ``data_dir``, then renames it to
    ``folder`` (its top folder ``train2014/`` dropped): ``folder`` is whole or absent."""
    with zipfile.ZipFile(archive) as opened:
        members = [member for member in opened.infolist() if not member.is_dir()]
        check_free_space(
            data_dir, sum(member.file_size for member in members), "the extracted images"
        )
        print(f"extracting {len(members)} files into {folder}", file=stream)
        progress = TransferProgress(len(members), 0, stream, "extracting", scale=1, unit="files")
        with StagedOutput(folder, folder=True) as staged:
            for member in members:
                if member.filename.startswith(f"{FOLDER}/"):
                    member.filename = member.filename[len(FOLDER) + 1 :]
                opened.extract(member, staged.temporary)  # zipfile keeps names inside it
                progress.update(1)
            progress.close()
            staged.commit()


def tfds_module():
    """``tensorflow_datasets``, from the ``coco`` extra (a one-line error naming its pip
    command when it is missing), with ``importlib_resources``, which tfds imports only when it
    prepares a dataset and does not declare."""
    require("importlib_resources", "coco")
    return require("tensorflow_datasets", "coco")


def check_tfds_reachable(builder, name: str) -> None:
    """Before tensorflow-datasets downloads dataset ``name`` (``builder`` is its
    ``tfds.core.DatasetBuilder``): a one-line KstyleError within about 20 s when one of the
    hosts in its published checksums cannot be reached. A dataset already prepared in the
    data directory, or one without published URLs, is not checked."""
    if builder.data_path.exists():
        return
    hosts = {urllib.parse.urlsplit(url).netloc: url for url in type(builder).url_infos or {}}
    for host, url in sorted(hosts.items()):
        reason = unreachable_reason(url)
        if reason is not None:
            raise KstyleError(
                f"cannot reach {host} to download tfds dataset {name} into "
                f"{builder.data_dir_root} (--tfds-data-dir) ({reason}); {OFFLINE_ADVICE}, "
                "or leave out --tfds-name to use the COCO download"
            )
