"""Writes docs/web.png: the web page (``kstyle export --format web``) in headless Chromium,
with matplotlib's sample photo of Grace Hopper stylized by the given runs' first model.

    python scripts/web_screenshot.py runs/starry                 # writes docs/web.png
    python scripts/web_screenshot.py runs/ --output /tmp/web.png  # a folder of runs

Needs the vendored runtime (scripts/vendor_web_runtime.py), Debian's chromium and Playwright
for Python. No request leaves 127.0.0.1.
"""

import argparse
import io
import os
import shutil
import sys
import tempfile
import threading

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def screenshot(runs, output, width=900, height=600, resolution="512") -> str:
    """Builds the page for ``runs``, stylizes the sample photo in it, saves a PNG to
    ``output``; returns ``output``."""
    from PIL import Image
    from playwright.sync_api import sync_playwright

    from kstyle.demo import sample_photo_paths
    from kstyle.export.web import build_site, site_server

    with tempfile.TemporaryDirectory() as folder:
        site = os.path.join(folder, "site")
        build_site(runs, site, printer=lambda line: None)
        server = site_server(site, 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=shutil.which("chromium") or "/usr/bin/chromium"
                )
                page = browser.new_page(viewport={"width": width, "height": height})
                page.route(
                    "**/*",
                    lambda route: (
                        route.continue_()
                        if route.request.url.startswith("http://127.0.0.1:")
                        else route.abort()
                    ),
                )
                page.goto(f"http://127.0.0.1:{server.server_address[1]}/")
                page.wait_for_function("document.body.dataset.state === 'ready'", timeout=120_000)
                page.select_option("#resolution", resolution)
                page.set_input_files("#file", sample_photo_paths()[0])
                page.wait_for_function(
                    "Number(document.getElementById('output').dataset.frames || 0) > 0",
                    timeout=120_000,
                )
                os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
                png = page.screenshot(full_page=True)
                browser.close()
        finally:
            server.shutdown()
    # 256 colours: a quarter of the bytes, for a picture kept in the repository
    Image.open(io.BytesIO(png)).convert("RGB").quantize(256).save(output, optimize=True)
    return output


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="runs, model.keras files or a folder of runs")
    parser.add_argument("--output", default=os.path.join(ROOT, "docs", "web.png"))
    args = parser.parse_args()
    print(screenshot(args.runs, args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
