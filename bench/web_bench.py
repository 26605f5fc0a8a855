"""The web page in headless Chromium (a benchmark, not a test): the webcam loop's frames per
second at 256x256 and 640x480 with the wasm runtime on 1 thread (and more with --threads),
the time from opening the page to its first stylized frame with the load's phases, and the
time ``kstyle serve SITE`` takes to print its URL.

    python bench/web_bench.py                              # tiny (and live where it exists)
    python bench/web_bench.py --arch tiny --sizes 256x256 --threads 1,2 --seconds 5
    python bench/web_bench.py --site SITE --arch NAME      # a site built elsewhere

It builds one page (``kstyle.export.web.build_site``) for untrained nets of each preset
(random instance-norm scales and offsets: a trained net's arithmetic, so its speed), serves it
on 127.0.0.1 with the isolation headers (as ``kstyle serve``), and starts Chromium with a fake
webcam playing a .y4m clip of each size, so the page processes the camera's own size
("native" resolution). Per configuration: a fresh page at ``?threads=N``, the style picked,
the webcam started; the fps is the frames drawn over ``--seconds`` after the first two (so
warm-up is left out), at least three frames. "First frame" is from navigation to the first
stylized frame of the sample photo that the page stylizes on opening (a page without one is
given the same photo through its file input at once), at the default 512 px resolution, on
the first style; "ready" is when the runtime and first model were loaded, and the worker's
phases are "fetch" (runtime module, wasm and model, in parallel) and "session" (creating
the first session, which compiles the wasm). Console errors on the page are counted per row.
Requests outside 127.0.0.1 are refused. Needs Debian's chromium and Playwright for Python.
"""

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from realtime import build_net  # bench/: the same untrained nets as the real-time table

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FRAMES = "Number(document.getElementById('output').dataset.frames || 0)"


