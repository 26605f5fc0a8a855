"""kstyle.coco: the COCO train zip fetched, resumed, verified and extracted once, against a
small zip of generated images that a server on 127.0.0.1 in the test serves (never the
internet), and the one-line failures: offline, a corrupt download, a full disk."""

import hashlib
import http.server
import io
import json
import os
import re
import socket
import sys
import threading
import time
import zipfile

import pytest
from conftest import assert_one_line_error, raises_within, random_image, run_in_process
from PIL import Image

from kstyle import coco
from kstyle.errors import KstyleError

IMAGE_COUNT = 6


def make_zip() -> tuple[bytes, dict]:
    """A zip laid out like COCO's (``train2014/COCO_train2014_*.jpg``) and its images."""
    images = {}
    for index in range(IMAGE_COUNT):
        encoded = io.BytesIO()
        Image.fromarray(random_image(40, 48, seed=index)).save(encoded, "JPEG", quality=90)
        images[f"COCO_train2014_{index:012d}.jpg"] = encoded.getvalue()
    payload = io.BytesIO()
    with zipfile.ZipFile(payload, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("train2014/", b"")
        for name, data in images.items():
            archive.writestr(f"train2014/{name}", data)
    return payload.getvalue(), images


class ZipServer:
    """Serves ``payload`` on 127.0.0.1 like a static file server: ``Range: bytes=N-`` gets
    206 and the rest (or 416 past the end) unless ``ranges`` is off (then 200 and all of it);
    ``cut`` ends the next response after that many bytes. ``requests`` is each request's
    Range header (None: none), ``sent`` the body bytes of each response."""

    def __init__(self, payload: bytes):
        self.payload, self.ranges, self.cut = payload, True, None
        self.requests, self.sent = [], []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                wanted = self.headers.get("Range")
                owner.requests.append(wanted)
                start = 0
                if wanted and owner.ranges:
                    start = int(re.fullmatch(r"bytes=(\d+)-", wanted).group(1))
                    if start >= len(owner.payload):
                        self.send_response(416)
                        self.end_headers()
                        owner.sent.append(0)
                        return
                    self.send_response(206)
                    end = len(owner.payload) - 1
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(owner.payload)}")
                else:
                    self.send_response(200)
                body = owner.payload[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if owner.cut is not None:
                    body, owner.cut = body[: owner.cut], None
                self.wfile.write(body)
                owner.sent.append(len(body))

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/zips/train2014.zip"


@pytest.fixture(scope="module")
def coco_zip():
    payload, images = make_zip()
    return payload, images, hashlib.sha256(payload).hexdigest()


@pytest.fixture
def server(coco_zip):
    served = ZipServer(coco_zip[0])
    yield served
    served.httpd.shutdown()
    served.httpd.server_close()


def fetch(data_dir, server, sha256, stream=None):
    return coco.coco_train_folder(
        str(data_dir), url=server.url, sha256=sha256, stream=stream or io.StringIO()
    )


def assert_extracted(folder, images):
    assert sorted(os.listdir(folder)) == sorted(images)
    for name, data in images.items():
        with open(os.path.join(folder, name), "rb") as file:
            assert file.read() == data, name


def leftovers(data_dir):
    """What the data directory holds besides the images and the lock file."""
    return sorted(set(os.listdir(data_dir)) - {"train2014", "train2014.lock"})


def test_a_download_is_verified_extracted_once_and_then_reused(tmp_path, server, coco_zip):
    payload, images, sha256 = coco_zip
    log = io.StringIO()
    folder = fetch(tmp_path / "cache", server, sha256, log)
    assert folder == str(tmp_path / "cache" / "train2014")
    assert_extracted(folder, images)
    assert leftovers(tmp_path / "cache") == []  # neither the zip nor a staging folder
    assert server.requests == [None] and server.sent == [len(payload)]
    text = log.getvalue()
    assert f"downloading the COCO 2014 train images (0.0 GB) from {server.url}" in text
    assert f"extracting {IMAGE_COUNT} files into {folder}" in text
    assert fetch(tmp_path / "cache", server, sha256) == folder  # reused: no request at all
    assert server.requests == [None]


def test_a_cut_download_is_resumed_with_a_range_request(tmp_path, server, coco_zip):
    payload, images, sha256 = coco_zip
    server.cut = 1000
    with pytest.raises(KstyleError, match="rerun the same command to resume it") as caught:
        fetch(tmp_path, server, sha256)
    assert "\n" not in str(caught.value)
    with open(tmp_path / "train2014.zip.part", "rb") as file:
        assert file.read() == payload[:1000]  # kept
    assert_extracted(fetch(tmp_path, server, sha256), images)
    assert server.requests == [None, "bytes=1000-"]
    assert server.sent == [1000, len(payload) - 1000]  # only the rest the second time
    assert leftovers(tmp_path) == []


def test_a_server_that_ignores_the_range_restarts_the_download(tmp_path, server, coco_zip):
    payload, images, sha256 = coco_zip
    (tmp_path / "train2014.zip.part").write_bytes(b"not the start of the zip" * 20)
    server.ranges = False
    assert_extracted(fetch(tmp_path, server, sha256), images)  # appending would be corrupt
    assert server.requests == ["bytes=480-"] and server.sent == [len(payload)]


def test_a_whole_part_is_checked_and_extracted(tmp_path, server, coco_zip):
    payload, images, sha256 = coco_zip
    (tmp_path / "train2014.zip.part").write_bytes(payload)  # killed before it was renamed
    assert_extracted(fetch(tmp_path, server, sha256), images)
    assert server.requests == []  # its hash is the published one: no request (works offline)


def test_an_extraction_cut_short_is_redone_from_the_verified_zip(tmp_path, server, coco_zip):
    payload, images, sha256 = coco_zip
    (tmp_path / "train2014.zip").write_bytes(payload)  # renamed only once verified
    staging = tmp_path / ".kstyle-a1b2c3.tmp"  # what a kill during the extraction leaves
    staging.mkdir()
    (staging / "COCO_train2014_000000000000.jpg").write_bytes(b"half a file")
    assert_extracted(fetch(tmp_path, server, sha256), images)
    assert server.requests == [] and leftovers(tmp_path) == []


def test_workers_sharing_a_data_dir_download_once(tmp_path, server, coco_zip):
    payload, images, sha256 = coco_zip
    folders = []
    threads = [
        threading.Thread(target=lambda: folders.append(fetch(tmp_path, server, sha256)))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert folders == [str(tmp_path / "train2014")] * 3
    assert server.requests == [None]
    assert_extracted(folders[0], images)


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens: connections are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def assert_offline_line(error, data_dir):
    assert isinstance(error, KstyleError) and "\n" not in str(error)
    assert "--data FOLDER" in str(error) and f"{data_dir} (--data-dir)" in str(error)


def test_offline_fails_at_once_in_one_line(tmp_path, coco_zip):
    url = f"http://127.0.0.1:{closed_port()}/zips/train2014.zip"
    error = raises_within(30, lambda: coco.coco_train_folder(str(tmp_path), url, coco_zip[2]))
    assert_offline_line(error, tmp_path)
    assert "refused" in str(error) and leftovers(tmp_path) == []


def test_a_name_lookup_that_never_answers_is_cut_short(tmp_path, monkeypatch, coco_zip):
    monkeypatch.setattr(coco, "CONNECT_SECONDS", 0.2)
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: time.sleep(3))
    url = "http://images.example.invalid/zips/train2014.zip"
    error = raises_within(10, lambda: coco.coco_train_folder(str(tmp_path), url, coco_zip[2]))
    assert_offline_line(error, tmp_path)
    assert "no answer for images.example.invalid within 0.2 s" in str(error)


def test_the_probe_goes_to_the_proxy_urllib_would_use(monkeypatch, server):
    proxy_port = server.httpd.server_address[1]
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{proxy_port}")
    monkeypatch.setenv("no_proxy", "")
    assert coco.unreachable_reason("http://images.example.invalid/x.zip", 1) is None
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{closed_port()}")
    assert "refused" in coco.unreachable_reason("http://images.example.invalid/x.zip", 1)


def test_too_little_disk_space_is_one_line_before_any_byte(tmp_path, monkeypatch, server):
    usage, free = coco.shutil.disk_usage(tmp_path), {}
    monkeypatch.setattr(coco.shutil, "disk_usage", lambda path: usage._replace(free=free["now"]))
    size, sha256 = len(server.payload), hashlib.sha256(server.payload).hexdigest()
    free["now"] = int(1.9 * size)  # the zip fits, but not the extracted images as well
    with pytest.raises(KstyleError) as caught:
        fetch(tmp_path, server, sha256)
    assert str(caught.value).startswith(
        f"not enough disk space in {tmp_path} (--data-dir) for the COCO zip and its extracted "
        "images: 0.0 GB needed, 0.0 GB free; free some, choose another --data-dir, or train "
        "on a folder of your own images with --data FOLDER"
    )
    assert leftovers(tmp_path) == []  # no .part: not a byte was written
    free["now"] = int(2.1 * size)  # the zip and its images (stored, as COCO's JPEGs are)
    assert fetch(tmp_path, server, sha256) == str(tmp_path / "train2014")
    free["now"] = int(1.5e9)
    with pytest.raises(KstyleError, match=r": 2\.0 GB needed, 1\.5 GB free; free some"):
        coco.check_free_space(str(tmp_path), 2 * 10**9, "the COCO zip")


def test_the_default_data_dir_is_under_keras_home(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    assert coco.default_data_dir() == str(tmp_path / "kh" / "datasets" / "coco2014")
    monkeypatch.delenv("KERAS_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert coco.default_data_dir() == str(tmp_path / ".keras" / "datasets" / "coco2014")


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_redraws_on_a_terminal_and_logs_sparingly_elsewhere():
    terminal = Terminal()
    bar = coco.TransferProgress(4e9, 1e9, terminal, "train2014.zip")
    for _ in range(3):
        bar.update(1e9)
    bar.close()
    lines = terminal.getvalue().split("\r")[1:]
    assert lines[0].startswith("train2014.zip 2.00/4.00 GB [" + "=" * 12 + " " * 12 + "] ")
    assert "MB/s, ETA" in lines[0] and lines[-1].startswith("train2014.zip 4.00/4.00 GB [")
    assert terminal.getvalue().endswith("\n")
    log = io.StringIO()
    bar = coco.TransferProgress(10, 0, log, "extracting", scale=1, unit="files")
    for _ in range(10):
        bar.update(1)
    bar.close()
    lines = log.getvalue().splitlines()  # the first update, then the end: no flood
    assert len(lines) == 2 and "\r" not in log.getvalue()
    assert lines[0].startswith("extracting 1/10 files [==") and " files/s, ETA" in lines[0]
    assert lines[1].startswith("extracting 10/10 files [" + "=" * 24 + "]")


def test_the_tfds_route_names_its_extra_when_it_is_missing(monkeypatch):
    for module in ("importlib_resources", "tensorflow_datasets"):
        with monkeypatch.context() as patch:
            patch.setitem(sys.modules, module, None)
            with pytest.raises(KstyleError) as caught:
                coco.tfds_module()
            assert str(caught.value) == (
                f"training on a tensorflow-datasets dataset needs {module!r}, which is not "
                'installed: run pip install "kstyle[coco]"'
            )


def test_train_fetches_the_served_zip_then_trains_on_it(tmp_path, server, coco_zip, style_file):
    payload, images, sha256 = coco_zip
    env = {coco.URL_VARIABLE: server.url, coco.SHA256_VARIABLE: sha256}
    options = ["--style", style_file, "--vgg-weights", "random", "--steps", "2"]
    options += ["--image-size", "32", "--batch-size", "2", "--data-dir", tmp_path / "cache"]
    result = run_in_process("train.py", *options, "--output", tmp_path / "run", env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    folder = tmp_path / "cache" / "train2014"
    assert_extracted(folder, images)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["data_description"] == f"{IMAGE_COUNT} images from {folder}"
    assert saved["data_dir"] == str(tmp_path / "cache") and saved["tfds_name"] is None
    assert f"training on {IMAGE_COUNT} images from {folder}" in result.stderr
    assert "done: 2 steps" in result.stdout and server.requests == [None]


def test_a_corrupt_download_fails_in_one_line_and_leaves_nothing(tmp_path, server, style_file):
    env = {coco.URL_VARIABLE: server.url, coco.SHA256_VARIABLE: "0" * 64}
    options = ["--style", style_file, "--vgg-weights", "random", "--steps", "2"]
    options += ["--data-dir", tmp_path / "cache", "--output", tmp_path / "run"]
    result = run_in_process("train.py", *options, env=env)
    line = assert_one_line_error(result, "is corrupt", "was removed; rerun to download it again")
    assert server.url in line and "--data FOLDER" in line
    assert leftovers(tmp_path / "cache") == []  # no .part, no zip, no half-extracted folder
    assert not (tmp_path / "cache" / "train2014").exists()
