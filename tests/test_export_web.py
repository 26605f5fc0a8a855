"""``kstyle export --format web`` (kstyle.export.web) and ``kstyle serve`` without a browser:
the site's files and manifest, the vendored runtime's check, refused outputs, several runs,
and the server's headers and one-line errors. tests/test_web.py runs the page itself."""

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import urllib.request

import pytest
from conftest import ROOT, assert_one_line_error, randomize_norms, require_web_runtime, run


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A folder of two runs (``tiny`` nets, random norms): ``a`` with a config.json naming
    its style and preset, ``b`` without one."""
    import keras

    from kstyle.transform_net import build_transform_net

    folder = tmp_path_factory.mktemp("runs")
    for index, name in enumerate(("a", "b")):
        keras.utils.set_random_seed(index)
        (folder / name).mkdir()
        randomize_norms(build_transform_net(arch="tiny"), index).save(folder / name / "model.keras")
    (folder / "a" / "config.json").write_text(json.dumps({"style": "/s/wave.jpg", "arch": "tiny"}))
    return folder


def kstyle_command(*args):
    return subprocess.run(
        [sys.executable, "-m", "kstyle", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )


def test_a_folder_of_runs_becomes_one_site_with_a_manifest(runs, tmp_path):
    require_web_runtime()
    from kstyle.export.web import PAGE_DIR, PAGE_FILES, RUNTIME_DIR, is_site

    site = tmp_path / "site"
    result = run("export.py", runs, "--format", "web", "--output", site, "--verify-size", 32)
    assert result.returncode == 0, result.stderr[-2000:]
    assert is_site(site)
    manifest = json.loads((site / "manifest.json").read_text())
    assert [m["name"] for m in manifest["models"]] == ["a", "b"]
    first, second = manifest["models"]
    assert (first["style"], first["arch"]) == ("wave.jpg", "tiny")
    assert (second["style"], second["arch"]) == (None, None)
    for model in manifest["models"]:
        assert sha(site / model["file"]) == model["sha256"]
        assert model["input"]["dtype"] == "uint8" and model["input"]["size_multiple"] == 4
        assert model["output"]["name"] == "stylized"
    vendored = json.loads(open(os.path.join(RUNTIME_DIR, "RUNTIME.json")).read())
    assert manifest["runtime"]["name"] == "onnxruntime-web"
    assert manifest["runtime"]["version"] == vendored["version"]
    for name, digest in manifest["runtime"]["files"].items():
        assert sha(site / "runtime" / name) == digest == vendored["files"][name]
    for name in PAGE_FILES:
        assert sha(site / name) == sha(os.path.join(PAGE_DIR, name))
    # nothing in the page loads from another origin
    for name in ("index.html", "app.js", "worker.js", "pixels.js", "style.css"):
        text = (site / name).read_text()
        assert "http://" not in text and "https://" not in text, name


def test_a_site_is_replaced_but_other_folders_are_refused(runs, tmp_path, capsys):
    require_web_runtime()
    from kstyle.export.web import build_site

    site = tmp_path / "site"
    build_site([runs / "a"], str(site), verify_size=32, printer=lambda line: None)
    (site / "extra.txt").write_text("left from an older build")
    build_site(
        [runs / "a", runs / "a" / "model.keras"],
        str(site),
        verify_size=32,
        printer=lambda line: None,
    )
    manifest = json.loads((site / "manifest.json").read_text())
    assert [m["name"] for m in manifest["models"]] == ["a", "a-2"]  # names made unique
    assert not (site / "extra.txt").exists()
    other = tmp_path / "photos"
    other.mkdir()
    (other / "keep.jpg").write_bytes(b"mine")
    line = one_line_error(capsys, "export", runs / "a", "--format", "web", "--output", other)
    assert "not a kstyle site" in line
    assert os.listdir(other) == ["keep.jpg"]


def one_line_error(capsys, command, *args) -> str:
    """Runs ``kstyle COMMAND ARGS`` in this process; asserts exit status 2 and exactly one
    ``error:`` line on stderr, and returns it."""
    from kstyle.cli.main import main

    capsys.readouterr()
    assert main([command, *map(str, args)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(errors) == 1, errors
    return errors[0]


def test_bad_sources_give_one_line_errors(runs, tmp_path, capsys):
    require_web_runtime()
    web = ("export", "--format", "web", "--output")
    assert "model not found" in one_line_error(capsys, *web, tmp_path / "s", tmp_path / "none")
    (tmp_path / "empty").mkdir()
    assert "no model.keras" in one_line_error(capsys, *web, tmp_path / "s", tmp_path / "empty")
    several = ("export", runs / "a", runs / "b", "--format", "onnx", "--output", tmp_path / "o")
    assert "several models need --format web" in one_line_error(capsys, *several)
    sized = (*web, tmp_path / "s", runs / "a", "--input-size", 256)
    assert "drop --quantize, --input-size" in one_line_error(capsys, *sized)
    (tmp_path / "file").write_text("mine")
    assert "is a file" in one_line_error(capsys, *web, tmp_path / "file", runs / "a")
    assert (tmp_path / "file").read_text() == "mine"
    assert not (tmp_path / "s").exists() and not (tmp_path / "o").exists()


def test_a_missing_or_changed_runtime_is_one_line_naming_the_script(tmp_path):
    require_web_runtime()
    from kstyle.constants import WEB_RUNTIME_FILES
    from kstyle.errors import KstyleError
    from kstyle.export.web import RUNTIME_DIR, runtime_record

    with pytest.raises(KstyleError, match="scripts/vendor_web_runtime.py"):
        runtime_record(str(tmp_path))
    copy = tmp_path / "runtime"
    shutil.copytree(RUNTIME_DIR, copy)
    assert runtime_record(str(copy))["name"] == "onnxruntime-web"
    with open(copy / WEB_RUNTIME_FILES[0], "ab") as file:
        file.write(b"\0")
    with pytest.raises(KstyleError, match="missing or changed") as error:
        runtime_record(str(copy))
    assert "\n" not in str(error.value)


def test_the_server_sends_isolation_headers_and_serves_wasm(runs, tmp_path):
    require_web_runtime()
    from kstyle.export.web import build_site, site_server

    site = tmp_path / "site"
    build_site([runs / "b"], str(site), verify_size=32, printer=lambda line: None)
    server = site_server(str(site), 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        with urllib.request.urlopen(base) as response:
            assert response.headers["Cross-Origin-Opener-Policy"] == "same-origin"
            assert response.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
            assert b'<script type="module" src="app.js">' in response.read()
        with urllib.request.urlopen(base + "runtime/ort-wasm-simd-threaded.wasm") as response:
            assert response.headers["Content-Type"] == "application/wasm"
            assert response.read()[:4] == b"\0asm"
        with urllib.request.urlopen(base + "worker.js") as response:
            assert response.headers["Content-Type"] == "text/javascript"
    finally:
        server.shutdown()
        server.server_close()


def test_serve_gives_one_line_errors(runs, tmp_path, capsys):
    require_web_runtime()
    assert_one_line_error(kstyle_command("serve", tmp_path / "nowhere"), "model not found")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_line_error(capsys, "serve", runs / "b", "--port", port)
    assert f"cannot serve on 127.0.0.1:{port}" in line
    assert "--port" in one_line_error(capsys, "serve", runs / "b", "--port", 70000)
