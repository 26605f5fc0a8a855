"""Writes docs/web.png: the web page (``kstyle export --format web``) in headless Chromium at a
desktop size, with the sample photo it stylizes on opening (matplotlib's photo of Grace
Hopper) stylized by the given runs' first model; ``--phone`` also writes the page at a phone's
size.

    python scripts/web_screenshot.py runs/starry                 # writes docs/web.png
    python scripts/web_screenshot.py runs/ --output /tmp/web.png --phone /tmp/phone.png

Needs the vendored runtime (scripts/vendor_web_runtime.py), Debian's chromium and Playwright
for Python. No request leaves 127.0.0.1; a console error on the page is an error here.
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
DESKTOP = (1280, 800)
PHONE = (390, 844)


def capture(browser, url, size, output, resolution) -> None:
    """Opens ``url`` at ``size`` (width, height), waits for the sample's stylized frame and
    saves a full-page PNG (256 colours) to ``output``."""
    from PIL import Image

    page = browser.new_page(viewport={"width": size[0], "height": size[1]})
    problems = []
    page.on("console", lambda m: m.type == "error" and problems.append(m.text))
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.route("**/*", lambda route: route.continue_()
               if route.request.url.startswith("http://127.0.0.1:") else route.abort())  # fmt: skip
    page.goto(url)
    page.wait_for_function("document.body.dataset.state !== 'loading'", timeout=120_000)
    if page.evaluate("document.body.dataset.state") != "ready":
        raise SystemExit(f"the page shows an error: {page.inner_text('#error')}")
    before = int(page.evaluate("document.getElementById('output').dataset.frames || 0"))
    if page.input_value("#resolution") != resolution:
        page.select_option("#resolution", resolution)
        page.wait_for_function(
            f"Number(document.getElementById('output').dataset.frames || 0) > {before}",
            timeout=120_000,
        )
    png = page.screenshot(full_page=True)
    page.close()
    if problems:
        raise SystemExit(f"console errors on the page: {problems}")
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    # 256 colours: a quarter of the bytes, for a picture kept in the repository
    Image.open(io.BytesIO(png)).convert("RGB").quantize(256).save(output, optimize=True)


def screenshot(runs, output, phone=None, resolution="512") -> str:
    """Builds the page for ``runs`` and saves it at :data:`DESKTOP` size to ``output`` (and
    at :data:`PHONE` size to ``phone``, if given); returns ``output``."""
    from playwright.sync_api import sync_playwright

    from kstyle.export.web import build_site
    from kstyle.web_site import site_server

    with tempfile.TemporaryDirectory() as folder:
        site = os.path.join(folder, "site")
        build_site(runs, site, printer=lambda line: None)
        server = site_server(site, 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=shutil.which("chromium") or "/usr/bin/chromium"
                )
                capture(browser, url, DESKTOP, output, resolution)
                if phone:
                    capture(browser, url, PHONE, phone, resolution)
                browser.close()
        finally:
            server.shutdown()
    return output


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="runs, model.keras files or a folder of runs")
    parser.add_argument("--output", default=os.path.join(ROOT, "docs", "web.png"))
    parser.add_argument("--phone", help="also write the page at a phone's size here")
    parser.add_argument("--resolution", default="512", help="the page's processing resolution")
    args = parser.parse_args()
    print(screenshot(args.runs, args.output, args.phone, args.resolution))
    return 0


if __name__ == "__main__":
    sys.exit(main())