def write_y4m(path, width, height, count=30, fps=30) -> str:
    """A ``width`` x ``height`` 4:2:0 clip of a moving pattern for the fake webcam."""
    import numpy as np

    y, x = np.mgrid[0:height, 0:width]
    with open(path, "wb") as file:
        file.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for index in range(count):
            luma = 128 + 100 * np.sin((x + 9 * index) / 17.0) * np.cos((y - 5 * index) / 23.0)
            chroma = np.full((height // 2, width // 2), 128 + (index * 4) % 64)
            file.write(b"FRAME\n")
            for plane in (luma, chroma, 255 - chroma):
                file.write(np.clip(plane, 0, 255).astype(np.uint8).tobytes())
    return path


def build(arches, folder) -> str:
    """A site with one untrained net per preset, named after it."""
    from kstyle.export.web import build_site

    runs = []
    for arch in arches:
        run = os.path.join(folder, "runs", arch)
        os.makedirs(run)
        build_net(arch).save(os.path.join(run, "model.keras"))
        with open(os.path.join(run, "config.json"), "w") as file:
            json.dump({"arch": arch}, file)
        runs.append(run)
    site = os.path.join(folder, "site")
    build_site(runs, site, printer=lambda line: None)
    return site


def guarded_page(browser):
    """A new page whose requests outside 127.0.0.1 are aborted; returns (page, record), record
    holding the ``blocked`` URLs and the console ``errors``."""
    page = browser.new_page()
    record = {"blocked": [], "errors": []}

    def route(request):
        if request.request.url.startswith("http://127.0.0.1:"):
            request.continue_()
        else:
            record["blocked"].append(request.request.url)
            request.abort()

    page.route("**/*", route)
    page.on("console", lambda m: m.type == "error" and record["errors"].append(m.text))
    page.on("pageerror", lambda error: record["errors"].append(str(error)))
    return page, record


def first_frame(browser, url, threads) -> dict:
    """Navigation to the first stylized frame of the sample photo, and the load's phases."""
    from kstyle.demo import sample_photo_paths

    page, record = guarded_page(browser)
    try:
        page.goto(f"{url}?threads={threads}", wait_until="commit")
        page.wait_for_selector("#file", state="attached")
        has_sample = page.evaluate(
            "fetch('manifest.json').then(r => r.json()).then(m => !!m.sample)"
        )
        if not has_sample:  # an older page: the same photo, at once
            from PIL import Image

            photo = os.path.join(tempfile.mkdtemp(), "sample.jpg")
            with Image.open(sample_photo_paths()[0]) as image:
                picture = image.convert("RGB")
            picture.thumbnail((512, 512))
            picture.save(photo, quality=90)
            page.set_input_files("#file", photo)
        page.wait_for_function(f"{FRAMES} >= 1 || document.body.dataset.state === 'error'",
                               timeout=120_000)  # fmt: skip
        if page.evaluate("document.body.dataset.state") == "error":
            return {"error": page.inner_text("#error")}
        load = page.evaluate("document.body.dataset.load")
        return {
            "first_frame_ms": float(
                page.evaluate("document.getElementById('output').dataset.firstMs")
            ),
            "ready_ms": float(page.evaluate("document.body.dataset.readyMs")),
            "phases": json.loads(load) if load else None,
            "console_errors": len(record["errors"]),
            "blocked": record["blocked"],
        }
    finally:
        page.close()


def webcam_fps(browser, url, arch, threads, seconds) -> dict:
    """The webcam loop's fps on a fresh page (native resolution: the camera's size)."""
    page, record = guarded_page(browser)
    try:
        page.goto(f"{url}?threads={threads}")
        page.wait_for_function("document.body.dataset.state !== 'loading'", timeout=120_000)
        if page.evaluate("document.body.dataset.state") != "ready":
            return {"error": page.inner_text("#error")}
        page.select_option("#style", arch)
        page.select_option("#resolution", "native")
        before = page.evaluate(FRAMES)
        clicked = time.monotonic()
        page.click("#webcam")
        page.wait_for_function(f"{FRAMES} >= {before + 2}", timeout=300_000)
        webcam_first_s = time.monotonic() - clicked
        start_frames, start = page.evaluate(FRAMES), time.monotonic()
        while True:
            page.wait_for_timeout(250)
            frames, elapsed = page.evaluate(FRAMES) - start_frames, time.monotonic() - start
            if (elapsed >= seconds and frames >= 3) or elapsed > 10 * seconds + 60:
                break
        size = page.evaluate("[document.getElementById('output').width, "
                             "document.getElementById('output').height]")  # fmt: skip
        return {
            "fps": frames / elapsed,
            "click_to_second_frame_s": webcam_first_s,
            "output": size,
            "status": page.inner_text("#status"),
            "console_errors": len(record["errors"]),
            "blocked": record["blocked"],
        }
    finally:
        page.close()


def serve_startup(site, runs=3) -> list:
    """Seconds from starting ``kstyle serve SITE`` to its URL line, ``runs`` times."""
    times = []
    for _ in range(runs):
        started = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-m", "kstyle", "serve", site, "--port", "0"], cwd=ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env={**os.environ, "PYTHONPATH": ROOT},
        )  # fmt: skip
        line = process.stdout.readline()
        times.append(time.monotonic() - started if "http://" in line else float("nan"))
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    return times


def launch(playwright, clip):
    return playwright.chromium.launch(
        executable_path=CHROMIUM,
        args=["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
              f"--use-file-for-fake-video-capture={clip}"],
    )  # fmt: skip


def run_all(args, site, folder) -> tuple:
    """The first-frame rows, the fps rows and the browser's version."""
    from playwright.sync_api import sync_playwright

    from kstyle.web_site import site_server

    server = site_server(site, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    starts, rows = [], []
    with sync_playwright() as playwright:
        for index, size in enumerate(args.sizes.split(",")):
            width, height = map(int, size.split("x"))
            clip = write_y4m(os.path.join(folder, f"clip-{size}.y4m"), width, height)
            browser = launch(playwright, clip)
            version = browser.version
            for threads in map(int, args.threads.split(",")):
                for _ in range(args.opens if index == 0 else 0):  # with the first browser only
                    starts.append({**first_frame(browser, url, threads), "threads": threads})
                    print(json.dumps(starts[-1]), file=sys.stderr, flush=True)
                for arch in args.arch.split(","):
                    row = webcam_fps(browser, url, arch, threads, args.seconds)
                    rows.append({**row, "arch": arch, "size": size, "threads": threads})
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
            browser.close()
    server.shutdown()
    return starts, rows, version


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="tiny", help="presets, comma-separated")
    parser.add_argument("--site", help="a built site to measure (its models named --arch)")
    parser.add_argument("--sizes", default="256x256,640x480", help="fake webcam sizes")
    parser.add_argument("--threads", default="1", help="wasm thread counts")
    parser.add_argument("--seconds", type=float, default=6.0, help="measuring time per row")
    parser.add_argument("--opens", type=int, default=3, help="page openings timed per thread count")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    sys.path.insert(0, ROOT)
    with tempfile.TemporaryDirectory() as folder:
        site = args.site or build(args.arch.split(","), folder)
        serve_s = serve_startup(site)
        starts, rows, version = run_all(args, site, folder)
    load = os.getloadavg()
    cpu = platform.processor() or platform.machine()
    print(f"Chromium {version} headless, {os.cpu_count()} CPUs ({cpu}); load average "
          f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")  # fmt: skip
    print("kstyle serve SITE to its URL: " + ", ".join(f"{s:.2f} s" for s in serve_s))
    print(
        "| wasm threads | first frame (ms) | ready (ms) | fetch (ms) | session (ms) | "
        "console errors |"
    )
    print("|---|---|---|---|---|---|")
    for row in starts:
        phases = row.get("phases") or {}
        print(f"| {row['threads']} | {row.get('first_frame_ms', row.get('error'))} | "
              f"{row.get('ready_ms', '')} | {phases.get('fetch', 0):.0f} | "
              f"{phases.get('session', 0):.0f} | {row.get('console_errors', '')} |")  # fmt: skip
    print("| preset | webcam | wasm threads | fps | click to 2nd frame (s) | console errors |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        if "error" in row:
            print(f"| {row['arch']} | {row['size']} | {row['threads']} | {row['error']} | | |")
            continue
        print(f"| {row['arch']} | {row['size']} | {row['threads']} | {row['fps']:.1f} | "
              f"{row['click_to_second_frame_s']:.2f} | {row['console_errors']} |")  # fmt: skip
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"chromium": version, "load": load, "serve_s": serve_s, "first": starts,
                       "rows": rows}, file, indent=2)  # fmt: skip
    blocked = any(row.get("blocked") for row in rows + starts)
    return 1 if blocked else 0


if __name__ == "__main__":
    sys.exit(main())
