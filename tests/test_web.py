"""The web page in a real browser (headless Chromium driven by Playwright for Python):
parity with ``kstyle.stylize_array``, strength, colour preservation, any size, the webcam,
a corrupted model, keyboard use, no request leaving 127.0.0.1 and no console error. Without
Chromium or Playwright they skip with the reason; under ``KSTYLE_REQUIRE_BROWSER=1`` (CI)
they fail."""

import base64
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import pytest
from conftest import random_image, randomize_norms, require_or_skip, require_web_runtime
from PIL import Image

CHROMIUM = os.environ.get("KSTYLE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
LOCAL = "http://127.0.0.1:"


def require_browser() -> None:
    """Skips (or fails, in CI) unless Chromium and Playwright for Python are installed."""
    require_or_skip(
        os.path.isfile(CHROMIUM), f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        require_or_skip(False, "Playwright for Python is not installed (pip install playwright)")
    require_web_runtime()


def launch(playwright, *args):
    """Headless Chromium (Debian's, never a downloaded one) with extra command-line ``args``."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=list(args))


def guarded_page(browser, problems: list, viewport=(1000, 800), allowed=()):
    """A new page (of a browser, or of a context: then at the context's viewport) whose
    requests to anything but 127.0.0.1 are aborted; each such request, each console error and
    each uncaught page error is appended to ``problems`` (the tests assert it stays empty),
    except console errors that match one of the regular expressions ``allowed`` (a test that
    breaks the page on purpose)."""
    size = {"width": viewport[0], "height": viewport[1]}
    page = (
        browser.new_page(viewport=size) if hasattr(browser, "new_context") else browser.new_page()
    )

    def route(request_route):
        url = request_route.request.url
        if url.startswith(LOCAL) or url.startswith("data:") or url.startswith("blob:"):
            request_route.continue_()
        else:
            problems.append(f"request outside 127.0.0.1: {url}")
            request_route.abort()

    def console(message):
        if message.type == "error" and not any(re.search(a, message.text) for a in allowed):
            problems.append(f"console error: {message.text}")

    page.route("**/*", route)
    page.on("console", console)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    return page


class Served:
    """``kstyle serve SOURCE --port 0`` in a subprocess, with a temporary folder of its own
    (TMPDIR); ``url`` is what it printed. :meth:`close` stops it with SIGTERM and asserts that
    it exits cleanly (status 0) and leaves no ``kstyle-site-*`` folder behind."""

    def __init__(self, *source):
        self.tmp = tempfile.mkdtemp(prefix="kstyle-served-")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kstyle", "serve", *map(str, source), "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TMPDIR": self.tmp},
        )
        line = self.process.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+/", line)
        if not match:
            self.close(check=False)
            raise AssertionError(f"kstyle serve printed {line!r}: {self.process.stderr.read()}")
        self.url = match.group(0)

    def close(self, check=True):
        killed = False
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                killed = True
        left = [name for name in os.listdir(self.tmp) if name.startswith("kstyle-site-")]
        shutil.rmtree(self.tmp, ignore_errors=True)
        if not check:
            return
        assert not killed and self.process.returncode == 0, (
            f"kstyle serve exited with {self.process.returncode} on SIGTERM"
        )
        assert not left, f"kstyle serve left {left} behind"


def wait_ready(page, url, timeout_ms=60_000) -> str:
    """Opens ``url`` and waits until the page is ready or shows an error; returns the state."""
    page.goto(url)
    page.wait_for_function("document.body.dataset.state !== 'loading'", timeout=timeout_ms)
    return page.evaluate("document.body.dataset.state")


def frames(page) -> int:
    """How many stylized frames the page has drawn."""
    return int(page.evaluate("document.getElementById('output').dataset.frames || 0"))


def wait_frame(page, after: int, timeout_ms=60_000) -> None:
    """Waits until the page has drawn more than ``after`` frames."""
    page.wait_for_function(
        f"Number(document.getElementById('output').dataset.frames || 0) > {after}",
        timeout=timeout_ms,
    )


def canvas_pixels(page, canvas_id="output") -> np.ndarray:
    """The (H, W, 3) uint8 RGB pixels of a canvas of the page (read losslessly as PNG)."""
    data_url = page.evaluate(f"document.getElementById('{canvas_id}').toDataURL('image/png')")
    png = base64.b64decode(data_url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


# The page's bars. Its fp32 ONNX model runs in ONNX Runtime Web's wasm kernels, the
# reference in Keras on the CPU's kernels: float rounding apart, so within 1 level everywhere
# as the fp32 exports (tests/test_export_writer.py), i.e. MSE <= 1 and PSNR >= 48.1 dB; the
# 35 dB bars leave that 13 dB for the canvas round trip and the page's uint8 blend, and a
# wrong model, size or normalisation is under 20 dB. The images with a side under 8 px get
# 25 dB: their instance norms divide by an almost zero variance (docs/other-stacks.md).
def psnr(a, b) -> float:
    """PSNR in dB of two uint8 images (inf when equal)."""
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def write_y4m(path, frames_count=30, width=160, height=120, fps=30) -> str:
    """A short .y4m clip (4:2:0) of a moving pattern, every frame different, for Chromium's
    ``--use-file-for-fake-video-capture``."""
    y, x = np.mgrid[0:height, 0:width]
    with open(path, "wb") as file:
        file.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for index in range(frames_count):
            luma = 128 + 100 * np.sin((x + 7 * index) / 9.0) * np.cos((y - 3 * index) / 11.0)
            u = np.full((height // 2, width // 2), (index * 8) % 256)
            v = np.full((height // 2, width // 2), 255 - (index * 8) % 256)
            file.write(b"FRAME\n")
            for plane in (luma, u, v):
                file.write(np.clip(plane, 0, 255).astype(np.uint8).tobytes())
    return str(path)


@pytest.fixture(scope="module")
def web_runs(tmp_path_factory):
    """A folder of two runs, ``starry-tiny`` and ``wave-tiny``: untrained ``tiny`` nets
    (random norm parameters, different seeds), each with a config.json naming its style and
    preset; returns [(run dir, net), ...] in that order."""
    import keras

    from kstyle.transform_net import build_transform_net

    folder = tmp_path_factory.mktemp("runs")
    runs = []
    for seed, style in ((5, "starry"), (6, "wave")):
        keras.utils.set_random_seed(seed)
        net = randomize_norms(build_transform_net(arch="tiny"), seed=seed)
        run_dir = folder / f"{style}-tiny"
        run_dir.mkdir()
        net.save(run_dir / "model.keras")
        # starry's style image is still there (the page shows it), wave's is gone
        style_path = folder / f"{style}.png" if style == "starry" else f"/s/{style}.jpg"
        if style == "starry":
            Image.fromarray(random_image(90, 120, seed=seed)).save(style_path)
        config = {"style": str(style_path), "arch": "tiny"}
        (run_dir / "config.json").write_text(json.dumps(config))
        runs.append((run_dir, net))
    return runs


@pytest.fixture(scope="module")
def web_run(web_runs):
    """The first of ``web_runs`` (the page's default style)."""
    return web_runs[0]


@pytest.fixture(scope="module")
def site(web_runs, tmp_path_factory):
    """The web page of the folder of ``web_runs``, as ``kstyle export --format web`` builds."""
    require_browser()
    from kstyle.export.web import build_site

    folder = tmp_path_factory.mktemp("web") / "site"
    build_site([web_runs[0][0].parent], str(folder), printer=lambda line: None)
    return folder


@pytest.fixture(scope="module")
def served(site):
    """``kstyle serve SITE`` running for the module's tests."""
    server = Served(site)
    yield server
    server.close()


@pytest.fixture(scope="module")
def playwright():
    """Playwright for Python (one per module: its sync API does not nest)."""
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as running:
        yield running


@pytest.fixture(scope="module")
def browser(playwright):
    chromium = launch(playwright)
    yield chromium
    chromium.close()


@pytest.fixture
def page(browser, tmp_path):
    """A fresh guarded page; a screenshot of its final state is saved as tmp_path/page.png, and
    no request may have left 127.0.0.1 and no console or page error may have been logged."""
    problems = []
    tab = guarded_page(browser, problems)
    yield tab
    tab.screenshot(path=str(tmp_path / "page.png"))
    tab.close()
    assert not problems, problems


def choose(page, selector, value) -> None:
    """Picks ``value`` in the select ``selector``; once the page shows a picture (the sample
    photo, from opening on), that re-stylizes it: waits for that frame, so that a frame
    awaited next is not this one."""
    before = frames(page)
    page.select_option(selector, value)
    if before:
        wait_frame(page, before)


def upload(page, tmp_path, image, name="photo.png") -> None:
    """Saves ``image`` as a PNG and picks it with the page's file input; waits for its frame."""
    path = tmp_path / name
    Image.fromarray(image).save(path)
    before = frames(page)
    page.set_input_files("#file", str(path))
    wait_frame(page, before)


def press(page, selector, key) -> None:
    """Focuses a control and presses ``key`` (keyboard only); waits for the re-stylized frame."""
    before = frames(page)
    page.focus(selector)
    page.keyboard.press(key)
    wait_frame(page, before)


def test_photo_matches_stylize_array_then_strength_and_colour(page, served, web_run, tmp_path):
    from kstyle import stylize_array
    from kstyle.inference import rgb_to_ycbcr

    net = web_run[1]
    image = random_image(256, 256, seed=11)
    assert wait_ready(page, served.url) == "ready", page.inner_text("#error")
    choose(page, "#resolution", "256")
    upload(page, tmp_path, image)
    output = canvas_pixels(page)
    expected = stylize_array(net, image)
    assert output.shape == image.shape
    assert psnr(output, expected) >= 35.0, psnr(output, expected)
    assert psnr(output, image) < 20.0  # the net really ran (an untrained net changes a lot)
    assert not page.is_visible("#fps")  # a photo has no frame rate, only its time
    assert re.search(r"starry-tiny · \d+ ms", page.inner_text("#output-style"))

    press(page, "#strength", "Home")  # strength 0: the input back
    assert page.input_value("#strength") == "0"
    # 1 level: the canvas's colour round trip of the input itself
    assert np.abs(canvas_pixels(page).astype(int) - image).max() <= 1

    press(page, "#strength", "End")
    press(page, "#preserve", "Space")  # colour preservation: the input's Cb, Cr
    assert page.is_checked("#preserve")
    output = canvas_pixels(page)
    chroma = np.abs(rgb_to_ycbcr(output)[..., 1:] - rgb_to_ycbcr(image)[..., 1:])
    # rounding R, G, B to uint8 moves Cb, Cr by at most 0.5 level (BT.601 rows sum to 1 in
    # magnitude); colours clamped to the RGB cube move more, hence the 99th percentile
    assert np.percentile(chroma, 99) <= 3.0, np.percentile(chroma, 99)
    luma = np.abs(rgb_to_ycbcr(output)[..., 0] - rgb_to_ycbcr(expected)[..., 0])
    assert np.median(luma) <= 2.0  # with the stylized luminance
    expected = stylize_array(net, image, preserve_colors=True)
    assert psnr(output, expected) >= 35.0


@pytest.mark.parametrize("size", [(37, 29), (3, 2)])
def test_any_size_in_same_size_out(page, served, web_run, tmp_path, size):
    from kstyle import stylize_array

    image = random_image(*size, seed=12)
    assert wait_ready(page, served.url) == "ready"
    choose(page, "#resolution", "native")
    upload(page, tmp_path, image)
    output = canvas_pixels(page)
    assert output.shape == image.shape
    expected = stylize_array(web_run[1], image)
    # images a few pixels wide: instance norms over almost no variance (docs/other-stacks.md)
    assert psnr(output, expected) >= (35.0 if min(size) > 8 else 25.0)


def test_resolution_scales_the_longer_side_down(page, served, tmp_path):
    image = random_image(300, 600, seed=13)
    assert wait_ready(page, served.url) == "ready"
    choose(page, "#resolution", "256")
    upload(page, tmp_path, image)
    assert canvas_pixels(page).shape == (128, 256, 3)
    before = frames(page)
    page.select_option("#resolution", "384")
    wait_frame(page, before)
    assert canvas_pixels(page).shape == (192, 384, 3)
    # "native" is capped: the longer side scaled down to the manifest's max_side
    from kstyle.constants import WEB_MAX_SIDE

    choose(page, "#resolution", "native")
    assert f"up to {WEB_MAX_SIDE} px" in page.inner_text("#resolution")
    upload(page, tmp_path, random_image(20, WEB_MAX_SIDE + 400, seed=15), name="wide.png")
    assert canvas_pixels(page).shape == (round(20 * WEB_MAX_SIDE / (WEB_MAX_SIDE + 400)),
                                         WEB_MAX_SIDE, 3)  # fmt: skip


def test_phone_viewport_and_keyboard_order(browser, served, tmp_path):
    problems = []
    page = guarded_page(browser, problems, viewport=(375, 667))
    try:
        assert wait_ready(page, served.url) == "ready"
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 375  # nothing wider than the phone's screen
        order = []
        for _ in range(8):
            page.keyboard.press("Tab")
            order.append(page.evaluate("document.activeElement.id"))
        assert order[:7] == ["file", "webcam", "style", "strength", "preserve", "resolution",
                             "download"] or order[:6] == ["file", "webcam", "style", "strength",
                                                          "preserve", "resolution"]  # fmt: skip
        for control in ("file", "style", "strength", "preserve", "resolution"):
            assert page.evaluate(f"document.getElementById('{control}').labels.length") == 1
    finally:
        page.screenshot(path=str(tmp_path / "page.png"))
        page.close()
    assert not problems, problems


def test_webcam_renders_live_frames_with_fps(site, playwright, tmp_path):
    clip = write_y4m(tmp_path / "clip.y4m")
    server = Served(site)
    problems = []
    chromium = None
    try:
        chromium = launch(
            playwright,
            "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-video-capture={clip}",
        )
        context = chromium.new_context(permissions=["camera"])
        page = guarded_page(context, problems)
        assert wait_ready(page, server.url) == "ready"
        page.click("#webcam")
        seen, deadline = set(), time.monotonic() + 20.0
        while len(seen) < 20 and time.monotonic() < deadline:  # distinct frames drawn in 20 s
            if frames(page):
                seen.add(page.evaluate("document.getElementById('output').toDataURL()"))
            page.wait_for_timeout(50)
        fps = page.inner_text("#fps")
        page.screenshot(path=str(tmp_path / "page.png"))
        assert len(seen) >= 20, f"{len(seen)} distinct frames in 20 s"
        assert re.fullmatch(r"\d+\.\d fps", fps) and page.is_visible("#fps"), fps
        assert page.get_attribute("#webcam", "aria-pressed") == "true"
        # a photo stops the webcam; its frames still in flight are dropped, never drawn: every
        # frame drawn after the photo was picked (the page's own change listener has run) is
        # the photo's size
        page.evaluate(
            """() => {
                window.sizes = []; window.picked = false;
                document.getElementById("file").addEventListener("change", () => {
                    window.picked = true;
                });
                const out = document.getElementById("output");
                new MutationObserver(() => {
                    if (window.picked) window.sizes.push([out.height, out.width]);
                }).observe(out, { attributes: true, attributeFilter: ["data-frames"] });
            }"""
        )
        photo = random_image(48, 64, seed=16)
        upload(page, tmp_path, photo)
        page.wait_for_function("window.sizes.length > 0", timeout=60_000)
        page.wait_for_timeout(1000)
        assert page.evaluate("window.sizes") == [[48, 64]]
        assert canvas_pixels(page).shape == photo.shape
        assert page.evaluate("document.getElementById('video').srcObject") is None
        assert page.get_attribute("#webcam", "aria-pressed") == "false"
        assert not page.is_visible("#fps")  # the webcam stopped: no frame rate
    finally:
        if chromium is not None:
            chromium.close()
        server.close()
    assert not problems, problems


@pytest.mark.parametrize("change", ["altered", "corrupted"])
def test_a_bad_model_shows_one_line_error(site, browser, tmp_path, change):
    """altered: one byte added after the build (the sha256 check); corrupted: not ONNX, with
    manifest.json's sha256 updated to match (the runtime's own error)."""
    broken = tmp_path / "broken"
    shutil.copytree(site, broken)
    model = broken / "models" / "starry-tiny.onnx"  # the style the page loads first
    if change == "altered":
        with open(model, "ab") as file:
            file.write(b"\0")
    else:
        model.write_bytes(b"not an onnx model\n" * 100)
        manifest = json.loads((broken / "manifest.json").read_text())
        manifest["models"][0]["sha256"] = hashlib.sha256(model.read_bytes()).hexdigest()
        (broken / "manifest.json").write_text(json.dumps(manifest))
    server = Served(broken)
    problems = []
    page = guarded_page(browser, problems)
    try:
        assert wait_ready(page, server.url) == "error"
        message = page.inner_text("#error")
        assert page.is_visible("#error")
        assert "\n" not in message.strip() and model.name in message
        if change == "altered":
            assert "does not match manifest.json" in message, message
        else:
            assert message.startswith("could not load model"), message
    finally:
        page.screenshot(path=str(tmp_path / "page.png"))
        page.close()
        server.close()
    assert not problems, problems


def test_missing_runtime_shows_one_line_error(site, browser, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(site, broken)
    for name in os.listdir(broken / "runtime"):
        os.remove(broken / "runtime" / name)
    server = Served(broken)
    problems = []
    page = guarded_page(browser, problems)
    try:
        assert wait_ready(page, server.url) == "error"
        message = page.inner_text("#error")
        assert "\n" not in message.strip() and message
    finally:
        page.screenshot(path=str(tmp_path / "page.png"))
        page.close()
        server.close()
    assert not problems, problems


def test_the_style_picker_switches_models_and_the_png_download_is_the_output(
    page, served, web_runs, tmp_path
):
    from kstyle import stylize_array

    image = random_image(64, 80, seed=14)
    assert wait_ready(page, served.url) == "ready"
    options = page.eval_on_selector_all("#style option", "all => all.map(o => o.value)")
    assert options == ["starry-tiny", "wave-tiny"]
    assert page.inner_text("#style").startswith("starry-tiny (starry.png)")
    upload(page, tmp_path, image)
    first = canvas_pixels(page)
    before = frames(page)
    page.select_option("#style", "wave-tiny")
    wait_frame(page, before)
    second = canvas_pixels(page)
    assert psnr(first, stylize_array(web_runs[0][1], image)) >= 35.0
    assert psnr(second, stylize_array(web_runs[1][1], image)) >= 35.0
    assert psnr(first, second) < 30.0  # really another model
    with page.expect_download() as download:
        page.focus("#download")
        page.keyboard.press("Enter")
    assert download.value.suggested_filename == "kstyle-wave-tiny.png"
    saved = np.asarray(Image.open(download.value.path()).convert("RGB"))
    assert np.array_equal(saved, second)


def test_a_failed_webcam_then_a_photo_clears_the_error_and_half_strength_matches(
    page, served, web_run, tmp_path
):
    from kstyle import stylize_array

    assert wait_ready(page, served.url) == "ready"
    page.click("#webcam")  # no camera in this browser (no fake device): an error
    page.wait_for_function("document.body.dataset.state === 'error'", timeout=30_000)
    assert page.inner_text("#error").startswith("could not start the webcam")
    image = random_image(64, 64, seed=17)
    choose(page, "#resolution", "native")
    upload(page, tmp_path, image)
    assert page.evaluate("document.body.dataset.state") == "ready"
    assert not page.is_visible("#error")
    assert page.inner_text("#status").startswith("Ready")

    before = frames(page)
    page.eval_on_selector(
        "#strength", "e => { e.value = '0.5'; e.dispatchEvent(new Event('input')); }"
    )
    wait_frame(page, before)
    output = canvas_pixels(page).astype(int)
    expected = stylize_array(web_run[1], image, strength=0.5).astype(int)
    assert psnr(output, expected) >= 35.0
    # the page blends the model's uint8 output (Python its float output): |diff| <= 0.75
    # before rounding where the uint8 output is within one level of the float one
    assert np.abs(output - expected).max() <= 1


def test_the_blend_rounds_as_numpy_does(page, served):
    """pixels.js's finish() against kstyle.inference's blend + to_uint8 on the same uint8
    inputs, at strengths with many exact .5 ties: equal, level for level."""
    from kstyle.images import to_uint8
    from kstyle.inference import blend

    content = random_image(16, 16, seed=18)
    stylized = random_image(16, 16, seed=19)
    assert wait_ready(page, served.url) == "ready"
    for strength in (0.5, 0.25, 0.35):
        rgba = page.evaluate(
            """async ([content, stylized, strength]) => {
                const { finish } = await import("./pixels.js");
                const out = finish(Uint8Array.from(content), Uint8Array.from(stylized), 16, 16,
                                   strength, false);
                return Array.from(out);
            }""",
            [content.ravel().tolist(), stylized.ravel().tolist(), strength],
        )
        output = np.asarray(rgba, np.uint8).reshape(16, 16, 4)[..., :3]
        expected = to_uint8(blend(content, stylized, strength))
        assert np.array_equal(output, expected), (strength, np.abs(output - expected).max())


def test_thread_count_reported_is_what_runs(site, served, browser, tmp_path):
    """Served with COOP/COEP, ?threads=2 runs 2 threads; served without them (a plain static
    server) the page is not isolated and says 1 thread, whatever was asked."""
    import functools
    import http.server

    from kstyle.export.web import CONTENT_TYPES

    class Plain(http.server.SimpleHTTPRequestHandler):  # the right types, no COOP/COEP
        extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, **CONTENT_TYPES}

        def log_message(self, *args):
            pass

    handler = functools.partial(Plain, directory=str(site))
    plain = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=plain.serve_forever, daemon=True).start()
    problems = []
    page = guarded_page(browser, problems)
    try:
        assert wait_ready(page, served.url + "?threads=2") == "ready"
        assert page.evaluate("self.crossOriginIsolated")
        assert page.inner_text("#status").endswith("2 threads")
        url = f"http://127.0.0.1:{plain.server_address[1]}/?threads=4"
        assert wait_ready(page, url) == "ready"
        assert not page.evaluate("self.crossOriginIsolated")
        assert page.inner_text("#status").endswith(", 1 thread")
    finally:
        page.close()
        plain.shutdown()
        plain.server_close()
    assert not problems, problems


def test_the_seed_net_in_a_run_folder_with_an_unsafe_name(browser, tmp_path):
    """The johnson preset (the seed network) at 64², in a run folder whose name has '#' and
    a space: its model file gets a URL-safe name, the page shows the name and matches."""
    import keras

    from kstyle import stylize_array
    from kstyle.export.web import build_site
    from kstyle.transform_net import build_transform_net

    require_browser()
    keras.utils.set_random_seed(7)
    net = randomize_norms(build_transform_net(arch="johnson"), seed=7)
    run_dir = tmp_path / "seed #1 net"
    run_dir.mkdir()
    net.save(run_dir / "model.keras")
    site = tmp_path / "site"
    manifest = build_site([run_dir], str(site), verify_size=32, printer=lambda line: None)
    (model,) = manifest["models"]
    assert (model["name"], model["file"]) == ("seed #1 net", "models/seed-1-net.onnx")
    server = Served(site)
    problems = []
    page = guarded_page(browser, problems)
    try:
        assert wait_ready(page, server.url) == "ready", page.inner_text("#error")
        assert page.inner_text("#style") == "seed #1 net"
        image = random_image(64, 64, seed=20)
        choose(page, "#resolution", "native")
        upload(page, tmp_path, image)
        output = canvas_pixels(page)
        expected = stylize_array(net, image)
        assert psnr(output, expected) >= 35.0, psnr(output, expected)
        assert psnr(output, image) < 20.0
    finally:
        page.screenshot(path=str(tmp_path / "page.png"))
        page.close()
        server.close()
    assert not problems, problems


def box(page, selector) -> dict:
    """The bounding box (x, y, width, height in CSS px) of an element of the page."""
    return page.eval_on_selector(selector, "e => e.getBoundingClientRect().toJSON()")


def test_the_sample_photo_is_stylized_on_opening(page, served, site, web_run):
    """Opening the page stylizes the site's sample photo with the first style, without any
    click: the first picture, as stylize_array makes it (the 512 px default)."""
    from kstyle import stylize_array

    assert wait_ready(page, served.url) == "ready"
    assert frames(page) == 1 and page.is_visible("#output")
    sample = np.asarray(Image.open(site / "sample.jpg").convert("RGB"))
    assert max(sample.shape[:2]) == 512
    # the input canvas holds the decoded sample (the browser's JPEG decoder may differ from
    # PIL's by a level or two), which is what the net ran on
    shown = canvas_pixels(page, "input")
    assert shown.shape == sample.shape and psnr(shown, sample) >= 40.0
    output = canvas_pixels(page)
    assert psnr(output, stylize_array(web_run[1], shown)) >= 35.0
    assert page.evaluate("Number(document.getElementById('output').dataset.firstMs)") > 0


def test_layout_desktop_side_by_side_phone_stacked_and_scaled(browser, served):
    """At 1280x800 the photo and the stylized image sit side by side, each scaled to fill its
    half (a 64 px photo is drawn far larger); at 390x844 they are stacked. The resolution box
    keeps its width when its text changes (no row shift), and the style's picture shows."""
    problems = []
    for width, height in ((1280, 800), (390, 844)):
        page = guarded_page(browser, problems, viewport=(width, height))
        try:
            assert wait_ready(page, served.url) == "ready"
            source, result = box(page, "#drop"), box(page, "#output")
            if width > 800:
                assert abs(source["y"] - result["y"]) < 2 and result["x"] >= source["x"] + 400
                assert source["width"] > 500 and source["height"] > 400
            else:
                assert result["y"] >= source["y"] + source["height"]
                assert source["width"] > 300
            assert page.evaluate("document.documentElement.scrollWidth") <= width
            assert page.evaluate(
                "document.getElementById('style-thumb').naturalWidth"
            ) > 0 and page.is_visible("#style-thumb")
            before = box(page, "#resolution")["width"]
            page.select_option("#resolution", "native")  # the longest option's text
            page.wait_for_timeout(200)
            assert box(page, "#resolution")["width"] == before
        finally:
            page.close()
    assert not problems, problems


def test_drop_zone_takes_a_dropped_photo_and_a_refused_file_leaves_no_name(
    page, served, web_run, tmp_path
):
    """A photo dropped on the drop zone is stylized; a file that is not an image is refused
    in one line, and the file input keeps no file (a name would show the refused one)."""
    from kstyle import stylize_array

    image = random_image(40, 56, seed=21)
    assert wait_ready(page, served.url) == "ready"
    choose(page, "#resolution", "native")
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    before = frames(page)
    page.evaluate(
        """(bytes) => {
            const file = new File([new Uint8Array(bytes)], "dropped.png", { type: "image/png" });
            const data = new DataTransfer();
            data.items.add(file);
            const zone = document.getElementById("drop");
            for (const type of ["dragover", "drop"]) {
                zone.dispatchEvent(new DragEvent(type, { dataTransfer: data, bubbles: true,
                                                         cancelable: true }));
            }
        }""",
        list(buffer.getvalue()),
    )
    wait_frame(page, before)
    assert psnr(canvas_pixels(page), stylize_array(web_run[1], image)) >= 35.0
    assert page.evaluate("document.getElementById('drop').classList.contains('dragging')") is False

    bad = tmp_path / "notes.png"
    bad.write_bytes(b"not an image at all")
    page.set_input_files("#file", str(bad))
    page.wait_for_function("document.body.dataset.state === 'error'", timeout=30_000)
    assert page.inner_text("#error") == "could not read notes.png: not an image"
    assert page.evaluate("document.getElementById('file').files.length") == 0
    assert page.input_value("#file") == ""


def test_the_live_net_matches_stylize_array_at_any_size(browser, tmp_path):
    """The ``live`` preset (stride-4 stem, pixel-shuffle output, size multiple 8) on the page:
    a photo at 256², an odd size and one too small to mirror-pad to 8 (edge-padded by the
    page first), each against stylize_array; no console error."""
    import keras

    from kstyle import stylize_array
    from kstyle.export.web import build_site
    from kstyle.transform_net import build_transform_net

    require_browser()
    keras.utils.set_random_seed(8)
    net = randomize_norms(build_transform_net(arch="live"), seed=8)
    run_dir = tmp_path / "live"
    run_dir.mkdir()
    net.save(run_dir / "model.keras")
    (run_dir / "config.json").write_text(json.dumps({"arch": "live"}))
    site = tmp_path / "site"
    manifest = build_site([run_dir], str(site), verify_size=32, printer=lambda line: None)
    assert manifest["models"][0]["input"]["size_multiple"] == 8
    server = Served(site)
    problems = []
    page = guarded_page(browser, problems)
    try:
        assert wait_ready(page, server.url) == "ready", page.inner_text("#error")
        choose(page, "#resolution", "native")
        for size, bar in (((256, 256), 35.0), ((45, 61), 35.0), ((6, 5), 25.0)):
            image = random_image(*size, seed=sum(size))
            upload(page, tmp_path, image, name=f"{size[0]}x{size[1]}.png")
            output = canvas_pixels(page)
            assert output.shape == image.shape
            assert psnr(output, stylize_array(net, image)) >= bar, (size, psnr(output, image))
            assert psnr(output, image) < 20.0
    finally:
        page.screenshot(path=str(tmp_path / "page.png"))
        page.close()
        server.close()
    assert not problems, problems


def test_a_net_of_three_styles_picks_each_and_blends_two(browser, tmp_path):
    """A net of 3 styles (untrained ``tiny``, random style tables; its run recorded three style
    images, the third gone): one option per style with its picture, a "Mix with" list and
    slider, and the page's blend against stylize_array's."""
    from test_multi_style import multi_net

    from kstyle import stylize_array
    from kstyle.export.web import build_site

    require_browser()
    net = multi_net("tiny", styles=3, seed=4)
    run_dir = tmp_path / "trio"
    run_dir.mkdir()
    net.save(run_dir / "model.keras")
    files = [tmp_path / "candy.png", tmp_path / "scream.png", tmp_path / "gone" / "wave.png"]
    for index, path in enumerate(files[:2]):
        Image.fromarray(random_image(60, 80, seed=30 + index)).save(path)
    config = {"style_files": [str(path) for path in files], "arch": "tiny",
              "style_names": ["candy", "scream", "wave"],
              "versions": {"kstyle": "0.1.0"}}  # a run's record: it names the styles  # fmt: skip
    (run_dir / "config.json").write_text(json.dumps(config))
    site = tmp_path / "site"
    manifest = build_site([run_dir], str(site), verify_size=32, printer=lambda line: None)
    styles = manifest["models"][0]["style_input"]["styles"]
    assert [style["name"] for style in styles] == ["candy", "scream", "wave"]
    assert [style["thumbnail"] for style in styles] == [
        "styles/trio/0.jpg", "styles/trio/1.jpg", None
    ]  # fmt: skip
    server = Served(site)
    problems = []
    page = guarded_page(browser, problems)
    try:
        assert wait_ready(page, server.url) == "ready", page.inner_text("#error")
        options = page.eval_on_selector_all("#style option", "all => all.map(o => o.text)")
        assert options == ["trio: candy", "trio: scream", "trio: wave"]
        assert page.get_attribute("#style-thumb", "src") == "styles/trio/0.jpg"
        choose(page, "#resolution", "native")
        image = random_image(48, 60, seed=21)
        upload(page, tmp_path, image)
        first = canvas_pixels(page)
        assert psnr(first, stylize_array(net, image, style=0)) >= 35.0
        choose(page, "#style", "trio/2")
        assert page.is_hidden("#style-thumb")  # its picture is gone
        third = canvas_pixels(page)
        assert psnr(third, stylize_array(net, image, style=2)) >= 35.0
        assert psnr(first, third) < 30.0  # really another style
        mixes = page.eval_on_selector_all("#mix option", "all => all.map(o => o.text)")
        assert mixes == ["none", "candy", "scream"] and page.is_disabled("#mix-amount")
        choose(page, "#mix", "0")
        before = frames(page)
        page.eval_on_selector(
            "#mix-amount", "e => { e.value = '0.3'; e.dispatchEvent(new Event('input')); }"
        )
        wait_frame(page, before)
        blend = canvas_pixels(page)
        expected = stylize_array(net, image, style=[0.3, 0, 0.7])
        assert psnr(blend, expected) >= 35.0, psnr(blend, expected)
        assert psnr(blend, third) < psnr(blend, expected)  # the blend, not style 2 alone
        assert page.inner_text("#output-style").startswith("trio: wave + candy 0.30")
    finally:
        page.screenshot(path=str(tmp_path / "page.png"))
        page.close()
        server.close()
    assert not problems, problems
