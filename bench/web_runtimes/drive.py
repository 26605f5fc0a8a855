import json
import sys

from playwright.sync_api import sync_playwright

configs = [a.split(":") for a in sys.argv[1:]]  # rt:threads:arch[:bundle]
with sync_playwright() as p:
    browser = p.chromium.launch(
        executable_path="/usr/bin/chromium",
        args=["--enable-unsafe-webgpu", "--enable-features=Vulkan"],
    )
    for c in configs:
        page = browser.new_page()
        page.route(
            "**/*",
            lambda route: (
                route.continue_()
                if route.request.url.startswith("http://127.0.0.1")
                else route.abort()
            ),
        )
        page.on(
            "console",
            lambda m: (
                print("  console:", m.text[:200], file=sys.stderr)
                if m.type in ("error", "warning")
                else None
            ),
        )
        url = f"http://127.0.0.1:8765/harness.html?rt={c[0]}&threads={c[1]}&arch={c[2]}" + "".join(
            f"&{kv}" for kv in c[3:]
        )
        page.goto(url)
        page.wait_for_function("window.__result !== undefined", timeout=120000)
        print(json.dumps(page.evaluate("window.__result")), flush=True)
        page.close()
    page = browser.new_page()
    page.goto("http://127.0.0.1:8765/harness.html?rt=none")
    print(
        "gpu:",
        page.evaluate(
            "async () => { if (!navigator.gpu) return 'no navigator.gpu'; const a = await navigator.gpu.requestAdapter(); return a ? JSON.stringify(a.info) : 'no adapter'; }"  # noqa: E501
        ),
    )
    browser.close()
