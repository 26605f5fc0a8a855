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


def strings(value):
    """Every string in a JSON value (keys excluded), recursively."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


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
    from kstyle.constants import WEB_MAX_SIDE
    from kstyle.export.web import ISOLATION_HEADERS, PAGE_DIR, PAGE_FILES, RUNTIME_DIR, is_site

    site = tmp_path / "site"
    result = run("export.py", runs, "--format", "web", "--output", site, "--verify-size", 32)
    assert result.returncode == 0, result.stderr[-2000:]
    assert is_site(site)
    # neither run is a live one: the export suggests it for the webcam, in one line
    (hint,) = [line for line in result.stderr.splitlines() if "--arch live" in line]
    assert hint.startswith("note: for the webcam") and "kstyle distill --teacher" in hint
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
    # no path of the machine that built it
    assert manifest["max_side"] == WEB_MAX_SIDE
    text = (site / "manifest.json").read_text()
    assert str(runs) not in text and os.path.expanduser("~") not in text
    for value in strings(manifest):
        assert not os.path.isabs(value), value
    # the hosting headers, the values kstyle serve sends
    headers = (site / "_headers").read_text().splitlines()
    assert headers == ["/*"] + [f"  {key}: {value}" for key, value in ISOLATION_HEADERS.items()]
    assert "  Cross-Origin-Embedder-Policy: require-corp" in headers
    # nothing in the page loads from another origin
    for name in ("index.html", "app.js", "worker.js", "pixels.js", "style.css"):
        text = (site / name).read_text()
        assert "http://" not in text and "https://" not in text, name


def test_live_hint_style_thumbnail_and_sample(runs, tmp_path):
    """The webcam hint goes once a model's run recorded ``arch: live``; a run's style image
    is found as its config.json wrote it, relative to where training ran (``run_dir``), and
    becomes the model's thumbnail; the sample photo is in the site."""
    require_web_runtime()
    from PIL import Image

    from kstyle.export.web import THUMBNAIL_SIDE, build_site, live_hint, style_image_path

    assert live_hint({"models": [{"arch": "tiny"}, {"arch": None}]}) is not None
    assert live_hint({"models": [{"arch": "tiny"}, {"arch": "live"}]}) is None
    # training ran in tmp_path/work as: --style styles/wave.png --output runs/wave
    work = tmp_path / "work"
    (work / "styles").mkdir(parents=True)
    Image.new("RGB", (400, 200), (200, 30, 40)).save(work / "styles" / "wave.png")
    run_dir = work / "runs" / "wave"
    shutil.copytree(runs / "b", run_dir)
    config = {"arch": "tiny", "style": "styles/wave.png", "run_dir": "runs/wave"}
    (run_dir / "config.json").write_text(json.dumps(config))
    assert style_image_path(str(run_dir / "model.keras")) == str(work / "styles" / "wave.png")
    site = tmp_path / "site"
    manifest = build_site([run_dir, runs / "a"], str(site), verify_size=32, printer=print)
    first, second = manifest["models"]
    assert (first["thumbnail"], second["thumbnail"]) == ("styles/wave.jpg", None)
    with Image.open(site / first["thumbnail"]) as thumbnail:
        assert thumbnail.size == (THUMBNAIL_SIDE, THUMBNAIL_SIDE // 2)
        assert abs(thumbnail.convert("RGB").getpixel((5, 5))[0] - 200) <= 3
    with Image.open(site / manifest["sample"]) as sample:
        assert max(sample.size) == 512
    (run_dir / "config.json").write_text(json.dumps({**config, "arch": "live"}))
    assert live_hint(build_site([run_dir], str(site), verify_size=32, printer=print)) is None


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
    assert (site / "_headers").read_text().startswith("/*\n")  # rebuilt with the site
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


def test_the_server_sends_isolation_headers_and_serves_wasm(runs, tmp_path, capsys):
    require_web_runtime()
    from kstyle.export.web import ISOLATION_HEADERS, build_site, site_server

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
            for key, value in ISOLATION_HEADERS.items():  # as the site's _headers says
                assert f"  {key}: {value}" in (site / "_headers").read_text().splitlines()
                assert response.headers[key] == value
            assert b'<script type="module" src="app.js">' in response.read()
        with urllib.request.urlopen(base + "runtime/ort-wasm-simd-threaded.wasm") as response:
            assert response.headers["Content-Type"] == "application/wasm"
            assert response.read()[:4] == b"\0asm"
        with urllib.request.urlopen(base + "worker.js") as response:
            assert response.headers["Content-Type"] == "text/javascript"
    finally:
        server.shutdown()
        server.server_close()
    line = one_line_error(capsys, "serve", site, "--output", tmp_path / "elsewhere")
    assert "drop --output" in line and not (tmp_path / "elsewhere").exists()


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


def test_model_files_get_url_safe_names(runs, tmp_path):
    require_web_runtime()
    from kstyle.export.web import build_site, file_stem

    assert file_stem("starry #2") == "starry-2" and file_stem("a b?c=d&e") == "a-b-c-d-e"
    assert file_stem("..") == "model" and file_stem("ok_1.v-2") == "ok_1.v-2"
    folder = tmp_path / "runs"
    for name in ("starry #2", "starry?2"):  # two names, one safe stem
        shutil.copytree(runs / "b", folder / name)
    site = tmp_path / "site"
    manifest = build_site([folder], str(site), verify_size=32, printer=lambda line: None)
    assert [(m["name"], m["file"]) for m in manifest["models"]] == [
        ("starry #2", "models/starry-2.onnx"),
        ("starry?2", "models/starry-2-2.onnx"),
    ]
    for model in manifest["models"]:
        assert (site / model["file"]).is_file()


def test_serve_removes_its_temporary_site_on_sigterm(runs, tmp_path):
    """Given a run, ``kstyle serve`` builds into a kstyle-site-* temporary folder; SIGTERM
    stops it cleanly (status 0) and the folder is gone. Given a site, no folder is made."""
    require_web_runtime()
    import signal
    import urllib.request

    temp = tmp_path / "temp"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp), "TF_CPP_MIN_LOG_LEVEL": "2"}

    def serve(source):
        process = subprocess.Popen(
            [sys.executable, "-m", "kstyle", "serve", str(source), "--port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
        )  # fmt: skip
        line = process.stdout.readline()
        assert "http://127.0.0.1:" in line, process.stderr.read()
        url = line.split(" at ")[1].split()[0]
        with urllib.request.urlopen(url + "manifest.json") as response:
            manifest = json.load(response)
        return process, manifest

    process, manifest = serve(runs / "b")
    try:
        made = [name for name in os.listdir(temp) if name.startswith("kstyle-site-")]
        assert len(made) == 1 and (temp / made[0] / "site" / "manifest.json").is_file()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, process.stderr.read()
    assert not [name for name in os.listdir(temp) if name.startswith("kstyle-site-")]

    site = tmp_path / "site"
    build_site_quietly(runs / "b", site)
    process, served = serve(site)
    try:
        assert served["models"][0]["name"] == "b"
        assert not [name for name in os.listdir(temp) if name.startswith("kstyle-site-")]
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, process.stderr.read()


# Runs ``kstyle serve`` (the console command, sys.argv after the script) with an audit hook
# that writes the name of every module imported to the file argv[1]: a record that no stderr
# filter can hide (TensorFlow's import runs with stderr filtered).
RECORD_IMPORTS = """
import os, runpy, sys
record = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
def hook(event, args):
    if event == "import":
        os.write(record, (args[0] + "\\n").encode())
sys.addaudithook(hook)
sys.argv = ["kstyle", *sys.argv[2:]]
runpy.run_module("kstyle", run_name="__main__")
"""


def test_a_built_site_is_served_without_tensorflow(runs, tmp_path):
    """``kstyle serve SITE`` on a built site imports neither TensorFlow nor Keras, prints its
    URL and serves the page; given a run, it does import them (it builds the page), so the
    check can fail."""
    require_web_runtime()
    import signal

    site = tmp_path / "site"
    build_site_quietly(runs / "b", site)

    def imported_by_serve(source) -> set:
        record = tmp_path / f"imports-{source.name}.txt"
        process = subprocess.Popen(
            [sys.executable, "-c", RECORD_IMPORTS, str(record), "serve", str(source),
             "--port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
        )  # fmt: skip
        try:
            line = process.stdout.readline()
            assert "http://127.0.0.1:" in line, line
            with urllib.request.urlopen(line.split(" at ")[1].split()[0]) as response:
                assert b'src="app.js"' in response.read()
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
        assert process.returncode == 0
        return set(record.read_text().split())

    served = imported_by_serve(site)
    assert {"kstyle.web_site", "http.server"} <= served
    assert not {name for name in served if name.split(".")[0] in ("tensorflow", "keras")}
    built = {name.split(".")[0] for name in imported_by_serve(runs / "b")}
    assert {"tensorflow", "keras"} <= built


def test_onnx_resize_nodes_use_current_modes_with_the_same_pixels(runs, tmp_path):
    """tf2onnx writes nearest upsampling as Resize with the deprecated
    ``tf_half_pixel_for_nn``; the export rewrites it to ``half_pixel`` +
    ``round_prefer_ceil``, which picks the same pixels: equal to Keras for x2 (the nets'
    upsampling) and for non-integer scales, at odd sizes, where a wrong rule shifts pixels."""
    import keras
    import numpy as np
    import onnx
    import onnxruntime
    import tensorflow as tf

    from kstyle.export.serving import NearestUpsample2x
    from kstyle.export.writer import CURRENT_RESIZE, current_resize_modes

    def modes(graph):
        return [
            {a.name: a.s.decode() for a in node.attribute if a.s}
            for node in graph.node
            if node.op_type == "Resize"
        ]

    class OddResize(keras.layers.Layer):
        def call(self, images):
            shape = tf.shape(images)
            return tf.image.resize(images, (shape[1] * 5 // 3, shape[2] * 7 // 2), "nearest")

    for layer in (NearestUpsample2x(), OddResize()):
        images = keras.Input((None, None, 2))
        model = keras.Model(images, layer(images))
        model(np.zeros((1, 4, 4, 2), np.float32))
        path = str(tmp_path / "resize.onnx")
        model.export(path, format="onnx", verbose=False)
        graph = onnx.load(path)
        assert [m["coordinate_transformation_mode"] for m in modes(graph.graph)] == [
            "tf_half_pixel_for_nn"
        ]  # what the converter writes; if it changes, this test says so
        assert current_resize_modes(graph.graph) == 1
        (written,) = modes(graph.graph)
        assert (written["coordinate_transformation_mode"], written["nearest_mode"]) == (
            CURRENT_RESIZE
        )
        session = onnxruntime.InferenceSession(graph.SerializeToString())
        for height, width in ((7, 9), (1, 1), (13, 4), (32, 31)):
            x = np.random.default_rng(height).random((1, height, width, 2), np.float32)
            expected = np.asarray(model(x))
            actual = session.run(None, {session.get_inputs()[0].name: x})[0]
            np.testing.assert_array_equal(actual, expected)

    # the site's model (tiny: two x2 upsamplings) carries the current modes
    site = tmp_path / "site"
    manifest = build_site_quietly(runs / "a", site)
    exported = modes(onnx.load(str(site / manifest["models"][0]["file"])).graph)
    assert len(exported) == 2
    assert all(m["coordinate_transformation_mode"] == CURRENT_RESIZE[0] for m in exported)


def build_site_quietly(source, site):
    from kstyle.export.web import build_site

    return build_site([source], str(site), verify_size=32, printer=lambda line: None)


def test_vendor_script_one_line_error_and_no_staging_left(tmp_path, capsys):
    """scripts/vendor_web_runtime.py with a package that lacks a dist file: one error line
    (SystemExit, no traceback), nothing written, no staging folder left."""
    import importlib.util

    from kstyle.constants import WEB_RUNTIME_FILES, WEB_RUNTIME_PACKAGE

    path = os.path.join(ROOT, "scripts", "vendor_web_runtime.py")
    spec = importlib.util.spec_from_file_location("vendor_web_runtime", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    package = tmp_path / "web" / "node_modules" / WEB_RUNTIME_PACKAGE
    (package / "dist").mkdir(parents=True)
    (package / "package.json").write_text(json.dumps({"version": "1.0.0"}))
    (package / "dist" / WEB_RUNTIME_FILES[0]).write_text("export {};")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(SystemExit) as exit_:
        script.vendor(install=False, target=str(out / "runtime"), web=str(tmp_path / "web"))
    message = str(exit_.value.code)
    assert message.startswith("error: ") and "\n" not in message
    assert WEB_RUNTIME_FILES[1] in message
    assert os.listdir(out) == []  # no runtime/, no .runtime-* staging folder
    # with every file there, it vendors
    for name in WEB_RUNTIME_FILES[1:]:
        (package / "dist" / name).write_text(name)
    record = script.vendor(install=False, target=str(out / "runtime"), web=str(tmp_path / "web"))
    assert sorted(record["files"]) == sorted(WEB_RUNTIME_FILES)
    assert os.listdir(out) == ["runtime"]


# A stand-in for npm (``npm ci`` in its working folder): logs its call, waits ``DELAY``
# seconds, then writes node_modules/onnxruntime-web with the version that the folder's
# package-lock.json pins and a small file for each runtime file (or fails, with FAIL set).
FAKE_NPM = """#!{python}
import json, os, sys, time
start, found = time.time(), sorted(os.listdir())
time.sleep(float(os.environ.get("FAKE_NPM_DELAY", "0")))
if os.environ.get("FAKE_NPM_FAIL"):
    print("npm error code ENOTFOUND", file=sys.stderr)
    print("npm error network request to https://registry.npmjs.org failed", file=sys.stderr)
    sys.exit(1)
with open("package-lock.json") as file:
    version = json.load(file)["packages"]["node_modules/onnxruntime-web"]["version"]
package = os.path.join("node_modules", "onnxruntime-web")
os.makedirs(os.path.join(package, "dist"))
with open(os.path.join(package, "package.json"), "w") as file:
    json.dump({{"name": "onnxruntime-web", "version": version}}, file)
for name in {files!r}:
    with open(os.path.join(package, "dist", name), "w") as file:
        file.write(f"fake {{name}} {{version}}")
entry = {{"argv": sys.argv[1:], "cwd": os.getcwd(), "files": found,
          "start": start, "end": time.time()}}
with open({log!r}, "a") as file:
    file.write(json.dumps(entry) + "\\n")
"""


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A checkout without a vendored runtime: ``web/`` with a copy of the real package.json and
    package-lock.json, ``kstyle/web/`` without ``runtime/`` (kstyle.web_runtime pointed at
    both), and a fake ``npm`` first on PATH (``bin/``) that logs each call to ``npm.log``."""
    from kstyle import web_runtime
    from kstyle.constants import WEB_RUNTIME_FILES

    root = tmp_path / "checkout"
    (root / "web").mkdir(parents=True)
    (root / "kstyle" / "web").mkdir(parents=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(os.path.join(ROOT, "web", name), root / "web" / name)
    (tmp_path / "bin").mkdir()
    npm = tmp_path / "bin" / "npm"
    log = tmp_path / "npm.log"
    npm.write_text(FAKE_NPM.format(python=sys.executable, files=WEB_RUNTIME_FILES, log=str(log)))
    npm.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(web_runtime, "RUNTIME_DIR", str(root / "kstyle" / "web" / "runtime"))
    monkeypatch.setattr(web_runtime, "CHECKOUT_WEB", str(root / "web"))
    return root


def npm_calls(checkout) -> list:
    log = checkout.parent / "npm.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def assert_fake_runtime(runtime, version):
    """``runtime`` holds the fake npm's files of ``version``, with RUNTIME.json's hashes."""
    from kstyle.constants import WEB_RUNTIME_FILES

    record = json.loads((runtime / "RUNTIME.json").read_text())
    assert record["version"] == version and sorted(record["files"]) == sorted(WEB_RUNTIME_FILES)
    for name in WEB_RUNTIME_FILES:
        assert (runtime / name).read_text() == f"fake {name} {version}"
        assert record["files"][name] == sha(runtime / name)


def test_export_vendors_a_missing_runtime_with_npm_in_a_temporary_folder(
    runs, checkout, tmp_path, capsys
):
    from kstyle.cli.main import main

    site = tmp_path / "site"
    command = ["export", str(runs / "b"), "--format", "web", "--output", str(site)]
    assert main([*command, "--verify-size", "32"]) == 0
    lockfile = checkout / "web" / "package-lock.json"
    said = [line for line in capsys.readouterr().err.splitlines() if "npm" in line]
    assert said == [
        f"the web runtime is not vendored yet: running npm ci from {lockfile} (once; a download "
        "of about 56 MB from the npm registry)"
    ]
    (call,) = npm_calls(checkout)
    assert call["argv"][:2] == ["ci", "--ignore-scripts"]
    assert call["files"] == ["package-lock.json", "package.json"]  # copies, in a folder...
    assert not str(call["cwd"]).startswith(str(checkout))  # ...outside the checkout
    assert not os.path.exists(call["cwd"])  # and deleted
    assert_fake_runtime(checkout / "kstyle" / "web" / "runtime", "1.30.0")
    vendored = json.loads((checkout / "kstyle" / "web" / "runtime" / "RUNTIME.json").read_text())
    assert json.loads((site / "manifest.json").read_text())["runtime"]["files"] == vendored["files"]
    for name, digest in vendored["files"].items():
        assert sha(site / "runtime" / name) == digest
    every = [name for _, folders, files in os.walk(checkout) for name in folders + files]
    assert "node_modules" not in every and not [n for n in every if n.startswith(".kstyle")]
    # vendored once: the next export finds it
    assert main([*command, "--verify-size", "32"]) == 0
    assert "npm" not in capsys.readouterr().err and len(npm_calls(checkout)) == 1


def test_a_runtime_is_vendored_again_when_the_lockfile_pins_another_version(checkout, caplog):
    from kstyle.web_runtime import ensure_runtime

    runtime = checkout / "kstyle" / "web" / "runtime"
    lockfile = checkout / "web" / "package-lock.json"
    assert ensure_runtime()[0] == str(runtime) and len(npm_calls(checkout)) == 1
    lock = json.loads(lockfile.read_text())
    lock["packages"]["node_modules/onnxruntime-web"]["version"] = "1.31.0"
    lockfile.write_text(json.dumps(lock))
    with caplog.at_level("INFO", logger="kstyle.web_runtime"):
        folder, record = ensure_runtime()
    assert record["version"] == "1.31.0" and len(npm_calls(checkout)) == 2
    assert_fake_runtime(runtime, "1.31.0")
    assert "the web runtime is onnxruntime-web 1.30.0, not 1.31.0: running npm ci" in caplog.text


def test_without_npm_an_intact_runtime_of_another_version_is_used(
    checkout, tmp_path, caplog, monkeypatch
):
    from kstyle.web_runtime import ensure_runtime

    runtime = checkout / "kstyle" / "web" / "runtime"
    lockfile = checkout / "web" / "package-lock.json"
    ensure_runtime()
    lock = json.loads(lockfile.read_text())
    lock["packages"]["node_modules/onnxruntime-web"]["version"] = "1.31.0"
    lockfile.write_text(json.dumps(lock))
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no npm
    with caplog.at_level("WARNING", logger="kstyle.web_runtime"):
        folder, record = ensure_runtime()
    assert folder == str(runtime) and record["version"] == "1.30.0"
    assert "onnxruntime-web 1.30.0, not 1.31.0 (npm is not installed" in caplog.text
    assert_fake_runtime(runtime, "1.30.0")
    assert len(npm_calls(checkout)) == 1  # only the first vendoring


def at_once(call: str):
    """Runs ``kstyle.web_runtime.<call>()`` in two processes started together (the fake npm
    takes a second), with the module pointed where the ``checkout`` fixture points it."""
    from kstyle import web_runtime

    where = (web_runtime.RUNTIME_DIR, web_runtime.CHECKOUT_WEB)
    code = f"from kstyle import web_runtime as w; w.RUNTIME_DIR, w.CHECKOUT_WEB = {where!r}; "
    code += f"w.{call}()"
    env = {**os.environ, "FAKE_NPM_DELAY": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    processes = [
        subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    for process in processes:
        assert process.wait(timeout=60) == 0, process.stderr.read().decode()
        process.stderr.close()


def test_two_processes_vendoring_at_once_take_turns(checkout):
    at_once("vendor_runtime")
    first, second = sorted(npm_calls(checkout), key=lambda call: call["start"])
    assert first["end"] <= second["start"]  # npm ran twice, one after the other
    assert_fake_runtime(checkout / "kstyle" / "web" / "runtime", "1.30.0")
    assert os.listdir(checkout / "kstyle" / "web") == ["runtime"]  # no staging folder left


def test_two_exports_that_miss_the_runtime_at_once_vendor_it_once(checkout):
    at_once("ensure_runtime")
    assert len(npm_calls(checkout)) == 1
    assert_fake_runtime(checkout / "kstyle" / "web" / "runtime", "1.30.0")
    assert os.listdir(checkout / "kstyle" / "web") == ["runtime"]


def test_no_npm_or_a_failing_npm_is_one_line(runs, checkout, tmp_path, capsys, monkeypatch):
    web = ("--format", "web", "--output", tmp_path / "site")
    monkeypatch.setenv("FAKE_NPM_FAIL", "1")
    line = one_line_error(capsys, "serve", runs / "b", "--port", 0)
    assert line == "error: npm ci failed (exit status 1): npm error code ENOTFOUND"
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no npm
    for command in (("export", runs / "b", *web), ("serve", runs / "b", "--port", 0)):
        line = one_line_error(capsys, *command)
        assert line == (
            "error: the web runtime is not vendored yet in "
            f"{checkout / 'kstyle' / 'web' / 'runtime'}, and npm is not installed to fetch it: "
            "install Node.js (20 or newer) and npm, then run this again"
        )
    assert not (tmp_path / "site").exists()
    assert os.listdir(checkout / "kstyle" / "web") == []  # no runtime, no staging left
    assert npm_calls(checkout) == []


def test_an_installed_package_only_checks_its_runtime(checkout, tmp_path):
    """Without kstyle's npm project beside the package (a wheel), nothing is vendored: a
    missing runtime is today's one line naming the script."""
    from kstyle.errors import KstyleError
    from kstyle.web_runtime import ensure_runtime

    (tmp_path / "site-packages" / "web").mkdir(parents=True)  # someone else's web/, or none
    (tmp_path / "site-packages" / "web" / "package.json").write_text('{"name": "other"}')
    for web in (tmp_path / "site-packages" / "web", tmp_path / "nowhere"):
        with pytest.raises(KstyleError, match="run 'python scripts/vendor_web_runtime.py'"):
            ensure_runtime(web=str(web))
    assert npm_calls(checkout) == []


def test_style_images_follow_a_base_and_a_teacher(tmp_path):
    """A run that added a style shows its base's style images first, then its own; a
    distilled student its teacher's; a missing one is None in its place."""
    from kstyle.export.web import style_image_path, style_image_paths

    for name in ("a.png", "b.png", "c.png"):
        (tmp_path / name).write_bytes(b"")  # found by path: their contents are not read
    runs = {}
    for name, config in {
        "base": {"style_files": [str(tmp_path / "a.png"), str(tmp_path / "gone.png")]},
        "added": {"style_files": [str(tmp_path / "c.png")], "base_model": "base"},
        "student": {"teacher_model": "added", "arch": "live"},
        "single": {"style_files": [str(tmp_path / "b.png")]},
        "single_student": {"teacher_model": "single"},
        "loop": {"teacher_model": "loop"},  # a broken record: it must not recurse forever
    }.items():
        (tmp_path / name).mkdir()
        for key in ("base_model", "teacher_model"):
            if key in config:
                config[key] = str(tmp_path / config[key] / "model.keras")
        (tmp_path / name / "config.json").write_text(json.dumps(config))
        runs[name] = str(tmp_path / name / "model.keras")
    a, c = str(tmp_path / "a.png"), str(tmp_path / "c.png")
    assert style_image_paths(runs["base"]) == [a, None]
    assert style_image_paths(runs["added"]) == [a, None, c]
    assert style_image_paths(runs["student"]) == [a, None, c]
    assert style_image_path(runs["single_student"]) == str(tmp_path / "b.png")
    assert style_image_path(runs["student"]) is None  # several styles: no single picture
    assert style_image_paths(runs["loop"]) == []
