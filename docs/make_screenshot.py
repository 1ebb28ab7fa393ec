"""Makes docs/page.png, the README's picture of the page, from a real model: ``portable-cnn serve`` on the
checkpoint, a "7" drawn with the mouse on #draw in headless Chromium (Playwright), one kernel clicked, then a
screenshot of the whole page.

Usage: python docs/make_screenshot.py CHECKPOINT [OUT.png]   (docs/make_figures.sh runs it on its model)
Needs playwright (the test extra) and a Chromium: /usr/bin/chromium (apt install chromium), or $CHROMIUM.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

from playwright.sync_api import sync_playwright

REPO = pathlib.Path(__file__).resolve().parents[1]
SEVEN = [(0.25, 0.22), (0.78, 0.2), (0.62, 0.45), (0.45, 0.82)]  # a stroke, as fractions of the pad's size


def main(checkpoint: str, output: str = str(REPO / "docs" / "page.png")) -> None:
    command = [sys.executable, "-m", "portable_cnn", "serve", "--checkpoint", checkpoint, "--port", "0"]
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        url = None
        for line in server.stderr:
            found = re.search(r"http://\S+/", line)
            if found:
                url = found.group(0)
                break
        if url is None:
            sys.exit(f"portable-cnn serve ended without serving: {server.wait()}")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"))
            page = browser.new_page(viewport={"width": 1240, "height": 900}, device_scale_factor=1)
            page.goto(url)
            pad = page.locator("#draw").bounding_box()
            points = [(pad["x"] + fx * pad["width"], pad["y"] + fy * pad["height"]) for fx, fy in SEVEN]
            page.mouse.move(*points[0])
            page.mouse.down()
            for point in points[1:]:
                page.mouse.move(*point, steps=12)
            page.mouse.up()
            page.locator("#kernels [data-kernel='3']").click()
            page.wait_for_function("document.querySelector('#prediction').textContent === '7'")
            page.screenshot(path=output, full_page=True)
            browser.close()
        print(f"wrote {output}")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main(*sys.argv[1:])
