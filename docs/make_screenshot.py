"""Makes docs/page.png, the README's picture of the page, from a real model: ``portable-cnn serve`` on the
checkpoint, a 7 drawn with the mouse on #draw in headless Chromium (Playwright), one kernel clicked, then a
screenshot of the whole page. It drives the page with the browser tests' own helpers (tests/serving.py).

Usage: python docs/make_screenshot.py CHECKPOINT [OUT.png]   (docs/make_figures.sh runs it on its model)
Needs playwright (the test extra) and a Chromium: /usr/bin/chromium (apt install chromium), or $CHROMIUM.
"""

import os
import pathlib
import sys

from playwright.sync_api import sync_playwright

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.serving import SEVEN, Served, stroke  # noqa: E402  (the repository first, as above)


def main(checkpoint: str, output: str = str(REPO / "docs" / "page.png")) -> None:
    served = Served("serve", "--checkpoint", checkpoint, "--port", "0")
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"))
            page = browser.new_page(viewport={"width": 1240, "height": 900})
            page.goto(served.url)
            stroke(page, SEVEN)
            page.locator("#kernels [data-kernel='3']").click()
            page.wait_for_load_state("networkidle")  # the stroke's last answer is in
            page.screenshot(path=output, full_page=True)
            browser.close()
    finally:
        served.interrupt()
    print(f"wrote {output}")


if __name__ == "__main__":
    main(*sys.argv[1:])
