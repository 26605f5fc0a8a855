"""The web page's webcam loop in headless Chromium (a benchmark, not a test): frames per
second at 256² and 512² for each preset, with the wasm runtime on 1 and 2 threads, and the
time to the first stylized frame.

    python bench/web_bench.py                                  # johnson, slim, tiny; 256, 512
    python bench/web_bench.py --arch tiny --sizes 256 --threads 2 --seconds 5

It builds one page (``kstyle.export.web.build_site``) for untrained nets of each preset
(random instance-norm scales and offsets: a trained net's arithmetic, so its speed), serves it
on 127.0.0.1 with the isolation headers (as ``kstyle serve``), and starts Chromium with a fake
webcam playing a 512x512 .y4m clip. Per configuration: a fresh page at ``?threads=N``, the
style and resolution picked, the webcam started; the fps is the frames drawn over
``--seconds`` after the first two (so warm-up is left out), at least three frames. The time to
first frame is from navigation to the first stylized webcam frame (runtime and model loaded,
webcam started, one frame run), on the first configuration of each preset and thread count.
Requests outside 127.0.0.1 are refused. Needs Debian's chromium and Playwright for Python.
WebGPU: reported when ``navigator.gpu`` gives an adapter (the page runs wasm).
"""

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time

from realtime import build_net  # bench/: the same untrained nets as the real-time table

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def write_y4m(path, side=512, count=30, fps=30) -> str:
    """A ``side`` x ``side`` 4:2:0 clip of a moving pattern for the fake webcam."""
    import numpy as np

    y, x = np.mgrid[0:side, 0:side]
    with open(path, "wb") as file:
        file.write(f"YUV4MPEG2 W{side} H{side} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for index in range(count):
            luma = 128 + 100 * np.sin((x + 9 * index) / 17.0) * np.cos((y - 5 * index) / 23.0)
            chroma = np.full((side // 2, side // 2), 128 + (index * 4) % 64)
            file.write(b"FRAME\n")
            for plane in (luma, chroma, 255 - chroma):
                file.write(np.clip(plane, 0, 255).astype(np.uint8).tobytes())
    return path


def build(arches, folder) -> str:
    """A site with one untrained net per preset, named after it."""
    import json as json_module

    from kstyle.export.web import build_site

    runs = []
    for arch in arches:
        run = os.path.join(folder, "runs", arch)
        os.makedirs(run)
        build_net(arch).save(os.path.join(run, "model.keras"))
        with open(os.path.join(run, "config.json"), "w") as file:
            json_module.dump({"arch": arch}, file)
        runs.append(run)
    site = os.path.join(folder, "site")
    build_site(runs, site, printer=lambda line: None)
    return site


def measure(browser, url, arch, side, threads, seconds) -> dict:
    """One configuration on a fresh page: fps of the webcam loop and time to first frame."""
    page = browser.new_page()
    blocked = []

    def route(request):
        if request.request.url.startswith("http://127.0.0.1:"):
            request.continue_()
        else:
            blocked.append(request.request.url)
            request.abort()

    page.route("**/*", route)
    try:
        page.goto(f"{url}?threads={threads}")
        page.wait_for_function("document.body.dataset.state !== 'loading'", timeout=120_000)
        if page.evaluate("document.body.dataset.state") != "ready":
            return {"error": page.inner_text("#error")}
        page.select_option("#style", arch)
        page.select_option("#resolution", str(side))
        page.click("#webcam")
        count = "Number(document.getElementById('output').dataset.frames || 0)"
        page.wait_for_function(f"{count} >= 2", timeout=300_000)
        first_ms = float(page.evaluate("document.getElementById('output').dataset.firstMs"))
        start_frames, start = page.evaluate(count), time.monotonic()
        while True:
            page.wait_for_timeout(250)
            frames, elapsed = page.evaluate(count) - start_frames, time.monotonic() - start
            if (elapsed >= seconds and frames >= 3) or elapsed > 10 * seconds + 60:
                break
        size = page.evaluate("[document.getElementById('output').width, "
                             "document.getElementById('output').height]")  # fmt: skip
        return {
            "fps": frames / elapsed,
            "first_frame_ms": first_ms,
            "ready_ms": float(page.evaluate("document.body.dataset.readyMs")),
            "output": size,
            "status": page.inner_text("#status"),
            "blocked": blocked,
        }
    finally:
        page.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="johnson,slim,tiny", help="presets, comma-separated")
    parser.add_argument("--sizes", default="256,512", help="processing resolutions")
    parser.add_argument("--threads", default="1,2", help="wasm thread counts")
    parser.add_argument("--seconds", type=float, default=6.0, help="measuring time per row")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()
    sys.path.insert(0, ROOT)
    from playwright.sync_api import sync_playwright

    from kstyle.export.web import site_server

    arches = args.arch.split(",")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        site = build(arches, folder)
        clip = write_y4m(os.path.join(folder, "clip.y4m"))
        server = site_server(site, 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM,
                args=[
                    "--use-fake-device-for-media-stream",
                    "--use-fake-ui-for-media-stream",
                    f"--use-file-for-fake-video-capture={clip}",
                ],
            )
            probe = browser.new_page()
            probe.goto(url)
            gpu = probe.evaluate(
                "async () => !navigator.gpu ? 'no navigator.gpu' : "
                "((await navigator.gpu.requestAdapter()) ? 'an adapter' : 'no adapter')"
            )
            version = browser.version
            probe.close()
            for arch in arches:
                for side in map(int, args.sizes.split(",")):
                    for threads in map(int, args.threads.split(",")):
                        row = measure(browser, url, arch, side, threads, args.seconds)
                        row.update(arch=arch, side=side, threads=threads)
                        rows.append(row)
                        print(json.dumps(row), file=sys.stderr, flush=True)
            browser.close()
        server.shutdown()
    cpu = platform.processor() or platform.machine()
    print(f"Chromium {version} headless, {os.cpu_count()} CPUs ({cpu}); WebGPU: {gpu}")
    print("| preset | size | wasm threads | fps | first frame (ms) | ready (ms) |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        if "error" in row:
            print(f"| {row['arch']} | {row['side']}² | {row['threads']} | {row['error']} | | |")
            continue
        print(f"| {row['arch']} | {row['side']}² | {row['threads']} | {row['fps']:.1f} | "
              f"{row['first_frame_ms']:.0f} | {row['ready_ms']:.0f} |")  # fmt: skip
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"chromium": version, "webgpu": gpu, "rows": rows}, file, indent=2)
    return 1 if any(row.get("blocked") for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
